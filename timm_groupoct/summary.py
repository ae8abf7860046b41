"""Shape and cost report of a model: per feature level, for any timm model with `feature_info`.

One row per feature level (the model's `feature_info`: stem and stages), with its output shape, and the
parameters and GFLOPs of its part of the network (for a level inside the stem, the whole stem); then the rest
(head), the totals, and every grouped convolution with its group count. FLOPs are
counted by `torch.utils.flop_counter` (one multiply-add = 2 FLOPs, the convention of the ResNeXt and OctConv
papers' "FLOPs" in timm's tables: ResNet-50 is 8.2 GFLOPs at 224 px).
"""
from dataclasses import dataclass, field
from typing import List, Optional, Sequence, Tuple

import torch
import torch.nn as nn
from torch.utils.flop_counter import FlopCounterMode

__all__ = ['LevelReport', 'GroupedConvReport', 'ModelReport', 'model_report', 'count_params']


def count_params(module: nn.Module, trainable_only: bool = True) -> int:
    return sum(p.numel() for p in module.parameters() if p.requires_grad or not trainable_only)


@dataclass
class LevelReport:
    module: str
    shape: Tuple[int, ...]
    reduction: int
    params: int
    gflops: float


@dataclass
class GroupedConvReport:
    module: str
    in_chs: int
    out_chs: int
    kernel_size: Tuple[int, ...]
    stride: Tuple[int, ...]
    groups: int


@dataclass
class ModelReport:
    name: str
    input_shape: Tuple[int, ...]
    output_shape: Tuple[int, ...]
    levels: List[LevelReport]
    head_params: int
    head_gflops: float
    total_params: int
    total_gflops: float
    grouped_convs: List[GroupedConvReport] = field(default_factory=list)

    def format(self) -> str:
        lines = [f'{self.name}: input {_shape(self.input_shape)}', '']
        header = f'{"level":<12} {"output shape":<20} {"stride":>6} {"params":>14} {"GFLOPs":>9}'
        lines += [header, '-' * len(header)]
        for lv in self.levels:
            lines.append(f'{lv.module:<12} {_shape(lv.shape):<20} {lv.reduction:>6} {lv.params:>14,} {lv.gflops:>9.3f}')
        lines.append(f'{"head":<12} {_shape(self.output_shape):<20} {"":>6} {self.head_params:>14,} '
                     f'{self.head_gflops:>9.3f}')
        lines += ['-' * len(header),
                  f'{"total":<12} {"":<20} {"":>6} {self.total_params:>14,} {self.total_gflops:>9.3f}']
        if self.grouped_convs:
            lines += ['', f'grouped convolutions ({len(self.grouped_convs)}):']
            for g in self.grouped_convs:
                k = 'x'.join(map(str, g.kernel_size))
                lines.append(f'  {g.module:<28} {g.in_chs:>5} -> {g.out_chs:<5} {k} stride {g.stride[0]}  '
                             f'groups={g.groups} ({g.in_chs // g.groups} channels per group)')
        return '\n'.join(lines)


def _shape(shape: Sequence[int]) -> str:
    return 'x'.join(str(s) for s in shape)


def _level_shapes(model: nn.Module, infos: List[dict], x: torch.Tensor) -> List[Tuple[int, ...]]:
    """Output shape (C, H, W) of each feature level: from `forward_intermediates` (one tensor per level, as
    timm defines them) where the model has it, else from forward hooks on the `feature_info` modules."""
    if hasattr(model, 'forward_intermediates'):
        return [tuple(t.shape[1:]) for t in model.forward_intermediates(x, intermediates_only=True)]
    shapes = {}
    hooks = [
        model.get_submodule(info['module']).register_forward_hook(
            lambda mod, inp, out, key=info['module']: shapes.__setitem__(key, tuple(out.shape[1:])))
        for info in infos
    ]
    try:
        model(x)
    finally:
        for h in hooks:
            h.remove()
    return [shapes[info['module']] for info in infos]


def _segment(level_module: str) -> str:
    """The part of the network a level's row counts: the level's module, or the whole stem for a level inside
    it (timm ResNet's stride-2 stem level `stem.0`: the rest of the stem runs before the first stage)."""
    return 'stem' if level_module.startswith('stem.') else level_module


def model_report(model: nn.Module, input_size: Sequence[int], name: Optional[str] = None) -> ModelReport:
    """Run one image of `input_size` (C, H, W) through `model` (in eval mode) and report it."""
    if len(input_size) != 3:
        raise ValueError(f'input_size is (channels, height, width), got {tuple(input_size)}')
    was_training = model.training
    model.eval()
    infos = list(getattr(model, 'feature_info', []))
    x = torch.randn(1, *input_size)
    try:
        with torch.no_grad():
            shapes = _level_shapes(model, infos, x)
        with FlopCounterMode(display=False) as counter, torch.no_grad():
            out = model(x)
    finally:
        model.train(was_training)

    prefix = type(model).__name__
    flops = {k: sum(v.values()) for k, v in counter.get_flop_counts().items()}
    levels = [
        LevelReport(
            module=info['module'],
            shape=shape,
            reduction=info['reduction'],
            params=count_params(model.get_submodule(_segment(info['module']))),
            gflops=flops.get(f'{prefix}.{_segment(info["module"])}', 0) / 1e9,
        )
        for info, shape in zip(infos, shapes)
    ]
    total_params, total_gflops = count_params(model), counter.get_total_flops() / 1e9
    grouped = [
        GroupedConvReport(n, m.in_channels, m.out_channels, m.kernel_size, m.stride, m.groups)
        for n, m in model.named_modules() if isinstance(m, nn.Conv2d) and m.groups > 1
    ]
    return ModelReport(
        name=name or getattr(model, 'pretrained_cfg', {}).get('architecture', prefix),
        input_shape=tuple(input_size),
        output_shape=tuple(out.shape[1:]),
        levels=levels,
        head_params=total_params - sum(lv.params for lv in levels),
        head_gflops=total_gflops - sum(lv.gflops for lv in levels),
        total_params=total_params,
        total_gflops=total_gflops,
        grouped_convs=grouped,
    )
