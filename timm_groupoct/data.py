"""Data for training and evaluation: the built-in `digits`, image folders, and timm's dataset names.

`digits`: scikit-learn's `load_digits`, 1,797 grey 8x8 images of the digits 0-9 (pixel values 0-16), upscaled to
the model's input size, with a fixed, stratified train / validation split; it ships with a dependency, so examples
and experiments need no download. Everything else goes through timm's `create_dataset`: an image folder
(`DIR/train/<class>/*`, `DIR/val/<class>/*`), torchvision data sets (`torch/cifar10`, `torch/mnist`, ...) and
Hugging Face data sets (`hfds/ORG/NAME`, or `hfds/PATH` for a local folder), with the transforms timm resolves from
the model's pretrained cfg.
"""
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

import timm
import torch
import torch.nn.functional as F
from torch.utils.data import Dataset, TensorDataset

__all__ = ['DIGITS_CLASSES', 'DIGITS_MEAN', 'DIGITS_STD', 'DataError', 'Data', 'load_data', 'model_pretrained_cfg',
           'digits_datasets', 'save_digit_images']

DIGITS_CLASSES: List[str] = [str(d) for d in range(10)]
# the normalisation `digits_datasets` applies to pixel values in [0, 1]
DIGITS_MEAN, DIGITS_STD = (0.5,), (0.5,)
# data set names timm's create_dataset resolves by prefix (torchvision, HF datasets, HF iterable, TFDS, WebDataset)
TIMM_DATASET_PREFIXES = ('torch/', 'hfds/', 'hfids/', 'tfds/', 'wds/')
_VAL_SPLIT_NAMES = ('validation', 'val', 'valid', 'eval', 'evaluation')


class DataError(ValueError):
    """A data source that cannot be used: missing, empty, or asked for something it cannot do."""


@dataclass
class Data:
    train: Dataset
    val: Dataset
    class_names: List[str]
    in_chans: int
    img_size: int
    mean: tuple
    std: tuple

    def data_config(self) -> dict:
        """The preprocessing the model is trained with, as timm's data config (stored with exported weights)."""
        return dict(input_size=(self.in_chans, self.img_size, self.img_size), mean=self.mean, std=self.std)


def load_data(
        source: str,
        model_name: str,
        img_size: Optional[int] = None,
        seed: int = 0,
        root: Optional[str] = None,
        train_split: str = 'train',
        val_split: str = 'validation',
        download: bool = False,
        augment: Optional[Dict[str, Any]] = None,
) -> Data:
    """Train and validation sets of `source`: 'digits', an image folder, or a timm data set name.

    `root` is where a timm data set lives (or is downloaded to, with `download`); `augment` holds
    `create_transform` training options (`hflip`, `auto_augment`, `re_prob`, ...) for image data sets.
    """
    augment = {k: v for k, v in (augment or {}).items() if v is not None}
    if source == 'digits':
        if augment:
            raise DataError(f'digits are fixed tensors, so image augmentations do not apply to them: '
                            f'drop {", ".join(sorted(augment))} or train on an image data set')
        cfg_size = model_pretrained_cfg(model_name).get('input_size', (3,))
        size = img_size or (cfg_size[-1] if cfg_size[0] == 1 else 32)  # a model trained on grey digits: its size
        train_set, val_set = digits_datasets(img_size=size, seed=seed)
        return Data(train_set, val_set, list(DIGITS_CLASSES), in_chans=1, img_size=size, mean=DIGITS_MEAN,
                    std=DIGITS_STD)
    if source.lower().startswith(TIMM_DATASET_PREFIXES):
        sets = _timm_datasets(source, root, train_split, val_split, download)
    else:
        sets = _folder_datasets(Path(source), train_split, val_split)
    try:
        in_chans = len(sets['train'][0][0].getbands())  # the images as the data set decodes them: 'L' 1, 'RGB' 3
    except (OSError, RuntimeError) as e:  # timm's ImageDataset skips unreadable images, then gives up
        raise DataError(f'cannot decode the training images of {source} ({e}): check that the files are images '
                        f'PIL can open') from e
    pretrained_cfg = model_pretrained_cfg(model_name)
    size = img_size or pretrained_cfg.get('input_size', (3, 224, 224))[-1]
    data_cfg = timm.data.resolve_data_config(args=dict(input_size=(in_chans, size, size)),
                                             pretrained_cfg=pretrained_cfg)
    if len(data_cfg['mean']) != in_chans:  # a 3-channel model cfg for grey images: its mean and std averaged
        data_cfg['mean'] = (sum(data_cfg['mean']) / len(data_cfg['mean']),) * in_chans
        data_cfg['std'] = (sum(data_cfg['std']) / len(data_cfg['std']),) * in_chans
    for split, training in (('train', True), ('val', False)):
        sets[split].transform = timm.data.create_transform(**data_cfg, is_training=training,
                                                           **(augment if training else {}))
    return Data(sets['train'], sets['val'], _class_names(sets['train']), in_chans=in_chans,
                img_size=data_cfg['input_size'][-1], mean=tuple(data_cfg['mean']), std=tuple(data_cfg['std']))


def model_pretrained_cfg(model_name: str) -> Dict[str, Any]:
    """The pretrained cfg of a model name, 'hf-hub:ORG/REPO' and 'local-dir:DIR' included (their config.json)."""
    from timm.models._factory import parse_model_name
    from timm.models._hub import load_model_config_from_hf, load_model_config_from_path
    source, name = parse_model_name(model_name)
    try:
        if source == 'hf-hub':
            return load_model_config_from_hf(name)[0]
        if source == 'local-dir':
            return load_model_config_from_path(name)[0]
    except (OSError, ValueError, RuntimeError) as e:  # no config.json, not on the Hub / offline, invalid JSON
        raise DataError(f'cannot read the config of {model_name}: {e}') from e
    cfg = timm.models.get_pretrained_cfg(name)
    return cfg.to_dict() if cfg else {}


def _split_dir(root: Path, split: str) -> Path:
    names = (split,) + (_VAL_SPLIT_NAMES if split in _VAL_SPLIT_NAMES else ())
    for name in names:
        if (root / name).is_dir():
            return root / name
    raise DataError(f'data folder {root} has no {names[0]}/ subfolder (expected {root}/{names[0]}/<class>/<image>'
                    + (f', or {"/, ".join(names[1:])}/' if len(names) > 1 else '') + ')')


def _folder_datasets(root: Path, train_split: str, val_split: str) -> Dict[str, Dataset]:
    if not root.is_dir():
        raise DataError(f"data folder {root} does not exist (use a folder with train/ and val/, 'digits', "
                        f"or a timm data set name such as torch/cifar10)")
    sets = {}
    for key, split in (('train', train_split), ('val', val_split)):
        folder = _split_dir(root, split)
        try:
            sets[key] = timm.data.create_dataset('', root=str(folder), split=split, search_split=False)
        except (RuntimeError, FileNotFoundError) as e:
            raise DataError(f'no images found in {folder}: {e}') from e
        if len(sets[key]) == 0:
            raise DataError(f'no images found in {folder}')
    train_classes, val_classes = _class_names(sets['train']), _class_names(sets['val'])
    unknown = sorted(set(val_classes) - set(train_classes))
    if unknown:
        raise DataError(f'{_split_dir(root, val_split)} has images of classes that {_split_dir(root, train_split)} '
                        f'has none of: {", ".join(unknown)}; every validation class needs training images')
    if val_classes != train_classes:  # fewer validation classes: label them as the training split does
        folder = _split_dir(root, val_split)
        sets['val'] = timm.data.create_dataset('', root=str(folder), split=val_split, search_split=False,
                                               class_map=dict(sets['train'].reader.class_to_idx))
    return sets


def _timm_datasets(name: str, root: Optional[str], train_split: str, val_split: str,
                   download: bool) -> Dict[str, Dataset]:
    if name.lower().startswith('torch/') and not root:
        raise DataError(f'{name} needs --data-dir: the folder that holds it (or receives it with --dataset-download)')
    sets = {}
    for key, split in (('train', train_split), ('val', val_split)):
        try:
            sets[key] = timm.data.create_dataset(name, root=root, split=split, is_training=key == 'train',
                                                 download=download)
        except ImportError as e:
            raise DataError(f"{name} needs the Hugging Face `datasets` package: pip install 'timm-groupoct[hf]'") \
                from e
        except (RuntimeError, FileNotFoundError, ValueError, AssertionError) as e:
            hint = '' if download else ' (add --dataset-download to fetch it)'
            raise DataError(f'cannot load the {split} split of {name} from {root or "its default cache"}{hint}: '
                            f'{e}') from e
        if len(sets[key]) == 0:
            raise DataError(f'the {split} split of {name} has no images')
    return sets


def _class_names(dataset: Dataset) -> List[str]:
    """Class names in label order: from the folder / HF reader's `class_to_idx`, or torchvision's `classes`."""
    mapping = getattr(getattr(dataset, 'reader', None), 'class_to_idx', None) or \
        getattr(dataset, 'class_to_idx', None)
    if mapping:
        return [name for name, _ in sorted(mapping.items(), key=lambda item: item[1])]
    return [str(c) for c in dataset.classes]


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
