"""Weight files in and out: safe checkpoint reading, and turning a checkpoint into a Hub-ready folder.

Checkpoints are read with safetensors, or with `torch.load(weights_only=True)` for `.pth` / `.pt` / `.bin`: no
arbitrary unpickling. A folder written here (`model.safetensors` + timm's `config.json`) loads with
`timm.create_model('local-dir:DIR', pretrained=True)`, or from the Hub once uploaded.
"""
import importlib
import json
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple, Union

import timm
import torch
from timm.models import save_for_hf

from .models._weights import CheckpointError, check_state_dict_fits, load_checkpoint, read_checkpoint

__all__ = [
    'CheckpointError', 'read_checkpoint', 'load_checkpoint', 'checkpoint_filter_for', 'check_state_dict_fits',
    'convert_checkpoint', 'export_for_hub', 'push_to_hub',
]

PathLike = Union[str, Path]


def checkpoint_filter_for(model_name: str) -> Optional[Callable]:
    """The `checkpoint_filter_fn` of the family module that registers `model_name`, if it has one."""
    module = importlib.import_module(timm.models.model_entrypoint(model_name).__module__)
    return getattr(module, 'checkpoint_filter_fn', None)


def convert_checkpoint(model_name: str, checkpoint: PathLike, out_dir: PathLike, overwrite: bool = False,
                       **model_kwargs) -> torch.nn.Module:
    """Load `checkpoint` (any layout the family's filter knows) into `model_name` and write a Hub-ready folder.

    The class and input-channel counts are read from the checkpoint. A key or shape that does not fit is a
    `CheckpointError` naming the file and the first mismatching keys, or a FileExistsError for a folder that holds
    an export already (unless `overwrite`); nothing is written then.
    """
    check_new_folder(out_dir, overwrite)
    model = _model_from_checkpoint(model_name, load_checkpoint(checkpoint), checkpoint, **model_kwargs)
    _save_folder(model, out_dir)
    return model


# what `export` / `convert` write into a folder (the runtime files of `export --format` included)
FOLDER_FILES = ('model.safetensors', 'config.json', 'README.md', 'model.onnx', 'openvino_model.xml',
                'openvino_model.bin', 'runtime.json')


def check_new_folder(out_dir: PathLike, overwrite: bool = False) -> None:
    """A FileExistsError, before anything is written, if `out_dir` holds files an export would replace."""
    taken = [name for name in FOLDER_FILES if (Path(out_dir) / name).exists()]
    if taken and not overwrite:
        raise FileExistsError(f'{out_dir} already holds {", ".join(taken)} (another export?): choose a new output '
                              f'folder, or pass --overwrite (overwrite=True) to replace them')


def _save_folder(model: torch.nn.Module, out_dir: PathLike, **kwargs) -> None:
    """timm's `save_for_hf` (model.safetensors + config.json), with config.json's `model_args` free of
    `num_classes`: the top-level `num_classes` already carries it for timm, and transformers' TimmWrapper passes
    `num_classes` itself, so a second one in `model_args` fails there ("got multiple values")."""
    save_for_hf(model, str(out_dir), safe_serialization=True, **kwargs)
    config_path = Path(out_dir) / 'config.json'
    config = json.loads(config_path.read_text())
    config.get('model_args', {}).pop('num_classes', None)
    config_path.write_text(json.dumps(config, indent=2) + '\n')


def _model_from_checkpoint(model_name: str, state_dict: Dict[str, torch.Tensor], source: PathLike,
                           **model_kwargs) -> torch.nn.Module:
    """`model_name` with the checkpoint's class and input-channel counts, the weights loaded (after the
    family's key filter), or a CheckpointError naming what does not fit. The model built to run the filter is
    reused when the checkpoint's sizes are its own."""
    probe = timm.create_model(model_name, **model_kwargs)
    filter_fn = checkpoint_filter_for(model_name)
    if filter_fn is not None:
        state_dict = filter_fn(state_dict, probe)
    cfg = probe.pretrained_cfg
    sizes = {}
    if f'{cfg["classifier"]}.weight' in state_dict and 'num_classes' not in model_kwargs:
        sizes['num_classes'] = state_dict[f'{cfg["classifier"]}.weight'].shape[0]
    if f'{cfg["first_conv"]}.weight' in state_dict and 'in_chans' not in model_kwargs:
        sizes['in_chans'] = state_dict[f'{cfg["first_conv"]}.weight'].shape[1]
    probe_sizes = dict(num_classes=probe.num_classes,
                       in_chans=probe.get_submodule(cfg['first_conv']).weight.shape[1])
    fits_probe = all(probe_sizes[k] == v for k, v in sizes.items())
    model = probe if fits_probe else timm.create_model(model_name, **sizes, **model_kwargs)
    check_state_dict_fits(model, state_dict, source)
    model.load_state_dict(state_dict)
    return model.eval()


def export_for_hub(
        model_name: str,
        checkpoint: PathLike,
        out_dir: PathLike,
        label_names: Optional[Sequence[str]] = None,
        metrics: Optional[Dict[str, float]] = None,
        overwrite: bool = False,
        **model_kwargs,
) -> Tuple[torch.nn.Module, List[Path]]:
    """Write a Hub-ready folder for `checkpoint` (a state dict or a training checkpoint) of `model_name`:
    model.safetensors, timm's config.json (architecture, model_args, pretrained_cfg, label names) and a model card
    README.md. Label names and metrics come from the arguments or else from the checkpoint (`label_names`, timm
    train.py's `metric`). A folder that holds an export already is a FileExistsError unless `overwrite`."""
    from .summary import model_report
    check_new_folder(out_dir, overwrite)
    state_dict, meta = read_checkpoint(checkpoint)
    model = _model_from_checkpoint(model_name, state_dict, checkpoint, **model_kwargs)
    label_names = label_names if label_names is not None else meta.get('label_names')
    if label_names is not None and len(label_names) != model.num_classes:
        raise CheckpointError(
            f'{len(label_names)} label names given for a checkpoint with {model.num_classes} classes ({checkpoint})')
    metrics = dict(metrics or {})
    if not metrics and isinstance(meta.get('metric'), (int, float)):
        metrics['top1'] = float(meta['metric'])
    out_dir = Path(out_dir)
    model_config = {'label_names': list(label_names)} if label_names else None
    _save_folder(model, out_dir, model_config=model_config, data_config=meta.get('data_config'))
    in_chans = model.get_submodule(model.pretrained_cfg['first_conv']).weight.shape[1]
    report = model_report(model, (in_chans, *model.pretrained_cfg['input_size'][1:]), name=model_name)
    card = out_dir / 'README.md'
    card.write_text(model_card(model_name, model, report, metrics, meta))
    return model, [out_dir / 'model.safetensors', out_dir / 'config.json', card]


def model_card(model_name: str, model: torch.nn.Module, report, metrics: Dict[str, float],
               meta: Dict[str, Any]) -> str:
    """A Hub model card: what the model is, its size and cost, its metrics, and how to load it."""
    cfg = model.pretrained_cfg
    doc = (timm.models.model_entrypoint(model_name).__doc__ or '').strip()
    lines = [
        '---', 'tags:', '- image-classification', '- timm', '- timm-groupoct', 'library_name: timm',
        f'license: {cfg.get("license", "apache-2.0")}', '---', '',
        f'# {model_name}', '', doc, '',
        '## Model details', '',
        f'- **Architecture:** `{model_name}` ({type(model).__name__}, registered by `timm-groupoct`)',
        f'- **Parameters:** {report.total_params:,}',
        f'- **GFLOPs:** {report.total_gflops:.2f} at {"x".join(map(str, report.input_shape))} '
        '(torch.utils.flop_counter; a multiply-add is 2 FLOPs)',
        f'- **Input size:** {"x".join(map(str, report.input_shape))}',
        f'- **Classes:** {model.num_classes}',
    ]
    if meta.get('epoch') is not None:
        lines.append(f'- **Epochs trained:** {meta["epoch"]}')
    if metrics:
        lines += ['', '## Metrics', '', '| metric | value |', '|---|---:|']
        lines += [f'| {k} | {v:.2f} |' for k, v in metrics.items()]
    lines += [
        '', '## How to use', '', '```python', 'import timm', 'import timm_groupoct  # registers the architecture',
        '', "model = timm.create_model('hf-hub:ORG/REPO', pretrained=True).eval()",
        "# fine-tune: timm.create_model('hf-hub:ORG/REPO', pretrained=True, num_classes=N)", '```', '',
    ]
    return '\n'.join(lines)


def push_to_hub(folder: PathLike, repo_id: str, private: bool = False) -> str:
    """Upload an exported folder to the Hugging Face Hub (creating the repo); returns the repo URL."""
    from huggingface_hub import create_repo, upload_folder
    url = create_repo(repo_id, private=private, exist_ok=True)
    card = Path(folder) / 'README.md'
    if card.exists():
        card.write_text(card.read_text().replace('ORG/REPO', repo_id))
    upload_folder(repo_id=repo_id, folder_path=str(folder), commit_message='Add model (timm-groupoct export)')
    return str(url)
