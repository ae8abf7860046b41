"""Building blocks shared by the model families."""
from .grouped import GroupedBottleneck, GroupedResidualBlock, resnext_width, resolve_groups, valid_groups_near
from .norm import (
    GROUP_NORM_CANDIDATES, ConvNormLayers, ConvNormSequential, GroupNormRuleAct, conv_norm_act,
    fold_batchnorm, fold_weight_standardization, get_conv_norm_layers, get_norm_act, group_norm_groups)
from .pointwise import PointwiseConv2d, pointwise_conv, use_pointwise_gemm
from .octave import (
    BandPool, BandSequential, Bands, BandUpsample, MergeBands, OctaveBottleneck, OctaveConv2d, OctaveConvNormAct,
    OctaveStage, SplitBands, split_channels)
