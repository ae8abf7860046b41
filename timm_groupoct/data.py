"""Built-in small data sets that ship with a dependency, so that examples and experiments need no download.

`digits`: scikit-learn's `load_digits`, 1,797 grey 8x8 images of the digits 0-9 (pixel values 0-16), upscaled to
the model's input size, with a fixed, stratified train / validation split.
"""
from typing import List, Tuple

import torch
import torch.nn.functional as F
from torch.utils.data import TensorDataset

__all__ = ['DIGITS_CLASSES', 'digits_datasets']

DIGITS_CLASSES: List[str] = [str(d) for d in range(10)]


def digits_datasets(img_size: int = 32, val_fraction: float = 0.2,
                    seed: int = 0) -> Tuple[TensorDataset, TensorDataset]:
    """(train, val) datasets of (image (1, img_size, img_size) normalised to mean 0 / std ~1, label) pairs.

    The split is stratified and fixed by `seed`: with the defaults 1,437 training and 360 validation images.
    """
    try:
        from sklearn.datasets import load_digits
        from sklearn.model_selection import train_test_split
    except ImportError as e:
        raise ImportError("the digits data set needs scikit-learn: pip install 'timm-groupoct[experiments]'") from e
    if img_size < 8:
        raise ValueError(f'img_size must be at least the digits\' native 8 px, got {img_size}')
    digits = load_digits()
    images = torch.tensor(digits.images, dtype=torch.float32).unsqueeze(1) / 16.  # (N, 1, 8, 8) in [0, 1]
    if img_size != 8:
        images = F.interpolate(images, size=(img_size, img_size), mode='bilinear', align_corners=False)
    images = (images - 0.5) / 0.5
    labels = torch.tensor(digits.target, dtype=torch.long)
    train_idx, val_idx = train_test_split(
        list(range(len(labels))), test_size=val_fraction, random_state=seed, stratify=digits.target)
    return (TensorDataset(images[train_idx], labels[train_idx]), TensorDataset(images[val_idx], labels[val_idx]))
