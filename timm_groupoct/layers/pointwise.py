"""1x1 convolution as a matrix product.

A 1x1 conv on a channels_last tensor (N, H, W, C in memory) is a GEMM on a view of it, with no copy. On the CPU,
at the small spatial sizes of batch-1 inference and of the octave low band, MKL's GEMM is faster than oneDNN's
1x1 conv and than the native conv PyTorch picks for small inputs. An eager-mode speed-up: the default models use
plain convs, and `use_pointwise_gemm` (part of `timm_groupoct.prepare_for_inference`) swaps these in.
"""
from typing import Optional

import torch
import torch.fx
import torch.nn as nn
import torch.nn.functional as F

__all__ = ['pointwise_conv', 'PointwiseConv2d', 'use_pointwise_gemm']


def pointwise_conv(x: torch.Tensor, weight: torch.Tensor, bias: Optional[torch.Tensor] = None) -> torch.Tensor:
    """1x1 conv, stride 1, groups 1: (N, C, H, W) x (C_out, C, 1, 1) (+ bias (C_out,)) -> (N, C_out, H, W).

    A channels_last CPU input is one (N*H*W, C) matrix: the product is one GEMM and the result is channels_last
    too. Any other input goes to `F.conv2d`: for NCHW a batched GEMM measured slower than the conv, and on a GPU
    cuDNN's 1x1 conv is a GEMM already (and in float32 may use TF32, which matmuls by default do not).
    """
    if not (x.is_cpu and x.is_contiguous(memory_format=torch.channels_last)):
        return F.conv2d(x, weight, bias)
    n, c, h, w = x.shape
    rows = x.permute(0, 2, 3, 1).reshape(n * h * w, c)
    weight = weight.flatten(1).t()
    out = torch.mm(rows, weight) if bias is None else torch.addmm(bias, rows, weight)
    return out.view(n, h, w, -1).permute(0, 3, 1, 2)


# a leaf for torch.fx (its branches read the input's layout)
torch.fx.wrap('pointwise_conv')


class PointwiseConv2d(nn.Conv2d):
    """`nn.Conv2d(in_chs, out_chs, 1, bias=bias)` (same parameters and state dict keys) computed by
    `pointwise_conv`. (N, in_chs, H, W) -> (N, out_chs, H, W)."""

    def __init__(self, in_chs: int, out_chs: int, bias: bool = False):
        super().__init__(in_chs, out_chs, 1, bias=bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return pointwise_conv(x, self.weight, self.bias)


@torch.no_grad()
def use_pointwise_gemm(model: nn.Module) -> nn.Module:
    """Replace, in place, every plain `nn.Conv2d` that is a 1x1, stride-1, ungrouped, unpadded conv by a
    `PointwiseConv2d` holding the same parameters; returns `model`. Outputs are unchanged."""
    for module in list(model.modules()):
        for name, child in module.named_children():
            if type(child) is nn.Conv2d and child.kernel_size == (1, 1) and child.stride == (1, 1) \
                    and child.groups == 1 and child.padding == (0, 0) and child.dilation == (1, 1):
                gemm = PointwiseConv2d(child.in_channels, child.out_channels, bias=child.bias is not None)
                gemm.weight, gemm.bias = child.weight, child.bias
                setattr(module, name, gemm.to(child.weight.device))
    return model
