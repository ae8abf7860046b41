"""What the subcommands share: model-name checks with helpful errors, common option help."""
import argparse
import difflib
import json
import os
from pathlib import Path

import timm
import torch
import torch.nn as nn

import timm_groupoct
from timm_groupoct.deploy import RUNTIMES, ExportError, load_exported
from timm_groupoct.models._weights import names_weights_location


CHANNELS_LAST_HELP = 'run in channels_last memory format (on the CPU much faster for octave models)'


class CLIError(Exception):
    """A user error: printed as one message; exit status 2 unless given."""

    def __init__(self, message: str, exit_status: int = 2):
        super().__init__(message)
        self.exit_status = exit_status


def check_model_name(name: str) -> str:
    """Return `name` if timm can build it, else raise a CLIError listing close matches."""
    if names_weights_location(name) or timm.is_model(name):
        return name
    ours = timm_groupoct.list_models()
    close = difflib.get_close_matches(name, ours, n=5, cutoff=0.5) or \
        difflib.get_close_matches(name, timm.list_models(), n=5, cutoff=0.6)
    hint = f' Close matches: {", ".join(close)}.' if close else ''
    raise CLIError(f"unknown model '{name}'.{hint} `timm-groupoct list` shows this package's models.")


def positive_int(text: str) -> int:
    """argparse type: an integer >= 1."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f'{text!r} is not an integer') from None
    if value < 1:
        raise argparse.ArgumentTypeError(f'must be a positive integer, got {value}')
    return value


def _check_folder_config(folder: Path) -> None:
    """A `local-dir:` folder has a readable config.json holding a JSON object; else a CLIError naming it."""
    config = folder / 'config.json'
    if not folder.is_dir():
        raise CLIError(f'local-dir:{folder}: no such folder (a folder that `timm-groupoct export` wrote)')
    try:
        parsed = json.loads(config.read_text())
    except FileNotFoundError:
        raise CLIError(f'local-dir:{folder} has no config.json: it is not a folder that `timm-groupoct export` or '
                       f'timm wrote (export the checkpoint again)') from None
    except (OSError, ValueError) as e:
        raise CLIError(f'{config} is not valid JSON ({e}): export the folder again') from e
    if not isinstance(parsed, dict) or 'architecture' not in parsed:
        raise CLIError(f'{config} is not a timm model config (no "architecture" key): export the folder again')


def create_model_for_cli(name: str, **kwargs) -> nn.Module:
    """`timm.create_model(name, **kwargs)` with every way a name, a folder or the Hub can fail as a CLIError:
    the one path `eval`, `predict` and `info` load models through."""
    if name.startswith('local-dir:'):
        _check_folder_config(Path(name[len('local-dir:'):]))
    try:
        return timm.create_model(name, **kwargs)
    except (ValueError, RuntimeError, TypeError) as e:  # what timm and this package raise for bad weights / args
        raise CLIError(str(e)) from e
    except OSError as e:  # huggingface_hub: not in the offline cache, no such repo, no network
        hint = ' (HF_HUB_OFFLINE is set: only the local cache is read)' if os.environ.get('HF_HUB_OFFLINE') else ''
        raise CLIError(f'cannot load {name}: {type(e).__name__}: {str(e).splitlines()[0]}{hint}') from e


def add_inference_args(parser: argparse.ArgumentParser) -> None:
    """`--channels-last` and `--reparam`, the flags of timm's validate.py that make inference faster, and
    `--runtime`, which runs an exported runtime file instead of the torch model."""
    parser.add_argument('--runtime', choices=RUNTIMES, default=None,
                        help="run the runtime file of a folder written by `timm-groupoct export --format onnx|"
                             "openvino` (--model local-dir:DIR) in onnxruntime or OpenVINO, not the torch model")
    parser.add_argument('--channels-last', action='store_true', help=CHANNELS_LAST_HELP)
    parser.add_argument('--reparam', action='store_true',
                        help="the inference step, timm_groupoct.prepare_for_inference (batch norms folded into the "
                             "convolutions, 1x1 convs as GEMMs under --channels-last): the same "
                             "outputs up to rounding, faster")


def load_for_inference(name: str, args: argparse.Namespace) -> nn.Module:
    """The model the inference flags ask for: the torch model (weights loaded for --pretrained, hf-hub: and
    local-dir:) after --reparam / --channels-last, or with --runtime the folder's runtime file."""
    if args.runtime:
        if not name.startswith('local-dir:'):
            raise CLIError(f'--runtime runs the file in a folder that `timm-groupoct export --format onnx|openvino` '
                           f'wrote: give --model local-dir:DIR, got {name!r}')
        if args.reparam or args.channels_last:
            raise CLIError('--reparam and --channels-last change the torch model; a runtime file was exported '
                           'after the inference step already: drop them with --runtime')
        try:
            return load_exported(name[len('local-dir:'):], args.runtime)
        except (ExportError, ImportError, FileNotFoundError) as e:
            raise CLIError(str(e)) from e
    pretrained = getattr(args, 'pretrained', False) or names_weights_location(name)
    model = create_model_for_cli(name, pretrained=pretrained)
    if args.reparam:
        model = timm_groupoct.prepare_for_inference(model, inplace=True)
    if args.channels_last:
        model.to(memory_format=torch.channels_last)
    return model
