"""`timm-groupoct export MODEL --checkpoint CKPT --out DIR [--push ORG/REPO]`: weights -> a Hub-ready folder."""
from pathlib import Path

from ..hub import CheckpointError, export_for_hub, push_to_hub
from ._common import CLIError, check_model_name


def add_parser(sub):
    p = sub.add_parser(
        'export', help='write a Hub-ready folder (weights, config, model card) for a checkpoint',
        description="Reads CKPT (.safetensors, a .pth state dict, or a training checkpoint of this package or timm's "
                    "train.py, whose EMA weights are taken when it has them; the class count comes from its "
                    "classifier) and writes DIR/model.safetensors, "
                    "DIR/config.json and a model card DIR/README.md. Load the folder with "
                    "timm.create_model('local-dir:DIR', pretrained=True), or after --push with 'hf-hub:ORG/REPO'.")
    p.add_argument('model', help='model name, e.g. octnet_mini')
    p.add_argument('--checkpoint', required=True, help='checkpoint file')
    p.add_argument('--out', required=True, help='output folder')
    p.add_argument('--labels', default=None,
                   help='class names: a file with one per line, or a comma-separated list (default: none stored)')
    p.add_argument('--metric', action='append', default=[], metavar='NAME=VALUE',
                   help='a metric for the model card, e.g. --metric top1=97.5 (repeatable)')
    p.add_argument('--push', default=None, metavar='ORG/REPO', help='upload the folder to the Hugging Face Hub')
    p.set_defaults(run=run)


def _labels(value):
    if value is None:
        return None
    path = Path(value)
    names = path.read_text().splitlines() if path.is_file() else value.split(',')
    return [n.strip() for n in names if n.strip()]


def _metrics(items):
    metrics = {}
    for item in items:
        name, sep, value = item.partition('=')
        try:
            metrics[name.strip()] = float(value)
        except ValueError:
            sep = ''
        if not sep or not name.strip():
            raise CLIError(f'--metric takes NAME=VALUE with a number, got {item!r}')
    return metrics


def run(args) -> int:
    name = check_model_name(args.model)
    try:
        model, paths = export_for_hub(name, args.checkpoint, args.out, label_names=_labels(args.labels),
                                      metrics=_metrics(args.metric))
    except CheckpointError as e:
        raise CLIError(str(e)) from e
    print(f'exported {args.checkpoint} as {name} ({model.num_classes} classes) -> '
          + ', '.join(str(p) for p in paths))
    if args.push:
        print(f'pushed to {push_to_hub(args.out, args.push)}')
    else:
        print(f"load it with timm.create_model('local-dir:{args.out}', pretrained=True)")
    return 0
