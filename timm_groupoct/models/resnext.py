"""ResNeXt family (Xie et al., "Aggregated Residual Transformations for Deep Neural Networks", CVPR 2017,
arXiv:1611.05431; reference code facebookresearch/ResNeXt, BSD license), with GroupNorm (Wu & He, ECCV 2018,
arXiv:1803.08494) and weight standardization (Qiao et al., arXiv:1903.10520). Layer names and weights follow
timm's `resnet.py` (Apache-2.0) and torchvision's `resnet.py` (BSD-3-Clause).

The models are `GroupNet` configurations: ResNeXt's width rule `int(planes * base_width / 64) * groups` with
expansion 4, a ResNet stem for ImageNet or a single 3x3 conv for CIFAR. GroupNorm variants make small-batch,
detection-friendly backbones. `checkpoint_filter_fn` maps timm's and torchvision's ResNe(X)t keys onto these
models, so their published weights load (and the models then compute what timm's compute).
"""
from typing import Dict

import torch
from timm.models import generate_default_cfgs, register_model

from ._family import build_model, default_cfg
from ._weights import resnet_layout_key
from .groupnet import GroupNet

__all__ = ['checkpoint_filter_fn']

CIFAR10_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR10_STD = (0.2470, 0.2435, 0.2616)


def checkpoint_filter_fn(state_dict: Dict[str, torch.Tensor], model: GroupNet) -> Dict[str, torch.Tensor]:
    """timm / torchvision ResNe(X)t keys -> this family's: `conv1` / `bn1` -> `stem.0.conv` / `stem.0.bn`,
    `layerN.` -> `stages.{N-1}.` (`_weights.resnet_layout_key`); the block keys (conv1..3, bn1..3,
    downsample.0/1) and `fc` are already shared. Keys already in this family's layout pass unchanged."""
    return {resnet_layout_key(k): v for k, v in state_dict.items()}


def _create_resnext(variant: str, pretrained: bool = False, **kwargs) -> GroupNet:
    return build_model(GroupNet, variant, pretrained, pretrained_filter_fn=checkpoint_filter_fn, **kwargs)



def _cifar_cfg(**kwargs):
    return default_cfg(num_classes=10, input_size=(3, 32, 32), pool_size=(8, 8), crop_pct=1.0, mean=CIFAR10_MEAN,
                std=CIFAR10_STD, **kwargs)


default_cfgs = generate_default_cfgs({
    'resnext29_8x64d': _cifar_cfg(),
    'resnext29_16x64d': _cifar_cfg(),
    'resnext_simple11_4g': _cifar_cfg(),
    'resnext50_32x4d_gn': default_cfg(),
    'resnext101_32x8d_gn': default_cfg(),
    'resnext50_32x4d_gnws': default_cfg(),
    # timm's ResNet-50-GN (ImageNet top-1 80.1 at 288 px), loaded through `checkpoint_filter_fn`
    'resnext50_1x64d_gn.a1h_in1k': default_cfg(
        hf_hub_id='timm/resnet50_gn.a1h_in1k', crop_pct=0.94, interpolation='bicubic',
        test_input_size=(3, 288, 288), test_crop_pct=0.95,
        origin_url='https://github.com/huggingface/pytorch-image-models'),
})

# ImageNet ResNeXt layout: ResNet stem, stages 256..2048 wide, stride-1 first stage.
_IMAGENET = dict(stem_type='resnet', stem_width=64, widths=(256, 512, 1024, 2048), strides=(1, 2, 2, 2))
# CIFAR ResNeXt-29 layout: one 3x3 stem conv, 3 stages of 3 bottlenecks (Xie et al., section 5.3).
_CIFAR29 = dict(stem_type='single', stem_width=64, depths=(3, 3, 3), widths=(256, 512, 1024), strides=(1, 2, 2),
                base_width=64)


def _build(variant: str, pretrained: bool, model_args: dict, kwargs: dict) -> GroupNet:
    return _create_resnext(variant, pretrained, **dict(model_args, **kwargs))


@register_model
def resnext29_8x64d(pretrained: bool = False, **kwargs) -> GroupNet:
    """ResNeXt-29 8x64d for 32x32 CIFAR input (the paper: 34.4M parameters)."""
    return _build('resnext29_8x64d', pretrained, dict(_CIFAR29, groups=8), kwargs)


@register_model
def resnext29_16x64d(pretrained: bool = False, **kwargs) -> GroupNet:
    """ResNeXt-29 16x64d for 32x32 CIFAR input (the paper: 68.1M parameters)."""
    return _build('resnext29_16x64d', pretrained, dict(_CIFAR29, groups=16), kwargs)


@register_model
def resnext_simple11_4g(pretrained: bool = False, **kwargs) -> GroupNet:
    """A ResNeXt of simple grouped residual blocks (one grouped 3x3 + norm + act each) for 32x32 input:
    3x3 stem 64, stages 64/128/256 x 3 blocks, groups 4."""
    model_args = dict(stem_type='single', stem_width=64, block='basic', depths=(3, 3, 3), widths=(64, 128, 256),
                      strides=(1, 2, 2), groups=4)
    return _build('resnext_simple11_4g', pretrained, model_args, kwargs)


@register_model
def resnext50_32x4d_gn(pretrained: bool = False, **kwargs) -> GroupNet:
    """ResNeXt-50 32x4d with GroupNorm (32 groups); `norm_layer='batchnorm'` gives timm's resnext50_32x4d."""
    return _build('resnext50_32x4d_gn', pretrained, dict(
        _IMAGENET, depths=(3, 4, 6, 3), groups=32, base_width=4, norm_layer='groupnorm'), kwargs)


@register_model
def resnext101_32x8d_gn(pretrained: bool = False, **kwargs) -> GroupNet:
    """ResNeXt-101 32x8d with GroupNorm (32 groups); `norm_layer='batchnorm'` gives timm's resnext101_32x8d."""
    return _build('resnext101_32x8d_gn', pretrained, dict(
        _IMAGENET, depths=(3, 4, 23, 3), groups=32, base_width=8, norm_layer='groupnorm'), kwargs)


@register_model
def resnext50_32x4d_gnws(pretrained: bool = False, **kwargs) -> GroupNet:
    """ResNeXt-50 32x4d with GroupNorm after weight-standardized convolutions (Qiao et al., 2019)."""
    return _build('resnext50_32x4d_gnws', pretrained, dict(
        _IMAGENET, depths=(3, 4, 6, 3), groups=32, base_width=4, norm_layer='gnws'), kwargs)


@register_model
def resnext50_1x64d_gn(pretrained: bool = False, **kwargs) -> GroupNet:
    """ResNeXt-50 1x64d with GroupNorm: cardinality 1, width 64, i.e. ResNet-50-GN. Tag `a1h_in1k` loads timm's
    `resnet50_gn.a1h_in1k` ImageNet weights (top-1 80.1)."""
    return _build('resnext50_1x64d_gn', pretrained, dict(
        _IMAGENET, depths=(3, 4, 6, 3), groups=1, base_width=64, norm_layer='groupnorm'), kwargs)
