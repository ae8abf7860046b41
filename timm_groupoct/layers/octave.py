"""Octave convolution (Chen et al., "Drop an Octave", ICCV 2019) and its building blocks.

A feature map of C channels is held as two bands: high `x_h` (N, C - int(alpha * C), H, W) and low `x_l`
(N, int(alpha * C), ceil(H / 2), ceil(W / 2)). A band with no channels is a 0-channel tensor that still carries
its spatial size, so every layer takes and returns a `(x_h, x_l)` pair of tensors, whatever alpha is (0 and 1
included). The low band is always at ceil(H / 2): pooling rounds up and upsampling targets the high band's exact
size, so odd sizes (33, 225, ...) keep the bands aligned.
"""
import math
from typing import Optional, Tuple

import torch
import torch.fx
import torch.nn as nn
import torch.nn.functional as F
from timm.layers import LayerType, create_act_layer

from .grouped import resolve_groups
from .norm import fold_batchnorm, get_conv_norm_layers

__all__ = [
    'Bands', 'split_channels', 'pool_band', 'add_upsampled', 'split_bands', 'merge_bands', 'BandSequential',
    'OctaveConv2d', 'OctaveConvNormAct', 'OctaveBottleneck',
]

Bands = Tuple[torch.Tensor, torch.Tensor]


def split_channels(channels: int, alpha: float) -> Tuple[int, int]:
    """(high, low) channel counts: `int(alpha * channels)` low and the rest high, as the reference does."""
    if not 0. <= alpha <= 1.:
        raise ValueError(f'alpha must be in [0, 1], got {alpha}')
    low = int(alpha * channels)
    return channels - low, low


def pool_band(x: torch.Tensor) -> torch.Tensor:
    """2x2 average pool, rounding odd sizes up: (N, C, H, W) -> (N, C, ceil(H / 2), ceil(W / 2)); C > 0."""
    return F.avg_pool2d(x, 2, 2, ceil_mode=True)


def _zeros_band(x: torch.Tensor, channels: int, height: int, width: int) -> torch.Tensor:
    """A band of zeros (0 channels for an empty band) with `x`'s batch size, dtype and device."""
    return x.new_zeros((x.shape[0], channels, height, width))


def add_upsampled(x_h: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """x_h + nearest-upsample(y) to x_h's size, in place on x_h.

    For even sizes the upsample is a broadcast over a (H/2, 2, W/2, 2) view of x_h: no upsampled copy is made.
    """
    n, c, h, w = x_h.shape
    if h % 2 == 0 and w % 2 == 0 and h == 2 * y.shape[-2] and w == 2 * y.shape[-1]:
        x_h.view(n, c, h // 2, 2, w // 2, 2).add_(y.view(n, c, h // 2, 1, w // 2, 1))
        return x_h
    return x_h.add_(F.interpolate(y, size=(h, w), mode='nearest'))


def merge_bands(x_h: torch.Tensor, x_l: torch.Tensor) -> torch.Tensor:
    """(high, low) -> one (N, C_h + C_l, H, W) tensor: the low band upsampled (nearest) and concatenated."""
    if x_l.shape[1] == 0:
        return x_h
    x_l = F.interpolate(x_l, size=x_h.shape[-2:], mode='nearest')
    return x_l if x_h.shape[1] == 0 else torch.cat([x_h, x_l], dim=1)


def split_bands(x: torch.Tensor, alpha: float) -> Bands:
    """One (N, C, H, W) tensor -> (high: first C - int(alpha * C) channels, low: the rest, pooled)."""
    high, low = split_channels(x.shape[1], alpha)
    x_h, x_l = x[:, :high], x[:, high:]
    x_l = pool_band(x_l) if low > 0 else _zeros_band(x, 0, (x.shape[-2] + 1) // 2, (x.shape[-1] + 1) // 2)
    return x_h, x_l


# Shape-dependent helpers are leaves for torch.fx (timm's and torchvision's feature extractors): fx.wrap patches
# them in every module that calls them by name, so each calling module wraps them at import.
torch.fx.wrap('add_upsampled')


class BandSequential(nn.Sequential):
    """nn.Sequential over (high, low) bands; typed so that TorchScript passes the pair through."""

    def forward(self, x: Bands) -> Bands:
        for module in self:
            x = module(x)
        return x


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
            where: str = 'OctaveConv2d',
    ):
        """
        Args:
            norm_layer: only picks the conv type ('gnws' -> weight-standardized convs); the norm itself is
                `OctaveConvNormAct`'s.
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
            return conv(cin, cout, kernel_size, stride=path_stride, groups=g, bias=bias)

        self.conv_h2h = path(self.in_h, self.out_h, math.ceil(groups - alpha_in * groups), 'H->H',
                             path_stride=1 if self.pool_stride else stride)
        self.conv_h2l = path(self.in_h, self.out_l, groups, 'H->L')
        self.conv_l2h = path(self.in_l, self.out_h, groups, 'L->H')
        self.conv_l2l = path(self.in_l, self.out_l, math.ceil(alpha_in * groups), 'L->L')

    def forward(self, x: Bands) -> Bands:
        x_h, x_l = x
        if self.stride == 2 and self.pool_stride:
            if self.in_h > 0:
                x_h = pool_band(x_h)
            else:  # an empty band only changes its spatial size
                x_h = _zeros_band(x_h, 0, x_l.shape[-2], x_l.shape[-1])
        # sizes of the output bands
        h, w = x_h.shape[-2], x_h.shape[-1]
        if not self.pool_stride:
            h, w = (h - 1) // self.stride + 1, (w - 1) // self.stride + 1

        if self.conv_h2h is not None:
            y_h = self.conv_h2h(x_h)
        else:
            y_h = _zeros_band(x_h, self.out_h, h, w)
        if self.conv_l2h is not None:
            y_lh = self.conv_l2h(x_l)
            if self.stride == 2:
                y_h = y_h.add_(y_lh)  # the unpooled low band is at the new high resolution
            else:
                y_h = add_upsampled(y_h, y_lh)

        y_l: Optional[torch.Tensor] = None
        if self.conv_l2l is not None:
            y_l = self.conv_l2l(pool_band(x_l) if self.stride == 2 else x_l)
        if self.conv_h2l is not None:
            y_hl = self.conv_h2l(pool_band(x_h))
            y_l = y_hl if y_l is None else y_hl.add_(y_l)
        if y_l is None:
            y_l = _zeros_band(x_h, self.out_l, (h + 1) // 2, (w + 1) // 2)
        return y_h, y_l


class OctaveConvNormAct(nn.Module):
    """`OctaveConv2d` -> a norm (+ act) per band (`bn_h`, `bn_l`; absent for an empty band). Bands -> Bands.

    `reparameterize()` (called by timm's `reparameterize_model`) folds batch norms into the convolutions for
    inference; `bn_h` / `bn_l` then hold only the activation.
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
            apply_act: bool = True,
            pool_stride: bool = True,
            norm_layer: LayerType = 'batchnorm',
            act_layer: LayerType = 'relu',
            where: str = 'OctaveConvNormAct',
    ):
        super().__init__()
        self.conv = OctaveConv2d(in_chs, out_chs, kernel_size, alpha_in, alpha_out, stride, groups,
                                 pool_stride=pool_stride, norm_layer=norm_layer, where=where)
        norm_act = get_conv_norm_layers(norm_layer, act_layer).norm_act
        self.bn_h = norm_act(self.conv.out_h, apply_act=apply_act) if self.conv.out_h > 0 else None
        self.bn_l = norm_act(self.conv.out_l, apply_act=apply_act) if self.conv.out_l > 0 else None

    def reparameterize(self) -> None:
        conv = self.conv
        # a band's bias goes on the path that reads the low band: at stride 1 it is added before upsampling
        if self.bn_h is not None:
            self.bn_h = fold_batchnorm(self.bn_h, [p for p in (conv.conv_l2h, conv.conv_h2h) if p is not None])
        if self.bn_l is not None:
            self.bn_l = fold_batchnorm(self.bn_l, [p for p in (conv.conv_l2l, conv.conv_h2l) if p is not None])

    def forward(self, x: Bands) -> Bands:
        y_h, y_l = self.conv(x)
        if self.bn_h is not None:
            y_h = self.bn_h(y_h)
        if self.bn_l is not None:
            y_l = self.bn_l(y_l)
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
            where: str = 'OctaveBottleneck',
    ):
        super().__init__()
        kw = dict(pool_stride=pool_stride, norm_layer=norm_layer, act_layer=act_layer)
        self.conv1 = OctaveConvNormAct(in_chs, mid_chs, 1, alpha_in, alpha_out, where=f'{where}.conv1', **kw)
        self.conv2 = OctaveConvNormAct(mid_chs, mid_chs, 3, alpha_out, alpha_out, stride, groups,
                                       where=f'{where}.conv2', **kw)
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
        y_h, y_l = self.conv3(self.conv2(self.conv1(x)))
        if self.drop_path_rate > 0. and self.training:
            y_h, y_l = self._drop_path(y_h, y_l)
        # conv3's outputs are fresh tensors: add the shortcut in place
        return self.act(y_h.add_(shortcut[0])), self.act(y_l.add_(shortcut[1]))
