"""What the subcommands share: model-name checks with helpful errors, common option help."""
import argparse
import difflib

import timm
import torch
import torch.nn as nn

import timm_groupoct


CHANNELS_LAST_HELP = 'run in channels_last memory format (on the CPU much faster for octave models)'


class CLIError(Exception):
    """A user error: printed as one message; exit status 2 unless given."""

    def __init__(self, message: str, exit_status: int = 2):
        super().__init__(message)
        self.exit_status = exit_status


def check_model_name(name: str) -> str:
    """Return `name` if timm can build it, else raise a CLIError listing close matches."""
    if name.startswith(('hf-hub:', 'local-dir:')) or timm.is_model(name):
        return name
    ours = timm_groupoct.list_models()
    close = difflib.get_close_matches(name, ours, n=5, cutoff=0.5) or \
        difflib.get_close_matches(name, timm.list_models(), n=5, cutoff=0.6)
    hint = f' Close matches: {", ".join(close)}.' if close else ''
    raise CLIError(f"unknown model '{name}'.{hint} `timm-groupoct list` shows this package's models.")


def add_inference_args(parser: argparse.ArgumentParser) -> None:
    """`--channels-last` and `--reparam`, the flags of timm's validate.py that make inference faster."""
    parser.add_argument('--channels-last', action='store_true', help=CHANNELS_LAST_HELP)
    parser.add_argument('--reparam', action='store_true',
                        help="the inference step, timm_groupoct.prepare_for_inference (batch norms folded into the "
                             "convolutions, 1x1 convs as GEMMs under --channels-last): the same "
                             "outputs up to rounding, faster")


def apply_inference_args(model: nn.Module, args: argparse.Namespace) -> nn.Module:
    """Apply `add_inference_args`' flags to a model, in place."""
    if args.reparam:
        model = timm_groupoct.prepare_for_inference(model, inplace=True)
    if args.channels_last:
        model.to(memory_format=torch.channels_last)
    return model
