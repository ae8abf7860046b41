"""GroupNorm as a first-class norm choice (seed 003): the group rule, batch independence, GN(1) = LayerNorm,
GN(C) = InstanceNorm, weight standardization in every family, a GN backbone under an FPN, and the experiment."""
import csv
import functools

import pytest
import timm
import torch
import torch.nn as nn
import torch.nn.functional as F
from timm.layers import StdConv2d

import timm_groupoct  # noqa: F401
from timm_groupoct.cli import main
from timm_groupoct.layers import GroupNormRuleAct, get_norm_act


def _per_sample_consistency(model: nn.Module, train: bool) -> float:
    """Max difference between a sample's output alone and inside a batch of 8."""
    model.train(train)
    batch = torch.randn(8, 3, 32, 32)
    with torch.no_grad():
        alone = model(batch[:1])
        together = model(batch)[:1]
    return (alone - together).abs().max().item()


def test_bn_output_depends_on_the_batch_in_training():
    model = timm.create_model('groupnet_small', num_classes=10)
    assert _per_sample_consistency(model, train=True) > 1e-3   # batch statistics: the other samples matter
    assert _per_sample_consistency(model, train=False) < 1e-5  # running statistics: they do not


def test_group_norm_1_is_layer_norm_over_chw():
    x = torch.randn(4, 12, 5, 5)
    gn = GroupNormRuleAct(12, num_groups=1, apply_act=False)
    torch.testing.assert_close(gn(x), F.layer_norm(x, x.shape[1:], eps=gn.eps), rtol=1e-5, atol=1e-5)


def test_group_norm_c_is_instance_norm():
    x = torch.randn(4, 12, 5, 5)
    gn = GroupNormRuleAct(12, num_groups=12, apply_act=False)
    torch.testing.assert_close(gn(x), F.instance_norm(x, eps=gn.eps), rtol=1e-5, atol=1e-5)


def test_group_norm_normalises_each_sample_and_group():
    x = torch.randn(3, 64, 6, 6) * 5 + 3
    y = GroupNormRuleAct(64, apply_act=False)(x).view(3, 32, -1)
    torch.testing.assert_close(y.mean(-1), torch.zeros(3, 32), atol=1e-5, rtol=0)
    torch.testing.assert_close(y.std(-1, unbiased=False), torch.ones(3, 32), atol=1e-3, rtol=0)


def test_explicit_group_count_through_a_partial():
    norm = get_norm_act(functools.partial(nn.GroupNorm, num_groups=8), 'relu')
    assert norm(64).num_groups == 8
    with pytest.raises(ValueError, match='num_groups=8 does not divide num_channels=12'):
        norm(12)


@pytest.mark.parametrize('name', ['groupnet_small', 'resnext_simple11_4g', 'octnet_mini', 'resnext29_8x64d'])
def test_gn_and_weight_standardization_in_every_family(name):
    model = timm.create_model(name, norm_layer='gnws', num_classes=10).eval()
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
    assert convs and all(isinstance(m, StdConv2d) for m in convs)
    norms = [m for m in model.modules() if isinstance(m, nn.GroupNorm)]
    assert norms and not any(isinstance(m, nn.BatchNorm2d) for m in model.modules())
    assert model(torch.randn(2, 3, 32, 32)).shape == (2, 10)


def test_weight_standardized_conv_is_invariant_to_weight_scale():
    model = timm.create_model('groupnet_small', norm_layer='gnws', num_classes=10).eval()
    x = torch.randn(1, 3, 32, 32)
    ref = model(x)
    with torch.no_grad():
        model.stages[1][0].conv2.weight.mul_(7.).add_(0.3)  # WS removes the weights' mean and scale
    torch.testing.assert_close(model(x), ref, rtol=1e-3, atol=1e-4)


def test_gn_backbone_feeds_an_fpn_and_trains_at_batch_1():
    from torchvision.ops import FeaturePyramidNetwork
    backbone = timm.create_model('resnext50_32x4d_gn', features_only=True, out_indices=(2, 3, 4))
    fpn = FeaturePyramidNetwork(backbone.feature_info.channels(), out_channels=64)
    head = nn.Conv2d(64, 3, 1)  # a per-pixel class score on the finest level, as a segmentation head would
    params = [*backbone.parameters(), *fpn.parameters(), *head.parameters()]
    optimizer = torch.optim.SGD(params, lr=0.01)
    x, target = torch.randn(1, 3, 96, 96), torch.randint(0, 3, (1, 12, 12))
    before = backbone.model.stem[0].conv.weight.clone()
    feats = fpn({str(i): f for i, f in enumerate(backbone(x))})
    assert [tuple(f.shape) for f in feats.values()] == [(1, 64, 12, 12), (1, 64, 6, 6), (1, 64, 3, 3)]
    loss = F.cross_entropy(head(feats['0']), target)
    loss.backward()
    optimizer.step()
    assert torch.isfinite(loss)
    assert not torch.equal(backbone.model.stem[0].conv.weight, before)


def test_bn_vs_gn_experiment(tmp_path, capsys):
    out = tmp_path / 'exp'
    assert main(['experiment', 'bn-vs-gn', '--epochs', '2', '--batch-sizes', '4', '16', '--img-size', '8',
                 '--max-train-samples', '96', '--output', str(out)]) == 0
    printed = capsys.readouterr().out
    assert '| norm | batch size | final train loss | val top-1 (%) | images/s |' in printed
    assert sorted(p.name for p in out.iterdir()) == ['curves.png', 'results.csv', 'results.md']
    rows = list(csv.DictReader(open(out / 'results.csv')))
    assert [(r['norm'], r['batch_size'], r['epoch']) for r in rows] == [
        (n, bs, e) for bs in ('4', '16') for n in ('batchnorm', 'groupnorm') for e in ('1', '2')]
    assert all(0. <= float(r['val_top1']) <= 100. and float(r['train_loss']) > 0 for r in rows)
    assert (out / 'curves.png').read_bytes()[:8] == b'\x89PNG\r\n\x1a\n'


def test_bn_vs_gn_is_reproducible(tmp_path, capsys):
    args = ['experiment', 'bn-vs-gn', '--epochs', '1', '--batch-sizes', '8', '--img-size', '8',
            '--max-train-samples', '64']
    main(args + ['--output', str(tmp_path / 'a')])
    main(args + ['--output', str(tmp_path / 'b')])
    losses = [[r['train_loss'] for r in csv.DictReader(open(tmp_path / d / 'results.csv'))] for d in 'ab']
    assert losses[0] == losses[1]


@pytest.mark.parametrize('args, message', [
    (['--batch-sizes', '1', '4'], 'batch sizes must be at least 2'),
    (['--epochs', '0'], '--epochs must be at least 1'),
    (['--model', 'groupnet_smal'], "unknown model 'groupnet_smal'"),
    (['--img-size', '4'], "img_size must be at least the digits' native 8 px, got 4"),
])
def test_bn_vs_gn_errors(tmp_path, capsys, args, message):
    assert main(['experiment', 'bn-vs-gn', '--output', str(tmp_path / 'x')] + args) == 2
    assert message in capsys.readouterr().err
