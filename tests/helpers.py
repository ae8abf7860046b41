"""Helpers shared by the tests."""
import pytest
import torch.nn as nn
from PIL import Image

# `timm-groupoct train` flags for runs of seconds: digits at 8 px
TINY = ['--img-size', '8', '-b', '64', '--lr', '5e-3', '--no-progress']


def image_folder(root, classes=('cat', 'dog'), per_class=4, splits=('train', 'val')):
    """An image folder data set, root/<split>/<class>/<j>.png, of 20x20 RGB images; returns root."""
    for split in splits:
        for i, name in enumerate(classes):
            (root / split / name).mkdir(parents=True)
            for j in range(per_class):
                Image.new('RGB', (20, 20), color=(40 * i + 10 * j, 100, 200)).save(root / split / name / f'{j}.png')
    return root


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


def heavy_beyond(cases, kept):
    """`cases` as pytest parameters (a tuple per case, or single values), those outside `kept` marked heavy: they
    run in `make test-heavy` only, the same checks at the same sizes."""
    return [case if case in kept else pytest.param(*(case if isinstance(case, tuple) else (case,)),
                                                   marks=pytest.mark.heavy) for case in cases]
