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
import json
import warnings
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence, Tuple, Union

import torch
import torch.nn as nn
from timm.utils import reparameterize_model

from .layers import fold_weight_standardization, use_pointwise_gemm
from .layers.octave import _FixableSize

__all__ = [
    'RUNTIMES', 'prepare_for_inference', 'fix_band_sizes', 'export_onnx', 'export_openvino', 'load_runtime',
    'RuntimeModel', 'runtime_of', 'max_abs_diff', 'ExportError', 'write_runtime_files', 'load_exported',
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
      has a `reparameterize` hook). GroupNorm models keep their norms; weight-standardized convs get their
      standardized weights (`fold_weight_standardization`).
    - Stride-1 1x1 convs become `PointwiseConv2d`: a GEMM on channels_last CPU tensors, the plain conv otherwise
      (and in every export, which traces NCHW tensors).
    - With `input_size` (C, H, W), octave models are fixed to that size (`fix_band_sizes`): pooling and
      upsampling by constant factors where the bands are even, which onnxruntime and OpenVINO run in their
      blocked layouts. The model then runs at that H x W only (any batch size) and refuses other sizes with a
      ValueError; leave `input_size` unset for a model that runs at any size.

    The result exports (ONNX, OpenVINO, torch.jit.trace, torch.export, torch.compile) like the plain model. It is
    for inference only: folded convs no longer normalize with batch statistics in training.
    """
    model = reparameterize_model((model if inplace else copy.deepcopy(model)).eval(), inplace=True)
    fold_weight_standardization(model)
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
        m.fixed_even, m.where = is_even, ops[m]
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
    with torch.no_grad(), warnings.catch_warnings():
        # the tracer warns where the model reads channel counts and sizes off tensors: the file is checked
        # numerically instead (write_runtime_files, the tests at even and odd sizes)
        warnings.simplefilter('ignore', torch.jit.TracerWarning)
        warnings.filterwarnings('ignore', 'You are using the legacy TorchScript-based ONNX export',
                                DeprecationWarning)  # (timm's onnx_export.py default too; dynamo=True for the other)
        if dynamo:
            dims = {0: torch.export.Dim('batch')} if dynamic_batch else {}
            if dynamic_size:
                dims.update({2: torch.export.Dim('height', min=2), 3: torch.export.Dim('width', min=2)})
            program = torch.onnx.export(
                model, (x,), dynamo=True, input_names=[INPUT_NAME], output_names=[OUTPUT_NAME],
                dynamic_shapes=(dims,) if dims else None, opset_version=opset)
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
        with torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter('ignore', torch.jit.TracerWarning)
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


class RuntimeModel(nn.Module):
    """A model file in its runtime, called like the torch model: (N, C, H, W) float tensor -> output tensor.

    `runtime`: 'onnxruntime' (.onnx) or 'openvino' (.xml or .onnx). OpenVINO runs in float32
    (INFERENCE_PRECISION_HINT f32: on CPUs with bfloat16 support it would otherwise pick bfloat16).
    `threads`: intra-op threads (default: the runtime's). `pretrained_cfg` (timm's, with `num_classes`) makes it
    usable where timm's data-config helpers and this package's evaluation expect a model (`load_exported` sets
    it from the exported folder).
    """

    def __init__(self, path: PathLike, runtime: Optional[str] = None, threads: Optional[int] = None,
                 pretrained_cfg: Optional[Dict] = None):
        super().__init__()
        self.path = Path(path)
        if not self.path.is_file():
            raise FileNotFoundError(f'no model file {self.path}')
        self.runtime = runtime or runtime_of(self.path)
        self.pretrained_cfg = dict(pretrained_cfg or {})
        self.num_classes = self.pretrained_cfg.get('num_classes')
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

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self._run(x.detach().to('cpu', torch.float32).contiguous().numpy())
        return torch.from_numpy(out.copy()).to(x.device)

    def extra_repr(self) -> str:
        return f'{str(self.path)!r}, runtime={self.runtime!r}'


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


# ---- runtime files in an exported folder ------------------------------------------------------------------------

RUNTIME_SPEC = 'runtime.json'
RUNTIME_FILES = {'onnx': 'model.onnx', 'openvino': 'openvino_model.xml'}


def write_runtime_files(
        model: nn.Module,
        folder: PathLike,
        fmt: str,
        img_size: Optional[int] = None,
        dynamic_batch: bool = True,
        dynamic_size: bool = False,
        dynamo: bool = False,
        opset: Optional[int] = None,
) -> Dict:
    """Export `model` into `folder` (beside its model.safetensors / config.json) as `model.onnx` (fmt 'onnx') or
    `openvino_model.xml` + `.bin` ('openvino'), check the file against the eager model on random input, and
    record what the file takes in `folder/runtime.json`; returns that record.

    The record holds the file, its runtime, the input size (the folder's config.json input size, or `img_size`
    square; fixed unless `dynamic_size`), the batch and size dynamics, the preprocessing (mean, std,
    interpolation, crop_pct of config.json, else of the model's pretrained cfg), the exporter, and the measured
    max abs difference. Raises ExportError when the file's outputs differ from eager by more than
    1e-4 x max(1, max |output|).
    """
    if fmt not in RUNTIME_FILES:
        raise ValueError(f"format must be one of {', '.join(RUNTIME_FILES)}, got {fmt!r}")
    folder = Path(folder)
    config = folder / 'config.json'
    cfg = _read_json(config).get('pretrained_cfg', {}) if config.is_file() else dict(model.pretrained_cfg)
    input_size = tuple(cfg.get('input_size', (3, 224, 224)))
    if img_size is not None:
        input_size = (input_size[0], img_size, img_size)
    input_size = _check_input_size(input_size)
    path = folder / RUNTIME_FILES[fmt]
    kwargs = dict(dynamic_batch=dynamic_batch, dynamic_size=dynamic_size)
    if fmt == 'onnx':
        export_onnx(model, path, input_size, dynamo=dynamo, opset=opset, **kwargs)
    else:
        export_openvino(model, path, input_size, **kwargs)
    runtime = runtime_of(path)
    x = torch.randn(2 if dynamic_batch else 1, *input_size)
    diff, scale = max_abs_diff(model.eval(), RuntimeModel(path, runtime), x)
    tolerance = 1e-4 * max(1., scale)
    if not diff <= tolerance:  # (NaN fails too)
        raise ExportError(f'{path} computes something else than the model: max abs diff {diff:.3g} on random '
                          f'input {tuple(x.shape)}, over the tolerance {tolerance:.3g}')
    spec = {
        'format': fmt, 'file': path.name, 'runtime': runtime, 'input_name': INPUT_NAME, 'output_name': OUTPUT_NAME,
        'input_size': list(input_size), 'dynamic_batch': dynamic_batch, 'dynamic_size': dynamic_size,
        **{k: cfg[k] for k in ('mean', 'std', 'interpolation', 'crop_pct', 'crop_mode', 'num_classes') if k in cfg},
        'exporter': 'openvino.convert_model' if fmt == 'openvino' else
                    'torch.onnx (dynamo)' if dynamo else 'torch.onnx (torchscript)',
        'inference_step': 'timm_groupoct.prepare_for_inference',
        'max_abs_diff': diff, 'checked_input': list(x.shape),
    }
    (folder / RUNTIME_SPEC).write_text(json.dumps(spec, indent=2) + '\n')
    return spec


def _read_json(path: Path) -> Dict:
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise ExportError(f'cannot read {path}: {e}') from e


def load_exported(folder: PathLike, runtime: str, threads: Optional[int] = None) -> RuntimeModel:
    """The runtime file of an exported folder (`write_runtime_files`) as a `RuntimeModel` for `runtime`, with the
    folder's pretrained cfg (label names included) and, for a fixed-size file, its input size."""
    _import_runtime(runtime)
    folder = Path(folder)
    spec_path, config_path = folder / RUNTIME_SPEC, folder / 'config.json'
    if not spec_path.is_file():
        raise ExportError(f'{folder} has no runtime file ({RUNTIME_SPEC} is missing): write one with '
                          f'`timm-groupoct export MODEL --checkpoint CKPT --out {folder} --format onnx` '
                          f'(or --format openvino)')
    spec = _read_json(spec_path)
    config = _read_json(config_path) if config_path.is_file() else {}
    # OpenVINO reads ONNX files too; onnxruntime needs one
    candidates = [RUNTIME_FILES['openvino'], spec['file']] if runtime == 'openvino' else [RUNTIME_FILES['onnx']]
    path = next((folder / c for c in candidates if (folder / c).is_file() and (
        runtime == 'openvino' or c.endswith('.onnx'))), None)
    if path is None:
        raise ExportError(f'{folder} holds {spec["file"]}, which {runtime} does not run: export --format '
                          f'{"onnx" if runtime == "onnxruntime" else "openvino"} into it')
    cfg = dict(config.get('pretrained_cfg', {}))
    for key in ('num_classes', 'label_names'):
        if key in config:
            cfg[key] = config[key]
    if not spec.get('dynamic_size'):
        cfg['input_size'] = tuple(spec['input_size'])
    return RuntimeModel(path, runtime, threads, pretrained_cfg=cfg)
