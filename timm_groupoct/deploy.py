"""Inference and deployment: the explicit inference step, and ONNX / OpenVINO files checked against eager.

The models `timm.create_model` returns are plain graphs (ordinary convs and norms, out-of-place band arithmetic,
sizes read off the tensors), so that every tracer and exporter sees what eager mode runs, at any input size.
`prepare_for_inference` is the one step that makes a model faster for inference, in eager mode and in the
runtimes; `export_onnx` / `export_openvino` apply it and check the file they write against the eager model.

    model = timm_groupoct.prepare_for_inference(timm.create_model('oct_resnet50', pretrained=True),
                                                input_size=(3, 224, 224))
    export_onnx(model, 'oct_resnet50.onnx', input_size=(3, 224, 224))   # or straight from the plain model
    session = load_runtime('oct_resnet50.onnx')                         # onnxruntime; .xml -> OpenVINO
    logits = session(images)
"""
import copy
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence, Tuple, Union

import torch
import torch.nn as nn
from timm.utils import reparameterize_model

from .layers import use_pointwise_gemm
from .layers.octave import _FixableSize

__all__ = [
    'RUNTIMES', 'prepare_for_inference', 'fix_band_sizes', 'export_onnx', 'export_openvino', 'load_runtime',
    'RuntimeModel', 'max_abs_diff', 'ExportError',
]

PathLike = Union[str, Path]
RUNTIMES = ('onnxruntime', 'openvino')
INPUT_NAME, OUTPUT_NAME = 'input0', 'output0'  # timm's onnx_export.py names


class ExportError(RuntimeError):
    """An export that cannot be written, or whose file does not compute what the model computes."""


def prepare_for_inference(model: nn.Module, input_size: Optional[Sequence[int]] = None,
                          inplace: bool = False) -> nn.Module:
    """The inference step: an eval-mode copy of `model` (or `model` itself with `inplace`) that computes the same
    outputs, faster.

    - Batch norms are folded into the convolutions (timm's `reparameterize_model`; every block of this package
      has a `reparameterize` hook). GroupNorm models keep their norms.
    - Stride-1 1x1 convs become `PointwiseConv2d`: a GEMM on channels_last CPU tensors, the plain conv otherwise
      (and in every export, which traces NCHW tensors).
    - With `input_size` (C, H, W), octave models are fixed to that size (`fix_band_sizes`): pooling and
      upsampling by constant factors where the bands are even, which onnxruntime and OpenVINO run in their
      blocked layouts. The model then runs at that H x W only (any batch size) and refuses other sizes with a
      ValueError; leave `input_size` unset for a model that runs at any size.

    The result exports (ONNX, OpenVINO, torch.jit.trace, torch.export, torch.compile) like the plain model. It is
    for inference only: folded convs no longer normalize with batch statistics in training.
    """
    model = reparameterize_model(model.eval(), inplace=inplace)
    use_pointwise_gemm(model)
    if input_size is not None:
        fix_band_sizes(model, input_size)
    return model


@torch.no_grad()
def fix_band_sizes(model: nn.Module, input_size: Sequence[int]) -> List[str]:
    """Turn on `fixed_even` (see `layers.octave`) in every band pooling / upsampling / split / merge of `model`
    that sees only even sizes in a forward at `input_size` (C, H, W); returns their names. In place."""
    input_size = _check_input_size(input_size)
    ops = {m: name for name, m in model.named_modules() if isinstance(m, _FixableSize)}
    even: Dict[nn.Module, bool] = {}

    def record(module, args):
        size = module.sized_input(*args).shape[-2:]
        even[module] = even.get(module, True) and size[0] % 2 == 0 and size[1] % 2 == 0

    handles = [m.register_forward_pre_hook(record) for m in ops]
    try:
        for m in ops:
            m.fixed_even = False
        param = next(model.parameters())
        model.eval()(torch.zeros((1, *input_size), dtype=param.dtype, device=param.device))
    finally:
        for h in handles:
            h.remove()
    fixed = []
    for m, is_even in even.items():
        m.fixed_even = is_even
        if is_even:
            fixed.append(ops[m])
    return fixed


def _check_input_size(input_size: Sequence[int]) -> Tuple[int, int, int]:
    input_size = tuple(int(s) for s in input_size)
    if len(input_size) != 3 or min(input_size) < 1:
        raise ValueError(f'input_size must be (channels, height, width), all positive, got {input_size}')
    return input_size


def _example(model: nn.Module, input_size: Sequence[int], batch_size: int) -> torch.Tensor:
    param = next(model.parameters())
    return torch.randn((batch_size, *input_size), dtype=param.dtype, device=param.device)


def export_onnx(
        model: nn.Module,
        path: PathLike,
        input_size: Sequence[int],
        dynamic_batch: bool = True,
        dynamic_size: bool = False,
        dynamo: bool = False,
        opset: Optional[int] = None,
        prepare: bool = True,
) -> Path:
    """Write `model` as an ONNX file; returns its path.

    Args:
        input_size: (C, H, W) the file takes; with `dynamic_size`, the size to trace at.
        dynamic_batch: any batch size (else 1).
        dynamic_size: any H and W (else `input_size`'s). A fixed size is faster in the runtimes.
        dynamo: torch's dynamo exporter (`torch.onnx.export(dynamo=True)`) instead of the TorchScript one.
        opset: ONNX opset (default: the exporter's).
        prepare: run `prepare_for_inference` on a copy first (for `input_size` unless `dynamic_size`).

    The model is exported in eval mode with autograd off, whatever the caller's settings. The file has one input
    `input0` (N, C, H, W) and one output `output0`.
    """
    input_size = _check_input_size(input_size)
    path = Path(path)
    model = _for_export(model, input_size, dynamic_size, prepare)
    x = _example(model, input_size, 2 if dynamic_batch else 1)
    axes = {0: 'batch'} if dynamic_batch else {}
    if dynamic_size:
        axes.update({2: 'height', 3: 'width'})
    with torch.no_grad():
        if dynamo:
            dims = {0: torch.export.Dim('batch')} if dynamic_batch else {}
            if dynamic_size:
                dims.update({2: torch.export.Dim('height', min=2), 3: torch.export.Dim('width', min=2)})
            program = torch.onnx.export(
                model, (x,), dynamo=True, input_names=[INPUT_NAME], output_names=[OUTPUT_NAME],
                dynamic_shapes=({k: v for k, v in dims.items()},) if dims else None, opset_version=opset)
            program.save(str(path))
        else:
            torch.onnx.export(
                model, (x,), str(path), dynamo=False, input_names=[INPUT_NAME], output_names=[OUTPUT_NAME],
                dynamic_axes={INPUT_NAME: axes, OUTPUT_NAME: {0: 'batch'} if dynamic_batch else {}},
                opset_version=opset or 18)
            if dynamic_batch or dynamic_size:
                _annotate_shapes(path)
    return path


def _annotate_shapes(path: Path) -> None:
    """Record symbolic shapes for every tensor of an ONNX file, where onnxruntime is installed.

    ONNX's own shape inference loses a symbolic batch size at `Resize`, and onnxruntime then cannot show that
    the two inputs of an addition have the same shape: it keeps the addition out of its blocked (NCHWc) layout
    instead of fusing it into a convolution. onnxruntime's symbolic shape inference keeps the batch symbol. The
    dynamo exporter records these shapes itself.
    """
    try:
        import onnx
        from onnxruntime.tools.symbolic_shape_infer import SymbolicShapeInference
    except ImportError:
        return
    model = SymbolicShapeInference.infer_shapes(onnx.load(str(path)), auto_merge=True)
    onnx.save(model, str(path))


def _for_export(model: nn.Module, input_size: Sequence[int], dynamic_size: bool, prepare: bool) -> nn.Module:
    if dynamic_size and any(getattr(m, 'fixed_even', False) for m in model.modules()):
        raise ExportError(
            'this model was prepared for a fixed input size (prepare_for_inference(model, input_size=...)), so it '
            'cannot be exported with a dynamic size: export it at that size, or prepare it with input_size=None')
    if prepare:
        return prepare_for_inference(model, None if dynamic_size else input_size)
    return copy.deepcopy(model).eval()


def export_openvino(
        model: Union[nn.Module, PathLike],
        path: PathLike,
        input_size: Sequence[int],
        dynamic_batch: bool = True,
        dynamic_size: bool = False,
        prepare: bool = True,
) -> Path:
    """Write an OpenVINO IR (`path` .xml + its .bin, float32 weights); returns the .xml path.

    `model` is a torch model (converted by `openvino.convert_model` from a trace, after `prepare_for_inference`
    as in `export_onnx`) or the path of an ONNX file (converted as it is; `input_size` then only sets the
    input shape).
    """
    ov = _import_runtime('openvino')
    input_size = _check_input_size(input_size)
    path = Path(path)
    if path.suffix != '.xml':
        raise ExportError(f'an OpenVINO model is written as NAME.xml (+ NAME.bin), got {path}')
    shape = ov.PartialShape([-1 if dynamic_batch else 1, input_size[0],
                             *([-1, -1] if dynamic_size else input_size[1:])])
    if isinstance(model, nn.Module):
        model = _for_export(model, input_size, dynamic_size, prepare)
        with torch.no_grad():
            ov_model = ov.convert_model(model, example_input=_example(model, input_size, 1), input=[shape])
    else:
        ov_model = ov.convert_model(str(model), input=[shape])
    ov.save_model(ov_model, str(path), compress_to_fp16=False)
    return path


def _import_runtime(runtime: str):
    if runtime not in RUNTIMES:
        raise ValueError(f"runtime must be one of {', '.join(RUNTIMES)}, got {runtime!r}")
    try:
        if runtime == 'onnxruntime':
            import onnxruntime
            return onnxruntime
        import openvino
        return openvino
    except ImportError as e:
        raise ImportError(f'{runtime} is not installed: pip install {runtime} (or timm-groupoct[deploy])') from e


def runtime_of(path: PathLike) -> str:
    """The runtime that runs a model file: .onnx -> onnxruntime, .xml -> openvino."""
    suffix = Path(path).suffix
    if suffix == '.onnx':
        return 'onnxruntime'
    if suffix == '.xml':
        return 'openvino'
    raise ValueError(f'{path}: not a runtime model file (.onnx for onnxruntime, .xml for OpenVINO)')


class RuntimeModel:
    """A model file in its runtime, called like the torch model: (N, C, H, W) float tensor -> output tensor.

    `runtime`: 'onnxruntime' (.onnx) or 'openvino' (.xml or .onnx). OpenVINO runs in float32
    (INFERENCE_PRECISION_HINT f32: on CPUs with bfloat16 support it would otherwise pick bfloat16).
    `threads`: intra-op threads (default: the runtime's).
    """

    def __init__(self, path: PathLike, runtime: Optional[str] = None, threads: Optional[int] = None):
        self.path = Path(path)
        if not self.path.is_file():
            raise FileNotFoundError(f'no model file {self.path}')
        self.runtime = runtime or runtime_of(self.path)
        rt = _import_runtime(self.runtime)
        if self.runtime == 'onnxruntime':
            options = rt.SessionOptions()
            if threads:
                options.intra_op_num_threads = threads
            session = rt.InferenceSession(str(self.path), options, providers=['CPUExecutionProvider'])
            name = session.get_inputs()[0].name
            self._run = lambda x: session.run(None, {name: x})[0]
        else:
            config = {'INFERENCE_PRECISION_HINT': 'f32', 'PERFORMANCE_HINT': 'LATENCY'}
            if threads:
                config['INFERENCE_NUM_THREADS'] = threads
            compiled = rt.Core().compile_model(str(self.path), 'CPU', config)
            request = compiled.create_infer_request()
            self._run = lambda x: request.infer({0: x})[0]

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        out = self._run(x.detach().to('cpu', torch.float32).contiguous().numpy())
        return torch.from_numpy(out.copy())

    def __repr__(self) -> str:
        return f'RuntimeModel({str(self.path)!r}, runtime={self.runtime!r})'


def load_runtime(path: PathLike, runtime: Optional[str] = None, threads: Optional[int] = None) -> RuntimeModel:
    """`RuntimeModel(path, runtime, threads)`."""
    return RuntimeModel(path, runtime, threads)


def max_abs_diff(reference: Callable[[torch.Tensor], torch.Tensor], candidate: Callable[[torch.Tensor], torch.Tensor],
                 x: torch.Tensor) -> Tuple[float, float]:
    """(max |candidate(x) - reference(x)|, max |reference(x)|), the reference run in eval mode without grad."""
    with torch.no_grad():
        expected = reference(x)
        got = candidate(x).to(expected.dtype)
    if got.shape != expected.shape:
        raise ExportError(f'the exported model returns shape {tuple(got.shape)}, the model {tuple(expected.shape)}')
    return (got - expected).abs().max().item(), expected.abs().max().item()
