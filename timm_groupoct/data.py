"""Built-in small data sets that ship with a dependency, so that examples and experiments need no download.

`digits`: scikit-learn's `load_digits`, 1,797 grey 8x8 images of the digits 0-9 (pixel values 0-16), upscaled to
the model's input size, with a fixed, stratified train / validation split.
"""
from pathlib import Path
from typing import List, Tuple

import torch
import torch.nn.functional as F
from torch.utils.data import TensorDataset

__all__ = ['DIGITS_CLASSES', 'DIGITS_MEAN', 'DIGITS_STD', 'digits_datasets', 'save_digit_images']

DIGITS_CLASSES: List[str] = [str(d) for d in range(10)]
# the normalisation `digits_datasets` applies to pixel values in [0, 1]
DIGITS_MEAN, DIGITS_STD = (0.5,), (0.5,)


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
    images = (images - DIGITS_MEAN[0]) / DIGITS_STD[0]
    labels = torch.tensor(digits.target, dtype=torch.long)
    train_idx, val_idx = train_test_split(
        list(range(len(labels))), test_size=val_fraction, random_state=seed, stratify=digits.target)
    return (TensorDataset(images[train_idx], labels[train_idx]), TensorDataset(images[val_idx], labels[val_idx]))


def save_digit_images(out_dir, count: int = 3, seed: int = 0) -> List[Path]:
    """The first `count` validation digits as grey 8x8 PNG files `digit<i>_label<y>.png`, for trying `predict`."""
    from PIL import Image
    _, val = digits_datasets(img_size=8, seed=seed)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(min(count, len(val))):
        image, label = val[i]
        pixels = ((image[0] * DIGITS_STD[0] + DIGITS_MEAN[0]) * 255).round().clamp(0, 255).to(torch.uint8)
        path = out_dir / f'digit{i}_label{int(label)}.png'
        Image.fromarray(pixels.numpy(), mode='L').save(path)
        paths.append(path)
    return paths


if __name__ == '__main__':  # python -m timm_groupoct.data OUT_DIR [COUNT]: write sample digit images
    import sys
    for p in save_digit_images(sys.argv[1], int(sys.argv[2]) if len(sys.argv) > 2 else 3):
        print(p)
