"""The timm model contract, for every model `timm_groupoct.list_models()` registers: forward and backward, the
default cfg and the classifier API, features and intermediates, TorchScript and fx, channels_last, dropout, and
batch independence for GroupNorm models. Inputs are small (as timm's tests/test_models.py keeps them under size
budgets); the families' own numbers (parameter counts, reference equivalence) are in their test files."""
import pytest
import timm
import torch
import torch.nn as nn
from timm.models import group_parameters

import timm_groupoct
from helpers import randomise_norm_stats

MODELS = timm_groupoct.list_models()
# the largest input side a contract check runs at, and the models the costly checks (TorchScript, fx) leave to
# their families' tests and to timm's own test battery
MAX_SIZE = 64
SCRIPT_SKIP = {'resnext101_32x8d_gn', 'oct_resnet101', 'oct_resnet50', 'oct_resnext50_32x4d', 'resnext29_16x64d'}


def _size(model):
    return min(MAX_SIZE, model.pretrained_cfg['input_size'][-1])


def _assert_close(got, expected):
    """Equal up to float rounding at the output's scale (random deep networks reach large activations)."""
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-4 * max(1., expected.abs().max().item()))


def _input(model, batch=2, size=None):
    size = size or _size(model)
    return torch.randn(batch, model.pretrained_cfg['input_size'][0], size, size)


@pytest.fixture(scope='module')
def built():
    """One model per name, built once: random weights, non-trivial norm statistics, eval mode."""
    cache = {}

    def get(name):
        if name not in cache:
            torch.manual_seed(0)
            cache[name] = randomise_norm_stats(timm.create_model(name))
        return cache[name]
    return get


@pytest.mark.parametrize('name', MODELS)
def test_forward_and_backward_every_parameter_gets_a_gradient(name):
    torch.manual_seed(0)
    drop = {} if name.startswith('octnet_mini') else dict(drop_path_rate=0.1)  # (its conv blocks have no residual)
    model = timm.create_model(name, num_classes=7, **drop).train()
    out = model(_input(model))
    assert out.shape == (2, 7) and torch.isfinite(out).all()
    out.square().mean().backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None or not torch.isfinite(p.grad).all()]
    assert not missing, missing[:5]


@pytest.mark.parametrize('name', MODELS)
def test_default_cfg_and_classifier(name, built):
    model = built(name)
    cfg = model.pretrained_cfg
    required = {'input_size', 'pool_size', 'crop_pct', 'interpolation', 'mean', 'std', 'first_conv', 'classifier',
                'num_classes', 'license'}
    assert required <= set(cfg), required - set(cfg)
    assert model.get_submodule(cfg['first_conv']).weight.shape[1] == cfg['input_size'][0]
    assert model.get_classifier() is model.get_submodule(cfg['classifier'])
    assert model.get_classifier().out_features == cfg['num_classes'] == model.num_classes
    with torch.no_grad():
        features = model.forward_features(torch.randn(1, *cfg['input_size']))
        assert features.shape[1:] == (model.num_features, *cfg['pool_size'])
        pre = model.forward_head(features, pre_logits=True)
        assert pre.shape == (1, model.num_features) == (1, model.head_hidden_size)
        torch.testing.assert_close(model.forward_head(features), model.fc(pre))
    reset = timm.create_model(name).eval()
    x = _input(reset, batch=1)
    reset.reset_classifier(5)
    assert reset(x).shape == (1, 5) and reset.num_classes == 5
    reset.reset_classifier(0)
    assert reset(x).shape == (1, reset.num_features) and isinstance(reset.get_classifier(), nn.Identity)
    reset.reset_classifier(0, '')
    assert reset(x).shape[:2] == (1, reset.num_features) and reset(x).ndim == 4


@pytest.mark.parametrize('name', MODELS)
def test_group_matcher_groups_every_parameter_stem_first_head_last(name, built):
    model = built(name)
    groups = group_parameters(model, model.group_matcher(coarse=True))
    names = [n for n, _ in model.named_parameters()]
    assert sorted(n for group in groups.values() for n in group) == sorted(names)
    assert groups[min(groups)] == [n for n in names if n.startswith('stem')]
    assert set(groups[max(groups)]) == {n for n in names if n.startswith('fc.')}


@pytest.mark.parametrize('name', MODELS)
def test_features_only_and_forward_intermediates_agree_with_feature_info(name, built):
    model = built(name)
    x = _input(model)
    features = timm.create_model(name, features_only=True).eval()
    features.model.load_state_dict({k: v for k, v in model.state_dict().items() if not k.startswith('fc.')})
    info = features.feature_info
    assert [f['module'] for f in model.feature_info] == info.module_name()
    with torch.no_grad():
        maps = features(x)
        final, intermediates = model.forward_intermediates(x)
        torch.testing.assert_close(final, model.forward_features(x))
        last = model.forward_intermediates(x, indices=1, stop_early=True, intermediates_only=True)
    assert len(maps) == len(intermediates) == len(info)
    for f, inter, chs, r in zip(maps, intermediates, info.channels(), info.reduction()):
        assert f.shape == (2, chs, -(-x.shape[-2] // r), -(-x.shape[-1] // r))
        torch.testing.assert_close(f, inter)
    torch.testing.assert_close(last[0], intermediates[-1])


@pytest.mark.parametrize('name', MODELS)
def test_grad_checkpointing_keeps_outputs_and_gradients(name):
    torch.manual_seed(0)
    model = timm.create_model(name, num_classes=3).eval()  # eval: the same batch-norm statistics in both passes
    x = _input(model, size=min(_size(model), 32))
    out = model(x)
    out.sum().backward()
    grads = [p.grad.clone() for p in model.parameters()]
    model.zero_grad()
    model.set_grad_checkpointing(True)
    again = model(x)
    again.sum().backward()
    torch.testing.assert_close(again, out, rtol=1e-4, atol=1e-5)
    for a, b in zip(grads, (p.grad for p in model.parameters())):
        torch.testing.assert_close(b, a, rtol=1e-3, atol=1e-5)


@pytest.mark.parametrize('name', [n for n in MODELS if n not in SCRIPT_SKIP])
def test_torchscript_computes_what_eager_computes(name, built):
    model = built(name)
    x = _input(model, batch=1, size=min(_size(model), 32))
    scripted = torch.jit.script(model)
    with torch.no_grad():
        torch.testing.assert_close(scripted(x), model(x))
        torch.testing.assert_close(scripted.forward_features(x), model.forward_features(x))


@pytest.mark.parametrize('name', [n for n in MODELS if n not in SCRIPT_SKIP])
def test_fx_feature_extraction_returns_the_intermediates(name, built):
    from torchvision.models.feature_extraction import create_feature_extractor
    model = built(name)
    modules = [f['module'] for f in model.feature_info]
    nodes = {m: m for m in modules} | {'fc': 'logits'}
    extractor = create_feature_extractor(model, return_nodes=nodes)
    x = _input(model, batch=1, size=min(_size(model), 32))
    with torch.no_grad():
        out = extractor(x)
        _, intermediates = model.forward_intermediates(x)
        torch.testing.assert_close(out['logits'], model(x))
    for i, module in enumerate(modules):
        if module in out:
            torch.testing.assert_close(out[module], intermediates[i])


@pytest.mark.parametrize('name', MODELS)
def test_channels_last_computes_what_nchw_computes(name, built):
    model = built(name)
    x = _input(model)
    with torch.no_grad():
        expected = model(x)
        model.to(memory_format=torch.channels_last)
        try:
            got = model(x.contiguous(memory_format=torch.channels_last))
        finally:
            model.to(memory_format=torch.contiguous_format)
    _assert_close(got, expected)


@pytest.mark.parametrize('name', MODELS)
def test_dropout_before_the_classifier_acts_in_training_only(name):
    torch.manual_seed(0)
    model = timm.create_model(name, num_classes=5, drop_rate=0.5).eval()
    x = _input(model, size=min(_size(model), 32))
    with torch.no_grad():
        torch.testing.assert_close(model(x), model(x))
        features = model.forward_features(x)
        expected = model.forward_head(features)
        model.train()  # the head alone: global pool, dropout, fc
        dropped = model.forward_head(features)
    assert not torch.allclose(dropped, expected)


GN_MODELS = [n for n in MODELS if 'groupnorm' in str(timm.create_model(n, device='meta').stem).lower()]


def test_the_group_norm_models_are_the_ones_expected():
    assert sorted(GN_MODELS) == ['groupnet_small_gn', 'octnet_mini_gn', 'resnext101_32x8d_gn', 'resnext50_1x64d_gn',
                                 'resnext50_32x4d_gn', 'resnext50_32x4d_gnws']


@pytest.mark.parametrize('name', GN_MODELS)
@pytest.mark.parametrize('train', [True, False])
def test_group_norm_models_give_each_sample_the_same_output_whatever_the_batch(name, train, built):
    model = built(name).train(train)
    x = _input(model, batch=3, size=min(_size(model), 32))
    try:
        with torch.no_grad():
            alone = model(x[:1])
            together = model(x)
    finally:
        model.eval()
    _assert_close(together[:1], alone)
