"""Norm choice shared by every family: a name or class -> a timm norm+act layer factory.

Names are what timm's `get_norm_act_layer` accepts ('batchnorm', 'groupnorm', 'layernorm2d', 'evonorms0',
classes such as `nn.BatchNorm2d`, ...). For 'groupnorm' the group count follows one rule whatever the
channel count: the first of (32, 16, 8, 4, 2, 1) that divides it.
"""
from typing import Callable, Optional, Sequence, Union

import torch.nn as nn
from timm.layers import GroupNormAct, get_norm_act_layer

__all__ = ['GROUP_NORM_CANDIDATES', 'group_norm_groups', 'GroupNormRuleAct', 'get_norm_act']

LayerType = Union[str, Callable, type]

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


def get_norm_act(norm_layer: LayerType, act_layer: Optional[LayerType]) -> Callable[..., nn.Module]:
    """A factory `f(num_channels, apply_act=True, **kwargs)` for the norm (+ activation) after a conv.

    The result is also accepted as `norm_layer` by timm's `ConvNormAct` and `get_norm_act_layer`.
    """
    is_gn_name = isinstance(norm_layer, str) and norm_layer.replace('_', '').lower() == 'groupnorm'
    if is_gn_name or norm_layer in (nn.GroupNorm, GroupNormAct):
        # a plain function: timm's factories pass functions through unchanged
        def group_norm_act(num_channels: int, **kwargs) -> GroupNormRuleAct:
            return GroupNormRuleAct(num_channels, **{'act_layer': act_layer, **kwargs})
        return group_norm_act
    try:
        return get_norm_act_layer(norm_layer, act_layer)
    except (KeyError, AssertionError) as e:
        raise ValueError(
            f'unknown norm_layer {norm_layer!r}: use a name timm knows (batchnorm, groupnorm, layernorm2d, '
            f'evonorms0, frn, ...) or a norm class') from e
