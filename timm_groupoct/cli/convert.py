"""`timm-groupoct convert MODEL CHECKPOINT --out DIR`: a foreign checkpoint -> a Hub-ready folder."""
import timm
import torch

from ..hub import CheckpointError, convert_checkpoint
from ._common import CLIError, check_model_name


def add_parser(sub):
    p = sub.add_parser(
        'convert', help='turn a checkpoint (e.g. the Oct-ResNet reference weights) into a Hub-ready folder',
        description='Reads CHECKPOINT (.safetensors, or .pth/.pt/.bin with weights_only=True), maps its keys with '
                    "the model family's filter, and writes DIR/model.safetensors + DIR/config.json, loadable with "
                    "timm.create_model('local-dir:DIR', pretrained=True).")
    p.add_argument('model', help='model name, e.g. oct_resnet50')
    p.add_argument('checkpoint', help='checkpoint file')
    p.add_argument('--out', required=True, help='output folder')
    p.add_argument('--alpha', type=float, default=None, help='octave models: alpha the checkpoint was trained with')
    p.add_argument('--overwrite', action='store_true', help='replace the files of an export already in --out')
    p.add_argument('--no-verify', action='store_true', help='skip reloading the folder and comparing outputs')
    p.set_defaults(run=run)


def run(args) -> int:
    name = check_model_name(args.model)
    kwargs = {} if args.alpha is None else dict(alpha=args.alpha)
    try:
        model = convert_checkpoint(name, args.checkpoint, args.out, overwrite=args.overwrite, **kwargs)
    except (CheckpointError, FileExistsError) as e:
        raise CLIError(str(e)) from e
    params = sum(p.numel() for p in model.parameters())
    print(f'converted {args.checkpoint} -> {args.out}/ ({name}, {params:,} parameters, '
          f'{model.num_classes} classes): model.safetensors, config.json')
    if not args.no_verify:
        reloaded = timm.create_model(f'local-dir:{args.out}', pretrained=True).eval()
        x = torch.randn(1, model.get_submodule(model.pretrained_cfg['first_conv']).weight.shape[1], 64, 64)
        with torch.no_grad():
            expected = model.eval()(x)
            diff = (reloaded(x) - expected).abs().max().item()
        if not torch.isfinite(expected).all():
            bad = [k for k, v in model.state_dict().items() if v.is_floating_point() and not torch.isfinite(v).all()]
            raise CLIError(f'{args.checkpoint} converts to a model with non-finite outputs: its weights hold NaN or '
                           f'inf' + (f' (first: {", ".join(bad[:5])})' if bad else ''))
        if not diff <= 1e-5:  # (NaN fails too)
            raise CLIError(f'reloading {args.out} does not reproduce the converted model (max diff {diff:.3g})')
        print(f"verified: timm.create_model('local-dir:{args.out}', pretrained=True) reproduces it "
              f'(max abs diff {diff:.1e})')
    return 0
