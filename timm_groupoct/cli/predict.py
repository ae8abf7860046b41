"""`timm-groupoct predict --model NAME|hf-hub:...|local-dir:... IMAGE...`: top-k classes with probabilities."""
from pathlib import Path

from ..train import TrainError, predict_images
from ._common import CLIError, add_inference_args, check_model_name, load_for_inference, positive_int


def add_parser(sub):
    p = sub.add_parser('predict', help='classify image files')
    p.add_argument('--model', required=True, help="model name, 'hf-hub:ORG/REPO' or 'local-dir:DIR'")
    p.add_argument('images', nargs='+', help='image files')
    p.add_argument('--top-k', type=positive_int, default=5, help='how many classes to print per image')
    p.add_argument('--img-size', type=positive_int, default=None, help="input size (default: the weights' own)")
    p.add_argument('--pretrained', action='store_true', help='load weights (implied for hf-hub: / local-dir:)')
    add_inference_args(p)
    p.set_defaults(run=run)


def run(args) -> int:
    name = check_model_name(args.model)
    missing = [p for p in args.images if not Path(p).is_file()]
    if missing:
        raise CLIError(f'no such image file: {", ".join(missing)}')
    model = load_for_inference(name, args)
    if args.runtime and args.img_size and args.img_size != model.pretrained_cfg['input_size'][-1]:
        raise CLIError(f'the runtime file takes {model.pretrained_cfg["input_size"][-1]}-pixel images, not '
                       f'--img-size {args.img_size}')
    try:
        results = predict_images(model, args.images, args.top_k, args.img_size)
    except TrainError as e:
        raise CLIError(str(e)) from e
    for path, top in zip(args.images, results):
        print(f'{path}: ' + ', '.join(f'{label} {prob:.1%}' for label, prob in top))
    return 0
