"""The ways users export and compile a model, each a function `(model, size, sizes) -> {input size: max abs
diff against eager}`: the model is exported or compiled at `size` and the result is run at each of `sizes`."""
import contextlib
import io
import tempfile
from pathlib import Path
from typing import Callable, Dict, Sequence

import numpy as np
import torch
import torch.nn as nn

from timm_groupoct.deploy import export_onnx, export_openvino, RuntimeModel

Result = Dict[int, float]


def tolerance(output: torch.Tensor) -> float:
    """The issue's bound: 1e-4 x max(1, max |output|)."""
    return 1e-4 * max(1., output.abs().max().item())


def _inputs(model: nn.Module, sizes: Sequence[int], batch: int = 2) -> Dict[int, torch.Tensor]:
    chans = model.pretrained_cfg['input_size'][0] if hasattr(model, 'pretrained_cfg') else 3
    return {s: torch.randn(batch, chans, s, s) for s in sizes}


def _compare(model: nn.Module, run: Callable[[torch.Tensor], torch.Tensor], inputs: Dict[int, torch.Tensor],
             ) -> Dict[int, Dict[str, float]]:
    out = {}
    for size, x in inputs.items():
        with torch.no_grad():
            expected = model(x)
            got = run(x)
        if isinstance(got, np.ndarray):
            got = torch.from_numpy(got)
        assert got.shape == expected.shape, f'size {size}: shape {tuple(got.shape)}, eager {tuple(expected.shape)}'
        out[size] = dict(diff=(got.float() - expected.float()).abs().max().item(), tol=tolerance(expected))
    return out


def grad_mode(enabled: bool):
    return contextlib.nullcontext() if enabled else torch.no_grad()


def onnx_export(model, size, sizes, dynamic: str = 'static', grad: bool = True, dynamo: bool = False):
    """`torch.onnx.export` called directly, as users call it; run in onnxruntime."""
    import onnxruntime as ort
    chans = model.pretrained_cfg['input_size'][0]
    x = torch.randn(2, chans, size, size)
    axes = {'static': {}, 'batch': {0: 'batch'}, 'size': {0: 'batch', 2: 'height', 3: 'width'}}[dynamic]
    f = io.BytesIO()
    with grad_mode(grad):
        if dynamo:
            dims = {k: torch.export.Dim(v, min=2) if k else torch.export.Dim(v) for k, v in axes.items()}
            program = torch.onnx.export(model, (x,), dynamo=True, input_names=['x'],
                                        dynamic_shapes=(dims,) if dims else None)
            with tempfile.TemporaryDirectory() as d:
                program.save(f'{d}/m.onnx')
                data = Path(f'{d}/m.onnx').read_bytes()
        else:
            torch.onnx.export(model, (x,), f, dynamo=False, input_names=['x'], dynamic_axes={'x': axes})
            data = f.getvalue()
    session = ort.InferenceSession(data, providers=['CPUExecutionProvider'])
    batch = 2 if dynamic == 'static' else 3
    run_sizes = sizes if dynamic == 'size' else [size]
    return _compare(model, lambda t: session.run(None, {'x': t.numpy()})[0], _inputs(model, run_sizes, batch))


def openvino_convert(model, size, sizes, dynamic: str = 'batch', grad: bool = True, from_onnx: bool = False):
    """`openvino.convert_model` of the torch model or of its ONNX file, in float32."""
    import openvino as ov
    chans = model.pretrained_cfg['input_size'][0]
    x = torch.randn(1, chans, size, size)
    shape = ov.PartialShape([-1, chans, -1, -1] if dynamic == 'size' else [-1, chans, size, size])
    with grad_mode(grad):
        if from_onnx:
            f = io.BytesIO()
            axes = {0: 'batch', 2: 'height', 3: 'width'} if dynamic == 'size' else {0: 'batch'}
            torch.onnx.export(model, (x,), f, dynamo=False, input_names=['x'], dynamic_axes={'x': axes})
            ov_model = ov.Core().read_model(f.getvalue(), b'')
        else:
            ov_model = ov.convert_model(model, example_input=x, input=[shape])
    compiled = ov.Core().compile_model(ov_model, 'CPU', {'INFERENCE_PRECISION_HINT': 'f32'})
    run_sizes = sizes if dynamic == 'size' else [size]
    return _compare(model, lambda t: compiled(t.numpy())[0], _inputs(model, run_sizes, 3))


def jit_trace(model, size, sizes, grad: bool = True):
    """`torch.jit.trace` (its check reruns the model), run at every size."""
    chans = model.pretrained_cfg['input_size'][0]
    with grad_mode(grad):
        traced = torch.jit.trace(model, torch.randn(2, chans, size, size))
    return _compare(model, traced, _inputs(model, sizes))


def torch_export(model, size, sizes, grad: bool = True):
    """`torch.export.export` with dynamic batch, H and W over a range that includes every size."""
    chans = model.pretrained_cfg['input_size'][0]
    lo, hi = min(sizes + [size]), max(sizes + [size])
    dims = {0: torch.export.Dim('batch', min=1, max=64), 2: torch.export.Dim('height', min=lo, max=hi),
            3: torch.export.Dim('width', min=lo, max=hi)}
    with grad_mode(grad):
        program = torch.export.export(model, (torch.randn(2, chans, size, size),), dynamic_shapes=(dims,))
    return _compare(model, program.module(), _inputs(model, sizes))


def torch_compile(model, size, sizes, grad: bool = True):
    """`torch.compile(fullgraph=True)`: a graph break is an error."""
    torch._dynamo.reset()
    compiled = torch.compile(model, fullgraph=True, dynamic=False)
    inputs = _inputs(model, sizes)
    out = {}
    for s, x in inputs.items():
        with grad_mode(grad):
            got = compiled(x).detach()
        with torch.no_grad():
            expected = model(x)
        out[s] = dict(diff=(got - expected).abs().max().item(), tol=tolerance(expected))
    return out


def openvino_crashes_on(model: nn.Module, dynamic: str) -> bool:
    """OpenVINO 2026.4's CPU plugin segfaults compiling a GroupNorm ResNet with a fully static input shape in
    float32 (timm's own resnet50_gn too); a dynamic batch compiles and runs correctly."""
    return dynamic == 'static' and any(isinstance(m, nn.GroupNorm) for m in model.modules())


def export_helpers(model, size, sizes, dynamic: str = 'batch', grad: bool = True, dynamo: bool = False):
    """This package's `export_onnx` / `export_openvino` (the inference step applied), run through `RuntimeModel`."""
    with tempfile.TemporaryDirectory() as d, grad_mode(grad):
        input_size = (model.pretrained_cfg['input_size'][0], size, size)
        kw = dict(dynamic_batch=dynamic != 'static', dynamic_size=dynamic == 'size')
        files = [export_onnx(model, Path(d) / 'm.onnx', input_size, dynamo=dynamo, **kw)]
        if not openvino_crashes_on(model, dynamic):
            files.append(export_openvino(model, Path(d) / 'm.xml', input_size, **kw))
        run_sizes = sizes if dynamic == 'size' else [size]
        return {f.suffix: _compare(model, RuntimeModel(f), _inputs(model, run_sizes, 3 if kw['dynamic_batch'] else 1))
                for f in files}
