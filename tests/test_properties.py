"""Property-based checks of `timm.create_model` over every registered model: whatever the keyword arguments and
the input size, the outcome is a model whose outputs and features match its `feature_info`, or a ValueError /
TypeError raised by this package whose message names an argument that was given. Derandomized with a small,
fixed budget per model (`hypothesis.event` records what each example ended in: `--hypothesis-show-statistics`)."""
import functools
import inspect
import math
import re
import traceback
from pathlib import Path

import pytest
import timm
import torch
from hypothesis import HealthCheck, Phase, event, given, settings
from hypothesis import strategies as st

import timm_groupoct

EXAMPLES = 15  # per model
PACKAGE_DIR = str(Path(timm_groupoct.__file__).parent)
MODELS = timm_groupoct.list_models()
# models built with fewer blocks per stage in every example, to keep the budget (their stem and widths stay)
LARGE = {'groupnet_base', 'oct_resnet26', 'oct_resnet50', 'oct_resnet101', 'oct_resnext50_32x4d',
         'resnext29_8x64d', 'resnext29_16x64d', 'resnext50_1x64d_gn', 'resnext50_32x4d_gn', 'resnext50_32x4d_gnws',
         'resnext101_32x8d_gn'}

# per argument: (values the model should take, values it should refuse with a clear error)
COMMON = dict(
    in_chans=([1, 3, 4], [0, -1, 2.0]),
    num_classes=([0, 1, 10], [-1, 2.5, True]),
    drop_rate=([0., 0.3], [1.0, -0.1, '0.1']),
    drop_path_rate=([0., 0.2], [1.0, 1.5, True]),
    global_pool=(['avg', 'max', 'avgmax', 'catavgmax'], ['bogus', '']),
    output_stride=([None, 8, 16, 32], [12, 3]),
    stem_width=([8, 16, 32], [0, -4, 8.5]),
    stem_type=(['double', 'single', 'resnet'], ['deep']),
    stem_stride=([None, 1, 2, 4], [3, 0]),
    act_layer=(['relu', 'silu', 'gelu', None], ['nonsense']),
    norm_layer=(['batchnorm', 'groupnorm', 'gnws', 'evonorms0', 'layernorm2d'], ['bogus']),
    zero_init_last=([True, False], []),
)
FAMILY = {
    'groupnet': dict(
        groups=([1, 2, 4, 8], [0, -2]),
        bottleneck_ratio=([0.25, 0.5, 1.0], [0., -0.5]),
        base_width=([None, 4, 8, 64], [0]),
        block=(['bottleneck', 'basic'], ['dense']),
        adjust_groups=([True, False], []),
    ),
    'octnet': dict(
        groups=([1, 2, 4], [0, -1]),
        alpha=([0., 0.25, 0.5, 0.75], [-0.1, 1.5]),
        stem_alpha=([None, 0., 0.5, 1.0], [-0.1]),
        last_alpha=([None, 0., 0.5], [2.]),
        base_width=([4, 16, 64], [0]),
        block=(['conv', 'bottleneck'], ['dense']),
    ),
}
FAMILY['resnext'] = FAMILY['groupnet']


def _family(name):
    return timm.models.model_entrypoint(name).__module__.rsplit('.', 1)[-1]


@functools.lru_cache(maxsize=None)
def _meta_model(name):
    return timm.create_model(name, device='meta')


@st.composite
def architectures(draw, name):
    """Keyword arguments for `name`: each argument given or not with a value it should take, then, in half the
    examples, one argument set to a value it should refuse."""
    choices = dict(COMMON, **FAMILY[_family(name)])
    stages = len(_meta_model(name).stages)
    n = draw(st.sampled_from([stages, stages, 1, 2, 3, 4]))
    choices.update(
        depths=([tuple(draw(st.lists(st.integers(1, 2), min_size=n, max_size=n)))], [(1,) * (n - 1) + (0,)]),
        widths=([tuple(draw(st.lists(st.sampled_from([16, 32, 64]), min_size=n, max_size=n)))],
                [(16,) * (n - 1) + (0,)]),
        strides=([tuple(draw(st.lists(st.sampled_from([1, 2]), min_size=n, max_size=n)))], [(1,) * (n - 1) + (3,)]),
        features_only=([True], []),
    )
    kwargs = {k: draw(st.sampled_from(good)) for k, (good, _) in choices.items() if draw(st.integers(0, 3)) == 0}
    if name in LARGE and 'depths' not in kwargs:
        kwargs['depths'] = choices['depths'][0][0][:stages] + (1,) * (stages - n)
    if kwargs.get('features_only') and draw(st.booleans()):
        kwargs['out_indices'] = draw(st.one_of(st.integers(1, 3), st.lists(st.integers(-2, 2), min_size=1, max_size=3)
                                               .map(tuple)))
    if draw(st.booleans()):
        bad = {k: v for k, (_, v) in choices.items() if v}
        bad['out_indices'] = [0, 9, (0, 9), (), 1.5]
        key = draw(st.sampled_from(sorted(bad)))
        kwargs[key] = draw(st.sampled_from(bad[key]))
        if key == 'out_indices':
            kwargs['features_only'] = True
    return kwargs


def _raised_here_naming_an_argument(error, name):
    """A ValueError / TypeError raised in this package (not in torch or timm below it) whose message names one of
    the model's arguments (given or left at its default: `groups` that no longer divides a changed width)."""
    frames = traceback.extract_tb(error.__traceback__)
    arguments = set(inspect.signature(type(_meta_model(name)).__init__).parameters)
    arguments |= {'features_only', 'out_indices'}
    return (isinstance(error, (ValueError, TypeError)) and frames[-1].filename.startswith(PACKAGE_DIR)
            and any(re.search(rf'\b{a}\b', str(error)) for a in arguments))


def _check_model(model, kwargs, x):
    """Outputs, in eval and in train mode, finite and of the shapes `feature_info` gives."""
    h, w = x.shape[-2:]
    info = model.feature_info
    for train in (False, True):
        model.train(train)
        with torch.no_grad():
            out = model(x)
        if kwargs.get('features_only'):
            assert len(out) == len(info.out_indices)
            for f, chs, r in zip(out, info.channels(), info.reduction()):
                assert f.shape == (2, chs, math.ceil(h / r), math.ceil(w / r))
                assert torch.isfinite(f).all()
            continue
        last = info[-1]
        features = model.forward_features(x)
        assert features.shape == (2, model.num_features, math.ceil(h / last['reduction']),
                                  math.ceil(w / last['reduction']))
        assert out.shape[:2] == (2, model.num_classes or model.num_features * model.global_pool.feat_mult())
        assert torch.isfinite(out).all()


@pytest.mark.parametrize('name', MODELS)
@settings(max_examples=EXAMPLES, derandomize=True, deadline=None, database=None,
          phases=[Phase.explicit, Phase.generate],  # no shrinking: a failure is reported as found
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(data=st.data())
def test_create_model_gives_a_working_model_or_a_clear_error(name, data):
    kwargs = data.draw(architectures(name), label='kwargs')
    size = data.draw(st.tuples(st.integers(1, 40), st.integers(1, 40)), label='input size')
    torch.manual_seed(0)
    try:
        model = timm.create_model(name, **kwargs)
    except Exception as e:  # noqa: BLE001 (what is raised is the property checked)
        assert _raised_here_naming_an_argument(e, name), f'{name}({kwargs}): {type(e).__name__}: {e}'
        event(f'clear error ({type(e).__name__})')
        return
    _check_model(model, kwargs, torch.randn(2, kwargs.get('in_chans', 3), *size))
    event('a model whose outputs match feature_info')


@pytest.mark.parametrize('name, kwargs, message', [
    ('groupnet_small', dict(in_chans=0), 'in_chans must be an integer >= 1, got 0'),
    ('groupnet_small', dict(stem_width=0), 'stem_width must be an integer >= 1, got 0'),
    ('octnet_mini', dict(widths=(0, 128)), r'widths\[0\] \(channels of stage 0\) must be an integer >= 1'),
    ('oct_resnet26', dict(depths=(2, 0, 2, 2)), r'depths\[1\] \(blocks in stage 1\) must be an integer >= 1'),
    ('groupnet_small', dict(strides=(0, 2, 2)), r'strides\[0\] must be 1 or 2'),
    ('oct_resnet26', dict(strides=(1, 3, 2, 2), features_only=True), r'strides\[1\] must be 1 or 2'),
    ('resnext50_32x4d_gn', dict(base_width=0), 'base_width must be an integer >= 1, got 0'),
    ('resnext101_32x8d_gn', dict(widths=(16,) * 4), 'base_width=8 has int.4 . 8 / 64. = 0 channels per group'),
    ('groupnet_small', dict(bottleneck_ratio=0), 'bottleneck_ratio must be a number > 0, got 0'),
    ('oct_resnet26', dict(drop_path_rate=1.0), r'drop_path_rate must be a number in \[0, 1\), got 1.0'),
    ('groupnet_small', dict(drop_rate=-0.1), r'drop_rate must be a number in \[0, 1\), got -0.1'),
    ('groupnet_small', dict(num_classes=2.5), r'num_classes must be an integer >= 0 \(0 removes the classifier\), '
                                              'got 2.5'),
    ('groupnet_small', dict(act_layer='nonsense'), "unknown act_layer 'nonsense'"),
    ('octnet_mini', dict(norm_layer='evonorms0', widths=(48, 48)), "norm_layer 'evonorms0' normalizes groups of 32"),
    ('octnet_mini', dict(features_only=True, out_indices=(5,)), 'out_indices must be level indices from 0 to 2'),
    ('groupnet_small', dict(features_only=True, out_indices=(2, 1)), 'each level once, in increasing order'),
    ('groupnet_small', dict(features_only=True, out_indices=(1, -3)), 'each level once, in increasing order'),
    ('groupnet_small', dict(global_pool='bogus'), "global_pool must be a pool type timm knows"),
    ('groupnet_small', dict(global_pool=''), r"global_pool='' \(no pooling\) leaves feature maps"),
])
def test_degenerate_arguments_are_clear_errors_at_build_time(name, kwargs, message):
    with pytest.raises(ValueError, match=message):
        timm.create_model(name, **kwargs)


@pytest.mark.parametrize('name, kwargs, expected', [
    ('oct_resnext50_32x4d', dict(groups=16), dict(groups=16)),
    ('oct_resnext50_32x4d', dict(base_width=8), dict(mid_chs=256)),
    ('oct_resnet26', dict(depths=(1, 1, 1, 1)), dict(blocks=4)),
])
def test_registered_defaults_can_be_overridden(name, kwargs, expected):
    model = timm.create_model(name, device='meta', **kwargs)
    block = model.stages[0][0]
    if 'groups' in expected:  # the H->L path of the grouped 3x3 takes the model's groups as they are
        assert block.conv2.conv.conv_h2l.groups == expected['groups']
    if 'mid_chs' in expected:  # int(256 / 4 * 8 / 64) * 32 groups
        assert block.conv2.conv.in_h + block.conv2.conv.in_l == expected['mid_chs']
    if 'blocks' in expected:
        assert sum(len(stage) for stage in model.stages) == expected['blocks']
