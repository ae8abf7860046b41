"""Octave convolution and the OctNet family: seed 004's numbers, the paper's stride, odd sizes, every alpha corner,
the reference's weights, and alpha = 0 as the vanilla network."""
import math
import re

import pytest
import timm
import torch
import torch.nn as nn
import torch.nn.functional as F
from timm.utils import reparameterize_model

import timm_groupoct  # noqa: F401
from timm_groupoct.cli import main
from timm_groupoct.layers import MergeBands, OctaveConv2d, OctaveConvNormAct, SplitBands, split_channels
from timm_groupoct.models.octnet import checkpoint_filter_fn

from helpers import randomise_norm_stats
from octave_reference import RefOctResNet, SeedOctNetMini

ALPHAS = [0., 0.25, 0.5, 0.75, 1.]


def n_params(m):
    return sum(p.numel() for p in m.parameters())


# ---- the layer -------------------------------------------------------------------------------------------------

@pytest.mark.parametrize('channels, alpha, expected', [(64, 0.5, (32, 32)), (64, 0.125, (56, 8)), (10, 0.25, (8, 2)),
                                                       (7, 0.5, (4, 3)), (16, 0., (16, 0)), (16, 1., (0, 16))])
def test_split_channels_like_the_reference(channels, alpha, expected):
    assert split_channels(channels, alpha) == expected


@pytest.mark.parametrize('alpha_in', ALPHAS)
@pytest.mark.parametrize('alpha_out', ALPHAS)
@pytest.mark.parametrize('stride', [1, 2])
@pytest.mark.parametrize('size', [32, 33, 7])
def test_octave_conv_shapes_every_corner(alpha_in, alpha_out, stride, size):
    conv = OctaveConv2d(16, 24, 3, alpha_in, alpha_out, stride=stride)
    x_h, x_l = SplitBands(alpha_in)(torch.randn(2, 16, size, size))
    y_h, y_l = conv((x_h, x_l))
    out = math.ceil(size / stride)
    assert y_h.shape == (2, 24 - int(alpha_out * 24), out, out)
    assert y_l.shape == (2, int(alpha_out * 24), math.ceil(out / 2), math.ceil(out / 2))
    present = {n for n in ('h2h', 'h2l', 'l2h', 'l2l') if getattr(conv, f'conv_{n}') is not None}
    expected = {p for p, (i, o) in {'h2h': ('h', 'h'), 'h2l': ('h', 'l'), 'l2h': ('l', 'h'), 'l2l': ('l', 'l')}.items()
                if (alpha_in < 1 if i == 'h' else alpha_in > 0) and (alpha_out < 1 if o == 'h' else alpha_out > 0)}
    assert present == expected


def test_octave_conv_stride_1_is_the_four_paths():
    conv = OctaveConv2d(16, 16, 3, 0.5, 0.5)
    x_h, x_l = torch.randn(2, 8, 10, 10), torch.randn(2, 8, 5, 5)
    y_h, y_l = conv((x_h, x_l))
    up = lambda t: F.interpolate(t, scale_factor=2, mode='nearest')
    torch.testing.assert_close(y_h, conv.conv_h2h(x_h) + up(conv.conv_l2h(x_l)))
    torch.testing.assert_close(y_l, conv.conv_l2l(x_l) + conv.conv_h2l(F.avg_pool2d(x_h, 2)))


def test_octave_conv_stride_2_pools_before_the_convs():
    conv = OctaveConv2d(16, 16, 3, 0.5, 0.5, stride=2)
    x_h, x_l = torch.randn(2, 8, 12, 12), torch.randn(2, 8, 6, 6)
    y_h, y_l = conv((x_h, x_l))
    pooled = F.avg_pool2d(x_h, 2)
    torch.testing.assert_close(y_h, conv.conv_h2h(pooled) + conv.conv_l2h(x_l))  # L->H: unpooled, no upsample
    torch.testing.assert_close(y_l, conv.conv_l2l(F.avg_pool2d(x_l, 2)) + conv.conv_h2l(F.avg_pool2d(pooled, 2)))


@pytest.mark.parametrize('alpha_in', ALPHAS)
@pytest.mark.parametrize('alpha_out', ALPHAS)
@pytest.mark.parametrize('stride', [1, 2])
def test_octave_conv_norm_act_reparameterize_folds_each_band(alpha_in, alpha_out, stride):
    layer = randomise_norm_stats(OctaveConvNormAct(16, 24, 3, alpha_in, alpha_out, stride)).double()
    x = SplitBands(alpha_in)(torch.randn(2, 16, 13, 13, dtype=torch.float64))
    with torch.no_grad():
        expected = layer(x)
        layer.reparameterize()
        got = layer(x)
    for band in (0, 1):
        torch.testing.assert_close(got[band], expected[band], rtol=1e-12, atol=1e-12)
    c = layer.conv
    # one bias per band, on the path that reads the low band when there is one
    biased = {n for n in ('h2h', 'h2l', 'l2h', 'l2l') if getattr(c, f'conv_{n}') is not None
              and getattr(c, f'conv_{n}').bias is not None}
    expected_biased = {'l2h' if c.conv_l2h is not None else 'h2h'} if c.out_h else set()
    expected_biased |= {'l2l' if c.conv_l2l is not None else 'h2l'} if c.out_l else set()
    assert biased == expected_biased
    assert [type(m) for m in (layer.bn_h, layer.bn_l) if m is not None] == [nn.ReLU] * (bool(c.out_h) + bool(c.out_l))


def test_odd_sizes_keep_the_bands_aligned():
    # L->H as an identity 1x1 conv and H->H as zero: y_h must be the low band resized, pixel i <- i // 2
    conv = OctaveConv2d(2, 2, 1, 0.5, 0.5)
    nn.init.zeros_(conv.conv_h2h.weight)
    nn.init.ones_(conv.conv_l2h.weight)
    x_l = torch.arange(9.).view(1, 1, 3, 3)
    y_h, _ = conv((torch.zeros(1, 1, 5, 5), x_l))
    rows = torch.tensor([0, 0, 1, 1, 2])
    torch.testing.assert_close(y_h[0, 0], x_l[0, 0][rows][:, rows])


def test_odd_size_pooling_averages_the_pixels_that_exist():
    x_h, x_l = SplitBands(0.5)(torch.arange(25.).view(1, 1, 5, 5).repeat(1, 2, 1, 1))
    assert x_l.shape == (1, 1, 3, 3)
    assert x_l[0, 0, 2, 2] == 24. and x_l[0, 0, 0, 0] == (0 + 1 + 5 + 6) / 4


def test_merge_bands():
    x_h, x_l = torch.randn(1, 3, 5, 5), torch.randn(1, 2, 3, 3)
    merged = MergeBands()((x_h, x_l))
    assert merged.shape == (1, 5, 5, 5)
    torch.testing.assert_close(merged[:, 3:, ::2, ::2], x_l)
    assert MergeBands()((x_h, x_l[:, :0])) is x_h


@pytest.mark.parametrize('kwargs, message', [
    (dict(stride=3), 'stride must be 1 or 2, got 3'),
    (dict(alpha_in=1.5), 'alpha must be in [0, 1], got 1.5'),
    (dict(stride=2, pool_stride=False), 'pool_stride=False (a plain strided conv) needs single-band input and output'),
    (dict(groups=3), 'OctaveConv2d H->L (8 -> 8 channels): groups=3 does not divide its 8 channels. Nearest valid '
                     'choices: groups=2 or groups=4. Change groups (or the widths / bottleneck_ratio that set the '
                     'channel count).'),
])
def test_octave_conv_errors(kwargs, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        OctaveConv2d(16, 16, 3, **{'alpha_in': 0.5, 'alpha_out': 0.5, **kwargs})


def test_grouped_octave_conv_follows_the_reference_groups():
    conv = OctaveConv2d(128, 128, 3, 0.5, 0.5, groups=32)
    assert (conv.conv_h2h.groups, conv.conv_l2l.groups, conv.conv_h2l.groups, conv.conv_l2h.groups) == (16, 16, 32, 32)


# ---- octnet_mini: seed 004 -----------------------------------------------------------------------------------

def test_octnet_mini_seed_numbers():
    assert n_params(timm.create_model('octnet_mini', num_classes=10)) == 224_842
    assert n_params(timm.create_model('octnet_mini')) == 352_552


def test_octnet_mini_seed_shapes():
    model = timm.create_model('octnet_mini', num_classes=10).eval()
    x = model.stem(torch.randn(2, 3, 32, 32))
    assert x.shape == (2, 64, 32, 32)
    bands = SplitBands(0.5)(x)
    assert [b.shape for b in bands] == [(2, 32, 32, 32), (2, 32, 16, 16)]
    for stage in model.stages:
        bands = stage(bands)
        assert [b.shape for b in bands] == [(2, 64, 32, 32), (2, 64, 16, 16)]
    assert MergeBands()(bands).shape == (2, 128, 32, 32)
    assert model(torch.randn(2, 3, 32, 32)).shape == (2, 10)


def test_octnet_mini_computes_what_seed_004_computes():
    seed = randomise_norm_stats(SeedOctNetMini())
    model = timm.create_model('octnet_mini', num_classes=10).eval()
    model.load_state_dict(seed.to_package_state_dict())
    x = torch.randn(2, 3, 32, 32)
    torch.testing.assert_close(model(x), seed(x), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize('alpha', ALPHAS)
@pytest.mark.parametrize('size', [32, 33, 17])
def test_octnet_mini_every_alpha_and_odd_sizes(alpha, size):
    # the seed crashes at alpha=1.0 and on odd sizes
    model = timm.create_model('octnet_mini', num_classes=10, alpha=alpha).eval()
    assert n_params(model) == 224_842  # the four paths partition the full conv's weights
    feats = model.forward_intermediates(torch.randn(2, 3, size, size), intermediates_only=True)
    assert [tuple(f.shape[1:]) for f in feats] == [(64, size, size), (128, size, size), (128, size, size)]


def test_octnet_mini_gn_normalises_each_band():
    model = timm.create_model('octnet_mini_gn', num_classes=10)
    block = model.stages[0][0]
    assert (block.bn_h.num_groups, block.bn_l.num_groups) == (32, 32)
    assert not any(isinstance(m, nn.BatchNorm2d) for m in model.modules())
    assert n_params(model) == 224_842


# ---- Oct-ResNet / Oct-ResNeXt ----------------------------------------------------------------------------------

@pytest.mark.parametrize('name, params, gflops', [
    ('oct_resnet26', 15_995_176, 2.960),
    ('oct_resnet50', 25_557_032, 4.734),      # = ResNet-50's parameters; 0.58x its 8.178 GFLOPs
    ('oct_resnet101', 44_549_160, 7.982),
    ('oct_resnext50_32x4d', 25_293_864, 4.890),
])
def test_oct_resnet_sizes(name, params, gflops):
    from timm_groupoct.summary import model_report
    report = model_report(timm.create_model(name), (3, 224, 224))
    assert report.total_params == params
    assert round(report.total_gflops, 3) == gflops


def test_oct_resnet50_reference_layout():
    model = timm.create_model('oct_resnet50')
    first, last_stage = model.stages[0][0], model.stages[3]
    assert (first.conv1.conv.in_l, first.conv1.conv.out_l) == (0, 32)       # first block: single-band input
    assert (last_stage[0].conv1.conv.in_l, last_stage[0].conv1.conv.out_l) == (512, 0)  # back to one band
    assert all(b.conv2.conv.conv_l2l is None and b.conv2.conv.in_l == 0 for b in last_stage)
    assert model.stages[1][0].conv2.conv.pool_stride


@pytest.mark.parametrize('ours, theirs', [('oct_resnet50', 'resnet50'), ('oct_resnext50_32x4d', 'resnext50_32x4d')])
def test_alpha_0_is_the_vanilla_network(ours, theirs):
    timm_model = randomise_norm_stats(timm.create_model(theirs))
    model = timm.create_model(ours, alpha=0.).eval()
    assert n_params(model) == n_params(timm_model)
    model.load_state_dict(checkpoint_filter_fn(timm_model.state_dict(), model))
    # float64: the two compute the same sums in different orders (GEMM vs conv), float32 rounding would differ
    x = torch.randn(2, 3, 64, 64, dtype=torch.float64)
    with torch.no_grad():
        torch.testing.assert_close(model.double()(x), timm_model.double()(x), rtol=1e-10, atol=1e-10)


def test_features_only_gives_merged_tensors_per_stage():
    model = timm.create_model('oct_resnet26', features_only=True).eval()
    assert model.feature_info.channels() == [64, 256, 512, 1024, 2048]
    assert model.feature_info.reduction() == [2, 4, 8, 16, 32]
    feats = model(torch.randn(1, 3, 96, 96))
    assert [tuple(f.shape[1:]) for f in feats] == [(64, 48, 48), (256, 24, 24), (512, 12, 12), (1024, 6, 6),
                                                   (2048, 3, 3)]


@pytest.mark.parametrize('size', [225, 200, 33])
def test_oct_resnet_runs_on_odd_sizes(size):
    model = timm.create_model('oct_resnet26', num_classes=5).eval()
    with torch.no_grad():
        assert model(torch.randn(1, 3, size, size)).shape == (1, 5)


def test_reparameterized_model_scripts_traces_and_gives_features():
    from torchvision.models.feature_extraction import create_feature_extractor
    model = randomise_norm_stats(timm.create_model('oct_resnet26', num_classes=5)).double()
    folded = reparameterize_model(model)
    assert not any(k.endswith('running_mean') for k in folded.state_dict())
    x = torch.randn(1, 3, 65, 65, dtype=torch.float64)
    with torch.no_grad():
        out = folded(x)
        torch.testing.assert_close(out, model(x), rtol=1e-10, atol=1e-10)
        torch.testing.assert_close(torch.jit.script(folded)(x), out)
        torch.testing.assert_close(create_feature_extractor(folded, {'fc': 'out'})(x)['out'], out)
        for a, b in zip(folded.forward_intermediates(x, intermediates_only=True),
                        model.forward_intermediates(x, intermediates_only=True)):
            torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-10)


def test_reparameterize_features_only_model_and_train_it_after():
    model = randomise_norm_stats(timm.create_model('oct_resnet26', features_only=True, out_indices=(1, 3))).double()
    folded = reparameterize_model(model)
    assert not any(isinstance(m, nn.BatchNorm2d) for m in folded.modules())
    x = torch.randn(1, 3, 64, 64, dtype=torch.float64)
    with torch.no_grad():
        for a, b in zip(folded(x), model(x)):
            torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-10)
    # what is left is an ordinary network: it trains, every parameter (the new biases too) gets a gradient
    sum(f.sum() for f in folded.train()(x)).backward()
    assert all(p.grad is not None for p in folded.parameters())


@pytest.mark.parametrize('kwargs, message', [
    (dict(stem_type='deep'), "stem_type must be one of double, single, resnet, got 'deep'"),
    (dict(stem_type='resnet', stem_stride=2), "stem_stride for stem_type='resnet' must be 4, got 2"),
    (dict(alpha=1.5), 'alpha must be a number in [0, 1], got 1.5'),
    (dict(block='basic'), "block must be 'conv' or 'bottleneck', got 'basic'"),
])
def test_octnet_configuration_errors(kwargs, message):
    from timm_groupoct.models.octnet import OctNet
    with pytest.raises(ValueError, match=re.escape(message)):
        OctNet(**kwargs)


def test_drop_path_needs_residual_blocks():
    with pytest.raises(ValueError, match="drop_path_rate needs residual blocks"):
        timm.create_model('octnet_mini', drop_path_rate=0.1)


# ---- the reference's weights: convert ----------------------------------------------------------------------------

def _reference_checkpoint(tmp_path, alpha=0.5):
    ref = randomise_norm_stats(RefOctResNet(layers=(2, 2, 2, 2), alpha=alpha, num_classes=7))
    # as the reference's training script saves it: DataParallel keys inside a training checkpoint
    state = {'epoch': 90, 'state_dict': {f'module.{k}': v for k, v in ref.state_dict().items()}}
    path = tmp_path / 'oct_resnet26.pth'
    torch.save(state, path)
    return ref, path


def test_convert_reference_checkpoint(tmp_path, capsys):
    ref, ckpt = _reference_checkpoint(tmp_path)
    out = tmp_path / 'oct_resnet26-in1k'
    assert main(['convert', 'oct_resnet26', str(ckpt), '--out', str(out)]) == 0
    printed = capsys.readouterr().out
    assert 'oct_resnet26, 13,960,519 parameters, 7 classes' in printed and 'verified' in printed
    assert sorted(p.name for p in out.iterdir()) == ['config.json', 'model.safetensors']
    model = timm.create_model(f'local-dir:{out}', pretrained=True).eval()
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(model(x), ref(x), rtol=1e-5, atol=1e-5)
    # fine-tuning start from the converted folder
    ten = timm.create_model(f'local-dir:{out}', pretrained=True, num_classes=10)
    assert ten.fc.out_features == 10


def test_convert_with_another_alpha(tmp_path, capsys):
    ref, ckpt = _reference_checkpoint(tmp_path, alpha=0.25)
    out = tmp_path / 'a025'
    assert main(['convert', 'oct_resnet26', str(ckpt), '--out', str(out), '--alpha', '0.25']) == 0
    model = timm.create_model(f'local-dir:{out}', pretrained=True).eval()
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(model(x), ref(x), rtol=1e-5, atol=1e-5)


def test_convert_errors(tmp_path, capsys):
    _, ckpt = _reference_checkpoint(tmp_path)
    assert main(['convert', 'oct_resnet50', str(ckpt), '--out', str(tmp_path / 'x')]) == 2
    err = capsys.readouterr().err
    assert f'checkpoint {ckpt} does not fit OctNet: ' in err and 'missing keys (first: stages.0.2.' in err
    assert not (tmp_path / 'x').exists()
    assert main(['convert', 'oct_resnet26', str(tmp_path / 'nope.pth'), '--out', str(tmp_path / 'y')]) == 2
    assert 'nope.pth does not exist' in capsys.readouterr().err
    broken = tmp_path / 'broken.pth'
    broken.write_bytes(ckpt.read_bytes()[:1000])
    assert main(['convert', 'oct_resnet26', str(broken), '--out', str(tmp_path / 'z')]) == 2
    assert f'cannot read checkpoint {broken}' in capsys.readouterr().err
