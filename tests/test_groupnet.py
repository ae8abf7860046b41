"""GroupNet family: seed numbers, the timm model API, and errors."""
import re
import warnings

import pytest
import timm
import torch
import torch.nn as nn

import timm_groupoct
from timm_groupoct.models.groupnet import GroupNet
from timm_groupoct.summary import model_report

from seed_reference import SeedGroupNet, load_in_order


def n_params(m):
    return sum(p.numel() for p in m.parameters() if p.requires_grad)


# ---- seed 000 / 002 ------------------------------------------------------------------------------------------

@pytest.mark.parametrize('name', ['groupnet_small', 'groupconvnet'])
def test_seed_000_parameter_counts(name):
    assert n_params(timm.create_model(name, num_classes=10)) == 1_020_618
    assert n_params(timm.create_model(name)) == 1_528_488


def test_seed_000_shapes():
    model = timm.create_model('groupnet_small', num_classes=10).eval()
    x = torch.randn(2, 3, 128, 128)
    logits, stages = model.forward_intermediates(x)
    assert [tuple(t.shape[1:]) for t in stages] == [(64, 128, 128), (128, 64, 64), (256, 32, 32), (512, 16, 16)]
    assert model.forward_head(logits).shape == (2, 10)
    assert model(x).shape == (2, 10)


def test_groupnet_small_computes_what_seed_000_computes():
    seed = SeedGroupNet(num_classes=10)
    ours = timm.create_model('groupnet_small', num_classes=10)
    for m in seed.modules():
        if isinstance(m, nn.BatchNorm2d):  # non-trivial statistics so eval mode means something
            nn.init.uniform_(m.weight, 0.5, 1.5), nn.init.normal_(m.bias, std=0.1)
            nn.init.uniform_(m.running_var, 0.5, 2.0), nn.init.normal_(m.running_mean, std=0.1)
    load_in_order(ours, seed)
    x = torch.randn(2, 3, 32, 32)
    seed.eval(), ours.eval()
    torch.testing.assert_close(ours(x), seed(x), rtol=1e-4, atol=1e-5)


def test_groupconvnet_adjusts_groups_explicitly_and_warns():
    with pytest.warns(UserWarning) as record:
        model = timm.create_model('groupconvnet', groups=12)
    messages = [str(w.message) for w in record]
    assert messages[0] == ('stages.0.0 (3x3 grouped conv): groups=12 does not divide its 64 channels; '
                           'lowered to groups=8 because adjust_groups=True')
    assert len(messages) == 6  # one per block: every bottleneck width (64, 128, 256) is lowered to 8
    assert [m.conv2.groups for m in model.stages.modules() if hasattr(m, 'conv2')] == [8] * 6
    widths_divisible = timm.create_model('groupconvnet', groups=16, bottleneck_ratio=0.75)  # 96, 192, 384
    assert [m.conv2.groups for m in widths_divisible.stages.modules() if hasattr(m, 'conv2')] == [16] * 6


def test_groupconvnet_default_builds_without_warning():
    with warnings.catch_warnings():
        warnings.simplefilter('error')
        timm.create_model('groupconvnet')


def test_groupnet_refuses_groups_that_do_not_divide():
    with pytest.raises(ValueError) as e:
        timm.create_model('groupnet_small', groups=12)
    assert str(e.value).startswith(
        'stages.0.0 (3x3 grouped conv): groups=12 does not divide its 64 channels. '
        'Nearest valid choices: groups=8 or groups=16.')


# ---- ImageNet variants -----------------------------------------------------------------------------------------

@pytest.mark.parametrize('name, params, params_10, gflops', [
    ('groupnet_tiny', 5_210_280, 4_195_530, 1.783),
    ('groupnet_base', 25_058_216, 23_029_706, 8.499),
])
def test_imagenet_variants(name, params, params_10, gflops):
    model = timm.create_model(name)
    report = model_report(model, (3, 224, 224))
    assert report.total_params == params
    assert round(report.total_gflops, 3) == gflops
    assert report.levels[-1].shape == (model.num_features, 7, 7)
    assert [lv.reduction for lv in report.levels] == [2, 4, 8, 16, 32]
    assert n_params(timm.create_model(name, num_classes=10)) == params_10


# ---- configuration errors --------------------------------------------------------------------------------------

def test_stage_lists_must_match():
    with pytest.raises(ValueError, match=r'one entry per stage \(at least one stage\), got 3, 2 and 3'):
        GroupNet(depths=(1, 1, 1), widths=(64, 128))


def test_negative_num_classes():
    with pytest.raises(ValueError, match='num_classes must be an integer >= 0'):
        timm.create_model('groupnet_small', num_classes=-1)
    with pytest.raises(ValueError, match='num_classes must be an integer >= 0'):
        timm.create_model('groupnet_small').reset_classifier(-5)


@pytest.mark.parametrize('kwargs, message', [
    (dict(stem_stride=3), "stem_stride for stem_type='double' must be 1 or 2 or 4, got 3"),
    (dict(stem_type='single', stem_stride=4), "stem_stride for stem_type='single' must be 1 or 2, got 4"),
    (dict(stem_type='resnet', stem_stride=2), "stem_stride for stem_type='resnet' must be 4, got 2"),
    (dict(stem_type='deep'), "stem_type must be one of double, single, resnet, got 'deep'"),
    (dict(block='bottle'), "block must be 'bottleneck' or 'basic', got 'bottle'"),
    (dict(widths=(128, 256, 510), base_width=4), 'needs stage widths divisible by 4, got (128, 256, 510)'),
])
def test_configuration_errors(kwargs, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        GroupNet(**kwargs)


@pytest.mark.parametrize('stem_stride, strides, reductions', [
    (1, (2, 2, 2), [1, 2, 4, 8]), (2, (2, 2, 2), [2, 4, 8, 16]), (4, (1, 2, 2), [2, 4, 8, 16])])
def test_strides_set_reductions(stem_stride, strides, reductions):
    model = GroupNet(depths=(1, 1, 1), widths=(32, 64, 128), stem_width=16, groups=4, stem_stride=stem_stride,
                     strides=strides, num_classes=5).eval()
    assert [f['reduction'] for f in model.feature_info] == reductions
    feats = model.forward_intermediates(torch.randn(1, 3, 64, 64), intermediates_only=True)
    assert [64 // t.shape[-1] for t in feats] == reductions


# ---- the timm model API ------------------------------------------------------------------------------------------

@pytest.fixture
def small():
    return timm.create_model('groupnet_small', num_classes=10).eval()


@pytest.mark.parametrize('out_indices', [None, (1, 3), (-1,)])
def test_features_only(out_indices):
    kwargs = {} if out_indices is None else dict(out_indices=out_indices)
    model = timm.create_model('groupnet_small', features_only=True, **kwargs).eval()
    expected = [(64, 1), (128, 2), (256, 4), (512, 8)]
    if out_indices is not None:
        expected = [expected[i] for i in out_indices]
    assert list(zip(model.feature_info.channels(), model.feature_info.reduction())) == expected
    feats = model(torch.randn(2, 3, 48, 48))
    assert [(f.shape[1], 48 // f.shape[-1]) for f in feats] == expected


def test_prune_intermediate_layers(small):
    x = torch.randn(1, 3, 64, 64)
    expected = small.forward_intermediates(x, indices=[0, 2], intermediates_only=True)
    kept = small.prune_intermediate_layers([0, 2])
    assert kept == [0, 2]
    assert len(small.stages) == 2 and small.num_classes == 0
    got = small.forward_intermediates(x, indices=[0, 2], intermediates_only=True)
    for a, b in zip(got, expected):
        torch.testing.assert_close(a, b)


@pytest.mark.parametrize('in_chans', [1, 4])
def test_in_chans(in_chans):
    model = timm.create_model('groupnet_small', in_chans=in_chans, num_classes=10).eval()
    assert model.stem[0].conv.in_channels == in_chans
    assert model(torch.randn(2, in_chans, 32, 32)).shape == (2, 10)


def test_drop_path_rates_increase_linearly():
    model = timm.create_model('groupnet_small', drop_path_rate=0.25)
    rates = [m.drop_prob for m in model.modules() if type(m).__name__ == 'DropPath']
    assert rates == pytest.approx([0.25 * i / 5 for i in range(1, 6)])  # first block's rate is 0: Identity


def test_norm_layer_groupnorm_model():
    model = timm.create_model('groupnet_small', norm_layer='groupnorm', num_classes=10)
    norms = [m for m in model.modules() if isinstance(m, nn.GroupNorm)]
    assert norms and not any(isinstance(m, nn.BatchNorm2d) for m in model.modules())
    assert all(m.num_channels % m.num_groups == 0 and m.num_groups == min(32, m.num_channels) for m in norms)
    assert n_params(model) == 1_020_618  # GN has the same affine parameters as BN


