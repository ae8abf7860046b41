"""Helpers shared by the tests."""
import torch.nn as nn


def randomise_norm_stats(model: nn.Module) -> nn.Module:
    """Non-trivial norm affine params and BN running stats, so that equal outputs in eval mode mean equal
    computations; returns the model in eval mode."""
    for m in model.modules():
        if isinstance(m, (nn.BatchNorm2d, nn.GroupNorm)) and m.affine:
            nn.init.uniform_(m.weight, 0.5, 1.5)
            nn.init.normal_(m.bias, std=0.1)
        if isinstance(m, nn.BatchNorm2d):
            nn.init.uniform_(m.running_var, 0.5, 2.0)
            nn.init.normal_(m.running_mean, std=0.1)
    return model.eval()
