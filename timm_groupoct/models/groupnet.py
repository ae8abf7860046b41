"""GroupNet: a stem, stages of grouped-convolution residual blocks, global pool + linear.

Grouped convolutions as in AlexNet (Krizhevsky et al., NeurIPS 2012) and ResNeXt (Xie et al., "Aggregated Residual
Transformations for Deep Neural Networks", CVPR 2017, arXiv:1611.05431), in ResNet's bottleneck layout (He et al.,
arXiv:1512.03385). Layer names follow timm's `resnet.py` (Apache-2.0) and torchvision's (BSD-3-Clause), whose
weights load through `resnext.checkpoint_filter_fn`.

One class serves the GroupNet models (a two-conv 3x3 stem, bottleneck width `round(out * bottleneck_ratio)`) and
the ResNeXt family in `resnext.py` (ResNet stem, width `int(planes * base_width / 64) * groups`, or a one-conv
grouped residual block). Each stage's first block carries the stage's stride. With the stride-1 stem a 128x128
input leaves the stages at 64, 32 and 16 px; the ImageNet variants use a stride-4 stem and a stride-1 first stage,
as ResNet does, so 224 px ends at 7x7.
"""
from typing import Optional, Sequence

import torch.nn as nn
from timm.layers import LayerType
from timm.models import generate_default_cfgs, register_model

from ..layers import GroupedBottleneck, GroupedResidualBlock, resnext_width
from ._family import (
    StagedClassifier, StagePlan, build_model, check_int, default_cfg, plan_stages, stage_strides)

__all__ = ['GroupNet']


def make_stage(
        in_chs: int,
        out_chs: int,
        depth: int,
        plan: StagePlan,
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
            stride=plan.stride if i == 0 else 1,
            dilation=plan.first_dilation if i == 0 else plan.dilation,
            drop_path_rate=plan.drop_path_rates[i],
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
            output_stride: Optional[int] = None,
    ):
        """
        Args:
            depths: blocks per stage.
            widths: output channels per stage.
            strides: stride of each stage's first block; default 2 for every stage.
            stem_width: output channels of the stem.
            stem_type: 'double' (two 3x3 convs), 'single' (one 3x3 conv) or 'resnet' (7x7 conv + max
                pool); see `make_stem`.
            stem_stride: 1, 2 or 4 for 'double' (default 1), 1 or 2 for 'single' (default 1), 4 for 'resnet'.
            block: 'bottleneck' (`GroupedBottleneck`) or 'basic' (the one-conv `GroupedResidualBlock`).
            groups: groups of every 3x3 grouped conv; must divide the channels it sees.
            bottleneck_ratio: bottleneck width = round(stage width * ratio) (GroupNet rule).
            base_width: if set, bottleneck width = int(stage width / 4 * base_width / 64) * groups (ResNeXt rule,
                expansion 4); replaces `bottleneck_ratio`.
            adjust_groups: lower `groups` where it does not divide a block's channels (warns) instead of
                raising (what `groupconvnet` is registered with).
            output_stride: the network's stride at its last stage (e.g. 16 or 8 for segmentation): the stages
                beyond it dilate instead of striding, as in timm's ResNet. Default: no dilation.
        """
        super().__init__()
        strides = stage_strides(depths, widths, strides, default=2)
        if block not in ('bottleneck', 'basic'):
            raise ValueError(f"block must be 'bottleneck' or 'basic', got {block!r}")
        check_int('groups', groups)
        if base_width is not None:
            check_int('base_width', base_width)
        if isinstance(bottleneck_ratio, bool) or not isinstance(bottleneck_ratio, (int, float)) or \
                bottleneck_ratio <= 0:
            raise ValueError(f'bottleneck_ratio must be a number > 0, got {bottleneck_ratio!r}')
        if base_width is not None and any(w % 4 for w in widths):
            raise ValueError(f'base_width (ResNeXt width rule, expansion 4) needs stage widths divisible by 4, '
                             f'got {tuple(widths)}')

        stem_stride = self.init_stem(stem_type, in_chans, stem_width, stem_stride, norm_layer, act_layer)

        stages = []
        in_chs = stem_width
        plans = plan_stages(depths, strides, stem_stride, output_stride, drop_path_rate)
        for i, (depth, width, plan) in enumerate(zip(depths, widths, plans)):
            block_kwargs = dict(groups=groups, adjust_groups=adjust_groups, norm_layer=norm_layer, act_layer=act_layer)
            if block == 'bottleneck':
                block_kwargs['bottleneck_ratio'] = bottleneck_ratio
                if base_width is not None:
                    block_kwargs['mid_chs'] = resnext_width(width // 4, base_width, groups)
            stages.append(make_stage(in_chs, width, depth, plan, where=f'stages.{i}', block=block, **block_kwargs))
            self.feature_info.append(dict(num_chs=width, reduction=plan.reduction, module=f'stages.{i}'))
            in_chs = width
        self.stages = nn.Sequential(*stages)

        self.num_features = in_chs
        self.init_head(num_classes, global_pool, drop_rate)
        self.init_weights(zero_init_last=zero_init_last)


def _create_groupnet(variant: str, pretrained: bool = False, **kwargs) -> GroupNet:
    return build_model(GroupNet, variant, pretrained, **kwargs)



# groupnet_small and groupconvnet are stride-1 models for small inputs: their reference size is 128 px.
default_cfgs = generate_default_cfgs({
    'groupnet_small': default_cfg(input_size=(3, 128, 128), pool_size=(16, 16), crop_pct=1.0),
    'groupnet_small_gn': default_cfg(input_size=(3, 128, 128), pool_size=(16, 16), crop_pct=1.0),
    'groupconvnet': default_cfg(input_size=(3, 128, 128), pool_size=(16, 16), crop_pct=1.0),
    'groupnet_tiny': default_cfg(),
    'groupnet_base': default_cfg(),
})


@register_model
def groupnet_small(pretrained: bool = False, **kwargs) -> GroupNet:
    """GroupNet-Small: grouped-convolution bottleneck network for small inputs, stride-1 stem 64, stages
    128/256/512 x 2 blocks, groups 8, ratio 0.5."""
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
    """GroupConvNet: groupnet_small's layout, lowering groups (with a warning) where they
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
