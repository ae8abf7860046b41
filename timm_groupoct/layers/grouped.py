"""Grouped residual blocks and the group-count check they share.

`GroupedBottleneck` is one block for two width rules: GroupNet's (`mid = round(out * bottleneck_ratio)`,
seeds 000/002) and ResNeXt's (`mid = int(planes * base_width / 64) * groups`, seed 001), the latter by
passing `mid_chs`. Its module names are timm's ResNet bottleneck names (conv1/bn1 ... downsample), so
weights of timm's and torchvision's ResNe(X)ts load without renaming.
"""
import warnings
from typing import Callable, Optional, Tuple, Union

import torch
import torch.nn as nn
from timm.layers import DropPath, create_act_layer, create_conv2d

from .norm import get_norm_act

__all__ = ['valid_groups_near', 'resolve_groups', 'GroupedBottleneck']

LayerType = Union[str, Callable, type]


def valid_groups_near(channels: int, groups: int) -> Tuple[int, ...]:
    """The divisors of `channels` closest to `groups`: the largest below it and the smallest above it."""
    below = max(d for d in range(1, min(groups, channels + 1)) if channels % d == 0) if groups > 1 else None
    above = next((d for d in range(max(groups + 1, 1), channels + 1) if channels % d == 0), None)
    return tuple(d for d in (below, above) if d is not None)


def resolve_groups(channels: int, groups: int, adjust: bool = False, where: str = 'grouped conv') -> int:
    """Check that `groups` divides `channels`.

    Raises a ValueError naming the layer, its channels and the nearest valid group counts. With
    `adjust=True` (seed 002's behaviour, opt-in) it instead lowers `groups` to the largest divisor of
    `channels` below it, and warns.
    """
    if not isinstance(groups, int) or groups < 1:
        raise ValueError(f'{where}: groups must be a positive integer, got {groups!r}')
    if channels % groups == 0:
        return groups
    nearest = valid_groups_near(channels, groups)
    if adjust:
        lowered = nearest[0]
        warnings.warn(
            f'{where}: groups={groups} does not divide its {channels} channels; lowered to groups={lowered} '
            f'because adjust_groups=True', stacklevel=3)
        return lowered
    raise ValueError(
        f'{where}: groups={groups} does not divide its {channels} channels. Nearest valid choices: '
        f'{" or ".join(f"groups={g}" for g in nearest)}. Change groups (or the widths / bottleneck_ratio '
        f'that set the channel count), or pass adjust_groups=True to lower groups automatically with a warning.')


class GroupedBottleneck(nn.Module):
    """1x1 reduce -> 3x3 grouped conv (carries the stride) -> 1x1 expand, plus a residual; act after the add.

    (N, in_chs, H, W) -> (N, out_chs, ceil(H / stride), ceil(W / stride)). The residual is the identity, or a
    strided 1x1 conv + norm when the stride or the channel count changes.
    """

    def __init__(
            self,
            in_chs: int,
            out_chs: int,
            stride: int = 1,
            groups: int = 1,
            bottleneck_ratio: float = 0.5,
            mid_chs: Optional[int] = None,
            adjust_groups: bool = False,
            norm_layer: LayerType = 'batchnorm',
            act_layer: LayerType = 'relu',
            drop_path_rate: float = 0.,
            where: str = 'GroupedBottleneck',
    ):
        """
        Args:
            mid_chs: width of the grouped 3x3; default `round(out_chs * bottleneck_ratio)` (GroupNet's rule).
            adjust_groups: lower `groups` to a divisor of `mid_chs` (with a warning) instead of raising.
            where: the block's name in the model, used in error messages.
        """
        super().__init__()
        if mid_chs is None:
            mid_chs = max(1, int(round(out_chs * bottleneck_ratio)))
        self.groups = resolve_groups(mid_chs, groups, adjust_groups, where=f'{where} (3x3 grouped conv)')
        norm_act = get_norm_act(norm_layer, act_layer)

        self.conv1 = create_conv2d(in_chs, mid_chs, 1)
        self.bn1 = norm_act(mid_chs)
        self.conv2 = create_conv2d(mid_chs, mid_chs, 3, stride=stride, groups=self.groups)
        self.bn2 = norm_act(mid_chs)
        self.conv3 = create_conv2d(mid_chs, out_chs, 1)
        self.bn3 = norm_act(out_chs, apply_act=False)
        self.drop_path = DropPath(drop_path_rate) if drop_path_rate > 0. else nn.Identity()
        self.act3 = create_act_layer(act_layer, inplace=True)

        self.downsample: Optional[nn.Module] = None
        if stride != 1 or in_chs != out_chs:
            self.downsample = nn.Sequential(
                create_conv2d(in_chs, out_chs, 1, stride=stride),
                norm_act(out_chs, apply_act=False),
            )

    def zero_init_last(self) -> None:
        """Start the residual branch at zero, so the block starts as its shortcut."""
        nn.init.zeros_(self.bn3.weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shortcut = x if self.downsample is None else self.downsample(x)
        x = self.bn1(self.conv1(x))
        x = self.bn2(self.conv2(x))
        x = self.bn3(self.conv3(x))
        return self.act3(self.drop_path(x) + shortcut)
