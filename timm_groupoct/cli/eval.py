"""`timm-groupoct eval --model NAME|hf-hub:...|local-dir:... --data digits|DIR|torch/...`: top-1/top-5, loss, img/s."""
from torch.utils.data import DataLoader

from ..data import load_data
from ..train import evaluate
from ._common import CLIError, add_inference_args, check_model_name, load_for_inference, positive_int


def add_parser(sub):
    p = sub.add_parser('eval', help='evaluate a model on digits or an image folder')
    p.add_argument('--model', required=True, help="model name, 'hf-hub:ORG/REPO' or 'local-dir:DIR'")
    p.add_argument('--data', default='digits',
                   help="'digits', an image folder with train/ and val/<class>/ images, or a timm data set name")
    p.add_argument('--data-dir', default=None, help='root folder of a torch/ or hfds/ data set')
    p.add_argument('--val-split', default='validation', help='the split to evaluate')
    p.add_argument('--pretrained', action='store_true', help='load weights (implied for hf-hub: / local-dir:)')
    p.add_argument('--img-size', type=positive_int, default=None, help="input size (default: the weights' own)")
    p.add_argument('-b', '--batch-size', type=positive_int, default=128)
    add_inference_args(p)
    p.set_defaults(run=run)


def run(args) -> int:
    name = check_model_name(args.model)
    model = load_for_inference(name, args)
    input_size = model.pretrained_cfg['input_size']
    if args.runtime and args.img_size and args.img_size != input_size[-1]:
        raise CLIError(f'the runtime file takes {input_size[-1]}x{input_size[-1]} images, not --img-size '
                       f'{args.img_size}: export it with --img-size {args.img_size} or --dynamic-size')
    try:
        arch = model.pretrained_cfg.get('architecture', name)
        data = load_data(args.data, arch, args.img_size or model.pretrained_cfg['input_size'][-1],
                         root=args.data_dir, val_split=args.val_split)
    except ValueError as e:  # DataError
        raise CLIError(str(e)) from e
    if model.num_classes != len(data.class_names) or model.pretrained_cfg['input_size'][0] != data.in_chans:
        raise CLIError(f'{name} takes {model.pretrained_cfg["input_size"][0]}-channel images into '
                       f'{model.num_classes} classes; {args.data} has {data.in_chans}-channel images in '
                       f'{len(data.class_names)} classes')
    m = evaluate(model, DataLoader(data.val, batch_size=args.batch_size), channels_last=args.channels_last)
    print(f"{name} on {args.data} ({len(data.val)} images): top-1 {m['top1']:.2f}%, top-5 {m['top5']:.2f}%, "
          f"loss {m['loss']:.4f}, {m['images_per_s']:.0f} images/s")
    return 0
