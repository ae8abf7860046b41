"""`timm-groupoct experiment bn-vs-gn`: the BatchNorm-vs-GroupNorm experiment of Wu & He (arXiv:1803.08494) on
scikit-learn's digits."""
import time
from pathlib import Path

from ._common import CLIError, check_model_name


def add_parser(sub):
    p = sub.add_parser('experiment', help='reproducible experiments on built-in data')
    experiments = p.add_subparsers(dest='experiment', required=True, metavar='EXPERIMENT')
    q = experiments.add_parser(
        'bn-vs-gn', help='the same model with BatchNorm and GroupNorm at several batch sizes, on digits',
        description='Trains MODEL with norm_layer=batchnorm and =groupnorm at each batch size on scikit-learn\'s '
                    'digits (1,437 train / 360 val images, fixed split and seeds) and writes results.csv, '
                    'results.md (final train loss, val top-1, images/s) and curves.png to --output.')
    q.add_argument('--model', default='groupnet_small', help='model name (default: groupnet_small)')
    q.add_argument('--batch-sizes', type=int, nargs='+', default=[2, 4, 16, 32])
    q.add_argument('--epochs', type=int, default=3)
    q.add_argument('--img-size', type=int, default=16, help='digits are upscaled from 8x8 to this size')
    q.add_argument('--lr', type=float, default=1e-3, help='AdamW learning rate, the same for every run')
    q.add_argument('--seed', type=int, default=0)
    q.add_argument('--max-train-samples', type=int, default=0, help='train on the first N images only (0: all)')
    q.add_argument('--output', default='runs/bn-vs-gn', help='output folder')
    q.set_defaults(run=run)


def run(args) -> int:
    name = check_model_name(args.model)
    if min(args.batch_sizes) < 2:
        raise CLIError(f'batch sizes must be at least 2 (BatchNorm needs two samples), got {args.batch_sizes}')
    if args.epochs < 1:
        raise CLIError(f'--epochs must be at least 1, got {args.epochs}')
    out = Path(args.output)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise CLIError(f'cannot create the output folder {out}: {e.strerror}') from e
    try:
        from ..experiments import bn_vs_gn, format_table, write_results
        start = time.perf_counter()
        results = bn_vs_gn(name, args.batch_sizes, args.epochs, args.img_size, args.lr, args.seed,
                           max_train_samples=args.max_train_samples)
    except ImportError as e:
        raise CLIError(str(e)) from e
    except ValueError as e:
        raise CLIError(str(e)) from e
    paths = write_results(results, out, title=f'{name} on digits ({args.img_size}px): BatchNorm vs GroupNorm')
    print(format_table(results))
    print(f'\n{len(results)} runs in {time.perf_counter() - start:.0f} s; wrote '
          + ', '.join(str(p) for p in paths.values()))
    return 0
