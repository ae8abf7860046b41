"""Reading weights: safe checkpoint files, the Hub's files through huggingface_hub, and the fit check.

Files are read with safetensors, or with `torch.load(weights_only=True)` for `.pth` / `.pt` / `.bin`: no arbitrary
unpickling. Every failure names the file.
"""
import argparse
import re
from pathlib import Path
from typing import Any, Dict, Iterable, Tuple, Union

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file

__all__ = [
    'CheckpointError', 'read_checkpoint', 'load_checkpoint', 'check_state_dict_fits', 'fetch_hub_weights',
    'weights_file_in', 'load_torch_file', 'names_weights_location', 'resnet_layout_key',
]

# the weight files a Hub-style folder may hold, preferred first (timm's order)
WEIGHT_FILES = ('model.safetensors', 'pytorch_model.bin', 'model.pth', 'open_clip_pytorch_model.bin')

PathLike = Union[str, Path]
# a training checkpoint's weights; EMA weights first, as timm's load_checkpoint(use_ema=True) takes them (timm's
# train.py and ours report the EMA's metric when they keep one)
_NESTED_KEYS = ('state_dict_ema', 'state_dict', 'model', 'model_state_dict')


def names_weights_location(model_name: str) -> bool:
    """Whether a model name is a place to load weights from, 'hf-hub:ORG/REPO' or 'local-dir:DIR' (timm's
    prefixes), rather than an architecture name."""
    return model_name.startswith(('hf-hub:', 'local-dir:'))


def resnet_layout_key(key: str) -> str:
    """A timm / torchvision ResNet key in this package's layout: DataParallel's `module.` prefix dropped,
    `conv1` / `bn1` -> `stem.0.conv` / `stem.0.bn`, `layerN.` -> `stages.{N-1}.`; other keys unchanged."""
    key = re.sub(r'^module\.', '', key)
    key = re.sub(r'^conv1\.', 'stem.0.conv.', key)
    key = re.sub(r'^bn1\.', 'stem.0.bn.', key)
    return re.sub(r'^layer(\d+)\.', lambda m: f'stages.{int(m.group(1)) - 1}.', key)


class CheckpointError(ValueError):
    """A checkpoint that cannot be read or does not fit the model; the message names the file."""


def check_state_dict_fits(model: torch.nn.Module, state_dict: Dict[str, torch.Tensor], source: Union[str, Path],
                          show: int = 5, adaptable: Iterable[str] = ()) -> None:
    """Raise a CheckpointError listing the first missing, unexpected and mis-shaped keys.

    `adaptable`: keys the loader adapts itself (a classifier replaced for another class count or dropped for
    features_only, a first conv summed for another channel count); they are not checked.
    """
    own = model.state_dict()
    adaptable = set(adaptable)
    missing = [k for k in own if k not in state_dict and k not in adaptable]
    unexpected = [k for k in state_dict if k not in own and k not in adaptable]
    shapes = [f'{k}: {tuple(state_dict[k].shape)} in the file, {tuple(v.shape)} in the model'
              for k, v in own.items() if k in state_dict and k not in adaptable and state_dict[k].shape != v.shape]
    # an integer or bool tensor would be cast into a float parameter without a word
    kinds = [f'{k}: {state_dict[k].dtype} in the file, {v.dtype} in the model' for k, v in own.items()
             if k in state_dict and state_dict[k].is_floating_point() != v.is_floating_point()]
    problems = [(f'{len(items)} {what}', items[:show]) for what, items in (
        ('missing keys', missing), ('unexpected keys', unexpected), ('shape mismatches', shapes),
        ('dtype mismatches (integer or bool against floating point)', kinds)) if items]
    if problems:
        detail = '; '.join(f"{head} (first: {', '.join(items)})" for head, items in problems)
        raise CheckpointError(f'checkpoint {source} does not fit {type(model).__name__}: {detail}')


def read_checkpoint(path: PathLike) -> Tuple[Dict[str, torch.Tensor], Dict[str, Any]]:
    """(state dict, metadata) of `path`: a .safetensors file, or a torch file read with weights_only=True.

    A training checkpoint (this package's or timm train.py's: `state_dict` plus `epoch`, `metric`, `arch`, `args`)
    gives its `state_dict_ema` if it has one, else its `state_dict`, and the other plain entries as metadata.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f'checkpoint {path} does not exist')
    if path.suffix == '.safetensors':
        try:
            return load_file(str(path), device='cpu'), {}
        except (SafetensorError, OSError) as e:
            raise CheckpointError(f'cannot read checkpoint {path} (truncated or not a weights file?): {e}') from e
    obj = load_torch_file(path)
    meta: Dict[str, Any] = {}
    for key in _NESTED_KEYS:
        if isinstance(obj, dict) and isinstance(obj.get(key), dict):
            meta = {k: v for k, v in obj.items() if isinstance(v, (int, float, str))}
            if isinstance(obj.get('data_config'), dict):
                meta['data_config'] = dict(obj['data_config'])
            names = obj.get('label_names')
            if isinstance(names, (list, tuple)) and all(isinstance(n, str) for n in names):
                meta['label_names'] = list(names)
            obj = obj[key]
            break
    if not isinstance(obj, dict) or not obj or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise CheckpointError(f'checkpoint {path} holds no state dict (a mapping of names to tensors)')
    return obj, meta


def load_torch_file(path: PathLike) -> Any:
    """`torch.load(path, weights_only=True)`: tensors and plain containers only (timm train.py's argparse Namespace
    allowed), or a CheckpointError naming the file."""
    try:
        with torch.serialization.safe_globals([argparse.Namespace]):
            return torch.load(path, map_location='cpu', weights_only=True)
    except (RuntimeError, EOFError, OSError) as e:
        raise CheckpointError(f'cannot read checkpoint {path} (truncated or not a weights file?): {e}') from e
    except Exception as e:  # weights_only refuses pickled objects that are not plain tensors and containers
        raise CheckpointError(f'refusing to unpickle {path}: it holds more than tensors ({e}). '
                              f'Re-save its state dict with safetensors or torch.save(state_dict).') from e


def load_checkpoint(path: PathLike) -> Dict[str, torch.Tensor]:
    """The state dict in `path` (see `read_checkpoint`)."""
    return read_checkpoint(path)[0]


def weights_file_in(folder: PathLike) -> Path:
    """The weights file of a Hub-style folder (model.safetensors preferred)."""
    folder = Path(folder)
    if not folder.is_dir():
        raise CheckpointError(f'{folder} is not a folder of weights (local-dir: takes a folder)')
    for name in WEIGHT_FILES:
        if (folder / name).is_file():
            return folder / name
    raise CheckpointError(f'{folder} holds none of {", ".join(WEIGHT_FILES)}')


def fetch_hub_weights(hf_hub_id: str) -> Dict[str, torch.Tensor]:
    """The weights of Hub repo `hf_hub_id` ('org/name' or 'org/name@revision'): `model.safetensors`, else
    `pytorch_model.bin` read with weights_only=True (the files timm publishes), via huggingface_hub's cache."""
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import EntryNotFoundError, LocalEntryNotFoundError
    repo_id, _, revision = hf_hub_id.partition('@')
    try:
        path = hf_hub_download(repo_id, 'model.safetensors', revision=revision or None)
    except (EntryNotFoundError, LocalEntryNotFoundError) as first:
        try:
            path = hf_hub_download(repo_id, 'pytorch_model.bin', revision=revision or None)
        except (EntryNotFoundError, LocalEntryNotFoundError):
            raise first
    return load_checkpoint(path)
