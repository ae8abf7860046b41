"""The BatchNorm-vs-GroupNorm experiment of Wu & He, "Group Normalization" (ECCV 2018, arXiv:1803.08494), on real
data at a small scale: the same model with BatchNorm and with GroupNorm, trained at several batch
sizes on scikit-learn's digits. GroupNorm normalises each sample on its own, so its results should not depend on
the batch size; BatchNorm's statistics get noisy as batches shrink (Wu & He, 2018)."""
import csv
from dataclasses import dataclass, field
from pathlib import Path
from typing import List, Sequence

import timm
import torch
import torch.nn.functional as F
from timm.optim import create_optimizer_v2
from torch.utils.data import DataLoader

from .data import digits_datasets
from .train import evaluate, train_one_epoch

__all__ = ['RunResult', 'train_and_evaluate', 'bn_vs_gn', 'write_results']


@dataclass
class RunResult:
    norm: str
    batch_size: int
    final_train_loss: float
    val_top1: float
    images_per_s: float
    train_loss_curve: List[float] = field(default_factory=list)
    val_top1_curve: List[float] = field(default_factory=list)


def train_and_evaluate(model_name: str, norm: str, batch_size: int, epochs: int, img_size: int, lr: float,
                       seed: int, max_train_samples: int = 0, progress: bool = True) -> RunResult:
    """Train `model_name` (one grey input channel, 10 classes, `norm_layer=norm`) on digits with `train.py`'s
    epoch loop (AdamW at a constant lr, no augmentation); report per epoch."""
    torch.manual_seed(seed)
    train_set, val_set = digits_datasets(img_size=img_size, seed=seed)
    if max_train_samples:
        train_set = torch.utils.data.Subset(train_set, range(min(max_train_samples, len(train_set))))
    generator = torch.Generator().manual_seed(seed)
    train_loader = DataLoader(train_set, batch_size=batch_size, shuffle=True, drop_last=True, generator=generator)
    val_loader = DataLoader(val_set, batch_size=256)
    model = timm.create_model(model_name, num_classes=10, in_chans=1, norm_layer=norm)
    optimizer = create_optimizer_v2(model, opt='adamw', lr=lr, weight_decay=0.05)

    result = RunResult(norm=norm, batch_size=batch_size, final_train_loss=float('nan'), val_top1=float('nan'),
                       images_per_s=float('nan'))
    seen, train_time = 0, 0.
    for epoch in range(epochs):
        model.train()
        stats = train_one_epoch(model, train_loader, optimizer, F.cross_entropy, progress=progress,
                                desc=f'{norm:>9} bs {batch_size:>3} epoch {epoch + 1}/{epochs}')
        train_time += stats['seconds']
        seen += stats['images']
        result.train_loss_curve.append(stats['loss_sum'] / stats['steps'])
        result.val_top1_curve.append(evaluate(model, val_loader)['top1'])
    result.final_train_loss = result.train_loss_curve[-1]
    result.val_top1 = result.val_top1_curve[-1]
    result.images_per_s = seen / train_time
    return result


def bn_vs_gn(model_name: str = 'groupnet_small', batch_sizes: Sequence[int] = (2, 4, 16, 32), epochs: int = 3,
             img_size: int = 16, lr: float = 1e-3, seed: int = 0, norms: Sequence[str] = ('batchnorm', 'groupnorm'),
             max_train_samples: int = 0, progress: bool = True) -> List[RunResult]:
    """Every (norm, batch size) pair with the same seed, data order and hyper-parameters."""
    return [train_and_evaluate(model_name, norm, bs, epochs, img_size, lr, seed, max_train_samples, progress)
            for bs in batch_sizes for norm in norms]


def write_results(results: List[RunResult], out_dir: Path, title: str) -> dict:
    """results.csv, results.md (the table) and curves.png in `out_dir`; returns their paths."""
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt

    out_dir.mkdir(parents=True, exist_ok=True)
    paths = dict(csv=out_dir / 'results.csv', table=out_dir / 'results.md', plot=out_dir / 'curves.png')
    with open(paths['csv'], 'w', newline='') as f:
        writer = csv.writer(f)
        writer.writerow(['norm', 'batch_size', 'epoch', 'train_loss', 'val_top1', 'images_per_s'])
        for r in results:
            for epoch, (loss, top1) in enumerate(zip(r.train_loss_curve, r.val_top1_curve), start=1):
                writer.writerow([r.norm, r.batch_size, epoch, f'{loss:.4f}', f'{top1:.2f}', f'{r.images_per_s:.1f}'])
    paths['table'].write_text(format_table(results) + '\n')

    fig, (ax_loss, ax_acc) = plt.subplots(1, 2, figsize=(11, 4))
    colors = plt.rcParams['axes.prop_cycle'].by_key()['color']
    batch_sizes = sorted({r.batch_size for r in results})
    for r in results:
        color = colors[batch_sizes.index(r.batch_size) % len(colors)]
        style = '-' if r.norm == 'groupnorm' else '--'
        epochs = range(1, len(r.train_loss_curve) + 1)
        label = f'{"GN" if r.norm == "groupnorm" else "BN"} bs {r.batch_size}'
        ax_loss.plot(epochs, r.train_loss_curve, style, color=color, marker='o', label=label)
        ax_acc.plot(epochs, r.val_top1_curve, style, color=color, marker='o', label=label)
    for ax in (ax_loss, ax_acc):
        ax.set_xticks(range(1, max(len(r.train_loss_curve) for r in results) + 1))
    ax_loss.set(xlabel='epoch', ylabel='train loss', title='training loss')
    ax_acc.set(xlabel='epoch', ylabel='val top-1 (%)', title='validation accuracy')
    ax_acc.legend(fontsize=8, ncol=2)
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(paths['plot'], dpi=100)
    plt.close(fig)
    return paths


def format_table(results: List[RunResult]) -> str:
    lines = ['| norm | batch size | final train loss | val top-1 (%) | images/s |', '|---|---:|---:|---:|---:|']
    for r in results:
        lines.append(f'| {r.norm} | {r.batch_size} | {r.final_train_loss:.4f} | {r.val_top1:.2f} | '
                     f'{r.images_per_s:.0f} |')
    return '\n'.join(lines)
