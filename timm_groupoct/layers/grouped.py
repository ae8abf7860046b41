"""Grouped residual blocks and the group-count check they share.

`GroupedBottleneck` is one block for two width rules: GroupNet's (`mid = round(out * bottleneck_ratio)`) and
ResNeXt's (`mid = resnext_width(planes, base_width, groups)`; Xie et al., arXiv:1611.05431), the latter by
passing `mid_chs`. `GroupedResidualBlock` is the simple block (one grouped 3x3). Module names are
timm's ResNet block names (conv1/bn1 ... downsample.0/1), so timm's and torchvision's ResNe(X)t block weights
load without renaming.
"""
import math
import warnings
from typing import Optional, Tuple

import torch
import torch.nn as nn
from timm.layers import DropPath, LayerType, create_act_layer

from .norm import ConvNormLayers, ConvNormSequential, fold_batchnorm, get_conv_norm_layers

__all__ = ['valid_groups_near', 'resolve_groups', 'resnext_width', 'GroupedBottleneck', 'GroupedResidualBlock']


def valid_groups_near(channels: int, groups: int) -> Tuple[int, ...]:
    """The divisors of `channels` closest to `groups`: the largest below it and the smallest above it."""
    below = max(d for d in range(1, min(groups, channels + 1)) if channels % d == 0) if groups > 1 else None
    above = next((d for d in range(max(groups + 1, 1), channels + 1) if channels % d == 0), None)
    return tuple(d for d in (below, above) if d is not None)


def resolve_groups(channels: int, groups: int, adjust: bool = False, where: str = 'grouped conv',
                   can_adjust: bool = True) -> int:
    """Check that `groups` divides `channels`.

    Raises a ValueError naming the layer, its channels and the nearest valid group counts (and, where the caller
    offers it, `can_adjust`, the `adjust_groups` option). With `adjust=True` (opt-in) it
    instead lowers `groups` to the largest divisor of `channels` below it, and warns.
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
    advice = ', or pass adjust_groups=True to lower groups automatically with a warning' if can_adjust else ''
    raise ValueError(
        f'{where}: groups={groups} does not divide its {channels} channels. Nearest valid choices: '
        f'{" or ".join(f"groups={g}" for g in nearest)}. Change groups (or the widths / bottleneck_ratio '
        f'that set the channel count){advice}.')


def resnext_width(planes: int, base_width: int, groups: int) -> int:
    """Width of a ResNeXt bottleneck's grouped 3x3: `int(planes * base_width / 64) * groups` (Xie et al.)."""
    width = int(planes * base_width / 64) * groups
    if width < 1:
        raise ValueError(f'a ResNeXt bottleneck of {planes * 4} output channels with base_width={base_width} has '
                         f'int({planes} * {base_width} / 64) = 0 channels per group: widen the stage (widths) or '
                         f'raise base_width')
    return width


def _projection(in_chs: int, out_chs: int, stride: int, layers: ConvNormLayers) -> Optional[nn.Module]:
    """The shortcut: None (identity) when shape is kept, else a strided 1x1 conv + norm (keys 0 / 1)."""
    if stride == 1 and in_chs == out_chs:
        return None
    return ConvNormSequential(layers.conv(in_chs, out_chs, 1, stride=stride), layers.norm_act(out_chs, apply_act=False))


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
            dilation: int = 1,
            where: str = 'GroupedBottleneck',
    ):
        """
        Args:
            mid_chs: width of the grouped 3x3; default `round(out_chs * bottleneck_ratio)` (GroupNet's rule).
            dilation: of the grouped 3x3 (`output_stride` below 32).
            adjust_groups: lower `groups` to a divisor of `mid_chs` (with a warning) instead of raising.
            where: the block's name in the model, used in error messages.
        """
        super().__init__()
        if mid_chs is None:
            mid_chs = max(1, int(round(out_chs * bottleneck_ratio)))
        self.groups = resolve_groups(mid_chs, groups, adjust_groups, where=f'{where} (3x3 grouped conv)')
        layers = get_conv_norm_layers(norm_layer, act_layer)

        self.conv1 = layers.conv(in_chs, mid_chs, 1)
        self.bn1 = layers.norm_act(mid_chs)
        self.conv2 = layers.conv(mid_chs, mid_chs, 3, stride=stride, groups=self.groups, dilation=dilation)
        self.bn2 = layers.norm_act(mid_chs)
        self.conv3 = layers.conv(mid_chs, out_chs, 1)
        self.bn3 = layers.norm_act(out_chs, apply_act=False)
        self.drop_path = DropPath(drop_path_rate) if drop_path_rate > 0. else nn.Identity()
        self.act3 = create_act_layer(act_layer, inplace=True)
        self.downsample = _projection(in_chs, out_chs, stride, layers)

    def zero_init_last(self) -> None:
        """Start the residual branch at zero, so the block starts as its shortcut."""
        nn.init.zeros_(self.bn3.weight)

    def reparameterize(self) -> None:
        """Fold batch norms into the convs for inference (timm's `reparameterize_model`); see `fold_batchnorm`."""
        self.bn1 = fold_batchnorm(self.bn1, [self.conv1])
        self.bn2 = fold_batchnorm(self.bn2, [self.conv2])
        self.bn3 = fold_batchnorm(self.bn3, [self.conv3])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shortcut = x if self.downsample is None else self.downsample(x)
        x = self.bn1(self.conv1(x))
        x = self.bn2(self.conv2(x))
        x = self.bn3(self.conv3(x))
        return self.act3(self.drop_path(x) + shortcut)


class GroupedResidualBlock(nn.Module):
    """3x3 grouped conv (carries the stride) -> norm -> act, plus a residual (a one-conv grouped block).

    (N, in_chs, H, W) -> (N, out_chs, ceil(H / stride), ceil(W / stride)). The activation comes
    before the add and there is none after it. The residual is the identity, or a strided 1x1 conv + norm.
    """

    def __init__(
            self,
            in_chs: int,
            out_chs: int,
            stride: int = 1,
            groups: int = 1,
            adjust_groups: bool = False,
            norm_layer: LayerType = 'batchnorm',
            act_layer: LayerType = 'relu',
            drop_path_rate: float = 0.,
            dilation: int = 1,
            where: str = 'GroupedResidualBlock',
    ):
        super().__init__()
        # a grouped conv needs groups to divide its input and its output channels, i.e. their gcd
        self.groups = resolve_groups(
            math.gcd(in_chs, out_chs), groups, adjust_groups,
            where=f'{where} (3x3 grouped conv {in_chs} -> {out_chs}; groups must divide both, so their gcd)')
        layers = get_conv_norm_layers(norm_layer, act_layer)
        self.conv1 = layers.conv(in_chs, out_chs, 3, stride=stride, groups=self.groups, dilation=dilation)
        self.bn1 = layers.norm_act(out_chs)
        self.drop_path = DropPath(drop_path_rate) if drop_path_rate > 0. else nn.Identity()
        self.downsample = _projection(in_chs, out_chs, stride, layers)

    def zero_init_last(self) -> None:
        """Start the residual branch at zero, so the block starts as its shortcut."""
        nn.init.zeros_(self.bn1.weight)
        nn.init.zeros_(self.bn1.bias)

    def reparameterize(self) -> None:
        """Fold a batch norm into the conv for inference (timm's `reparameterize_model`); see `fold_batchnorm`."""
        self.bn1 = fold_batchnorm(self.bn1, [self.conv1])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shortcut = x if self.downsample is None else self.downsample(x)
        return self.drop_path(self.bn1(self.conv1(x))) + shortcut
