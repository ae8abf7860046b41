"""Norm choice shared by every family: a name or class -> the conv and norm(+act) layers to build with.

`norm_layer` takes what timm's `get_norm_act_layer` accepts ('batchnorm', 'groupnorm', 'layernorm2d',
'evonorms0', classes such as `nn.BatchNorm2d`, ...) and two more names:

- 'groupnorm' (or 'gn'): the group count follows one rule whatever the channel count, the first of
  (32, 16, 8, 4, 2, 1) that divides it (Wu & He, arXiv:1803.08494, use 32 groups);
- 'gnws' (or 'groupnorm_ws'): GroupNorm after weight-standardized convolutions (timm's `StdConv2d`,
  Qiao et al. 2019).
"""
from collections import OrderedDict
from dataclasses import dataclass
from functools import partial
from typing import Callable, Optional, Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F
from timm.layers import GroupNormAct, LayerType, StdConv2d, create_conv2d, get_act_layer, get_norm_act_layer
from torch.nn.utils import fuse_conv_bn_weights

__all__ = [
    'GROUP_NORM_CANDIDATES', 'group_norm_groups', 'GroupNormRuleAct', 'get_norm_act',
    'ConvNormLayers', 'get_conv_norm_layers', 'ConvNormSequential', 'conv_norm_act', 'fold_batchnorm',
    'fold_weight_standardization',
]

GROUP_NORM_CANDIDATES = (32, 16, 8, 4, 2, 1)


def group_norm_groups(num_channels: int, candidates: Sequence[int] = GROUP_NORM_CANDIDATES) -> int:
    """The first group count in `candidates` that divides `num_channels`."""
    if num_channels < 1:
        raise ValueError(f'GroupNorm needs at least one channel, got num_channels={num_channels}')
    for g in candidates:
        if num_channels % g == 0:
            return g
    raise ValueError(f'none of the group counts {tuple(candidates)} divides num_channels={num_channels}')


class GroupNormRuleAct(GroupNormAct):
    """timm's GroupNormAct whose group count defaults to `group_norm_groups(num_channels)`.

    An explicit `num_groups` that does not divide the channels is a ValueError (not a silent change).
    """

    def __init__(self, num_channels: int, num_groups: Optional[int] = None, **kwargs):
        if num_groups is None:
            num_groups = group_norm_groups(num_channels)
        elif num_channels % num_groups:
            raise ValueError(
                f'GroupNorm: num_groups={num_groups} does not divide num_channels={num_channels}; '
                f'leave num_groups unset to use the first of {GROUP_NORM_CANDIDATES} that divides it '
                f'(here {group_norm_groups(num_channels)})')
        super().__init__(num_channels, num_groups=num_groups, **kwargs)


def _norm_key(norm_layer: LayerType) -> Optional[str]:
    return norm_layer.replace('_', '').replace('-', '').lower() if isinstance(norm_layer, str) else None


def get_norm_act(norm_layer: LayerType, act_layer: Optional[LayerType]) -> Callable[..., nn.Module]:
    """A factory `f(num_channels, apply_act=True, **kwargs)` for the norm (+ activation) after a conv.

    The result is also accepted as `norm_layer` by timm's `ConvNormAct` and `get_norm_act_layer`.
    """
    key = _norm_key(norm_layer)
    bound = {}
    if isinstance(norm_layer, partial):  # e.g. partial(nn.GroupNorm, num_groups=8)
        norm_layer, bound = norm_layer.func, dict(norm_layer.keywords)
    if key in ('groupnorm', 'gn', 'groupnormws', 'gnws') or norm_layer in (nn.GroupNorm, GroupNormAct):
        # a plain function: timm's factories pass functions through unchanged
        def group_norm_act(num_channels: int, **kwargs) -> GroupNormRuleAct:
            return GroupNormRuleAct(num_channels, **{'act_layer': act_layer, **bound, **kwargs})
        return group_norm_act
    if bound:
        norm_layer = partial(norm_layer, **bound)
    try:
        layer = get_norm_act_layer(norm_layer, act_layer)
    except (KeyError, AssertionError) as e:
        raise ValueError(
            f'unknown norm_layer {norm_layer!r}: use batchnorm, groupnorm, gnws (GroupNorm + weight '
            f'standardization), another name timm knows (layernorm2d, evonorms0, frn, ...) or a norm class') from e

    def norm_act(num_channels: int, **kwargs) -> nn.Module:
        module = layer(num_channels, **kwargs)
        groups = getattr(module, 'groups', None)  # timm's grouped EvoNorms check this only in forward
        if isinstance(groups, int) and num_channels % groups:
            raise ValueError(f'norm_layer {norm_layer!r} normalizes groups of {groups} channels, which do not divide '
                             f'a layer of {num_channels} channels: change norm_layer (e.g. groupnorm, whose group '
                             f'count follows the channels) or the widths')
        return module
    return norm_act


def _plain_conv(in_chs: int, out_chs: int, kernel_size: int, stride: int = 1, groups: int = 1,
                bias: bool = False, dilation: int = 1) -> nn.Module:
    return create_conv2d(in_chs, out_chs, kernel_size, stride=stride, dilation=dilation, groups=groups, bias=bias)


def _std_conv(in_chs: int, out_chs: int, kernel_size: int, stride: int = 1, groups: int = 1,
              bias: bool = False, dilation: int = 1) -> nn.Module:
    return StdConv2d(in_chs, out_chs, kernel_size, stride=stride, dilation=dilation, groups=groups, bias=bias)


@dataclass(frozen=True)
class ConvNormLayers:
    """What a norm choice builds: `conv(in, out, k, stride=1, groups=1, bias=False, dilation=1)` and
    `norm_act(chs, apply_act=True)`."""
    conv: Callable[..., nn.Module]
    norm_act: Callable[..., nn.Module]


def get_conv_norm_layers(norm_layer: LayerType = 'batchnorm', act_layer: LayerType = 'relu') -> ConvNormLayers:
    """Resolve a norm choice (see the module docstring) and an activation into conv and norm+act factories."""
    try:
        get_act_layer(act_layer)
    except KeyError as e:
        raise ValueError(f'unknown act_layer {act_layer!r}: use a name timm knows (relu, silu, gelu, ...), a class '
                         f'or None') from e
    conv = _std_conv if _norm_key(norm_layer) in ('gnws', 'groupnormws') else _plain_conv
    return ConvNormLayers(conv=conv, norm_act=get_norm_act(norm_layer, act_layer))


@torch.no_grad()
def fold_batchnorm(norm: nn.Module, convs: Sequence[nn.Conv2d]) -> nn.Module:
    """Fold an eval-mode batch norm into the convs whose summed outputs it normalizes; what to use in its place.

    Each conv is folded with torch's `fuse_conv_bn_weights` (output channels scaled by the norm's
    `weight / sqrt(running_var + eps)`, a conv's own bias too); only the first conv takes the shift, as its bias,
    so that `sum(conv(x))` equals the eval-mode norm of the old sum. Returns the norm's activation (timm's
    `BatchNormAct2d`) or `nn.Identity()`. A norm with nothing to fold (GroupNorm, LayerNorm, a batch norm without
    running statistics or with a dropout) is returned unchanged and the convs are left alone. Inference only: the
    folded convs no longer normalize with batch statistics in training.
    """
    foldable = (isinstance(norm, nn.modules.batchnorm._BatchNorm) and norm.running_var is not None
                and isinstance(getattr(norm, 'drop', nn.Identity()), nn.Identity))
    if not foldable:
        return norm
    if not convs:
        raise ValueError('fold_batchnorm needs at least one conv to fold the norm into')
    zero_mean = torch.zeros_like(norm.running_mean)
    for i, conv in enumerate(convs):
        # the shift is added once, by the first conv; the others are only scaled (zero mean, no norm bias)
        mean, norm_bias = (norm.running_mean, norm.bias) if i == 0 else (zero_mean, None)
        weight, bias = fuse_conv_bn_weights(
            conv.weight, conv.bias, mean, norm.running_var, norm.eps, norm.weight, norm_bias)
        conv.weight = weight
        if i == 0 or conv.bias is not None:
            conv.bias = bias.requires_grad_(weight.requires_grad)  # torch leaves a new bias frozen
    act = getattr(norm, 'act', None)
    return act if act is not None else nn.Identity()


@torch.no_grad()
def fold_weight_standardization(model: nn.Module) -> nn.Module:
    """Replace, in place, every timm `StdConv2d` by an `nn.Conv2d` holding the standardized weight it convolves
    with (as StdConv2d standardizes it, per output channel: zero mean, unit variance, eps); returns `model`.

    For inference: a fixed weight standardizes to the same tensor at every call, so this removes the work, and
    the standardization subgraph, from the forward. Training the result no longer standardizes.
    """
    for module in list(model.modules()):
        for name, child in module.named_children():
            if type(child) is StdConv2d:
                conv = nn.Conv2d(child.in_channels, child.out_channels, child.kernel_size, child.stride,
                                 child.padding, child.dilation, child.groups, bias=child.bias is not None,
                                 device=child.weight.device, dtype=child.weight.dtype)
                conv.weight.copy_(F.batch_norm(child.weight.reshape(1, child.out_channels, -1), None, None,
                                               training=True, momentum=0., eps=child.eps).reshape_as(child.weight))
                if child.bias is not None:
                    conv.bias.copy_(child.bias)
                setattr(module, name, conv)
    return model


class ConvNormSequential(nn.Sequential):
    """conv -> norm (+ act) as an nn.Sequential of two modules (keys `conv`, `bn` or `0`, `1`).

    `reparameterize()` (called by timm's `reparameterize_model`) folds a batch norm into the conv.
    """

    def reparameterize(self) -> None:
        norm_key = list(self._modules)[1]
        self._modules[norm_key] = fold_batchnorm(self[1], [self[0]])


def conv_norm_act(
        in_chs: int, out_chs: int, kernel_size: int, layers: ConvNormLayers, stride: int = 1, groups: int = 1,
        apply_act: bool = True,
) -> ConvNormSequential:
    """conv -> norm (+ act) with timm `ConvNormAct`'s key names (`conv`, `bn`), for any conv type."""
    return ConvNormSequential(OrderedDict(
        conv=layers.conv(in_chs, out_chs, kernel_size, stride=stride, groups=groups),
        bn=layers.norm_act(out_chs, apply_act=apply_act),
    ))
