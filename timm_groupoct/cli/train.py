"""`timm-groupoct train --model NAME --data digits|DIR ...`: train or fine-tune with timm's machinery."""
from ..train import TrainConfig, TrainError, train
from ._common import CLIError, check_model_name


def add_parser(sub):
    p = sub.add_parser(
        'train', help='train or fine-tune a model (flags named as in timm train.py)',
        description="Trains MODEL on the built-in 'digits' data set or an image folder DIR (DIR/train/<class>/, "
                    'DIR/val/<class>/). Writes metrics.csv, curves.png, last.pth and best.pth to --output; '
                    "checkpoints are timm train.py's format, ready for `timm-groupoct export`.")
    p.add_argument('--model', required=True, help='model name, e.g. octnet_mini')
    p.add_argument('--data', default='digits', help="'digits' (built in, no download) or an image folder")
    p.add_argument('--pretrained', action='store_true', help='start from published weights (fine-tuning)')
    p.add_argument('--num-classes', type=int, default=None, help='checked against the classes the data has')
    p.add_argument('--img-size', type=int, default=None, help='input size (digits: default 32)')
    p.add_argument('--epochs', type=int, default=5)
    p.add_argument('-b', '--batch-size', type=int, default=64)
    p.add_argument('--opt', default='adamw', help="timm optimizer name (create_optimizer_v2), e.g. sgd, adamw")
    p.add_argument('--lr', type=float, default=1e-3)
    p.add_argument('--weight-decay', type=float, default=0.05)
    p.add_argument('--sched', default='cosine', help='timm scheduler name (create_scheduler_v2)')
    p.add_argument('--warmup-epochs', type=int, default=0)
    p.add_argument('--output', default='output/train', help='output folder')
    p.add_argument('--resume', default=None, help='continue from a last.pth written by this command')
    p.add_argument('--seed', type=int, default=0)
    p.add_argument('-j', '--workers', type=int, default=0, help='data loader processes')
    p.add_argument('--channels-last', action='store_true', help='train in channels_last memory format')
    p.add_argument('--no-progress', action='store_true', help='no progress bars (one line per epoch only)')
    p.set_defaults(run=run)


def run(args) -> int:
    check_model_name(args.model)
    fields = {k: getattr(args, k) for k in TrainConfig.__dataclass_fields__}
    try:
        result = train(TrainConfig(**fields), progress=not args.no_progress)
    except (TrainError, ImportError) as e:
        raise CLIError(str(e)) from e
    print(f"done: {result['epochs']} epochs, best val top-1 {result['best_top1']:.2f}%, "
          f"outputs in {result['output']}/ (metrics.csv, curves.png, last.pth, best.pth)")
    return 0
