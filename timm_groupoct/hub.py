"""Weight files in and out: safe checkpoint reading, and turning a checkpoint into a Hub-ready folder.

Checkpoints are read with safetensors, or with `torch.load(weights_only=True)` for `.pth` / `.pt` / `.bin`: no
arbitrary unpickling. A folder written here (`model.safetensors` + timm's `config.json`) loads with
`timm.create_model('local-dir:DIR', pretrained=True)`, or from the Hub once uploaded.
"""
import importlib
from pathlib import Path
from typing import Callable, Dict, Optional, Union

import timm
import torch
from safetensors import SafetensorError
from safetensors.torch import load_file
from timm.models import save_for_hf

__all__ = ['CheckpointError', 'load_checkpoint', 'checkpoint_filter_for', 'convert_checkpoint']

PathLike = Union[str, Path]
_NESTED_KEYS = ('state_dict', 'model', 'model_state_dict')


class CheckpointError(ValueError):
    """A checkpoint that cannot be read or does not fit the model; the message names the file."""


def load_checkpoint(path: PathLike) -> Dict[str, torch.Tensor]:
    """The state dict in `path` (.safetensors, or a torch file read with weights_only=True; a training
    checkpoint's nested 'state_dict' / 'model' entry is taken)."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f'checkpoint {path} does not exist')
    try:
        if path.suffix == '.safetensors':
            return load_file(str(path), device='cpu')
        obj = torch.load(path, map_location='cpu', weights_only=True)
    except (SafetensorError, RuntimeError, EOFError, OSError) as e:
        raise CheckpointError(f'cannot read checkpoint {path} (truncated or not a weights file?): {e}') from e
    except Exception as e:  # weights_only refuses pickled objects that are not plain tensors and containers
        raise CheckpointError(f'refusing to unpickle {path}: it holds more than tensors ({e}). '
                              f'Re-save its state dict with safetensors or torch.save(state_dict).') from e
    for key in _NESTED_KEYS:
        if isinstance(obj, dict) and isinstance(obj.get(key), dict):
            obj = obj[key]
            break
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise CheckpointError(f'checkpoint {path} holds no state dict (a mapping of names to tensors)')
    return obj


def checkpoint_filter_for(model_name: str) -> Optional[Callable]:
    """The `checkpoint_filter_fn` of the family module that registers `model_name`, if it has one."""
    module = importlib.import_module(timm.models.model_entrypoint(model_name).__module__)
    return getattr(module, 'checkpoint_filter_fn', None)


def convert_checkpoint(model_name: str, checkpoint: PathLike, out_dir: PathLike, **model_kwargs) -> torch.nn.Module:
    """Load `checkpoint` (any layout the family's filter knows) into `model_name` and write a Hub-ready folder.

    The class count is read from the checkpoint's classifier. A key or shape that does not fit is a
    `CheckpointError` naming the file and the first mismatching keys; nothing is written then.
    """
    state_dict = load_checkpoint(checkpoint)
    filter_fn = checkpoint_filter_for(model_name)
    model = timm.create_model(model_name, **model_kwargs)
    if filter_fn is not None:
        state_dict = filter_fn(state_dict, model)
    classifier = model.pretrained_cfg.get('classifier', 'fc')
    if f'{classifier}.weight' in state_dict and 'num_classes' not in model_kwargs:
        num_classes = state_dict[f'{classifier}.weight'].shape[0]
        if num_classes != model.num_classes:
            model = timm.create_model(model_name, num_classes=num_classes, **model_kwargs)
    check_state_dict_fits(model, state_dict, checkpoint)
    model.load_state_dict(state_dict)
    save_for_hf(model, str(out_dir), safe_serialization=True)
    return model


def check_state_dict_fits(model: torch.nn.Module, state_dict: Dict[str, torch.Tensor], source: PathLike,
                          show: int = 5) -> None:
    """Raise a CheckpointError listing the first missing, unexpected and mis-shaped keys."""
    own = model.state_dict()
    missing = [k for k in own if k not in state_dict]
    unexpected = [k for k in state_dict if k not in own]
    shapes = [f'{k}: {tuple(state_dict[k].shape)} in the file, {tuple(v.shape)} in the model'
              for k, v in own.items() if k in state_dict and state_dict[k].shape != v.shape]
    problems = [(f'{len(items)} {what}', items[:show]) for what, items in (
        ('missing keys', missing), ('unexpected keys', unexpected), ('shape mismatches', shapes)) if items]
    if problems:
        detail = '; '.join(f"{head} (first: {', '.join(items)})" for head, items in problems)
        raise CheckpointError(f'checkpoint {source} does not fit {type(model).__name__}: {detail}')
