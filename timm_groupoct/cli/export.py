"""`timm-groupoct export MODEL --checkpoint CKPT --out DIR [--format onnx|openvino] [--push ORG/REPO]`: weights ->
a Hub-ready folder, and optionally a runtime file in it, checked against the model."""
from pathlib import Path

from ..deploy import RUNTIME_FILES, ExportError, write_runtime_files
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
    p.add_argument('--overwrite', action='store_true', help='replace the files of an export already in --out')
    p.add_argument('--push', default=None, metavar='ORG/REPO', help='upload the folder to the Hugging Face Hub')
    g = p.add_argument_group(
        'runtime file', 'With --format, the folder also gets DIR/model.onnx (onnxruntime) or DIR/openvino_model.xml '
        '+ .bin (OpenVINO), exported after timm_groupoct.prepare_for_inference, checked against the model on '
        'random input, and DIR/runtime.json with its input size and preprocessing. `timm-groupoct eval/predict '
        '--model local-dir:DIR --runtime onnxruntime|openvino` run it.')
    g.add_argument('--format', choices=list(RUNTIME_FILES), default=None, help='also write a runtime file')
    g.add_argument('--img-size', type=int, default=None,
                   help="the file's input height and width (default: the model's input size)")
    g.add_argument('--dynamic-size', action='store_true',
                   help='any height and width (slower in the runtimes than a fixed size); the batch is always '
                        'dynamic')
    g.add_argument('--dynamo', action='store_true', help="onnx: torch's dynamo exporter instead of TorchScript's")
    g.add_argument('--opset', type=int, default=None, help="onnx: the opset (default: the exporter's)")
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


def _check_runtime_flags(args) -> None:
    if args.format is None and (args.img_size or args.dynamic_size or args.dynamo or args.opset):
        raise CLIError('--img-size, --dynamic-size, --dynamo and --opset shape a runtime file: add --format onnx '
                       'or --format openvino')
    if args.img_size is not None and args.img_size < 1:
        raise CLIError(f'--img-size must be positive, got {args.img_size}')
    if args.format == 'openvino' and (args.dynamo or args.opset):
        raise CLIError('--dynamo and --opset choose the ONNX exporter; they do nothing with --format openvino')


def _write_runtime_files(model, args) -> str:
    try:
        spec = write_runtime_files(model, args.out, args.format, args.img_size, dynamic_size=args.dynamic_size,
                                   dynamo=args.dynamo, opset=args.opset)
    except (ExportError, ImportError, ValueError) as e:
        raise CLIError(str(e)) from e
    size = 'any H x W' if spec['dynamic_size'] else 'x'.join(map(str, spec['input_size'][1:]))
    return (f"wrote {Path(args.out) / spec['file']} ({spec['runtime']}, {size}, any batch) and "
            f"{Path(args.out) / 'runtime.json'}; checked against the model on {tuple(spec['checked_input'])}: "
            f"max abs diff {spec['max_abs_diff']:.2e}")


def run(args) -> int:
    name = check_model_name(args.model)
    _check_runtime_flags(args)
    try:
        model, paths = export_for_hub(name, args.checkpoint, args.out, label_names=_labels(args.labels),
                                      metrics=_metrics(args.metric), overwrite=args.overwrite)
    except (CheckpointError, FileExistsError) as e:
        raise CLIError(str(e)) from e
    print(f'exported {args.checkpoint} as {name} ({model.num_classes} classes) -> '
          + ', '.join(str(p) for p in paths))
    if args.format:
        print(_write_runtime_files(model, args))
    if args.push:
        print(f'pushed to {push_to_hub(args.out, args.push)}')
    else:
        print(f"load it with timm.create_model('local-dir:{args.out}', pretrained=True)")
    return 0
