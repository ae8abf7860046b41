"""OctNet family: networks of Octave convolutions (Chen et al., "Drop an Octave: Reducing Spatial Redundancy in
Convolutional Neural Networks with Octave Convolution", ICCV 2019, arXiv:1904.05049).

Reference code: d-li14/octconv.pytorch (Apache-2.0), whose ImageNet checkpoints `checkpoint_filter_fn` loads;
the authors' MXNet code is facebookresearch/OctConv.

`octnet_mini` is a small octave-conv network for 32x32 inputs. `oct_resnet*` / `oct_resnext50_32x4d` follow the
paper with the layout of the reference: the stem and the first block's input are single-band, the first block of
the last stage goes back to one band (alpha_out = 0) and the rest of the last stage is vanilla.
Stride-2 layers downsample the bands by average pooling, as the paper does; with `alpha=0` every layer is a
plain (strided) conv and the network is exactly ResNet-50 / ResNeXt-50.
"""
import re
from typing import Dict, Optional, Sequence

import torch
from timm.layers import LayerType
from timm.models import generate_default_cfgs, register_model

from ..layers import (
    BandSequential, Bands, MergeBands, OctaveBottleneck, OctaveConvNormAct, OctaveStage, SplitBands, resnext_width)
from ._family import (
    StagedClassifier, build_model, check_int, check_rate, default_cfg, plan_stages, stage_strides)
from ._weights import resnet_layout_key

__all__ = ['OctNet', 'checkpoint_filter_fn']


class OctNet(StagedClassifier):
    """Stem -> split into (high, low) bands -> stages of octave blocks -> merge -> global pool -> fc.

    (N, in_chans, H, W) -> (N, num_classes). `forward_features`, the intermediates and `features_only` give
    merged single tensors (the low band upsampled and concatenated), (N, C, H / r, W / r).
    """

    def __init__(
            self,
            depths: Sequence[int] = (1, 1),
            widths: Sequence[int] = (128, 128),
            strides: Optional[Sequence[int]] = None,
            block: str = 'conv',
            alpha: float = 0.5,
            stem_alpha: Optional[float] = None,
            last_alpha: Optional[float] = None,
            groups: int = 1,
            base_width: int = 64,
            stem_type: str = 'single',
            stem_width: int = 64,
            stem_stride: Optional[int] = None,
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
            block: 'conv' (a 3x3 octave conv + per-band norm + act) or 'bottleneck' (`OctaveBottleneck`,
                width `int(width / 4 * base_width / 64) * groups`).
            alpha: share of low-frequency channels in every block's output.
            stem_alpha: share split off the stem output (default `alpha`; 0 keeps the first block's input single-band).
            last_alpha: share in the last stage's output (default `alpha`; 0 ends single-band as the reference does).
            stem_type / stem_stride: see `make_stem` ('single' 3x3 conv, 'double', or 'resnet' 7x7 + max pool).
            output_stride: the network's stride at its last stage (16 or 8 for segmentation): the stages beyond it
                dilate instead of striding, both bands alike, and keep their bands' 2:1 sizes. Default: none.
        """
        super().__init__()
        strides = stage_strides(depths, widths, strides, default=1)
        if block not in ('conv', 'bottleneck'):
            raise ValueError(f"block must be 'conv' or 'bottleneck', got {block!r}")
        check_rate('drop_path_rate', drop_path_rate)
        if block == 'conv' and drop_path_rate > 0.:
            raise ValueError("drop_path_rate needs residual blocks: use block='bottleneck' or drop_path_rate=0")
        stem_alpha = alpha if stem_alpha is None else stem_alpha
        last_alpha = alpha if last_alpha is None else last_alpha
        for name, a in (('alpha', alpha), ('stem_alpha', stem_alpha), ('last_alpha', last_alpha)):
            check_rate(name, a, high_included=True)
        check_int('groups', groups)
        check_int('base_width', base_width)
        stem_stride = self.init_stem(stem_type, in_chans, stem_width, stem_stride, norm_layer, act_layer)

        # a network with no low band anywhere is the vanilla one, strided convs included
        pool_stride = max(alpha, stem_alpha, last_alpha) > 0
        layer_kwargs = dict(pool_stride=pool_stride, norm_layer=norm_layer, act_layer=act_layer)
        stages = []
        in_chs, alpha_in = stem_width, stem_alpha
        plans = plan_stages(depths, strides, stem_stride, output_stride, drop_path_rate)
        for i, (depth, width, plan) in enumerate(zip(depths, widths, plans)):
            alpha_out = last_alpha if i == len(depths) - 1 else alpha
            blocks = []
            for j in range(depth):
                kw = dict(stride=plan.stride if j == 0 else 1, groups=groups, alpha_in=alpha_in, alpha_out=alpha_out,
                          dilation=plan.first_dilation if j == 0 else plan.dilation, where=f'stages.{i}.{j}',
                          **layer_kwargs)
                if block == 'conv':
                    blocks.append(OctaveConvNormAct(in_chs, width, 3, **kw))
                else:
                    blocks.append(OctaveBottleneck(in_chs, width, resnext_width(width // 4, base_width, groups),
                                                   drop_path_rate=plan.drop_path_rates[j], **kw))
                in_chs, alpha_in = width, alpha_out
            stages.append(OctaveStage(*blocks))
            self.feature_info.append(dict(num_chs=width, reduction=plan.reduction, module=f'stages.{i}'))
        self.stages = BandSequential(*stages)
        self.split = SplitBands(stem_alpha)
        self.merge = MergeBands()

        self.num_features = in_chs
        self.init_head(num_classes, global_pool, drop_rate)
        self.init_weights(zero_init_last=zero_init_last)

    def enter_stages(self, x: torch.Tensor) -> Bands:
        return self.split(x)

    def stage_output(self, x: Bands) -> torch.Tensor:
        return self.merge(x)


# ---- weights of the reference implementation and of timm's vanilla ResNe(X)ts ------------------------------------

def checkpoint_filter_fn(state_dict: Dict[str, torch.Tensor], model: OctNet) -> Dict[str, torch.Tensor]:
    """Map checkpoint keys onto `OctNet`'s.

    Accepts the Oct-ResNet reference layout (`layerX.N.convK.conv.conv_{h2h,h2l,l2h,l2l}.weight`, `convK.bn_{h,l}.*`,
    `layerX.0.downsample.0.*`; DataParallel's `module.` prefix), timm / torchvision ResNe(X)t keys for `alpha=0`
    models (`convK.weight`, `bnK.*`, `downsample.0/1.*` -> the single band's `conv_h2h` / `bn_h`), and this
    package's own layout (unchanged).
    """
    state_dict = state_dict.get('state_dict', state_dict)
    out = {}
    for k, v in state_dict.items():
        k = resnet_layout_key(k)
        k = k.replace('.downsample.0.conv.', '.downsample.conv.').replace('.downsample.0.bn_', '.downsample.bn_')
        # vanilla (timm / torchvision) block keys: one band, the high one
        k = re.sub(r'\.conv(\d)\.weight$', r'.conv\1.conv.conv_h2h.weight', k)
        k = re.sub(r'\.bn(\d)\.', r'.conv\1.bn_h.', k)
        k = re.sub(r'\.downsample\.0\.weight$', '.downsample.conv.conv_h2h.weight', k)
        k = re.sub(r'\.downsample\.1\.', '.downsample.bn_h.', k)
        out[k] = v
    return out


def _create_octnet(variant: str, pretrained: bool = False, **kwargs) -> OctNet:
    return build_model(OctNet, variant, pretrained, pretrained_filter_fn=checkpoint_filter_fn, **kwargs)



default_cfgs = generate_default_cfgs({
    'octnet_mini': default_cfg(input_size=(3, 32, 32), pool_size=(32, 32), crop_pct=1.0),
    'octnet_mini_gn': default_cfg(input_size=(3, 32, 32), pool_size=(32, 32), crop_pct=1.0),
    'oct_resnet26': default_cfg(),
    'oct_resnet50': default_cfg(),
    'oct_resnet101': default_cfg(),
    'oct_resnext50_32x4d': default_cfg(),
})

# ImageNet Oct-ResNet layout of the reference: single-band stem and first-block input, single-band last stage.
_OCT_RESNET = dict(block='bottleneck', stem_type='resnet', stem_width=64, widths=(256, 512, 1024, 2048),
                   strides=(1, 2, 2, 2), stem_alpha=0., last_alpha=0.)


def _oct_resnet(variant: str, pretrained: bool, model_args: dict, kwargs: dict) -> OctNet:
    return _create_octnet(variant, pretrained, **{**_OCT_RESNET, **model_args, **kwargs})


@register_model
def octnet_mini(pretrained: bool = False, **kwargs) -> OctNet:
    """OctNet-Mini: octave-conv network for 32x32 inputs, 3x3 stem 64 -> split (alpha 0.5) -> octave conv blocks
    64->128, 128->128 -> merge."""
    model_args = dict(depths=(1, 1), widths=(128, 128), block='conv', alpha=0.5, stem_type='single')
    return _create_octnet('octnet_mini', pretrained, **dict(model_args, **kwargs))


@register_model
def octnet_mini_gn(pretrained: bool = False, **kwargs) -> OctNet:
    """octnet_mini with GroupNorm in each band (groups: the first of 32, 16, 8, 4, 2, 1 that divides the band)."""
    model_args = dict(depths=(1, 1), widths=(128, 128), block='conv', alpha=0.5, stem_type='single',
                      norm_layer='groupnorm')
    return _create_octnet('octnet_mini_gn', pretrained, **dict(model_args, **kwargs))


@register_model
def oct_resnet26(pretrained: bool = False, **kwargs) -> OctNet:
    """Oct-ResNet-26 (alpha 0.5 by default): bottlenecks (2, 2, 2, 2)."""
    return _oct_resnet('oct_resnet26', pretrained, dict(depths=(2, 2, 2, 2)), kwargs)


@register_model
def oct_resnet50(pretrained: bool = False, **kwargs) -> OctNet:
    """Oct-ResNet-50 (alpha 0.5 by default; the reference reports 77.64% ImageNet top-1). alpha=0 is ResNet-50."""
    return _oct_resnet('oct_resnet50', pretrained, dict(depths=(3, 4, 6, 3)), kwargs)


@register_model
def oct_resnet101(pretrained: bool = False, **kwargs) -> OctNet:
    """Oct-ResNet-101 (alpha 0.5 by default; the reference reports 78.79% ImageNet top-1)."""
    return _oct_resnet('oct_resnet101', pretrained, dict(depths=(3, 4, 23, 3)), kwargs)


@register_model
def oct_resnext50_32x4d(pretrained: bool = False, **kwargs) -> OctNet:
    """Oct-ResNeXt-50 32x4d (alpha 0.5 by default). alpha=0 is ResNeXt-50 32x4d."""
    return _oct_resnet('oct_resnext50_32x4d', pretrained, dict(depths=(3, 4, 6, 3), groups=32, base_width=4), kwargs)
