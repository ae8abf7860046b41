import re
import warnings
from collections import OrderedDict

import pytest
import timm
import torch
import torch.nn as nn
from timm.layers import BatchNormAct2d
from timm.utils import reparameterize_model

import timm_groupoct  # noqa: F401  (registers the models)
from timm_groupoct.layers import (
    ConvNormSequential, GroupedBottleneck, GroupNormRuleAct, PointwiseConv2d, fold_batchnorm,
    get_conv_norm_layers, get_norm_act, group_norm_groups, resolve_groups, use_pointwise_gemm, valid_groups_near)
from timm_groupoct import prepare_for_inference

from helpers import randomise_norm_stats
from seed_reference import SeedGroupedBottleneck, load_in_order


def n_params(m):
    return sum(p.numel() for p in m.parameters())


# ---- group-count checks -------------------------------------------------------------------------------------

@pytest.mark.parametrize('channels, groups, expected', [
    (48, 7, (6, 8)), (64, 7, (4, 8)), (64, 9, (8, 16)), (10, 3, (2, 5)), (7, 8, (7,)), (12, 100, (12,))])
def test_valid_groups_near(channels, groups, expected):
    assert valid_groups_near(channels, groups) == expected


def test_resolve_groups_accepts_divisors():
    assert resolve_groups(64, 8) == 8
    assert resolve_groups(64, 64) == 64
    assert resolve_groups(64, 1) == 1


def test_resolve_groups_error_names_layer_channels_and_choices():
    with pytest.raises(ValueError) as e:
        resolve_groups(48, 7, where='stages.1.0 (3x3 grouped conv)')
    msg = str(e.value)
    assert msg.startswith('stages.1.0 (3x3 grouped conv): groups=7 does not divide its 48 channels.')
    assert 'Nearest valid choices: groups=6 or groups=8' in msg
    assert 'adjust_groups=True' in msg


@pytest.mark.parametrize('groups', [0, -2, 2.0])
def test_resolve_groups_rejects_non_positive_int(groups):
    with pytest.raises(ValueError, match='groups must be a positive integer'):
        resolve_groups(64, groups)


def test_resolve_groups_adjust_lowers_like_seed_002_and_warns():
    with pytest.warns(UserWarning, match=r'groups=7 does not divide its 48 channels; lowered to groups=6'):
        assert resolve_groups(48, 7, adjust=True) == 6


def test_resolve_groups_adjust_is_silent_when_nothing_changes():
    with warnings.catch_warnings():
        warnings.simplefilter('error')
        assert resolve_groups(64, 8, adjust=True) == 8


# ---- GroupedBottleneck --------------------------------------------------------------------------------------

def test_bottleneck_params_and_shapes_with_projection():
    blk = GroupedBottleneck(64, 128, stride=2, groups=8, bottleneck_ratio=0.5)
    # conv1 64*64, conv2 64*(64/8)*9, conv3 64*128, projection 64*128, and 2 affine params per norm channel
    expected = 64 * 64 + 64 * 8 * 9 + 64 * 128 + 64 * 128 + 2 * (64 + 64 + 128 + 128)
    assert n_params(blk) == expected == 25_856
    assert blk.groups == 8 and blk.conv2.groups == 8
    assert blk(torch.randn(2, 64, 32, 32)).shape == (2, 128, 16, 16)


def test_bottleneck_identity_shortcut():
    blk = GroupedBottleneck(128, 128, stride=1, groups=8)
    assert blk.downsample is None
    assert blk(torch.randn(2, 128, 9, 9)).shape == (2, 128, 9, 9)


@pytest.mark.parametrize('size, out', [(33, 17), (7, 4), (1, 1)])
def test_bottleneck_odd_sizes_with_stride(size, out):
    blk = GroupedBottleneck(16, 32, stride=2, groups=4).eval()
    assert blk(torch.randn(1, 16, size, size)).shape == (1, 32, out, out)


def test_bottleneck_with_resnext_width_is_seed_001_block():
    # seed 001: ResNeXtBlock_X(in_ch=256, bottleneck_ch=64, groups=4, base_width=4): width=int(64*4/64)*4=16
    blk = GroupedBottleneck(256, 256, groups=4, mid_chs=16)
    assert n_params(blk) == 9_344
    assert blk(torch.randn(2, 256, 56, 56)).shape == (2, 256, 56, 56)


@pytest.mark.parametrize('in_chs, out_chs, stride', [(64, 128, 2), (128, 128, 1)])
def test_bottleneck_computes_what_seed_000_computes(in_chs, out_chs, stride):
    ours, seed = GroupedBottleneck(in_chs, out_chs, stride, groups=8), SeedGroupedBottleneck(in_chs, out_chs, 8, stride)
    for m in seed.modules():  # non-trivial norm statistics and affine params
        if isinstance(m, nn.BatchNorm2d):
            nn.init.uniform_(m.weight, 0.5, 1.5), nn.init.normal_(m.bias), nn.init.uniform_(m.running_var, 0.5, 2)
            nn.init.normal_(m.running_mean)
    load_in_order(ours, seed)
    x = torch.randn(2, in_chs, 16, 16)
    ours.eval(), seed.eval()
    torch.testing.assert_close(ours(x), seed(x), rtol=1e-5, atol=1e-5)
    ours.train(), seed.train()
    torch.testing.assert_close(ours(x), seed(x), rtol=1e-5, atol=1e-5)


def test_bottleneck_groups_error_through_block():
    with pytest.raises(ValueError, match=re.escape('stages.2.1 (3x3 grouped conv): groups=7 does not divide its 48')):
        GroupedBottleneck(96, 96, groups=7, where='stages.2.1')


def test_bottleneck_drop_path_and_zero_init():
    blk = GroupedBottleneck(32, 32, groups=4, drop_path_rate=0.2)
    assert blk.drop_path.drop_prob == 0.2
    blk.zero_init_last()
    blk.eval()
    x = torch.randn(2, 32, 8, 8).relu()
    torch.testing.assert_close(blk(x), x)  # zero residual branch: the block is relu(shortcut)


def test_bottleneck_other_act_and_norm():
    blk = GroupedBottleneck(32, 64, groups=4, norm_layer='layernorm2d', act_layer='gelu')
    assert type(blk.act3).__name__ == 'GELU'
    assert 'LayerNorm' in type(blk.bn1).__name__
    assert blk(torch.randn(1, 32, 8, 8)).shape == (1, 64, 8, 8)


# ---- norm choice ----------------------------------------------------------------------------------------------

@pytest.mark.parametrize('channels, groups', [(64, 32), (48, 16), (24, 8), (12, 4), (6, 2), (3, 1), (256, 32)])
def test_group_norm_group_rule(channels, groups):
    assert group_norm_groups(channels) == groups


def test_groupnorm_by_name_follows_the_rule_for_any_width():
    norm = get_norm_act('groupnorm', 'relu')
    assert norm(48).num_groups == 16
    assert norm(64).num_groups == 32
    assert norm(6, apply_act=False).num_groups == 2
    assert isinstance(norm(64).act, nn.ReLU) and isinstance(norm(64, apply_act=False).act, nn.Identity)


def test_groupnorm_explicit_groups_that_do_not_divide():
    with pytest.raises(ValueError, match=r'num_groups=5 does not divide num_channels=64.*here 32'):
        GroupNormRuleAct(64, num_groups=5)


def test_unknown_norm_layer():
    with pytest.raises(ValueError, match="unknown norm_layer 'fancynorm'"):
        get_norm_act('fancynorm', 'relu')


# ---- 1x1 conv as a GEMM ---------------------------------------------------------------------------------------

def _pointwise_and_conv(in_chs=24, out_chs=40, bias=False):
    conv = nn.Conv2d(in_chs, out_chs, 1, bias=bias)
    pointwise = PointwiseConv2d(in_chs, out_chs, bias=bias)
    pointwise.load_state_dict(conv.state_dict())  # same keys and shapes
    return pointwise, conv


@pytest.mark.parametrize('bias', [False, True])
@pytest.mark.parametrize('layout', ['channels_last', 'nchw', 'channel_slice'])
def test_pointwise_conv_computes_the_conv_and_keeps_the_layout(layout, bias):
    pointwise, conv = _pointwise_and_conv(bias=bias)
    x = torch.randn(3, 24 if layout != 'channel_slice' else 30, 7, 9, dtype=torch.float64)
    if layout == 'channels_last':
        x = x.to(memory_format=torch.channels_last)
    elif layout == 'channel_slice':  # neither NCHW- nor NHWC-contiguous: falls back to the conv
        x = x.to(memory_format=torch.channels_last)[:, 3:27]
    pointwise, conv = pointwise.double(), conv.double()
    y = pointwise(x)
    torch.testing.assert_close(y, conv(x), rtol=1e-12, atol=1e-12)
    if layout != 'channel_slice':
        assert y.is_contiguous(memory_format=torch.channels_last if layout == 'channels_last' else
                               torch.contiguous_format)


def test_pointwise_conv_uses_the_gemm_only_for_channels_last_on_the_cpu(monkeypatch):
    import timm_groupoct.layers.pointwise as pointwise
    calls = []
    mm = torch.mm
    monkeypatch.setattr(pointwise.torch, 'mm', lambda *a: calls.append(a[0].device.type) or mm(*a))
    pointwise_layer, _ = _pointwise_and_conv()
    x = torch.randn(1, 24, 4, 4)
    pointwise_layer(x)                                               # NCHW: conv
    pointwise_layer(x.to(memory_format=torch.channels_last))         # channels_last on the CPU: GEMM
    out = pointwise_layer.to('meta')(x.to('meta', memory_format=torch.channels_last))  # another device: conv
    assert calls == ['cpu'] and out.shape == (1, 40, 4, 4)


def test_pointwise_conv_gradients_match_the_conv():
    pointwise, conv = _pointwise_and_conv()
    x = torch.randn(2, 24, 5, 5).to(memory_format=torch.channels_last)
    x1, x2 = x.clone().requires_grad_(), x.clone().requires_grad_()
    (pointwise(x1) ** 2).sum().backward()
    (conv(x2) ** 2).sum().backward()
    torch.testing.assert_close(x1.grad, x2.grad)
    torch.testing.assert_close(pointwise.weight.grad, conv.weight.grad)


def test_the_conv_factory_builds_plain_convs():
    conv = get_conv_norm_layers('batchnorm').conv
    assert [type(conv(8, 16, *a, **k)) for a, k in [((1,), {}), ((3,), {}), ((1,), dict(stride=2)),
                                                    ((1,), dict(groups=2))]] == [nn.Conv2d] * 4
    assert type(get_conv_norm_layers('gnws').conv(8, 16, 1)).__name__ == 'StdConv2d'


def test_use_pointwise_gemm_swaps_only_plain_1x1_convs():
    model = nn.Sequential(nn.Conv2d(8, 16, 1), nn.Conv2d(16, 16, 1, stride=2), nn.Conv2d(16, 16, 1, groups=2),
                          nn.Conv2d(16, 16, 3, padding=1), nn.Sequential(nn.Conv2d(16, 4, 1, bias=False)))
    weight = model[0].weight
    use_pointwise_gemm(model)
    assert [type(m).__name__ for m in (model[0], model[1], model[2], model[3], model[4][0])] == [
        'PointwiseConv2d', 'Conv2d', 'Conv2d', 'Conv2d', 'PointwiseConv2d']
    assert model[0].weight is weight and model[4][0].bias is None


@pytest.mark.parametrize('name', ['oct_resnet26', 'oct_resnext50_32x4d', 'groupnet_small', 'resnext29_8x64d'])
def test_prepared_channels_last_models_compute_what_the_plain_models_compute_at_odd_sizes(name):
    model = randomise_norm_stats(timm.create_model(name, num_classes=7)).double()
    prepared = prepare_for_inference(model)
    assert any(isinstance(m, PointwiseConv2d) for m in prepared.modules())
    assert not any(isinstance(m, PointwiseConv2d) for m in model.modules())
    x = torch.randn(2, 3, 33, 33, dtype=torch.float64)
    with torch.no_grad():
        expected = model(x)
        channels_last = prepared.to(memory_format=torch.channels_last)(x)  # 1x1 convs now run as GEMMs
    torch.testing.assert_close(channels_last, expected, rtol=1e-10, atol=1e-10)


def test_batch_norm_factory_builds_timms_layer():
    assert type(get_norm_act('batchnorm', 'relu')(4)) is BatchNormAct2d
    assert type(get_norm_act(nn.BatchNorm2d, 'relu')(4)) is BatchNormAct2d
    assert type(get_norm_act('layernorm2d', 'relu')(4)).__name__ == 'LayerNormAct2d'


@pytest.mark.parametrize('name', ['oct_resnet26', 'oct_resnext50_32x4d', 'octnet_mini', 'groupnet_small',
                                  'resnext29_8x64d'])
def test_models_compute_the_same_with_autograd_off_and_leave_their_input_alone(name):
    torch.manual_seed(0)
    model = randomise_norm_stats(timm.create_model(name, num_classes=7))
    x = torch.randn(2, 3, 33, 33)
    x_copy = x.clone()
    expected = model(x)
    for layout in (torch.contiguous_format, torch.channels_last):
        model = model.to(memory_format=layout)
        with torch.inference_mode():
            torch.testing.assert_close(model(x), expected, rtol=1e-4, atol=1e-4)
            torch.testing.assert_close(model.forward_intermediates(x)[1][-1],
                                       model.forward_intermediates(x.clone())[1][-1], rtol=0, atol=0)
    assert torch.equal(x, x_copy)


# ---- batch norm folding (timm's reparameterize_model) -----------------------------------------------------------

def test_fold_batchnorm_equals_the_eval_norm_of_the_summed_convs():
    torch.manual_seed(0)
    gemm, conv = PointwiseConv2d(6, 10), nn.Conv2d(6, 10, 3, padding=1, bias=True)
    norm = randomise_norm_stats(get_norm_act('batchnorm', 'relu')(10))
    gemm, conv, norm = gemm.double(), conv.double(), norm.double()
    x = torch.randn(2, 6, 5, 7, dtype=torch.float64).to(memory_format=torch.channels_last)
    with torch.no_grad():
        expected = norm(gemm(x) + conv(x))
        conv_bias = conv.bias.clone()
        rest = fold_batchnorm(norm, [gemm, conv])
        got = rest(gemm(x) + conv(x))
    assert type(rest) is nn.ReLU and rest is norm.act
    torch.testing.assert_close(got, expected, rtol=1e-12, atol=1e-12)
    # the shift becomes the first conv's bias; a conv's own bias is scaled with its weight
    scale = norm.weight / (norm.running_var + norm.eps).sqrt()
    torch.testing.assert_close(conv.bias, conv_bias * scale, rtol=1e-12, atol=1e-12)
    assert gemm.bias.shape == (10,) and gemm.bias.requires_grad


def test_fold_batchnorm_without_activation_or_affine_leaves_identity():
    conv = nn.Conv2d(4, 8, 1, bias=False).double()
    norm = randomise_norm_stats(nn.BatchNorm2d(8, affine=False)).double()
    x = torch.randn(1, 4, 3, 3, dtype=torch.float64)
    with torch.no_grad():
        expected = norm(conv(x))
        rest = fold_batchnorm(norm, [conv])
        torch.testing.assert_close(rest(conv(x)), expected, rtol=1e-12, atol=1e-12)
    assert type(rest) is nn.Identity


@pytest.mark.parametrize('norm', [
    GroupNormRuleAct(8), nn.BatchNorm2d(8, track_running_stats=False), get_norm_act('layernorm2d', 'relu')(8),
], ids=['groupnorm', 'batchnorm_without_running_stats', 'layernorm2d'])
def test_fold_batchnorm_leaves_other_norms_and_their_convs_alone(norm):
    conv = nn.Conv2d(4, 8, 1, bias=False)
    weight = conv.weight.detach().clone()
    assert fold_batchnorm(norm, [conv]) is norm
    assert conv.bias is None and torch.equal(conv.weight, weight)


def test_fold_batchnorm_needs_a_conv():
    with pytest.raises(ValueError, match='needs at least one conv'):
        fold_batchnorm(nn.BatchNorm2d(8), [])


@pytest.mark.parametrize('keys', [('conv', 'bn'), ('0', '1')])
def test_conv_norm_sequential_reparameterize_keeps_its_keys(keys):
    layers = get_conv_norm_layers('batchnorm', 'relu')
    block = ConvNormSequential(OrderedDict(zip(keys, (layers.conv(4, 8, 3), layers.norm_act(8)))))
    randomise_norm_stats(block).double()
    x = torch.randn(2, 4, 6, 6, dtype=torch.float64)
    with torch.no_grad():
        expected = block(x)
        block.reparameterize()
        torch.testing.assert_close(block(x), expected, rtol=1e-12, atol=1e-12)
    assert list(block._modules) == list(keys) and type(block[1]) is nn.ReLU
    assert sorted(block.state_dict()) == [f'{keys[0]}.bias', f'{keys[0]}.weight']


@pytest.mark.parametrize('name, kwargs', [
    ('oct_resnet26', {}), ('oct_resnext50_32x4d', {}), ('octnet_mini', {}), ('groupnet_small', {}),
    ('resnext29_8x64d', {}), ('resnext50_32x4d_gn', dict(norm_layer='batchnorm')),
])
def test_reparameterize_model_folds_every_batch_norm(name, kwargs):
    torch.manual_seed(0)
    model = randomise_norm_stats(timm.create_model(name, num_classes=7, **kwargs)).double()
    n_bn = sum(isinstance(m, nn.BatchNorm2d) for m in model.modules())
    bn_channels = sum(m.num_features for m in model.modules() if isinstance(m, nn.BatchNorm2d))
    folded = reparameterize_model(model)  # a copy
    assert n_bn > 0 and not any(isinstance(m, nn.BatchNorm2d) for m in folded.modules())
    # each norm's weight and bias became one bias per channel
    assert n_params(folded) == n_params(model) - bn_channels
    x = torch.randn(2, 3, 33, 33, dtype=torch.float64)
    with torch.no_grad():
        expected = model(x)
        torch.testing.assert_close(folded(x), expected, rtol=1e-10, atol=1e-10)
        fast = folded.float().to(memory_format=torch.channels_last)  # GEMMs with bias (addmm)
        torch.testing.assert_close(fast(x.float()), expected.float(), rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize('name', ['resnext50_32x4d_gn', 'octnet_mini_gn'])
def test_reparameterize_model_leaves_group_norm_models_unchanged(name):
    model = randomise_norm_stats(timm.create_model(name)).double()
    folded = reparameterize_model(model)
    norms = [m for m in folded.modules() if isinstance(m, nn.GroupNorm)]
    assert norms and len(norms) == sum(isinstance(m, nn.GroupNorm) for m in model.modules())
    assert folded.state_dict().keys() == model.state_dict().keys()
    assert all(torch.equal(a, b) for a, b in zip(folded.state_dict().values(), model.state_dict().values()))
