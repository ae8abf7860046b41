"""Every model computes in every tool what it computes in eager mode, within 1e-4 x max(1, max |output|):
ONNX (TorchScript and dynamo exporters; static, dynamic batch, dynamic H and W) run in onnxruntime, OpenVINO
(from the torch model and from the ONNX file), torch.jit.trace, torch.export with dynamic H and W, and
torch.compile, with autograd on and off, at even and odd sizes, random weights and norm statistics; and the
same for the models after `prepare_for_inference`.

`make test` runs the cheap paths for every model, every path for octnet_mini in both autograd modes and the main
paths for one model of each other kind, at small sizes; `make test-heavy` (`-m heavy`) runs the rest, and every
path for every model in both modes at 224, 225, 160 and the model's default size.
"""
import functools
import re

import pytest
import timm
import torch

import timm_groupoct
from timm_groupoct.deploy import ExportError, export_onnx, prepare_for_inference

import export_paths as paths
from helpers import heavy_beyond, randomise_norm_stats

MODELS = timm_groupoct.list_models()
# (path, with autograd on): in `make test` every model takes each of these once, in both autograd modes overall
CHEAP = {
    'onnx-ts-size': (functools.partial(paths.onnx_export, dynamic='size'), False),
    'jit-trace': (paths.jit_trace, True),
}
OTHERS = {
    'onnx-ts-static': functools.partial(paths.onnx_export, dynamic='static'),
    'openvino-onnx-size': functools.partial(paths.openvino_convert, dynamic='size', from_onnx=True),
}
COSTLY = {
    'onnx-ts-batch': functools.partial(paths.onnx_export, dynamic='batch'),
    'onnx-dynamo-static': functools.partial(paths.onnx_export, dynamic='static', dynamo=True),
    'onnx-dynamo-batch': functools.partial(paths.onnx_export, dynamic='batch', dynamo=True),
    'onnx-dynamo-size': functools.partial(paths.onnx_export, dynamic='size', dynamo=True),
    'openvino-torch-batch': functools.partial(paths.openvino_convert, dynamic='batch'),
    'openvino-torch-size': functools.partial(paths.openvino_convert, dynamic='size'),
    'torch-export': paths.torch_export,
}
ALL_PATHS = {**{k: fn for k, (fn, _) in CHEAP.items()}, **OTHERS, **COSTLY, 'torch-compile': paths.torch_compile}


@functools.lru_cache(maxsize=2)
def model_for(name: str, prepared: bool = False) -> torch.nn.Module:
    torch.manual_seed(0)
    model = randomise_norm_stats(timm.create_model(name))
    return prepare_for_inference(model) if prepared else model


def small_sizes(name: str):
    """(size to export at, sizes to run at): small, even and odd, no feature map of size 1."""
    default = timm.models.get_pretrained_cfg(name).input_size[-1]
    return (32, [32, 33, 17]) if default < 224 else (64, [64, 65, 97])


def check(result):
    """Every size of a result (or of each file of `export_helpers`' result) within the tolerance."""
    flat = {f'{k}:{s}': v for k, d in result.items() for s, v in d.items()} if 'diff' not in next(
        iter(result.values())) else result
    bad = {k: v for k, v in flat.items() if not v['diff'] <= v['tol']}
    assert not bad, f'outside 1e-4 x max(1, |output|): {bad}'


def _run(name, path, grad, prepared=False, sizes=None):
    size, run_sizes = sizes or small_sizes(name)
    check(ALL_PATHS[path](model_for(name, prepared), size, run_sizes, grad=grad))


@pytest.mark.parametrize('path', list(CHEAP))
@pytest.mark.parametrize('name', MODELS)
def test_every_model_exports_and_matches_eager(name, path):
    _run(name, path, grad=CHEAP[path][1])


# one model of each kind of layer: octave conv blocks (alpha 0.5 from the stem on), grouped bottlenecks with
# GroupNorm, the simple grouped block; then Oct-ResNet bottlenecks (single-band stem and last stage) and
# weight-standardized convs at ImageNet size
EXPORT_PATHS = [p for p in ALL_PATHS if p != 'torch-compile']
# the paths the second and later models of a group take in `make test` (the rest: make test-heavy)
SPOT_CHECKS = ('onnx-ts-static', 'onnx-dynamo-size', 'openvino-torch-batch', 'torch-export')


@pytest.mark.parametrize('name, grad, path', heavy_beyond(
    [(name, grad, path) for name, grad in (('octnet_mini', True), ('octnet_mini', False), ('groupnet_small_gn', False),
                                           ('resnext_simple11_4g', False)) for path in EXPORT_PATHS],
    kept={('octnet_mini', grad, p) for grad in (True, False) for p in EXPORT_PATHS} |
         {(n, False, p) for n in ('groupnet_small_gn', 'resnext_simple11_4g') for p in SPOT_CHECKS}))
def test_each_kind_of_model_exports_everywhere_and_matches_eager(name, path, grad):
    _run(name, path, grad)


@pytest.mark.parametrize('name, path', heavy_beyond(
    [('oct_resnet26', p) for p in list(OTHERS) + list(COSTLY)] + [
        ('resnext50_32x4d_gnws', p) for p in ('onnx-ts-batch', 'onnx-dynamo-batch', 'openvino-torch-batch',
                                              'torch-export')],
    kept={('oct_resnet26', p) for p in ('onnx-ts-static', 'onnx-ts-batch', 'onnx-dynamo-batch', 'openvino-onnx-size',
                                        'openvino-torch-size', 'torch-export')} |
         {('resnext50_32x4d_gnws', p) for p in ('onnx-ts-batch', 'torch-export')}))
def test_imagenet_size_kinds_export_everywhere_and_match_eager(name, path):
    _run(name, path, grad=False)


@pytest.mark.parametrize('name, path', heavy_beyond(
    [('octnet_mini', p) for p in EXPORT_PATHS] + [
        ('oct_resnet26', p) for p in ('onnx-ts-size', 'onnx-dynamo-batch', 'openvino-torch-batch')],
    kept={('octnet_mini', p) for p in ('onnx-ts-size', 'jit-trace') + SPOT_CHECKS} |
         {('oct_resnet26', p) for p in ('onnx-ts-size', 'openvino-torch-batch')}))
def test_prepared_models_export_and_match_eager(name, path):
    _run(name, path, grad=path.startswith('onnx-ts'), prepared=True)


@pytest.mark.parametrize('name, grad', heavy_beyond([('octnet_mini', True), ('resnext_simple11_4g', False)],
                                                    kept={('octnet_mini', True)}))
def test_models_compile_without_graph_breaks_and_match_eager(name, grad):
    _run(name, 'torch-compile', grad, sizes=(32, [32, 33]))


@pytest.mark.parametrize('name, dynamic, dynamo', [
    ('octnet_mini', 'static', False), ('octnet_mini', 'size', True), ('oct_resnet26', 'batch', False),
    ('resnext50_32x4d_gnws', 'static', False),
])
def test_export_helpers_write_files_that_match_eager(name, dynamic, dynamo):
    size, run_sizes = small_sizes(name)
    check(paths.export_helpers(model_for(name), size, run_sizes, dynamic=dynamic, dynamo=dynamo))


# ---- the inference step's fixed size ---------------------------------------------------------------------------

def test_a_model_fixed_to_a_size_equals_the_plain_model_there_and_refuses_other_sizes():
    model = model_for('oct_resnet26').double()
    try:
        fixed = prepare_for_inference(model, input_size=(3, 64, 64))
        x = torch.randn(2, 3, 64, 64, dtype=torch.float64)
        with torch.no_grad():
            torch.testing.assert_close(fixed(x), model(x), rtol=1e-10, atol=1e-10)
            with pytest.raises(ValueError, match=re.escape(  # (65 px: 33 after the stem conv, 17 after its pool)
                    'stages.0.0.downsample.conv.pool_h2l was prepared for a fixed input size at which its band is even, '
                    'but it got a 17x17 band')):
                fixed(torch.randn(1, 3, 65, 65, dtype=torch.float64))
    finally:
        model.float()
    fixed_ops = {type(m).__name__ for m in fixed.modules() if getattr(m, 'fixed_even', False)}
    assert fixed_ops == {'BandPool', 'BandUpsample', 'SplitBands', 'MergeBands'}


def test_fixing_a_size_leaves_odd_bands_general():
    # at 48 px the stages are 12 (low 6), 6 (low 3), 3 (low 2), 2: pooling a 3 px band must keep rounding up
    model = prepare_for_inference(model_for('oct_resnet26'), input_size=(3, 48, 48))
    fixed = {n: m.fixed_even for n, m in model.named_modules() if hasattr(m, 'fixed_even')}
    assert not fixed['stages.2.0.conv2.conv.pool_l'] and not fixed['stages.3.0.conv2.conv.pool_h']  # 3 px bands
    assert fixed['stages.2.0.conv2.conv.pool_h'] and fixed['stages.1.0.conv2.conv.pool_l']  # 6 px bands
    x = torch.randn(2, 3, 48, 48)
    with torch.no_grad():
        torch.testing.assert_close(model(x), model_for('oct_resnet26')(x), rtol=1e-4, atol=1e-3)


def test_a_fixed_size_model_cannot_be_exported_with_a_dynamic_size(tmp_path):
    fixed = prepare_for_inference(model_for('octnet_mini'), input_size=(3, 32, 32))
    with pytest.raises(ExportError, match='was prepared for a fixed input size'):
        export_onnx(fixed, tmp_path / 'm.onnx', (3, 32, 32), dynamic_size=True)


def test_a_fixed_size_onnx_file_uses_constant_factors(tmp_path):
    import onnx
    path = export_onnx(model_for('oct_resnet26'), tmp_path / 'm.onnx', (3, 64, 64))
    nodes = onnx.load(str(path)).graph.node
    ops = {n.op_type for n in nodes}
    assert 'Pad' not in ops and 'Shape' not in ops  # no shape arithmetic
    assert all(a.i == 0 for n in nodes if n.op_type == 'AveragePool' for a in n.attribute if a.name == 'ceil_mode')
    assert not any(n.op_type == 'BatchNormalization' for n in nodes)


# ---- every model at full size (make test-heavy) -----------------------------------------------------------------

@pytest.mark.heavy
@pytest.mark.parametrize('grad', [True, False], ids=['grad', 'no_grad'])
@pytest.mark.parametrize('path', list(ALL_PATHS))
@pytest.mark.parametrize('name', MODELS)
def test_every_model_everywhere_at_full_size(name, path, grad):
    default = timm.models.get_pretrained_cfg(name).input_size[-1]
    _run(name, path, grad, sizes=(224, sorted({224, 225, 160, default})))


@pytest.mark.heavy
@pytest.mark.parametrize('dynamic', ['static', 'batch', 'size'])
@pytest.mark.parametrize('name', MODELS)
def test_every_model_export_helpers_at_full_size(name, dynamic):
    check(paths.export_helpers(model_for(name), 224, [224, 225, 160], dynamic=dynamic))


# ---- what the pipelines changed: dilated stages (output_stride), features_only models -------------------------

@pytest.mark.parametrize('name, path', heavy_beyond(  # (compiling a dilated ImageNet model takes a minute)
    [(n, p) for n in ('oct_resnet26', 'resnext50_32x4d_gn') for p in ('onnx-ts-size', 'jit-trace', 'torch-compile')],
    kept={(n, p) for n in ('oct_resnet26', 'resnext50_32x4d_gn') for p in ('onnx-ts-size', 'jit-trace')}))
def test_dilated_models_export_trace_and_compile_like_eager_at_even_and_odd_sizes(name, path):
    torch.manual_seed(0)
    model = randomise_norm_stats(timm.create_model(name, output_stride=16))
    assert model.feature_info[-1]['reduction'] == 16
    check(ALL_PATHS[path](model, 64, [64, 65], grad=path == 'jit-trace'))  # the ONNX export under no_grad
