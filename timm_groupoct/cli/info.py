"""`timm-groupoct info MODEL [--input-size C H W]`: stage shapes, parameters, GFLOPs and groups."""
from ..summary import model_report
from ._common import CLIError, check_model_name, create_model_for_cli


def add_parser(sub):
    p = sub.add_parser('info', help='shape and cost report of a model',
                       description='Per-stage output shapes, parameters and GFLOPs (torch.utils.flop_counter), '
                                   'and the group count of every grouped convolution.')
    p.add_argument('model', help='model name, e.g. groupnet_small')
    p.add_argument('--input-size', nargs=3, type=int, metavar=('C', 'H', 'W'),
                   help="input size; default: the model's pretrained cfg input_size")
    p.add_argument('--num-classes', type=int, default=None, help='classifier size (default: the model default)')
    p.set_defaults(run=run)


def run(args) -> int:
    name = check_model_name(args.model)
    kwargs = {} if args.num_classes is None else dict(num_classes=args.num_classes)
    input_size = args.input_size
    if input_size is not None:
        if any(s < 1 for s in input_size):
            raise CLIError(f'--input-size must be positive, got {" ".join(map(str, input_size))}')
        kwargs['in_chans'] = input_size[0]
    model = create_model_for_cli(name, **kwargs)
    input_size = input_size or model.pretrained_cfg['input_size']
    try:
        report = model_report(model, input_size, name=name)
    except RuntimeError as e:
        raise CLIError(f'{name} cannot run on input {tuple(input_size)}: {e}') from e
    print(report.format())
    return 0
