"""ResNeXt family: paper/timm parameter counts, and timm's published weights through the Hub's code path."""
import pytest
import timm
import torch
import torch.nn as nn

import timm_groupoct  # noqa: F401
from timm_groupoct.layers import GroupedResidualBlock
from timm_groupoct.models.resnext import checkpoint_filter_fn

from helpers import randomise_norm_stats


def n_params(m):
    return sum(p.numel() for p in m.parameters())


@pytest.mark.parametrize('name, params', [
    ('resnext29_8x64d', 34_426_698),    # paper: 34.4M
    ('resnext29_16x64d', 68_155_210),   # paper: 68.1M
])
def test_cifar_resnext29(name, params):
    model = timm.create_model(name).eval()
    assert model.num_classes == 10 and n_params(model) == params
    feats = model.forward_intermediates(torch.randn(1, 3, 32, 32), intermediates_only=True)
    assert [tuple(f.shape[1:]) for f in feats] == [(64, 32, 32), (256, 32, 32), (512, 16, 16), (1024, 8, 8)]
    widths = [m.conv2.out_channels for m in model.stages.modules() if hasattr(m, 'conv3')]
    groups = int(name.split('_')[1].split('x')[0])
    assert widths == [groups * 64] * 3 + [groups * 128] * 3 + [groups * 256] * 3


@pytest.mark.parametrize('ours, theirs', [
    ('resnext50_32x4d_gn', 'resnext50_32x4d'),
    ('resnext101_32x8d_gn', 'resnext101_32x8d'),
    ('resnext50_32x4d_gnws', 'resnext50_32x4d'),
    ('resnext50_1x64d_gn', 'resnet50_gn'),
])
def test_imagenet_parameter_counts_match_timm(ours, theirs):
    assert n_params(timm.create_model(ours)) == n_params(timm.create_model(theirs))


def test_norm_choices():
    gn = timm.create_model('resnext50_32x4d_gn')
    gnws = timm.create_model('resnext50_32x4d_gnws')
    assert all(m.num_groups == 32 for m in gn.modules() if isinstance(m, nn.GroupNorm))
    assert not any(isinstance(m, nn.BatchNorm2d) for m in gn.modules())
    convs = [type(m).__name__ for m in gnws.modules() if isinstance(m, nn.Conv2d)]
    assert set(convs) == {'StdConv2d'} and len(convs) == 53
    assert {type(m) for m in gn.modules() if isinstance(m, nn.Conv2d)} == {nn.Conv2d}  # the plain graph


def test_simple_block_model():
    model = timm.create_model('resnext_simple11_4g').eval()
    blocks = [m for m in model.modules() if isinstance(m, GroupedResidualBlock)]
    assert len(blocks) == 9 and all(b.conv1.groups == 4 for b in blocks)
    assert n_params(model) == 537_290
    assert model(torch.randn(2, 3, 32, 32)).shape == (2, 10)


def test_simple_block_is_seed_001_step_3():
    blk = GroupedResidualBlock(64, 128, stride=2, groups=4).eval()
    # one grouped 3x3 (64*128/4*9), a 1x1 projection (64*128), two norms
    assert n_params(blk) == 64 * 32 * 9 + 64 * 128 + 2 * 128 * 2
    x = torch.randn(2, 64, 15, 15)
    expected = blk.bn1(blk.conv1(x)) + blk.downsample(x)  # act before the add, none after (seed 001)
    torch.testing.assert_close(blk(x), expected)
    assert blk(x).shape == (2, 128, 8, 8)


def test_simple_block_groups_must_divide_both_sides():
    with pytest.raises(ValueError, match=r'3x3 grouped conv 64 -> 96; groups must divide both, so their gcd\): '
                                         r'groups=64 does not divide its 32 channels'):
        GroupedResidualBlock(64, 96, groups=64)


def test_checkpoint_filter_maps_timm_keys():
    timm_keys = timm.create_model('resnet50_gn').state_dict()
    mapped = checkpoint_filter_fn(timm_keys, None)
    ours = timm.create_model('resnext50_1x64d_gn').state_dict()
    assert set(mapped) == set(ours)
    assert 'stem.0.conv.weight' in mapped and 'stages.3.2.conv3.weight' in mapped
    assert checkpoint_filter_fn(ours, None).keys() == ours.keys()  # our own layout passes unchanged


def _assert_same_function(ours, theirs, size=64, in_chans=3):
    x = torch.randn(2, in_chans, size, size)
    with torch.no_grad():
        torch.testing.assert_close(ours(x), theirs(x), rtol=1e-5, atol=1e-5)


def test_resnet50_gn_weights_from_the_hub(hub_cache):
    timm_model = randomise_norm_stats(timm.create_model('resnet50_gn'))
    hub_cache.add_state_dict('timm/resnet50_gn.a1h_in1k', timm_model.state_dict())

    ours = timm.create_model('resnext50_1x64d_gn.a1h_in1k', pretrained=True).eval()
    _assert_same_function(ours, timm_model)
    assert ours.pretrained_cfg['hf_hub_id'] == 'timm/resnet50_gn.a1h_in1k'

    # fine-tuning loads: a new 10-class head, a grey-scale stem summed from the RGB weights
    ten = timm.create_model('resnext50_1x64d_gn', pretrained=True, num_classes=10)
    assert ten.fc.out_features == 10
    torch.testing.assert_close(ten.stages[3][2].conv3.weight, timm_model.layer4[2].conv3.weight)
    grey = timm.create_model('resnext50_1x64d_gn', pretrained=True, in_chans=1)
    torch.testing.assert_close(grey.stem[0].conv.weight, timm_model.conv1.weight.sum(dim=1, keepdim=True))


@pytest.mark.parametrize('ours, theirs, repo', [
    ('resnext50_32x4d_gn', 'resnext50_32x4d', 'timm/resnext50_32x4d.a1h_in1k'),
    pytest.param('resnext101_32x8d_gn', 'resnext101_32x8d', 'timm/resnext101_32x8d.tv2_in1k', marks=pytest.mark.slow),
])
def test_batchnorm_resnext_reproduces_timm_with_its_weights(hub_cache, ours, theirs, repo):
    timm_model = randomise_norm_stats(timm.create_model(theirs))
    hub_cache.add_state_dict(repo, timm_model.state_dict())
    model = timm.create_model(ours, norm_layer='batchnorm', pretrained=True,
                              pretrained_cfg_overlay=dict(hf_hub_id=repo)).eval()
    _assert_same_function(model, timm_model)


def test_features_only_backbone_from_pretrained(hub_cache):
    timm_model = randomise_norm_stats(timm.create_model('resnet50_gn'))
    hub_cache.add_state_dict('timm/resnet50_gn.a1h_in1k', timm_model.state_dict())
    backbone = timm.create_model('resnext50_1x64d_gn', pretrained=True, features_only=True, out_indices=(2, 3, 4))
    assert backbone.feature_info.channels() == [512, 1024, 2048]
    assert backbone.feature_info.reduction() == [8, 16, 32]
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        feats = backbone(x)
        ref = timm_model.forward_intermediates(x, indices=[2, 3, 4], intermediates_only=True)
    for a, b in zip(feats, ref):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)


def test_pretrained_without_published_weights_is_an_error():
    with pytest.raises(RuntimeError, match=r"No pretrained weights are published for 'resnext50_32x4d_gn'.*"
                                           r"pretrained_cfg_overlay=dict\(hf_hub_id='ORG/REPO'\)"):
        timm.create_model('resnext50_32x4d_gn', pretrained=True)
    with pytest.raises(RuntimeError, match="No pretrained weights are published for 'groupnet_small'"):
        timm.create_model('groupnet_small', pretrained=True)


def test_shape_mismatch_names_the_source_and_first_keys(hub_cache):
    from timm_groupoct.models._weights import CheckpointError
    hub_cache.add_state_dict('test-org/wrong-shapes', timm.create_model('resnet50_gn').state_dict())
    with pytest.raises(CheckpointError) as e:
        timm.create_model('resnext50_32x4d_gn', pretrained=True,
                          pretrained_cfg_overlay=dict(hf_hub_id='test-org/wrong-shapes'))
    assert str(e.value).startswith(
        'checkpoint test-org/wrong-shapes does not fit GroupNet: 112 shape mismatches (first: stages.0.0.conv1.weight: '
        '(64, 64, 1, 1) in the file, (128, 64, 1, 1) in the model, ')


