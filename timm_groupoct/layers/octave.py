"""Octave convolution (Chen et al., "Drop an Octave", ICCV 2019, arXiv:1904.05049) and its building blocks.

Follows the reference d-li14/octconv.pytorch (Apache-2.0) in channel splits, group counts and stride-2
pooling, and departs from it for alpha 0 / 1, odd sizes and export-clean band arithmetic.

A feature map of C channels is held as two bands: high `x_h` (N, C - int(alpha * C), H, W) and low `x_l`
(N, int(alpha * C), ceil(H / 2), ceil(W / 2)). A band with no channels is a 0-channel tensor that still carries
its spatial size, so every layer takes and returns a `(x_h, x_l)` pair of tensors, whatever alpha is (0 and 1
included). The low band is always at ceil(H / 2): pooling rounds up and upsampling targets the high band's exact
size, so odd sizes (33, 225, ...) keep the bands aligned.
"""
import math
from typing import List, Optional, Tuple

import torch
import torch.fx
import torch.nn as nn
import torch.nn.functional as F
from timm.layers import LayerType, create_act_layer

from .grouped import resolve_groups
from .norm import fold_batchnorm, get_conv_norm_layers

__all__ = [
    'Bands', 'split_channels', 'BandPool', 'BandUpsample', 'SplitBands', 'MergeBands', 'BandSequential',
    'OctaveStage', 'OctaveConv2d', 'OctaveConvNormAct', 'OctaveBottleneck',
]

Bands = Tuple[torch.Tensor, torch.Tensor]


def split_channels(channels: int, alpha: float) -> Tuple[int, int]:
    """(high, low) channel counts: `int(alpha * channels)` low and the rest high, as the reference does."""
    if not 0. <= alpha <= 1.:
        raise ValueError(f'alpha must be in [0, 1], got {alpha}')
    low = int(alpha * channels)
    return channels - low, low


def _zeros_band(x: torch.Tensor, channels: int, height: int, width: int) -> torch.Tensor:
    """A band of zeros (0 channels for an empty band) with `x`'s batch size, dtype and device."""
    return x.new_zeros((x.shape[0], channels, height, width))


def _check_even(x: torch.Tensor, where: str) -> None:
    if x.shape[-2] % 2 or x.shape[-1] % 2:
        raise ValueError(
            f'{where} was prepared for a fixed input size at which its band is even, but it got a '
            f'{x.shape[-2]}x{x.shape[-1]} band: run the model at the input size given to prepare_for_inference, or '
            f'prepare it with input_size=None to run at any size')


def _pool(x: torch.Tensor, fixed_even: bool, where: str) -> torch.Tensor:
    """2x2 average pooling that rounds odd sizes up, each output the mean of the inputs its window covers.

    An odd last row / column is padded by repeating it, which averages to the same as `ceil_mode=True` but
    without the guard `ceil_mode` puts on symbolic sizes (`2 * ((h - 1) // 2) < h`, which `torch.export`
    cannot prove). `fixed_even`: plain pooling, no padding."""
    if fixed_even:
        _check_even(x, where)
        return F.avg_pool2d(x, 2, 2)
    return F.avg_pool2d(F.pad(x, (0, x.shape[-1] % 2, 0, x.shape[-2] % 2), mode='replicate'), 2, 2)


def _upsample(y: torch.Tensor, like: torch.Tensor, fixed_even: bool, where: str) -> torch.Tensor:
    """Nearest upsampling of y to like's spatial size. Nearest to an exact size repeats low-band row i at rows
    2i and 2i + 1 (the last one only at odd sizes), in PyTorch and in ONNX `Resize` (asymmetric, floor) alike."""
    if fixed_even:
        _check_even(like, where)
        return F.interpolate(y, scale_factor=2., mode='nearest')
    return F.interpolate(y, size=like.shape[-2:], mode='nearest')


def _split_bands(x: torch.Tensor, alpha: float, fixed_even: bool, where: str) -> Bands:
    high, low = split_channels(x.shape[1], alpha)
    if low == 0:
        return x, _zeros_band(x, 0, (x.shape[-2] + 1) // 2, (x.shape[-1] + 1) // 2)
    x_h, x_l = x.split([high, low], dim=1)  # fixed sizes: exporters keep the channel counts static
    return x_h, _pool(x_l, fixed_even, where)


def _merge_bands(x_h: torch.Tensor, x_l: torch.Tensor, fixed_even: bool, where: str) -> torch.Tensor:
    if x_l.shape[1] == 0:
        return x_h
    x_l = _upsample(x_l, x_h, fixed_even, where)
    return x_l if x_h.shape[1] == 0 else torch.cat([x_h, x_l], dim=1)


# Helpers that read sizes and channel counts off the tensors are leaves for torch.fx (timm's and torchvision's
# feature extractors): fx.wrap patches them in every module that calls them by name, here.
torch.fx.wrap('_pool')
torch.fx.wrap('_upsample')
torch.fx.wrap('_split_bands')
torch.fx.wrap('_merge_bands')


class _FixableSize(nn.Module):
    """A band operation with a `fixed_even` switch (off by default).

    `timm_groupoct.prepare_for_inference` turns it on, for a fixed input size, where every band the operation
    sees is even. The operation then pools and upsamples by constant factors, without `ceil_mode` and without
    reading sizes off tensors: the same numbers at those sizes, in a form that runtimes run in their blocked
    layouts (onnxruntime's NCHWc, OpenVINO) with no shape arithmetic. An odd size then raises a ValueError.
    """
    fixed_even: bool
    where: str

    def __init__(self):
        super().__init__()
        self.fixed_even = False
        self.where = type(self).__name__  # `fix_band_sizes` sets the module's name, for the error message

    def sized_input(self, *args) -> torch.Tensor:
        """Of the forward's arguments, the tensor whose spatial size `fixed_even` needs to be even."""
        raise NotImplementedError


class BandPool(_FixableSize):
    """2x2 average pooling of a band, rounding odd sizes up: (N, C, H, W) -> (N, C, ceil(H / 2), ceil(W / 2))."""

    def sized_input(self, x: torch.Tensor) -> torch.Tensor:
        return x

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return _pool(x, self.fixed_even, self.where)


class BandUpsample(_FixableSize):
    """Nearest upsampling of a low band to the size of `like` (the high band, or a tensor of its size):
    (N, C, ceil(H / 2), ceil(W / 2)), (N, *, H, W) -> (N, C, H, W). The target size is read off `like`, so that
    one traced or exported graph serves every input size."""

    def sized_input(self, y: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
        return like

    def forward(self, y: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
        return _upsample(y, like, self.fixed_even, self.where)


class SplitBands(_FixableSize):
    """One (N, C, H, W) tensor -> bands (high: the first C - int(alpha * C) channels, low: the rest, pooled)."""

    def __init__(self, alpha: float):
        super().__init__()
        self.alpha = alpha

    def sized_input(self, x: torch.Tensor) -> torch.Tensor:
        return x

    def forward(self, x: torch.Tensor) -> Bands:
        return _split_bands(x, self.alpha, self.fixed_even, self.where)


class MergeBands(_FixableSize):
    """Bands -> one (N, C_h + C_l, H, W) tensor: the low band upsampled (nearest) and concatenated."""

    def sized_input(self, x: Bands) -> torch.Tensor:
        return x[0]

    def forward(self, x: Bands) -> torch.Tensor:
        return _merge_bands(x[0], x[1], self.fixed_even, self.where)


class BandSequential(nn.Sequential):
    """nn.Sequential over (high, low) bands; typed so that TorchScript passes the pair through."""

    def forward(self, x: Bands) -> Bands:
        for module in self:
            x = module(x)
        return x


# torch.fx symbolic tracing only (`is_fx_tracing` is also true under torch.export, and older torch has only it)
_is_fx_symbolic_tracing = getattr(torch.fx._symbolic_trace, 'is_fx_symbolic_tracing',
                                  torch.fx._symbolic_trace.is_fx_tracing)


class OctaveStage(BandSequential):
    """The blocks of one stage: Bands -> Bands.

    Under torch.fx symbolic tracing the stage also records, as its last node, its output merged into one map.
    torchvision's `create_feature_extractor` and timm's `features_only=True, feature_cls='fx'`, asked for the
    stage by name, return a module's last node: so they return that merged map, the one `forward_intermediates`
    gives, not the last op of the low band. Eager mode, scripting and the other tracers never run it.
    """

    def forward(self, x: Bands) -> Bands:
        for module in self:
            x = module(x)
        if not torch.jit.is_scripting():
            self._record_feature_map(x)
        return x

    @torch.jit.unused
    def _record_feature_map(self, x: Bands) -> None:
        if _is_fx_symbolic_tracing():
            _merge_bands(x[0], x[1], False, 'OctaveStage')


class OctaveConv2d(nn.Module):
    """Octave convolution: y_h = H->H(x_h) + up(L->H(x_l)), y_l = L->L(x_l) + H->L(pool(x_h)).

    (x_h (N, Ci_h, H, W), x_l (N, Ci_l, ceil(H/2), ceil(W/2))) ->
    (y_h (N, Co_h, H', W'), y_l (N, Co_l, ceil(H'/2), ceil(W'/2))) with H' = ceil(H / stride).

    A path whose input or output band has no channels is absent. Stride 2 follows the paper and its reference
    code: the high band is average-pooled before H->H (and pooled once more for H->L), the low band is pooled
    before L->L, and L->H reads the unpooled low band, already at the new high resolution. With
    `pool_stride=False` a single-band conv (alpha_in == alpha_out == 0) is a plain strided conv, i.e. the
    vanilla layer. Groups follow the reference: H->H ceil(groups * (1 - alpha_in)), L->L ceil(groups * alpha_in),
    the cross paths `groups`.
    """

    def __init__(
            self,
            in_chs: int,
            out_chs: int,
            kernel_size: int = 3,
            alpha_in: float = 0.5,
            alpha_out: float = 0.5,
            stride: int = 1,
            groups: int = 1,
            bias: bool = False,
            pool_stride: bool = True,
            norm_layer: LayerType = 'batchnorm',
            dilation: int = 1,
            where: str = 'OctaveConv2d',
    ):
        """
        Args:
            norm_layer: only picks the conv type ('gnws' -> weight-standardized convs); the norm itself is
                `OctaveConvNormAct`'s.
            dilation: of every path, both bands alike (`output_stride` below 32).
        """
        super().__init__()
        if stride not in (1, 2):
            raise ValueError(f'{where}: stride must be 1 or 2, got {stride}')
        self.in_h, self.in_l = split_channels(in_chs, alpha_in)
        self.out_h, self.out_l = split_channels(out_chs, alpha_out)
        self.stride = stride
        self.pool_stride = pool_stride or stride == 1
        if not self.pool_stride and (self.in_l or self.out_l):
            raise ValueError(
                f'{where}: pool_stride=False (a plain strided conv) needs single-band input and output '
                f'(alpha_in = alpha_out = 0), got alpha_in={alpha_in}, alpha_out={alpha_out}')
        conv = get_conv_norm_layers(norm_layer).conv

        def path(cin: int, cout: int, path_groups: int, name: str, path_stride: int = 1) -> Optional[nn.Module]:
            if cin == 0 or cout == 0:
                return None
            g = resolve_groups(math.gcd(cin, cout), path_groups, where=f'{where} {name} ({cin} -> {cout} channels)',
                               can_adjust=False)
            return conv(cin, cout, kernel_size, stride=path_stride, groups=g, bias=bias, dilation=dilation)

        self.conv_h2h = path(self.in_h, self.out_h, math.ceil(groups - alpha_in * groups), 'H->H',
                             path_stride=1 if self.pool_stride else stride)
        self.conv_h2l = path(self.in_h, self.out_l, groups, 'H->L')
        self.conv_l2h = path(self.in_l, self.out_h, groups, 'L->H')
        self.conv_l2l = path(self.in_l, self.out_l, math.ceil(alpha_in * groups), 'L->L')
        # one module per place that pools or upsamples: `prepare_for_inference` fixes each for the sizes it sees
        strided = stride == 2 and self.pool_stride
        self.pool_h = BandPool() if strided and self.in_h > 0 else None
        self.pool_l = BandPool() if stride == 2 and self.conv_l2l is not None else None
        self.pool_h2l = BandPool() if self.conv_h2l is not None else None
        self.upsample = BandUpsample() if stride == 1 and self.conv_l2h is not None else None

    def forward(self, x: Bands, residual: Optional[Bands] = None) -> Bands:
        """`residual` (bands of the output's shape), if given, is added to the output as one more term of each
        band's sum, next to the paths' outputs: exporters then fuse every addition into a convolution."""
        x_h, x_l = x
        if self.stride == 2 and self.pool_stride:
            if self.pool_h is not None:
                x_h = self.pool_h(x_h)
            else:  # an empty band only changes its spatial size
                x_h = _zeros_band(x_h, 0, x_l.shape[-2], x_l.shape[-1])
        # sizes of the output bands
        h, w = x_h.shape[-2], x_h.shape[-1]
        if not self.pool_stride:
            h, w = (h - 1) // self.stride + 1, (w - 1) // self.stride + 1

        high: List[torch.Tensor] = []
        if self.conv_h2h is not None:
            high.append(self.conv_h2h(x_h))
        if self.conv_l2h is not None:
            y_lh = self.conv_l2h(x_l)
            # at stride 2 the unpooled low band is already at the new high resolution
            high.append(y_lh if self.upsample is None else self.upsample(y_lh, x_h))
        low: List[torch.Tensor] = []
        if self.conv_l2l is not None:
            low.append(self.conv_l2l(x_l if self.pool_l is None else self.pool_l(x_l)))
        if self.conv_h2l is not None and self.pool_h2l is not None:
            low.append(self.conv_h2l(self.pool_h2l(x_h)))
        if residual is not None:  # (an empty band takes no residual; see `_add_bands`)
            if self.out_h > 0:
                high.append(residual[0])
            if self.out_l > 0:
                low.append(residual[1])
        y_h = _sum(high) if len(high) > 0 else _zeros_band(x_h, self.out_h, h, w)
        y_l = _sum(low) if len(low) > 0 else _zeros_band(x_h, self.out_l, (h + 1) // 2, (w + 1) // 2)
        return y_h, y_l


def _add_bands(x: Bands, y: Bands) -> Bands:
    """Band-wise x + y. An empty band is passed on as it is: adding 0-channel tensors would broadcast their
    spatial sizes, which `torch.export` then guards on (it specializes sizes equal to 1)."""
    return (x[0] if x[0].shape[1] == 0 else x[0] + y[0]), (x[1] if x[1].shape[1] == 0 else x[1] + y[1])


torch.fx.wrap('_add_bands')


def _sum(terms: List[torch.Tensor]) -> torch.Tensor:
    """terms[0] + (terms[1] + (...)): the first term, a conv output, takes the sum of the others last, the
    order in which runtimes fuse an addition into the conv that produces one of its inputs."""
    out = terms[-1]
    for i in range(len(terms) - 2, -1, -1):
        out = terms[i] + out
    return out


class OctaveConvNormAct(nn.Module):
    """`OctaveConv2d` -> a norm (+ act) per band (`bn_h`, `bn_l`; absent for an empty band). Bands -> Bands.

    `reparameterize()` (called by timm's `reparameterize_model`) folds batch norms into the convolutions for
    inference; `bn_h` / `bn_l` then hold only the activation.
    """
    shortcut_in_conv: bool

    def __init__(
            self,
            in_chs: int,
            out_chs: int,
            kernel_size: int = 3,
            alpha_in: float = 0.5,
            alpha_out: float = 0.5,
            stride: int = 1,
            groups: int = 1,
            apply_act: bool = True,
            pool_stride: bool = True,
            norm_layer: LayerType = 'batchnorm',
            act_layer: LayerType = 'relu',
            dilation: int = 1,
            where: str = 'OctaveConvNormAct',
    ):
        super().__init__()
        self.conv = OctaveConv2d(in_chs, out_chs, kernel_size, alpha_in, alpha_out, stride, groups,
                                 pool_stride=pool_stride, norm_layer=norm_layer, dilation=dilation, where=where)
        norm_act = get_conv_norm_layers(norm_layer, act_layer).norm_act
        self.bn_h = norm_act(self.conv.out_h, apply_act=apply_act) if self.conv.out_h > 0 else None
        self.bn_l = norm_act(self.conv.out_l, apply_act=apply_act) if self.conv.out_l > 0 else None
        self.shortcut_in_conv = False

    def reparameterize(self) -> None:
        conv = self.conv
        # a band's bias goes on the path that reads the low band: at stride 1 it is added before upsampling
        if self.bn_h is not None:
            self.bn_h = fold_batchnorm(self.bn_h, [p for p in (conv.conv_l2h, conv.conv_h2h) if p is not None])
        if self.bn_l is not None:
            self.bn_l = fold_batchnorm(self.bn_l, [p for p in (conv.conv_l2l, conv.conv_h2l) if p is not None])
        # with nothing left between the conv and a shortcut, the conv adds the shortcut in its own sums
        self.shortcut_in_conv = all(bn is None or isinstance(bn, nn.Identity) for bn in (self.bn_h, self.bn_l))

    def forward(self, x: Bands, shortcut: Optional[Bands] = None) -> Bands:
        """Bands -> Bands, plus `shortcut` (added after the norms) if given."""
        if self.shortcut_in_conv:
            return self.conv(x, shortcut)
        y_h, y_l = self.conv(x)
        if self.bn_h is not None:
            y_h = self.bn_h(y_h)
        if self.bn_l is not None:
            y_l = self.bn_l(y_l)
        if shortcut is not None:
            y_h, y_l = _add_bands((y_h, y_l), shortcut)
        return y_h, y_l


class OctaveBottleneck(nn.Module):
    """Octave version of the (grouped) ResNet bottleneck; `alpha_in` -> `alpha_out` happens in conv1 (and the
    projection), conv2 / conv3 keep `alpha_out`. Bands -> Bands, spatial size divided by `stride`.

    Layout and key names are those of the Oct-ResNet reference (conv1..3 each `conv.conv_{h2h,h2l,l2h,l2l}` +
    `bn_h` / `bn_l`), except `downsample` is the projection itself rather than a 1-element Sequential.
    """

    def __init__(
            self,
            in_chs: int,
            out_chs: int,
            mid_chs: int,
            stride: int = 1,
            groups: int = 1,
            alpha_in: float = 0.5,
            alpha_out: float = 0.5,
            pool_stride: bool = True,
            norm_layer: LayerType = 'batchnorm',
            act_layer: LayerType = 'relu',
            drop_path_rate: float = 0.,
            dilation: int = 1,
            where: str = 'OctaveBottleneck',
    ):
        """
        Args:
            dilation: of the 3x3 octave conv (`output_stride` below 32).
        """
        super().__init__()
        kw = dict(pool_stride=pool_stride, norm_layer=norm_layer, act_layer=act_layer)
        self.conv1 = OctaveConvNormAct(in_chs, mid_chs, 1, alpha_in, alpha_out, where=f'{where}.conv1', **kw)
        self.conv2 = OctaveConvNormAct(mid_chs, mid_chs, 3, alpha_out, alpha_out, stride, groups,
                                       dilation=dilation, where=f'{where}.conv2', **kw)
        self.conv3 = OctaveConvNormAct(mid_chs, out_chs, 1, alpha_out, alpha_out, apply_act=False,
                                       where=f'{where}.conv3', **kw)
        self.downsample: Optional[nn.Module] = None
        if stride != 1 or in_chs != out_chs or alpha_in != alpha_out:
            self.downsample = OctaveConvNormAct(in_chs, out_chs, 1, alpha_in, alpha_out, stride, apply_act=False,
                                                where=f'{where}.downsample', **kw)
        self.drop_path_rate = drop_path_rate
        self.act = create_act_layer(act_layer, inplace=True)

    def zero_init_last(self) -> None:
        for bn in (self.conv3.bn_h, self.conv3.bn_l):
            if bn is not None:
                nn.init.zeros_(bn.weight)

    def _drop_path(self, x_h: torch.Tensor, x_l: torch.Tensor) -> Bands:
        # one keep-mask per sample for both bands: a dropped residual branch is dropped in both
        keep = 1. - self.drop_path_rate
        mask = x_h.new_empty((x_h.shape[0], 1, 1, 1)).bernoulli_(keep).div_(keep)
        return x_h * mask, x_l * mask

    def forward(self, x: Bands) -> Bands:
        shortcut = x if self.downsample is None else self.downsample(x)
        y = self.conv2(self.conv1(x))
        if self.drop_path_rate > 0. and self.training:
            y_h, y_l = _add_bands(self._drop_path(*self.conv3(y)), shortcut)
        else:
            y_h, y_l = self.conv3(y, shortcut)
        return self.act(y_h), self.act(y_l)
