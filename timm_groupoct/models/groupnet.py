"""GroupNet: a stem, stages of grouped residual blocks, global pool + linear (seeds 000, 001 and 002).

One class serves the GroupNet family (seed 000's two-conv stem, bottleneck width `round(out * ratio)`) and the
ResNeXt family in `resnext.py` (ResNet stem, width `int(planes * base_width / 64) * groups`, or seed 001's
simple one-conv block). Each stage's first block carries the stage's stride. With the stride-1 stem of seed 000
a 128x128 input leaves the stages at 64, 32 and 16 px; the ImageNet variants use a stride-4 stem and a
stride-1 first stage, as ResNet does, so 224 px ends at 7x7.
"""
from typing import Callable, Optional, Sequence, Union

import torch
import torch.nn as nn
from timm.models import generate_default_cfgs, register_model

from ..layers import GroupedBottleneck, GroupedResidualBlock, conv_norm_act, get_conv_norm_layers, resnext_width
from ._family import StagedClassifier, build_model, default_cfg

__all__ = ['GroupNet', 'make_stem', 'resolve_stem_stride']

LayerType = Union[str, Callable, type]

# stem type -> (allowed stem strides, default)
STEM_STRIDES = {'double': ((1, 2, 4), 1), 'single': ((1, 2), 1), 'resnet': ((4,), 4)}


def resolve_stem_stride(stem_type: str, stem_stride: Optional[int]) -> int:
    """`stem_stride`, or the stem type's default; a ValueError for an unknown type or a stride it cannot do."""
    if stem_type not in STEM_STRIDES:
        raise ValueError(f"stem_type must be one of {', '.join(STEM_STRIDES)}, got {stem_type!r}")
    allowed, default = STEM_STRIDES[stem_type]
    stem_stride = default if stem_stride is None else stem_stride
    if stem_stride not in allowed:
        raise ValueError(
            f"stem_stride for stem_type={stem_type!r} must be {' or '.join(map(str, allowed))}, got {stem_stride}")
    return stem_stride


def make_stem(stem_type: str, in_chans: int, out_chs: int, stride: int, norm_layer: LayerType,
              act_layer: LayerType) -> nn.Sequential:
    """(N, in_chans, H, W) -> (N, out_chs, H / stride, W / stride).

    'double': two 3x3 conv-norm-act (seed 000), the first strided for stride >= 2, both for 4;
    'single': one 3x3 conv-norm-act (CIFAR ResNeXt); 'resnet': 7x7 stride-2 conv-norm-act + 3x3 stride-2 max pool.
    """
    layers = get_conv_norm_layers(norm_layer, act_layer)
    if stem_type == 'double':
        return nn.Sequential(
            conv_norm_act(in_chans, out_chs, 3, layers, stride=min(stride, 2)),
            conv_norm_act(out_chs, out_chs, 3, layers, stride=max(1, stride // 2)),
        )
    if stem_type == 'single':
        return nn.Sequential(conv_norm_act(in_chans, out_chs, 3, layers, stride=stride))
    return nn.Sequential(
        conv_norm_act(in_chans, out_chs, 7, layers, stride=2),
        nn.MaxPool2d(kernel_size=3, stride=2, padding=1),
    )


def make_stage(
        in_chs: int,
        out_chs: int,
        depth: int,
        stride: int,
        drop_path_rates: Sequence[float],
        where: str,
        block: str = 'bottleneck',
        **block_kwargs,
) -> nn.Sequential:
    """`depth` grouped residual blocks; the first changes channels and carries the stride."""
    block_cls = GroupedBottleneck if block == 'bottleneck' else GroupedResidualBlock
    return nn.Sequential(*[
        block_cls(
            in_chs if i == 0 else out_chs,
            out_chs,
            stride=stride if i == 0 else 1,
            drop_path_rate=drop_path_rates[i],
            where=f'{where}.{i}',
            **block_kwargs,
        )
        for i in range(depth)
    ])


class GroupNet(StagedClassifier):
    """Stem -> stages of `GroupedBottleneck` (or `GroupedResidualBlock`) -> global pool -> fc.

    (N, in_chans, H, W) -> (N, num_classes); `forward_features` gives (N, widths[-1], H / r, W / r) with
    r = stem_stride * prod(strides).
    """

    def __init__(
            self,
            depths: Sequence[int] = (2, 2, 2),
            widths: Sequence[int] = (128, 256, 512),
            strides: Optional[Sequence[int]] = None,
            stem_width: int = 64,
            stem_type: str = 'double',
            stem_stride: Optional[int] = None,
            block: str = 'bottleneck',
            groups: int = 8,
            bottleneck_ratio: float = 0.5,
            base_width: Optional[int] = None,
            adjust_groups: bool = False,
            in_chans: int = 3,
            num_classes: int = 1000,
            global_pool: str = 'avg',
            norm_layer: LayerType = 'batchnorm',
            act_layer: LayerType = 'relu',
            drop_rate: float = 0.,
            drop_path_rate: float = 0.,
            zero_init_last: bool = True,
    ):
        """
        Args:
            depths: blocks per stage.
            widths: output channels per stage.
            strides: stride of each stage's first block; default 2 for every stage (seed 000).
            stem_width: output channels of the stem.
            stem_type: 'double' (two 3x3 convs, seed 000), 'single' (one 3x3 conv) or 'resnet' (7x7 conv + max
                pool); see `make_stem`.
            stem_stride: 1, 2 or 4 for 'double' (default 1), 1 or 2 for 'single' (default 1), 4 for 'resnet'.
            block: 'bottleneck' (`GroupedBottleneck`) or 'basic' (seed 001's one-conv `GroupedResidualBlock`).
            groups: groups of every 3x3 grouped conv; must divide the channels it sees.
            bottleneck_ratio: bottleneck width = round(stage width * ratio) (GroupNet rule).
            base_width: if set, bottleneck width = int(stage width / 4 * base_width / 64) * groups (ResNeXt rule,
                expansion 4); replaces `bottleneck_ratio`.
            adjust_groups: lower `groups` where it does not divide a block's channels (warns) instead of
                raising (seed 002's behaviour).
        """
        super().__init__()
        strides = tuple(strides) if strides is not None else (2,) * len(depths)
        if not len(depths) == len(widths) == len(strides):
            raise ValueError(
                f'depths, widths and strides need one entry per stage, got {len(depths)}, {len(widths)} '
                f'and {len(strides)}')
        stem_stride = resolve_stem_stride(stem_type, stem_stride)
        if block not in ('bottleneck', 'basic'):
            raise ValueError(f"block must be 'bottleneck' or 'basic', got {block!r}")
        if base_width is not None and any(w % 4 for w in widths):
            raise ValueError(f'base_width (ResNeXt width rule, expansion 4) needs stage widths divisible by 4, '
                             f'got {tuple(widths)}')

        self.in_chans = in_chans  # timm reads it (input config of exports, data config resolution)
        self.stem = make_stem(stem_type, in_chans, stem_width, stem_stride, norm_layer, act_layer)
        self.feature_info = [dict(num_chs=stem_width, reduction=stem_stride, module='stem')]

        dpr = torch.linspace(0, drop_path_rate, sum(depths)).split(list(depths))
        stages = []
        in_chs, reduction = stem_width, stem_stride
        for i, (depth, width, stride) in enumerate(zip(depths, widths, strides)):
            reduction *= stride
            block_kwargs = dict(groups=groups, adjust_groups=adjust_groups, norm_layer=norm_layer, act_layer=act_layer)
            if block == 'bottleneck':
                block_kwargs['bottleneck_ratio'] = bottleneck_ratio
                if base_width is not None:
                    block_kwargs['mid_chs'] = resnext_width(width // 4, base_width, groups)
            stages.append(make_stage(
                in_chs, width, depth, stride, dpr[i].tolist(), where=f'stages.{i}', block=block, **block_kwargs))
            self.feature_info.append(dict(num_chs=width, reduction=reduction, module=f'stages.{i}'))
            in_chs = width
        self.stages = nn.Sequential(*stages)

        self.num_features = in_chs
        self.init_head(num_classes, global_pool, drop_rate)
        self.init_weights(zero_init_last=zero_init_last)

    @torch.jit.ignore
    def init_weights(self, zero_init_last: bool = True) -> None:
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode='fan_out', nonlinearity='relu')
        if zero_init_last:
            for m in self.modules():
                if isinstance(m, (GroupedBottleneck, GroupedResidualBlock)):
                    m.zero_init_last()


def _create_groupnet(variant: str, pretrained: bool = False, **kwargs) -> GroupNet:
    return build_model(GroupNet, variant, pretrained, **kwargs)



# Seed 000's network (and 002's) is a stride-1 model for small inputs: its reference size is 128 px.
default_cfgs = generate_default_cfgs({
    'groupnet_small': default_cfg(input_size=(3, 128, 128), pool_size=(16, 16), crop_pct=1.0),
    'groupnet_small_gn': default_cfg(input_size=(3, 128, 128), pool_size=(16, 16), crop_pct=1.0),
    'groupconvnet': default_cfg(input_size=(3, 128, 128), pool_size=(16, 16), crop_pct=1.0),
    'groupnet_tiny': default_cfg(),
    'groupnet_base': default_cfg(),
})


@register_model
def groupnet_small(pretrained: bool = False, **kwargs) -> GroupNet:
    """GroupNet of seed 000: stride-1 stem 64, stages 128/256/512 x 2 blocks, groups 8, ratio 0.5."""
    model_args = dict(depths=(2, 2, 2), widths=(128, 256, 512), stem_width=64, stem_stride=1, groups=8,
                      bottleneck_ratio=0.5)
    return _create_groupnet('groupnet_small', pretrained, **dict(model_args, **kwargs))


@register_model
def groupnet_small_gn(pretrained: bool = False, **kwargs) -> GroupNet:
    """groupnet_small with GroupNorm (groups: the first of 32, 16, 8, 4, 2, 1 that divides each layer's channels):
    batch-independent, for small-batch training."""
    model_args = dict(depths=(2, 2, 2), widths=(128, 256, 512), stem_width=64, stem_stride=1, groups=8,
                      bottleneck_ratio=0.5, norm_layer='groupnorm')
    return _create_groupnet('groupnet_small_gn', pretrained, **dict(model_args, **kwargs))


@register_model
def groupconvnet(pretrained: bool = False, **kwargs) -> GroupNet:
    """GroupConvNet of seed 002: groupnet_small's layout, lowering groups (with a warning) where they
    do not divide a bottleneck width instead of raising."""
    model_args = dict(depths=(2, 2, 2), widths=(128, 256, 512), stem_width=64, stem_stride=1, groups=8,
                      bottleneck_ratio=0.5, adjust_groups=True)
    return _create_groupnet('groupconvnet', pretrained, **dict(model_args, **kwargs))


@register_model
def groupnet_tiny(pretrained: bool = False, **kwargs) -> GroupNet:
    """GroupNet-Tiny for 224 px: stride-4 stem 64, stages 128/256/512/1024 x (2, 2, 4, 2), groups 16.

    5.21M parameters, 1.78 GFLOPs at 224x224 (1000 classes).
    """
    model_args = dict(depths=(2, 2, 4, 2), widths=(128, 256, 512, 1024), strides=(1, 2, 2, 2), stem_width=64,
                      stem_stride=4, groups=16, bottleneck_ratio=0.5)
    return _create_groupnet('groupnet_tiny', pretrained, **dict(model_args, **kwargs))


@register_model
def groupnet_base(pretrained: bool = False, **kwargs) -> GroupNet:
    """GroupNet-Base for 224 px: stride-4 stem 64, stages 256/512/1024/2048 x (3, 4, 6, 3), groups 32.

    25.06M parameters, 8.50 GFLOPs at 224x224 (1000 classes): ResNeXt-50 32x4d's budget.
    """
    model_args = dict(depths=(3, 4, 6, 3), widths=(256, 512, 1024, 2048), strides=(1, 2, 2, 2), stem_width=64,
                      stem_stride=4, groups=32, bottleneck_ratio=0.5)
    return _create_groupnet('groupnet_base', pretrained, **dict(model_args, **kwargs))
