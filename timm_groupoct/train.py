"""Training and evaluation with timm's machinery: the library behind `timm-groupoct train` and `eval`.

Data is the built-in `digits` (scikit-learn's, no download) or an image folder with `train/` and `val/` class
subfolders (timm's `create_dataset` and transforms resolved from the model's pretrained cfg). Optimizer and
schedule come from timm's `create_optimizer_v2` / `create_scheduler_v2`. Each epoch appends a row to
`metrics.csv`, redraws `curves.png`, and replaces `last.pth` atomically (`best.pth` when val top-1 improves), so an
interrupted run keeps its last complete checkpoint and `resume` continues from it. Checkpoints hold the weights
under `state_dict` with `epoch`, `arch`, `metric` (val top-1), `optimizer` and `args`, as timm's train.py writes
them, so `timm-groupoct export` takes them as they are.
"""
import csv
import math
import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Dict, List, Optional

import timm
import torch
import torch.nn.functional as F
from timm.data import create_dataset, create_transform, resolve_data_config
from timm.optim import create_optimizer_v2
from timm.scheduler import create_scheduler_v2
from torch.utils.data import DataLoader, Dataset

from .data import DIGITS_CLASSES, DIGITS_MEAN, DIGITS_STD, digits_datasets

__all__ = ['TrainConfig', 'TrainError', 'load_data', 'evaluate', 'train', 'predict_images']


class TrainError(ValueError):
    """A configuration or data problem found before any training starts."""


@dataclass
class TrainConfig:
    """A training run; field names follow timm's train.py where they overlap."""
    model: str
    data: str = 'digits'
    pretrained: bool = False
    num_classes: Optional[int] = None
    img_size: Optional[int] = None
    epochs: int = 5
    batch_size: int = 64
    opt: str = 'adamw'
    lr: float = 1e-3
    weight_decay: float = 0.05
    sched: str = 'cosine'
    warmup_epochs: int = 0
    output: str = 'output/train'
    resume: Optional[str] = None
    seed: int = 0
    workers: int = 0
    channels_last: bool = False


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


def load_data(data: str, model_name: str, img_size: Optional[int] = None, seed: int = 0) -> Data:
    """`digits`, or a folder `DIR` with `DIR/train/<class>/*` and `DIR/val/<class>/*` images."""
    if data == 'digits':
        size = img_size or 32
        train_set, val_set = digits_datasets(img_size=size, seed=seed)
        return Data(train_set, val_set, list(DIGITS_CLASSES), in_chans=1, img_size=size, mean=DIGITS_MEAN,
                    std=DIGITS_STD)
    root = Path(data)
    if not root.is_dir():
        raise TrainError(f"data folder {root} does not exist (use a folder with train/ and val/, or 'digits')")
    for split in ('train', 'val'):
        if not (root / split).is_dir():
            raise TrainError(f'data folder {root} has no {split}/ subfolder (expected {root}/{split}/<class>/<image>)')
    data_cfg = resolve_data_config(pretrained_cfg=timm.models.get_pretrained_cfg(model_name).to_dict())
    if img_size:
        data_cfg['input_size'] = (data_cfg['input_size'][0], img_size, img_size)
    sets = {}
    for split, training in (('train', True), ('val', False)):
        try:
            sets[split] = create_dataset('', root=str(root / split), split=split, is_training=training)
        except (RuntimeError, FileNotFoundError) as e:
            raise TrainError(f'no images found in {root / split}: {e}') from e
        if len(sets[split]) == 0:
            raise TrainError(f'no images found in {root / split}')
        sets[split].transform = create_transform(**data_cfg, is_training=training)
    names = sorted(p.name for p in (root / 'train').iterdir() if p.is_dir())
    return Data(sets['train'], sets['val'], names, in_chans=3, img_size=data_cfg['input_size'][-1],
                mean=tuple(data_cfg['mean']), std=tuple(data_cfg['std']))


def evaluate(model: torch.nn.Module, loader: DataLoader) -> Dict[str, float]:
    """Top-1 / top-5 accuracy (%), mean cross-entropy loss and images per second over `loader`."""
    model.eval()
    correct1 = correct5 = total = 0
    loss_sum = 0.
    start = time.perf_counter()
    with torch.no_grad():
        for x, y in loader:
            logits = model(x)
            loss_sum += F.cross_entropy(logits, y, reduction='sum').item()
            top = logits.topk(min(5, logits.shape[1]), dim=1).indices
            correct1 += (top[:, 0] == y).sum().item()
            correct5 += (top == y[:, None]).any(dim=1).sum().item()
            total += len(y)
    seconds = time.perf_counter() - start
    return dict(top1=100. * correct1 / total, top5=100. * correct5 / total, loss=loss_sum / total,
                images_per_s=total / seconds)


def _save_atomically(obj: dict, path: Path) -> None:
    tmp = path.with_suffix('.tmp')
    torch.save(obj, tmp)
    os.replace(tmp, path)  # an interrupted save never leaves a half-written checkpoint at `path`


def _plot(rows: List[Dict[str, float]], path: Path, title: str) -> None:
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    epochs = [r['epoch'] for r in rows]
    fig, (ax_loss, ax_acc) = plt.subplots(1, 2, figsize=(10, 3.6))
    ax_loss.plot(epochs, [r['train_loss'] for r in rows], marker='o', label='train')
    ax_loss.plot(epochs, [r['val_loss'] for r in rows], marker='o', label='val')
    ax_acc.plot(epochs, [r['val_top1'] for r in rows], marker='o', label='val top-1')
    ax_acc.plot(epochs, [r['val_top5'] for r in rows], marker='o', label='val top-5')
    for ax, ylabel in ((ax_loss, 'loss'), (ax_acc, 'accuracy (%)')):
        ax.set(xlabel='epoch', ylabel=ylabel)
        ax.set_xticks(epochs)
        ax.legend()
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def train(cfg: TrainConfig, progress: bool = True, log=print) -> Dict[str, object]:
    """Run `cfg`; returns the final metrics, the best val top-1 and the output paths."""
    from tqdm import tqdm
    if not timm.is_model(cfg.model):
        raise TrainError(f"unknown model '{cfg.model}'")
    if cfg.epochs < 1 or cfg.batch_size < 1:
        raise TrainError(f'--epochs and --batch-size must be positive, got {cfg.epochs} and {cfg.batch_size}')
    out = Path(cfg.output)
    try:
        out.mkdir(parents=True, exist_ok=True)
        (out / '.write-test').touch()
        (out / '.write-test').unlink()
    except OSError as e:
        raise TrainError(f'cannot write to the output folder {out}: {e.strerror}') from e
    torch.manual_seed(cfg.seed)
    data = load_data(cfg.data, cfg.model, cfg.img_size, cfg.seed)
    num_classes = len(data.class_names)
    if cfg.num_classes is not None and cfg.num_classes != num_classes:
        raise TrainError(f'--num-classes {cfg.num_classes} does not match the {num_classes} classes of {cfg.data}')
    resume = None
    if cfg.resume:
        if not Path(cfg.resume).is_file():
            raise TrainError(f'--resume checkpoint {cfg.resume} does not exist')
        resume = torch.load(cfg.resume, map_location='cpu', weights_only=True)

    model = timm.create_model(cfg.model, pretrained=cfg.pretrained, num_classes=num_classes, in_chans=data.in_chans)
    if cfg.channels_last:
        model = model.to(memory_format=torch.channels_last)
    optimizer = create_optimizer_v2(model, opt=cfg.opt, lr=cfg.lr, weight_decay=cfg.weight_decay)
    scheduler, num_epochs = create_scheduler_v2(optimizer, sched=cfg.sched, num_epochs=cfg.epochs,
                                                warmup_epochs=cfg.warmup_epochs)
    start_epoch, best_top1, rows = 0, -math.inf, []
    if resume is not None:
        model.load_state_dict(resume['state_dict'])
        optimizer.load_state_dict(resume['optimizer'])
        start_epoch, best_top1 = resume['epoch'], resume.get('best_metric', resume['metric'])
        with open(out / 'metrics.csv') as f:
            rows = [{k: int(v) if k == 'epoch' else float(v) for k, v in r.items()}
                    for r in csv.DictReader(f)][:start_epoch]
        log(f'resumed from {cfg.resume} at epoch {start_epoch}')

    generator = torch.Generator().manual_seed(cfg.seed)
    train_loader = DataLoader(data.train, batch_size=cfg.batch_size, shuffle=True, drop_last=True,
                              num_workers=cfg.workers, generator=generator)
    val_loader = DataLoader(data.val, batch_size=max(cfg.batch_size, 64), num_workers=cfg.workers)
    if len(train_loader) == 0:
        raise TrainError(f'--batch-size {cfg.batch_size} is larger than the {len(data.train)} training images')
    args = asdict(cfg)
    val: Dict[str, float] = {}
    for epoch in range(start_epoch, num_epochs):
        # the scheduler is stepped per epoch; replaying the finished epochs keeps a resumed schedule on track
        scheduler.step(epoch)
        model.train()
        losses, seen, start = [], 0, time.perf_counter()
        bar = tqdm(train_loader, desc=f'epoch {epoch + 1}/{num_epochs}', leave=False, disable=not progress)
        for x, y in bar:
            if cfg.channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            loss = F.cross_entropy(model(x), y)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            losses.append(loss.item())
            seen += len(y)
            bar.set_postfix(loss=f'{loss.item():.3f}', img_s=f'{seen / (time.perf_counter() - start):.0f}',
                            lr=f'{optimizer.param_groups[0]["lr"]:.2e}')
        train_seconds = time.perf_counter() - start
        train_loss = sum(losses) / len(losses)
        val = evaluate(model, val_loader)
        row = dict(epoch=epoch + 1, train_loss=train_loss, val_loss=val['loss'], val_top1=val['top1'],
                   val_top5=val['top5'], lr=optimizer.param_groups[0]['lr'],
                   train_images_per_s=seen / train_seconds)
        rows.append(row)
        log(f"epoch {epoch + 1}/{num_epochs}: train loss {train_loss:.4f}, val loss {val['loss']:.4f}, "
            f"val top-1 {val['top1']:.2f}%, top-5 {val['top5']:.2f}%")
        with open(out / 'metrics.csv', 'w', newline='') as f:
            writer = csv.DictWriter(f, fieldnames=list(row))
            writer.writeheader()
            writer.writerows(rows)
        _plot(rows, out / 'curves.png', f'{cfg.model} on {cfg.data}')
        best_top1 = max(best_top1, val['top1'])
        checkpoint = dict(epoch=epoch + 1, arch=cfg.model, state_dict=model.state_dict(),
                          optimizer=optimizer.state_dict(), metric=val['top1'], best_metric=best_top1,
                          args=args, label_names=data.class_names, data_config=data.data_config())
        _save_atomically(checkpoint, out / 'last.pth')
        if val['top1'] >= best_top1:
            _save_atomically(checkpoint, out / 'best.pth')
    return dict(final=val, best_top1=best_top1, output=out, epochs=len(rows))


def predict_images(model: torch.nn.Module, paths: List[str], top_k: int = 5,
                   img_size: Optional[int] = None) -> List[List[tuple]]:
    """For each image file, the `top_k` (label, probability) pairs, preprocessed as the model's cfg says. Labels
    are the weights' label names, ImageNet's descriptions for 1000-class models without names, else indices."""
    from PIL import Image
    data_cfg = resolve_data_config(model=model)
    if img_size:
        data_cfg['input_size'] = (data_cfg['input_size'][0], img_size, img_size)
    transform = create_transform(**data_cfg)
    mode = 'L' if data_cfg['input_size'][0] == 1 else 'RGB'
    names = model.pretrained_cfg.get('label_names')
    if not names and model.num_classes == 1000:
        from timm.data import ImageNetInfo
        info = ImageNetInfo()
        names = [info.index_to_description(i) for i in range(1000)]
    model.eval()
    results = []
    with torch.no_grad():
        for path in paths:
            try:
                image = Image.open(path).convert(mode)
            except (OSError, ValueError) as e:
                raise TrainError(f'cannot read image {path}: {e}') from e
            probs = model(transform(image).unsqueeze(0)).softmax(dim=1)[0]
            values, indices = probs.topk(min(top_k, len(probs)))
            results.append([(names[i] if names else str(i), v) for v, i in zip(values.tolist(), indices.tolist())])
    return results
