"""Oct-ResNet-50 / Oct-ResNeXt-50 against timm's ResNet-50 in the runtimes people deploy with, in one run.

    python benchmarks/runtimes.py                          # eager, torch.compile, onnxruntime, OpenVINO
    python benchmarks/runtimes.py --runtimes onnxruntime openvino --rounds 20
    python benchmarks/runtimes.py --reference DIR          # adds d-li14/octconv.pytorch's oct_resnet50
                                                           # (DIR holds its oct_resnet.py and octconv.py)
    python benchmarks/runtimes.py --profile                # per model: the ONNX file's and onnxruntime's
                                                           # optimized graph's node counts per op type, and
                                                           # ms per op type in onnxruntime's profiler and in
                                                           # OpenVINO's per-layer counters (batch 1)

Every model goes through the same path in each runtime, the one a user takes:

- eager: `timm_groupoct.prepare_for_inference(model, input_size)` (batch norms folded, 1x1 convs as GEMMs,
  octave bands fixed to the size), channels_last, `torch.inference_mode`. ResNet-50 and the reference are
  folded with torch.fx's conv-bn `fuse` so that both sides run without batch norms.
- compile: `torch.compile` of the eager model.
- onnxruntime: `timm_groupoct.deploy.export_onnx` (what `timm-groupoct export --format onnx` writes: fixed
  H x W, dynamic batch, the inference step applied), run by onnxruntime's CPU provider with its defaults.
- openvino: `timm_groupoct.deploy.export_openvino` from the torch model (`--format openvino`), float32.

Files are timed in fresh processes (`time_runtime_file.py`: 3 warm-up calls, then the median of `--calls`),
the models taking turns, `--rounds` times: a runtime's idle threads (onnxruntime's spin after each run) would
otherwise compete with the next session's on 2 cores.

Weights and batch-norm statistics are random but non-trivial (a zero-initialised layer would export as
shared zero weights and run faster than a trained one). In eager mode and compiled, the models take turns in one
process: every round calls each model `--calls` times in a row and keeps the mean of all calls but the first, and
the table gives the median over rounds. Ratios are to ResNet-50 in the same
runtime; "best" compares each model's fastest runtime with ResNet-50's fastest.
"""
import argparse
import collections
import importlib
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable, Dict, List

import torch
import timm
import torch.nn as nn
from torch.fx.experimental.optimization import fuse as fx_fuse_conv_bn
from torch.utils.flop_counter import FlopCounterMode

import timm_groupoct
from timm_groupoct.deploy import export_onnx, export_openvino

RUNTIMES = ('eager', 'compile', 'onnxruntime', 'openvino')


@torch.no_grad()
def randomise(model: nn.Module) -> nn.Module:
    """Non-trivial norm weights and statistics (timm starts each block's last norm at zero); eval mode."""
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            nn.init.uniform_(m.weight, 0.5, 1.5)
            nn.init.normal_(m.bias, std=0.1)
            nn.init.uniform_(m.running_var, 0.5, 2.0)
            nn.init.normal_(m.running_mean, std=0.1)
    return model.eval()


def build_models(args) -> Dict[str, nn.Module]:
    models = {'resnet50': timm.create_model('resnet50')}
    for alpha in args.alphas:
        models[f'oct_resnet50 a={alpha:g}'] = timm.create_model('oct_resnet50', alpha=alpha)
    models['oct_resnext50_32x4d a=0.5'] = timm.create_model('oct_resnext50_32x4d')
    if args.reference:
        sys.path.insert(0, args.reference)
        models['reference oct_resnet50 a=0.5'] = importlib.import_module('oct_resnet').oct_resnet50()
    return {name: randomise(m) for name, m in models.items()}


def gflops(model: nn.Module, size: int) -> float:
    with FlopCounterMode(display=False) as counter, torch.inference_mode():
        model(torch.randn(1, 3, size, size))
    return counter.get_total_flops() / 1e9


def eager_model(model: nn.Module, input_size) -> nn.Module:
    if type(model).__module__.startswith('timm_groupoct'):
        model = timm_groupoct.prepare_for_inference(model, input_size)
    else:
        model = fx_fuse_conv_bn(model) if isinstance(model, timm.models.ResNet) else model
    return model.to(memory_format=torch.channels_last)


def eager_runners(runtime: str, models: Dict[str, nn.Module], input_size) -> Dict[str, Callable]:
    runners = {}
    for name, model in models.items():
        fast = eager_model(model, input_size)
        if runtime == 'compile':
            fast = torch.compile(fast)
        runners[name] = lambda x, m=fast: m(x.contiguous(memory_format=torch.channels_last))
    return runners


def export_files(runtime: str, models: Dict[str, nn.Module], input_size, workdir: Path) -> Dict[str, Path]:
    """Each model as `timm-groupoct export --format onnx|openvino` writes it (fixed size, dynamic batch)."""
    export = export_onnx if runtime == 'onnxruntime' else export_openvino
    suffix = '.onnx' if runtime == 'onnxruntime' else '.xml'
    return {name: export(model, workdir / f'{i}{suffix}', input_size) for i, (name, model) in enumerate(models.items())}


def time_files(files: Dict[str, Path], batch_size: int, rounds: int, calls: int, threads: int) -> Dict[str, float]:
    """Median over rounds of each file's median seconds per call, each timed in a fresh process
    (time_runtime_file.py), the files taking turns."""
    times: Dict[str, List[float]] = {k: [] for k in files}
    for _ in range(rounds):
        for name, path in files.items():
            out = subprocess.run(
                [sys.executable, str(Path(__file__).with_name('time_runtime_file.py')), str(path), '--batch-size',
                 str(batch_size), '--threads', str(threads), '--calls', str(calls)],
                capture_output=True, text=True, check=True)
            times[name].append(float(out.stdout.split()[-1]) / 1e3)
    return {k: statistics.median(v) for k, v in times.items()}


def time_models(runners: Dict[str, Callable], x: torch.Tensor, rounds: int, calls: int) -> Dict[str, float]:
    """Median over rounds of the mean seconds per call (first call of each turn left out)."""
    with torch.inference_mode():
        for run in runners.values():
            run(x)
        times: Dict[str, List[float]] = {k: [] for k in runners}
        for _ in range(rounds):
            for name, run in runners.items():
                run(x)
                start = time.perf_counter()
                for _ in range(calls - 1):
                    run(x)
                times[name].append((time.perf_counter() - start) / (calls - 1))
    return {k: statistics.median(v) for k, v in times.items()}


def profile(models: Dict[str, nn.Module], input_size, threads: int, workdir: Path, calls: int = 10) -> None:
    """Print, per model, node counts per op type (the exported ONNX file, and onnxruntime's optimized graph) and
    ms per op type (onnxruntime's profiler, OpenVINO's per-layer counters), at batch 1."""
    import onnx
    import onnxruntime as ort
    import openvino as ov
    x = torch.randn(1, *input_size).numpy()
    for i, (name, model) in enumerate(models.items()):
        path = export_onnx(model, workdir / f'p{i}.onnx', input_size)
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.enable_profiling = True
        options.profile_file_prefix = str(workdir / f'ort{i}')
        options.optimized_model_filepath = str(workdir / f'p{i}.opt.onnx')
        session = ort.InferenceSession(str(path), options, providers=['CPUExecutionProvider'])
        for _ in range(calls):
            session.run(None, {session.get_inputs()[0].name: x})
        ort_ms = collections.Counter()
        for event in json.loads(Path(session.end_profiling()).read_text()):
            if event.get('cat') == 'Node' and event['name'].endswith('_kernel_time'):
                ort_ms[event['args']['op_name']] += event['dur'] / 1e3 / calls
        compiled = ov.Core().compile_model(str(export_openvino(model, workdir / f'p{i}.xml', input_size)), 'CPU', {
            'INFERENCE_PRECISION_HINT': 'f32', 'INFERENCE_NUM_THREADS': threads, 'PERF_COUNT': True})
        request = compiled.create_infer_request()
        ov_ms = collections.Counter()
        for _ in range(calls):
            request.infer({0: x})
            for layer in request.get_profiling_info():
                if layer.status == layer.Status.EXECUTED:
                    ov_ms[layer.node_type] += layer.real_time.total_seconds() * 1e3 / calls
        exported = collections.Counter(n.op_type for n in onnx.load(str(path)).graph.node if n.op_type != 'Constant')
        optimized = collections.Counter(n.op_type for n in onnx.load(options.optimized_model_filepath).graph.node)
        print(f'\n{name}')
        for title, counts, unit in (('ONNX file nodes', exported, ''), ('onnxruntime graph nodes', optimized, ''),
                                    ('onnxruntime ms', ort_ms, 'ms'), ('OpenVINO ms', ov_ms, 'ms')):
            total = sum(counts.values())
            cells = ', '.join(f'{op} {v:.2f}' if unit else f'{op} {v}' for op, v in counts.most_common())
            print(f'  {title} ({total:.1f}{unit}): {cells}' if unit else f'  {title} ({total}): {cells}')


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--runtimes', nargs='+', choices=RUNTIMES, default=list(RUNTIMES))
    parser.add_argument('--alphas', type=float, nargs='+', default=[0.125, 0.25, 0.5, 0.75])
    parser.add_argument('--batch-sizes', type=int, nargs='+', default=[1, 8])
    parser.add_argument('--threads', type=int, default=2)
    parser.add_argument('--img-size', type=int, default=224)
    parser.add_argument('--rounds', type=int, default=5, help='rounds per runtime and batch size (median)')
    parser.add_argument('--calls', type=int, default=3,
                        help='eager / compile: calls of a model per round (the first is not timed); runtime files: '
                             'timed calls per process (at least 5)')
    parser.add_argument('--reference', default=None, help='folder with the reference oct_resnet.py / octconv.py')
    parser.add_argument('--profile', action='store_true', help='node counts and ms per op type instead of timings')
    args = parser.parse_args(argv)
    if args.calls < 2:
        parser.error('--calls must be at least 2 (the first call of each turn is not timed)')
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    input_size = (3, args.img_size, args.img_size)

    models = build_models(args)
    if args.profile:
        with tempfile.TemporaryDirectory() as workdir:
            profile(models, input_size, args.threads, Path(workdir))
        return
    flops = {name: gflops(m, args.img_size) for name, m in models.items()}
    ms: Dict[tuple, float] = {}
    with tempfile.TemporaryDirectory() as workdir:
        for runtime in args.runtimes:
            if runtime in ('eager', 'compile'):
                runners = eager_runners(runtime, models, input_size)
            else:
                files = export_files(runtime, models, input_size, Path(workdir))
            for batch_size in args.batch_sizes:
                if runtime in ('eager', 'compile'):
                    median = time_models(runners, torch.randn(batch_size, *input_size), args.rounds, args.calls)
                else:
                    median = time_files(files, batch_size, args.rounds, max(args.calls, 5), args.threads)
                for name, t in median.items():
                    ms[(name, runtime, batch_size)] = t * 1e3

    print(f'torch {torch.__version__}, timm {timm.__version__}, {args.threads} threads, {args.img_size}x'
          f'{args.img_size}, median of {args.rounds} rounds; ms and ratio to resnet50 in the same runtime')
    for batch_size in args.batch_sizes:
        cols = ''.join(f'{rt:>21}' for rt in args.runtimes)
        header = f'{"batch " + str(batch_size):<30}{"GFLOPs":>7}{"ratio":>7}{cols}{"best":>8}'
        print(f'\n{header}\n{"-" * len(header)}')
        best_base = min(ms[('resnet50', rt, batch_size)] for rt in args.runtimes)
        for name in models:
            cells = ''
            for rt in args.runtimes:
                t, base = ms[(name, rt, batch_size)], ms[('resnet50', rt, batch_size)]
                cells += f'{t:>13.1f} ({t / base:.3f})'
            best = min(ms[(name, rt, batch_size)] for rt in args.runtimes) / best_base
            print(f'{name:<30}{flops[name]:>7.2f}{flops[name] / flops["resnet50"]:>7.3f}{cells}{best:>8.3f}')


if __name__ == '__main__':
    main()
