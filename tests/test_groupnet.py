"""GroupNet family: seed numbers, the timm model API, and errors."""
import re
import warnings

import pytest
import timm
import torch
import torch.nn as nn
from timm.models import group_parameters

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


def test_forward_features_and_head(small):
    x = torch.randn(2, 3, 64, 64)
    feats = small.forward_features(x)
    assert feats.shape == (2, 512, 8, 8)
    pre = small.forward_head(feats, pre_logits=True)
    assert pre.shape == (2, small.num_features) == (2, small.head_hidden_size)
    torch.testing.assert_close(small.forward_head(feats), small.fc(pre))
    torch.testing.assert_close(small(x), small.forward_head(feats))


def test_classifier_reset(small):
    x = torch.randn(1, 3, 64, 64)
    assert small.get_classifier() is small.fc
    small.reset_classifier(7)
    assert small(x).shape == (1, 7) and small.num_classes == 7
    small.reset_classifier(0)
    assert small(x).shape == (1, 512) and isinstance(small.get_classifier(), nn.Identity)
    small.reset_classifier(0, '')
    assert small(x).shape == (1, 512, 8, 8)
    unpooled = timm.create_model('groupnet_small', num_classes=0, global_pool='').eval()
    assert unpooled(x).shape == (1, 512, 8, 8)
    maxpool = timm.create_model('groupnet_small', global_pool='max', num_classes=3)
    assert maxpool.global_pool.pool_type == 'max'


def test_default_cfgs_are_complete_and_right():
    required = {'input_size', 'pool_size', 'crop_pct', 'interpolation', 'mean', 'std', 'first_conv', 'classifier',
                'num_classes', 'license'}
    for name in timm_groupoct.list_models():
        model = timm.create_model(name).eval()
        cfg = model.pretrained_cfg
        assert required <= set(cfg), (name, required - set(cfg))
        state = model.state_dict()
        assert cfg['first_conv'] + '.weight' in state and cfg['classifier'] + '.weight' in state
        assert state[cfg['first_conv'] + '.weight'].shape[1] == cfg['input_size'][0]
        assert state[cfg['classifier'] + '.weight'].shape[0] == cfg['num_classes']
        with torch.no_grad():
            feats = model.forward_features(torch.randn(1, *cfg['input_size']))
        assert tuple(feats.shape[-2:]) == cfg['pool_size'], name


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


def test_features_only_modules_exist():
    model = timm.create_model('groupnet_tiny')
    assert [f['module'] for f in model.feature_info] == ['stem.0', 'stages.0', 'stages.1', 'stages.2', 'stages.3']
    for f in model.feature_info:
        model.get_submodule(f['module'])


def test_forward_intermediates_matches_forward_features(small):
    x = torch.randn(1, 3, 64, 64)
    final, inter = small.forward_intermediates(x)
    torch.testing.assert_close(final, small.forward_features(x))
    torch.testing.assert_close(inter[-1], final)
    last_two = small.forward_intermediates(x, indices=2, intermediates_only=True)
    assert [t.shape[1] for t in last_two] == [256, 512]
    early = small.forward_intermediates(x, indices=[1], stop_early=True, intermediates_only=True)
    torch.testing.assert_close(early[0], inter[1])


def test_prune_intermediate_layers(small):
    x = torch.randn(1, 3, 64, 64)
    expected = small.forward_intermediates(x, indices=[0, 2], intermediates_only=True)
    kept = small.prune_intermediate_layers([0, 2])
    assert kept == [0, 2]
    assert len(small.stages) == 2 and small.num_classes == 0
    got = small.forward_intermediates(x, indices=[0, 2], intermediates_only=True)
    for a, b in zip(got, expected):
        torch.testing.assert_close(a, b)


def test_grad_checkpointing_keeps_output_and_gradients():
    model = timm.create_model('groupnet_small', num_classes=10, drop_path_rate=0.0)
    x = torch.randn(2, 3, 32, 32)
    out = model(x)
    out.sum().backward()
    grads = [p.grad.clone() for p in model.parameters()]
    model.zero_grad()
    model.set_grad_checkpointing(True)
    out2 = model(x)
    out2.sum().backward()
    torch.testing.assert_close(out2, out, rtol=1e-4, atol=1e-5)
    for a, b in zip(grads, (p.grad for p in model.parameters())):
        torch.testing.assert_close(b, a, rtol=1e-3, atol=1e-5)


def test_group_matcher_groups_every_parameter():
    model = timm.create_model('groupnet_small')
    groups = group_parameters(model, model.group_matcher(coarse=True))
    names = [n for n, _ in model.named_parameters()]
    assert sum(len(v) for v in groups.values()) == len(names)
    assert groups[0] == [n for n in names if n.startswith('stem')]
    assert len(groups) == 5  # stem, 3 stages, head
    fine = group_parameters(model, model.group_matcher())
    assert len(fine) == 1 + 6 + 1  # stem, 6 blocks, head


@pytest.mark.parametrize('in_chans', [1, 4])
def test_in_chans(in_chans):
    model = timm.create_model('groupnet_small', in_chans=in_chans, num_classes=10).eval()
    assert model.stem[0].conv.in_channels == in_chans
    assert model(torch.randn(2, in_chans, 32, 32)).shape == (2, 10)


def test_drop_path_rates_increase_linearly():
    model = timm.create_model('groupnet_small', drop_path_rate=0.25)
    rates = [m.drop_prob for m in model.modules() if type(m).__name__ == 'DropPath']
    assert rates == pytest.approx([0.25 * i / 5 for i in range(1, 6)])  # first block's rate is 0: Identity


def test_drop_rate_only_in_training():
    model = timm.create_model('groupnet_small', num_classes=10, drop_rate=0.5).eval()
    x = torch.randn(2, 3, 32, 32)
    torch.testing.assert_close(model(x), model(x))


def test_torchscript(small):
    scripted = torch.jit.script(small)
    x = torch.randn(1, 3, 32, 32)
    torch.testing.assert_close(scripted(x), small(x))
    torch.testing.assert_close(scripted.forward_features(x), small.forward_features(x))


def test_torchvision_fx_feature_extraction(small):
    from torchvision.models.feature_extraction import create_feature_extractor
    extractor = create_feature_extractor(small, return_nodes={'stages.0': 'c2', 'stages.2': 'c4', 'fc': 'logits'})
    x = torch.randn(1, 3, 32, 32)
    out = extractor(x)
    _, inter = small.forward_intermediates(x)
    torch.testing.assert_close(out['c2'], inter[1])
    torch.testing.assert_close(out['c4'], inter[3])
    torch.testing.assert_close(out['logits'], small(x))


def test_channels_last(small):
    x = torch.randn(2, 3, 32, 32)
    ref = small(x)
    small = small.to(memory_format=torch.channels_last)
    out = small(x.to(memory_format=torch.channels_last))
    torch.testing.assert_close(out, ref, rtol=1e-4, atol=1e-4)


def test_norm_layer_groupnorm_model():
    model = timm.create_model('groupnet_small', norm_layer='groupnorm', num_classes=10)
    norms = [m for m in model.modules() if isinstance(m, nn.GroupNorm)]
    assert norms and not any(isinstance(m, nn.BatchNorm2d) for m in model.modules())
    assert all(m.num_channels % m.num_groups == 0 and m.num_groups == min(32, m.num_channels) for m in norms)
    assert n_params(model) == 1_020_618  # GN has the same affine parameters as BN


def test_backward_every_parameter_gets_gradient():
    model = timm.create_model('groupnet_small', num_classes=42).train()
    model(torch.randn(2, 3, 32, 32)).mean().backward()
    assert all(p.grad is not None for p in model.parameters())
