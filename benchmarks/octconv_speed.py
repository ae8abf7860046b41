"""Oct-ResNet-50 vs timm's ResNet-50 on the CPU: latency per memory format, GFLOPs, and ratios, in one run.

    python benchmarks/octconv_speed.py                       # eager, alpha 0 .. 0.75, batch 1 and 8, 2 threads
    python benchmarks/octconv_speed.py --compile             # adds torch.compile rows (slow to compile)
    python benchmarks/octconv_speed.py --reference DIR       # adds the PyTorch reference (a checkout of
                                                             # d-li14/octconv.pytorch) for comparison
    python benchmarks/octconv_speed.py --stages              # where the time goes: ms per stage, channels_last
    python benchmarks/octconv_speed.py --reparam             # adds the models after the inference step
                                                             # (timm_groupoct.prepare_for_inference)

Every model runs once per round, in turn (interleaved), so load on the machine hits them alike; the table gives
the median over rounds. "NCHW" is a model and input in the default layout; "channels_last" converts the model
with `model.to(memory_format=torch.channels_last)` and feeds the same NCHW input (the weights' layout is what
counts). The ratio compares each model's best layout with ResNet-50's best.

"+reparam" rows run the models after the inference step: the octave models through
`timm_groupoct.prepare_for_inference` at the benchmark's input size (as `timm-groupoct eval --reparam` does:
batch norms folded into the convs, 1x1 convs as GEMMs, bands fixed to the size), ResNet-50 with its batch norms
folded by torch.fx's conv-bn `fuse` (timm's `reparameterize_model` leaves it as it is), so that the two can also
be compared with the same treatment. benchmarks/runtimes.py compares the models in onnxruntime and OpenVINO.
"""
import argparse
import importlib
import statistics
import sys
import time
from typing import Callable, Dict, List

import torch
import timm
from torch.fx.experimental.optimization import fuse as fx_fuse_conv_bn
from torch.utils.flop_counter import FlopCounterMode

import timm_groupoct

FORMATS = {'NCHW': torch.contiguous_format, 'channels_last': torch.channels_last}


def gflops(model: torch.nn.Module, size: int) -> float:
    with FlopCounterMode(display=False) as counter, torch.inference_mode():
        model(torch.randn(1, 3, size, size))
    return counter.get_total_flops() / 1e9


def build(args) -> Dict[str, Callable[[], torch.nn.Module]]:
    makers = {'resnet50': lambda: timm.create_model('resnet50')}
    for alpha in args.alphas:
        makers[f'oct_resnet50 a={alpha:g}'] = lambda a=alpha: timm.create_model('oct_resnet50', alpha=a)
    if args.reparam:
        makers['resnet50 +reparam'] = lambda: fx_fuse_conv_bn(timm.create_model('resnet50').eval())
        for alpha in args.alphas:
            makers[f'oct_resnet50 a={alpha:g} +reparam'] = lambda a=alpha: timm_groupoct.prepare_for_inference(
                timm.create_model('oct_resnet50', alpha=a), (3, args.img_size, args.img_size), inplace=True)
    if args.reference:
        sys.path.insert(0, args.reference)
        reference = importlib.import_module('oct_resnet')
        makers['reference a=0.5'] = reference.oct_resnet50
    return makers


def time_round_robin(runners: Dict[str, Callable[[], None]], rounds: int) -> Dict[str, float]:
    """Median seconds per call of each runner, calling them in turn `rounds` times after one warm-up call."""
    for run in runners.values():
        run()
    times: Dict[str, List[float]] = {k: [] for k in runners}
    for _ in range(rounds):
        for name, run in runners.items():
            start = time.perf_counter()
            run()
            times[name].append(time.perf_counter() - start)
    return {k: statistics.median(v) for k, v in times.items()}


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--alphas', type=float, nargs='+', default=[0, 0.125, 0.25, 0.5, 0.75])
    parser.add_argument('--batch-sizes', type=int, nargs='+', default=[1, 8])
    parser.add_argument('--threads', type=int, default=2)
    parser.add_argument('--img-size', type=int, default=224)
    parser.add_argument('--rounds', type=int, default=10, help='timed calls per model (median reported)')
    parser.add_argument('--compile', action='store_true', help='also time torch.compile (channels_last only)')
    parser.add_argument('--reference', default=None, help='folder with the reference oct_resnet.py / octconv.py')
    parser.add_argument('--stages', action='store_true', help='also time each stage (channels_last, eager)')
    parser.add_argument('--reparam', action='store_true', help='also time the models after the inference step')
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)

    makers = build(args)
    models = {name: make().eval() for name, make in makers.items()}
    flops = {name: gflops(m, args.img_size) for name, m in models.items()}
    variants = {}
    for name, model in models.items():
        for fmt, memory_format in FORMATS.items():
            variants[(name, fmt)] = make_variant(makers[name], model, memory_format)
        if args.compile:
            variants[(name, 'compiled')] = torch.compile(variants[(name, 'channels_last')])

    print(f'torch {torch.__version__}, timm {timm.__version__}, {args.threads} threads, '
          f'{args.img_size}x{args.img_size}, median of {args.rounds} interleaved rounds, eval, inference_mode')
    for batch_size in args.batch_sizes:
        x = torch.randn(batch_size, 3, args.img_size, args.img_size)
        with torch.inference_mode():
            runners = {key: (lambda m=m: m(x)) for key, m in variants.items()}
            median = time_round_robin(runners, args.rounds)
        print_table(batch_size, models, flops, median, args.compile)
        if args.stages:
            staged = {name: variants[(name, 'channels_last')] for name in models}  # the reference has no stages
            print_stage_table(batch_size, {k: m for k, m in staged.items() if hasattr(m, 'feature_info')}, x,
                              args.rounds)


def make_variant(make: Callable[[], torch.nn.Module], model: torch.nn.Module, memory_format) -> torch.nn.Module:
    variant = make().eval()
    variant.load_state_dict(model.state_dict())
    return variant.to(memory_format=memory_format)


def print_table(batch_size, models, flops, median, with_compile) -> None:
    base_flops = flops['resnet50']
    best = {name: min(median[(name, f)] for f in FORMATS) for name in models}
    base_best = best['resnet50']
    cols = ['NCHW ms', 'ch-last ms', 'best/r50']
    if with_compile:
        cols += ['compiled ms', 'compiled/r50']
    header = f'{"model":<30} {"GFLOPs":>7} {"FLOP ratio":>10} ' + ' '.join(f'{c:>12}' for c in cols)
    print(f'\nbatch {batch_size}\n{header}\n{"-" * len(header)}')
    for name in models:
        row = [median[(name, 'NCHW')] * 1e3, median[(name, 'channels_last')] * 1e3, best[name] / base_best]
        if with_compile:
            row += [median[(name, 'compiled')] * 1e3, median[(name, 'compiled')] / median[('resnet50', 'compiled')]]
        cells = [f'{v:>12.1f}' if 'ms' in c else f'{v:>12.3f}' for c, v in zip(cols, row)]
        print(f'{name:<30} {flops[name]:>7.2f} {flops[name] / base_flops:>10.3f} ' + ' '.join(cells))
    if 'resnet50 +reparam' in best:
        print('\nboth with batch norms folded, best layout, ratio to resnet50 +reparam:')
        for name in best:
            if name.startswith('oct_resnet50') and name.endswith('+reparam'):
                print(f'  {name:<30} {best[name] / best["resnet50 +reparam"]:.3f}')


def stage_times(model: torch.nn.Module, x: torch.Tensor, rounds: int) -> List[float]:
    """Median seconds of each segment of a forward: stem, each stage (cut at `feature_info`'s modules), head."""
    modules = dict(model.named_modules())
    marks: List[float] = []
    hooks = [modules[f['module']].register_forward_hook(lambda *_: marks.append(time.perf_counter()))
             for f in model.feature_info]
    segments: List[List[float]] = []
    with torch.inference_mode():
        for i in range(rounds + 1):
            marks.clear()
            start = time.perf_counter()
            model(x)
            points = [start] + marks + [time.perf_counter()]
            if i:  # the first call warms up
                segments.append([b - a for a, b in zip(points, points[1:])])
    for hook in hooks:
        hook.remove()
    return [statistics.median(column) for column in zip(*segments)]


def stage_flops(model: torch.nn.Module, x: torch.Tensor) -> List[float]:
    """FLOPs of the segments `stage_times` times: stem, each stage, head."""
    with FlopCounterMode(display=False) as counter, torch.inference_mode():
        model(x)
    counts = {k: sum(v.values()) for k, v in counter.get_flop_counts().items()}
    cls = type(model).__name__
    stages = [counts.get(f'{cls}.{f["module"]}', 0) for f in model.feature_info[1:]]
    head = counts.get(f'{cls}.{model.pretrained_cfg["classifier"]}', 0)
    return [counts['Global'] - sum(stages) - head] + stages + [head]


def print_stage_table(batch_size, models, x, rounds) -> None:
    times = {name: stage_times(model, x, rounds) for name, model in models.items()}
    flops = {name: stage_flops(model, x[:1]) for name, model in models.items()}
    cols = ['stem'] + [f'stage {i}' for i in range(1, len(times['resnet50']) - 1)] + ['head']
    header = f'{"ms (ratio to r50)":<30} ' + ' '.join(f'{c:>14}' for c in cols)
    print(f'\nbatch {batch_size}, channels_last, per stage\n{header}\n{"-" * len(header)}')
    for name, row in times.items():
        print(f'{name:<30} ' + ' '.join(f'{t * 1e3:>7.1f} ({t / b:.2f})' for t, b in zip(row, times['resnet50'])))
        if name != 'resnet50':
            print(f'{"  FLOP ratio":<30} ' + ' '.join(f'{f / b:>14.2f}' for f, b in zip(flops[name],
                                                                                    flops['resnet50'])))


if __name__ == '__main__':
    main()
