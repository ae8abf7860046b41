"""Training and evaluation with timm's machinery: the library behind `timm-groupoct train` and `eval`.

Data comes from `data.load_data` (digits, image folders, torchvision and Hugging Face data sets). timm does the
rest: `create_optimizer_v2` (with layer-wise lr decay from the model's `group_matcher`), `create_scheduler_v2`,
`Mixup` / label-smoothing losses, `ModelEmaV3`, AMP with `NativeScaler`, and `init_distributed_device_so` for
`torchrun` (DistributedDataParallel; gloo on CPU, nccl on GPU; only rank 0 writes).

Each epoch appends a row to `metrics.csv`, redraws `curves.png`, and replaces `last.pth` atomically (`best.pth`
when the val top-1 improves), so an interrupted run keeps its last complete checkpoint and `resume` continues from
it (the checkpoint carries the metrics rows, the optimizer state and the epoch count). Checkpoints hold
`state_dict` (and `state_dict_ema`) with `epoch`, `arch`, `metric`, `optimizer` and `args`, as timm's train.py writes
them, so `timm-groupoct export` takes them as they are.
"""
import csv
import math
import os
import random
import shutil
import time
from contextlib import contextmanager, nullcontext
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Dict, Iterator, List, Optional, Tuple

import numpy as np
import timm
import torch
import torch.distributed as dist
import torch.nn as nn
import torch.nn.functional as F
from timm.data import Mixup, create_transform, resolve_data_config
from timm.loss import LabelSmoothingCrossEntropy, SoftTargetCrossEntropy
from timm.models import group_parameters
from timm.optim import create_optimizer_v2
from timm.scheduler import create_scheduler_v2
from timm.utils import ModelEmaV3, NativeScaler, dispatch_clip_grad, distribute_bn, random_seed
from timm.utils.distributed import init_distributed_device_so
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, DistributedSampler, RandomSampler, Subset

from .data import DataError, load_data
from .models._weights import CheckpointError, load_torch_file, names_weights_location

__all__ = ['TrainConfig', 'TrainError', 'evaluate', 'freeze_backbone', 'train', 'train_one_epoch', 'predict_images']

AMP_DTYPES = {'float16': torch.float16, 'bfloat16': torch.bfloat16}
MIXUP_MODES = ('batch', 'pair', 'elem')  # timm's Mixup


class TrainError(ValueError):
    """A configuration problem found before any training starts."""


@dataclass
class TrainConfig:
    """A training run. Field names are timm train.py's where they overlap, so its YAML recipes carry over."""
    model: str
    # data: `data` is 'digits', an image folder or a timm data set name; timm's `dataset` + `data_dir` also work
    data: Optional[str] = None
    data_dir: Optional[str] = None
    dataset: Optional[str] = None
    train_split: str = 'train'
    val_split: str = 'validation'
    dataset_download: bool = False
    # model
    pretrained: bool = False
    num_classes: Optional[int] = None
    img_size: Optional[int] = None
    drop: float = 0.
    drop_path: Optional[float] = None
    freeze_backbone: bool = False
    # optimisation
    epochs: int = 5
    batch_size: int = 64
    opt: str = 'adamw'
    lr: Optional[float] = 1e-3  # None: timm's rule, lr_base scaled by the global batch size
    lr_base: float = 0.1
    lr_base_size: int = 256
    lr_base_scale: str = ''
    momentum: float = 0.9
    weight_decay: float = 0.05
    clip_grad: Optional[float] = None
    layer_decay: Optional[float] = None
    sched: str = 'cosine'
    min_lr: float = 0.
    warmup_lr: float = 1e-5
    warmup_epochs: int = 0
    decay_epochs: float = 90
    decay_milestones: List[int] = field(default_factory=lambda: [90, 180, 270])
    decay_rate: float = 0.1
    # regularisation and augmentation (scale / aa / reprob / hflip / color_jitter: image data sets only)
    smoothing: float = 0.
    mixup: float = 0.
    cutmix: float = 0.
    mixup_prob: float = 1.
    mixup_switch_prob: float = 0.5
    mixup_mode: str = 'batch'
    scale: Optional[List[float]] = None
    aa: Optional[str] = None
    reprob: Optional[float] = None
    hflip: Optional[float] = None
    color_jitter: Optional[float] = None
    model_ema: bool = False
    model_ema_decay: float = 0.9998
    model_ema_warmup: bool = False
    # execution and output
    amp: bool = False
    amp_dtype: str = 'float16'
    device: Optional[str] = None
    channels_last: bool = False
    workers: int = 0
    seed: int = 0
    output: str = 'output/train'
    resume: Optional[str] = None
    overwrite: bool = False

    def data_source(self) -> Tuple[str, Optional[str]]:
        """(source for `load_data`, root folder of a timm data set)."""
        if self.data and self.dataset and self.data != self.dataset:
            raise TrainError(f'--data {self.data} and --dataset {self.dataset} name two data sources; give one')
        return self.data or self.dataset or self.data_dir or 'digits', self.data_dir

    def resolved_lr(self, world_size: int = 1) -> float:
        """`lr`, or when it is None timm train.py's rule: `lr_base` x (global batch / `lr_base_size`), square-rooted
        for adaptive optimizers unless `lr_base_scale` says 'linear' or 'sqrt'."""
        if self.lr is not None:
            return self.lr
        scale = self.lr_base_scale or ('sqrt' if any(o in self.opt.lower() for o in ('ada', 'lamb')) else 'linear')
        ratio = self.batch_size * world_size / self.lr_base_size
        return self.lr_base * (ratio ** 0.5 if scale == 'sqrt' else ratio)


def evaluate(model: nn.Module, loader: DataLoader, device: Optional[torch.device] = None,
             autocast: Callable = nullcontext, channels_last: bool = False) -> Dict[str, float]:
    """Top-1 / top-5 accuracy (%), mean cross-entropy loss and images per second over `loader`.

    Under torch.distributed each process passes its own share of the data; the sums are reduced over processes.
    """
    model.eval()
    sums: Optional[torch.Tensor] = None  # loss, top-1 hits, top-5 hits: kept on the device, read once at the end
    total = 0
    start = time.perf_counter()
    with torch.no_grad():
        for x, y in loader:
            if device is not None:
                x, y = x.to(device), y.to(device)
            if channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            with autocast():
                logits = model(x)
            top = logits.topk(min(5, logits.shape[1]), dim=1).indices
            batch = torch.stack([F.cross_entropy(logits.float(), y, reduction='sum').double(),
                                 (top[:, 0] == y).sum().double(), (top == y[:, None]).any(dim=1).sum().double()])
            sums = batch if sums is None else sums + batch
            total += len(y)
    local = (sums.tolist() if sums is not None else [0.] * 3) + [total]
    seconds = time.perf_counter() - start
    loss, correct1, correct5, total = _sum_over_processes(local, device)
    return dict(top1=100. * correct1 / total, top5=100. * correct5 / total, loss=loss / total,
                images_per_s=total / seconds)


def _sum_over_processes(values: List[float], device: Optional[torch.device]) -> List[float]:
    """`values` summed over the processes of torch.distributed (unchanged without it); on `device`, which nccl
    needs to be the GPU."""
    if not (dist.is_available() and dist.is_initialized()):
        return values
    summed = torch.tensor(values, dtype=torch.float64, device=device)
    dist.all_reduce(summed)
    return summed.tolist()


def freeze_backbone(model: nn.Module) -> List[nn.Module]:
    """Freeze all parameters but the head, for linear probing; returns the modules to keep in eval mode.

    The head is the last group of the model's `group_matcher` (timm puts the parameters its stem / stage patterns do
    not match there). Norm layers of the frozen part must stay in eval mode so their running statistics stay fixed.
    """
    if not hasattr(model, 'group_matcher'):
        raise TrainError(f'{type(model).__name__} has no group_matcher, so its backbone cannot be told from its head')
    layer_of = group_parameters(model, model.group_matcher(coarse=True), reverse=True)
    head_layer = max(layer_of.values())
    head = {id(p) for p in model.get_classifier().parameters()}
    if not head or any(layer_of[n] == head_layer and id(p) not in head for n, p in model.named_parameters()):
        raise TrainError(f'{type(model).__name__}: the last parameter group of its group_matcher is not just its '
                         f'classifier, so --freeze-backbone cannot tell backbone from head')
    for name, param in model.named_parameters():
        param.requires_grad_(layer_of[name] == head_layer)
    return [m for m in model.modules()
            if any(True for _ in m.parameters(recurse=False)) and
            not any(p.requires_grad for p in m.parameters(recurse=False))]


RUN_FILES = ('metrics.csv', 'curves.png', 'last.pth', 'best.pth')


def _check_output(cfg: TrainConfig, rank: int) -> None:
    """The output folder can be written, and holds no other run: its files are replaced only when the run
    continues there (`--resume` of its last.pth) or with `--overwrite`."""
    out = Path(cfg.output)
    previous = [name for name in RUN_FILES if (out / name).exists()]
    continues_here = cfg.resume is not None and Path(cfg.resume).resolve().parent == out.resolve()
    if previous and not (continues_here or cfg.overwrite):
        raise TrainError(f'--output {out} holds a previous run ({", ".join(previous)}): continue it with --resume '
                         f'{out / "last.pth"}, write to a new --output folder, or pass --overwrite to replace it')
    probe = out / f'.write-test-{rank}'
    try:
        out.mkdir(parents=True, exist_ok=True)
        probe.touch()
        probe.unlink()
    except OSError as e:
        raise TrainError(f'cannot write to the output folder {out}: {e.strerror}') from e


@contextmanager
def _replacing(path: Path) -> Iterator[Path]:
    """A temporary path that replaces `path` when the block ends: an interrupted write never leaves a half-written
    file at `path`, nor the temporary one."""
    tmp = path.with_name(path.name + '.tmp')
    try:
        yield tmp
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def _plot(rows: List[Dict[str, float]], path: Path, title: str) -> None:
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    epochs = [r['epoch'] for r in rows]
    fig, (ax_loss, ax_acc) = plt.subplots(1, 2, figsize=(10, 3.6))
    curves = ((ax_loss, 'train_loss', 'train'), (ax_loss, 'val_loss', 'val'), (ax_acc, 'val_top1', 'val top-1'),
              (ax_acc, 'val_top5', 'val top-5'), (ax_acc, 'ema_val_top1', 'EMA val top-1'))
    for ax, key, label in curves:
        if key in rows[0]:
            ax.plot(epochs, [r[key] for r in rows], marker='o', label=label)
    for ax, ylabel in ((ax_loss, 'loss'), (ax_acc, 'accuracy (%)')):
        ax.set(xlabel='epoch', ylabel=ylabel)
        ax.set_xticks(epochs)
        ax.legend()
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def _write_metrics(rows: List[Dict[str, float]], path: Path) -> None:
    with _replacing(path) as tmp, open(tmp, 'w', newline='') as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)


def _read_resume_checkpoint(cfg: TrainConfig) -> dict:
    """The `--resume` checkpoint, checked against the run it is to continue before anything is trained."""
    path = cfg.resume
    try:
        checkpoint = load_torch_file(path)
    except CheckpointError as e:
        raise TrainError(f'cannot read --resume checkpoint {path}: {e}') from e
    missing = [k for k in ('state_dict', 'optimizer', 'epoch', 'best_metric', 'metrics') if k not in checkpoint]
    if missing:
        raise TrainError(f'--resume {path} is not a last.pth of `timm-groupoct train` (it lacks {", ".join(missing)}); '
                         f'to start from its weights instead, export it and train from local-dir:FOLDER --pretrained')
    if checkpoint.get('arch') != cfg.model:
        raise TrainError(f'--resume {path} is a run of {checkpoint.get("arch")}, not of --model {cfg.model}: resume '
                         f'with --model {checkpoint.get("arch")}')
    has_ema = 'state_dict_ema' in checkpoint
    if has_ema != cfg.model_ema:
        flag = '--model-ema' if has_ema else '--no-model-ema'
        raise TrainError(f'--resume {path} was trained {"with" if has_ema else "without"} --model-ema: resume with '
                         f'{flag} (the EMA weights cannot be {"dropped" if has_ema else "made up"} mid-run)')
    return checkpoint


def _repair_best(resume: dict, cfg: TrainConfig, out: Path, log) -> None:
    """A resumed run whose best.pth is missing (a run interrupted between its two writes, before this package
    wrote best.pth first): the resumed checkpoint is the best one when its metric is the best so far."""
    best = out / 'best.pth'
    if best.exists():
        return
    if resume['metric'] >= resume['best_metric']:
        with _replacing(best) as tmp:
            shutil.copyfile(cfg.resume, tmp)
        log(f'restored the missing {best} from {cfg.resume} (epoch {resume["epoch"]}, the best so far)')
    else:
        log(f'warning: {best} is missing and {cfg.resume} is not the best epoch (val {resume["metric"]:.2f}% < '
            f'{resume["best_metric"]:.2f}%): best.pth is written again at the next epoch that reaches '
            f'{resume["best_metric"]:.2f}%')


def _rng_states() -> Dict[str, object]:
    """The random states a training epoch draws from (dropout, drop-path, mixup, augmentation, the loader's worker
    seeds), in types `torch.load(weights_only=True)` reads back."""
    kind, keys, pos, has_gauss, gauss = np.random.get_state()
    states = dict(torch=torch.get_rng_state(), python=list(random.getstate()[1]),
                  numpy=dict(keys=torch.from_numpy(keys.astype(np.int64)), pos=pos, has_gauss=has_gauss, gauss=gauss))
    if torch.cuda.is_available():
        states['cuda'] = torch.cuda.get_rng_state_all()
    return states


def _set_rng_states(states: Dict[str, object]) -> None:
    torch.set_rng_state(states['torch'])
    random.setstate((3, tuple(states['python']), None))
    numpy = states['numpy']
    np.random.set_state(('MT19937', numpy['keys'].numpy().astype(np.uint32), numpy['pos'], numpy['has_gauss'],
                         numpy['gauss']))
    if 'cuda' in states and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(states['cuda'])


def _mean_lr(optimizer: torch.optim.Optimizer) -> float:
    """The learning rate to report: the mean over parameter groups (they differ under layer decay), as timm does."""
    return sum(g['lr'] for g in optimizer.param_groups) / len(optimizer.param_groups)


def _check_config(cfg: TrainConfig) -> None:
    if not (timm.is_model(cfg.model) or names_weights_location(cfg.model)):
        raise TrainError(f"unknown model '{cfg.model}'")
    if cfg.epochs < 1 or cfg.batch_size < 1:
        raise TrainError(f'--epochs and --batch-size must be positive, got {cfg.epochs} and {cfg.batch_size}')
    if cfg.device and cfg.device.startswith('cuda') and not torch.cuda.is_available():
        raise TrainError(f'--device {cfg.device}, but CUDA is not available on this machine: use --device cpu')
    for flag, value, default in (('--img-size', cfg.img_size, "the model's input size"),
                                 ('--clip-grad', cfg.clip_grad, 'no clipping')):
        if value is not None and value <= 0:
            raise TrainError(f'{flag} must be positive, got {value} (leave it out for the default: {default})')
    if not 0 <= cfg.smoothing < 1:
        raise TrainError(f'--smoothing must be in [0, 1) (the share of the target spread over the other classes), '
                         f'got {cfg.smoothing}')
    for flag, value in (('--drop', cfg.drop), ('--drop-path', cfg.drop_path or 0.), ('--mixup-prob', cfg.mixup_prob),
                        ('--mixup-switch-prob', cfg.mixup_switch_prob)):
        if not 0 <= value <= 1 or (flag.startswith('--drop') and value == 1):
            raise TrainError(f'{flag} must be in [0, {"1)" if flag.startswith("--drop") else "1]"}, got {value}')
    if cfg.mixup < 0 or cfg.cutmix < 0:
        raise TrainError(f'--mixup and --cutmix are Beta-distribution alphas (0: off), got {cfg.mixup} and '
                         f'{cfg.cutmix}')
    if cfg.mixup_mode not in MIXUP_MODES:
        raise TrainError(f'--mixup-mode must be one of {", ".join(MIXUP_MODES)}, got {cfg.mixup_mode!r}')
    if cfg.amp_dtype not in AMP_DTYPES:
        raise TrainError(f'--amp-dtype {cfg.amp_dtype} is not one of {", ".join(AMP_DTYPES)}')
    if (cfg.mixup > 0 or cfg.cutmix > 0) and cfg.batch_size % 2:
        raise TrainError(f'--mixup / --cutmix pair images within a batch: --batch-size must be even, '
                         f'got {cfg.batch_size}')
    if cfg.resume and not Path(cfg.resume).is_file():
        raise TrainError(f'--resume checkpoint {cfg.resume} does not exist')


def _losses(cfg: TrainConfig, num_classes: int) -> Tuple[Optional[Mixup], nn.Module]:
    """(mixup / cutmix, training loss) as timm's train.py pairs them."""
    if cfg.mixup > 0 or cfg.cutmix > 0:
        mixup = Mixup(mixup_alpha=cfg.mixup, cutmix_alpha=cfg.cutmix, prob=cfg.mixup_prob,
                      switch_prob=cfg.mixup_switch_prob, mode=cfg.mixup_mode, label_smoothing=cfg.smoothing,
                      num_classes=num_classes)
        return mixup, SoftTargetCrossEntropy()
    if cfg.smoothing > 0:
        return None, LabelSmoothingCrossEntropy(smoothing=cfg.smoothing)
    return None, nn.CrossEntropyLoss()


def train_one_epoch(
        model: nn.Module,
        loader: DataLoader,
        optimizer: torch.optim.Optimizer,
        loss_fn: Callable,
        module: Optional[nn.Module] = None,
        device: Optional[torch.device] = None,
        autocast: Callable = nullcontext,
        scaler: Optional[NativeScaler] = None,
        clip_grad: Optional[float] = None,
        mixup: Optional[Mixup] = None,
        ema: Optional[ModelEmaV3] = None,
        ema_step: int = 0,
        channels_last: bool = False,
        world_size: int = 1,
        desc: str = '',
        progress: bool = False,
) -> Dict[str, float]:
    """One pass over `loader` (the model in the train mode its caller set): forward under `autocast`, the loss,
    backward (through `scaler` for float16 AMP), gradient clipping, the optimizer step and the EMA update.

    Args:
        model: what runs the forward pass (a DistributedDataParallel wrapper, say).
        module: the model itself, whose parameters are clipped and which the EMA follows (default `model`).
        ema_step: the EMA's step count at the start of the epoch.

    Returns: loss_sum (of the per-batch mean losses), steps, images (over all processes) and seconds.
    """
    from tqdm import tqdm
    module = module if module is not None else model
    loss_sum, steps, seen, start = 0., 0, 0, time.perf_counter()
    bar = tqdm(loader, desc=desc, leave=False, disable=not progress)
    for x, y in bar:
        if device is not None:
            x, y = x.to(device), y.to(device)
        if channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        if mixup is not None:
            x, y = mixup(x, y)
        with autocast():
            loss = loss_fn(model(x), y)
        optimizer.zero_grad()
        if scaler is not None:
            scaler(loss, optimizer, clip_grad=clip_grad, parameters=module.parameters())
        else:
            loss.backward()
            if clip_grad is not None:
                dispatch_clip_grad(module.parameters(), clip_grad)
            optimizer.step()
        if ema is not None:
            ema.update(module, step=ema_step + steps)
        loss_sum, steps, seen = loss_sum + loss.item(), steps + 1, seen + len(y) * world_size
        bar.set_postfix(loss=f'{loss.item():.3f}', img_s=f'{seen / (time.perf_counter() - start):.0f}',
                        lr=f'{_mean_lr(optimizer):.2e}')
    return dict(loss_sum=loss_sum, steps=steps, images=seen, seconds=time.perf_counter() - start)


def train(cfg: TrainConfig, progress: bool = True, log=print) -> Dict[str, object]:
    """Run `cfg`; returns the final metrics, the best val top-1 and the output paths.

    Under `torchrun` every process runs this; `batch_size` is per process, as in timm, and only rank 0 logs and
    writes.
    """
    _check_config(cfg)
    try:
        import matplotlib  # noqa: F401 (curves.png; checked now rather than after the first epoch)
    except ImportError as e:
        raise TrainError("train draws curves.png with matplotlib: pip install 'timm-groupoct[experiments]'") from e
    env = init_distributed_device_so(cfg.device or ('cuda' if torch.cuda.is_available() else 'cpu'))
    try:
        return _train(cfg, env, progress, log)
    finally:
        if env['distributed']:
            dist.destroy_process_group()


def _train(cfg: TrainConfig, env: dict, progress: bool, log) -> Dict[str, object]:
    device, rank, world = torch.device(env['device']), env['global_rank'], env['world_size']
    primary = rank == 0
    if not primary:
        progress, log = False, (lambda *args: None)
    out = Path(cfg.output)
    _check_output(cfg, rank)
    random_seed(cfg.seed, rank)
    source, root = cfg.data_source()
    augment = dict(scale=cfg.scale, auto_augment=cfg.aa, re_prob=cfg.reprob, hflip=cfg.hflip,
                   color_jitter=cfg.color_jitter)
    try:
        data = load_data(source, cfg.model, cfg.img_size, cfg.seed, root=root, train_split=cfg.train_split,
                         val_split=cfg.val_split, download=cfg.dataset_download, augment=augment)
    except DataError as e:
        raise TrainError(str(e)) from e
    num_classes = len(data.class_names)
    if cfg.num_classes is not None and cfg.num_classes != num_classes:
        raise TrainError(f'--num-classes {cfg.num_classes} does not match the {num_classes} classes of {source}')
    if len(data.train) < cfg.batch_size * world:
        raise TrainError(f'--batch-size {cfg.batch_size} x {world} processes is larger than the {len(data.train)} '
                         f'training images')
    resume = _read_resume_checkpoint(cfg) if cfg.resume else None

    model_kwargs = {'drop_rate': cfg.drop}
    if cfg.drop_path is not None:
        model_kwargs['drop_path_rate'] = cfg.drop_path
    try:
        model = timm.create_model(cfg.model, pretrained=cfg.pretrained, num_classes=num_classes,
                                  in_chans=data.in_chans, **model_kwargs)
    except (RuntimeError, ValueError, OSError) as e:  # no or unloadable weights (or Hub files), bad arguments
        raise TrainError(f'cannot build {cfg.model}: {e}') from e
    frozen = freeze_backbone(model) if cfg.freeze_backbone else []
    model.to(device)
    if cfg.channels_last:
        model.to(memory_format=torch.channels_last)
    optimizer = create_optimizer_v2(model, opt=cfg.opt, lr=cfg.resolved_lr(world), weight_decay=cfg.weight_decay,
                                    momentum=cfg.momentum, layer_decay=cfg.layer_decay)
    scheduler, num_epochs = create_scheduler_v2(
        optimizer, sched=cfg.sched, num_epochs=cfg.epochs, decay_epochs=cfg.decay_epochs,
        decay_milestones=cfg.decay_milestones, decay_rate=cfg.decay_rate, min_lr=cfg.min_lr, warmup_lr=cfg.warmup_lr,
        warmup_epochs=cfg.warmup_epochs)
    amp_dtype = AMP_DTYPES[cfg.amp_dtype]
    autocast = (lambda: torch.autocast(device.type, dtype=amp_dtype)) if cfg.amp else nullcontext
    scaler = NativeScaler(device=device.type) if cfg.amp and amp_dtype == torch.float16 else None
    ema = ModelEmaV3(model, decay=cfg.model_ema_decay, use_warmup=cfg.model_ema_warmup) if cfg.model_ema else None
    mixup, train_loss_fn = _losses(cfg, num_classes)

    start_epoch, best_metric, rows = 0, -math.inf, []
    if resume is not None:
        model.load_state_dict(resume['state_dict'])
        optimizer.load_state_dict(resume['optimizer'])
        if ema is not None and 'state_dict_ema' in resume:
            ema.module.load_state_dict(resume['state_dict_ema'])
        if scaler is not None and 'amp_scaler' in resume:
            scaler.load_state_dict(resume['amp_scaler'])
        start_epoch, best_metric, rows = resume['epoch'], resume['best_metric'], resume['metrics']
        if primary:
            _repair_best(resume, cfg, out, log)
        log(f'resumed from {cfg.resume} at epoch {start_epoch}')
    train_model = DistributedDataParallel(model) if env['distributed'] else model

    # per-epoch seeded sampling: a resumed run sees the same batches as an uninterrupted one
    if env['distributed']:
        sampler = DistributedSampler(data.train, world, rank, shuffle=True, seed=cfg.seed, drop_last=True)
    else:
        sampler = RandomSampler(data.train, generator=torch.Generator())
    train_loader = DataLoader(data.train, batch_size=cfg.batch_size, sampler=sampler, drop_last=True,
                              num_workers=cfg.workers)
    val_loader = DataLoader(Subset(data.val, range(rank, len(data.val), world)),
                            batch_size=max(cfg.batch_size, 64), num_workers=cfg.workers)
    args = dict(asdict(cfg), world_size=world)
    eval_args = dict(device=device, autocast=autocast, channels_last=cfg.channels_last)
    val: Dict[str, float] = {}
    if resume is not None and 'rng_states' in resume:  # where the uninterrupted run's next epoch starts
        _set_rng_states(resume['rng_states'])
    for epoch in range(start_epoch, num_epochs):
        # the scheduler is stepped per epoch; replaying the finished epochs keeps a resumed schedule on track
        scheduler.step(epoch)
        if env['distributed']:
            sampler.set_epoch(epoch)
        else:
            sampler.generator.manual_seed(cfg.seed + epoch)
        train_model.train()
        for module in frozen:
            module.eval()
        epoch_stats = train_one_epoch(
            train_model, train_loader, optimizer, train_loss_fn, module=model, device=device, autocast=autocast,
            scaler=scaler, clip_grad=cfg.clip_grad, mixup=mixup, ema=ema, ema_step=epoch * len(train_loader),
            channels_last=cfg.channels_last, world_size=world, desc=f'epoch {epoch + 1}/{num_epochs}',
            progress=progress)
        loss_sum, steps, seen, train_seconds = (epoch_stats[k] for k in ('loss_sum', 'steps', 'images', 'seconds'))
        train_loss = _sum_over_processes([loss_sum / steps], device)[0] / world
        if env['distributed']:  # each process has its own norm statistics: average them, as timm's --dist-bn reduce
            for module in (model, ema.module) if ema is not None else (model,):
                distribute_bn(module, world, reduce=True)
        val = evaluate(model, val_loader, **eval_args)
        row = dict(epoch=epoch + 1, train_loss=train_loss, val_loss=val['loss'], val_top1=val['top1'],
                   val_top5=val['top5'], lr=_mean_lr(optimizer), train_images_per_s=seen / train_seconds)
        summary = (f"epoch {epoch + 1}/{num_epochs}: train loss {train_loss:.4f}, val loss {val['loss']:.4f}, "
                   f"val top-1 {val['top1']:.2f}%, top-5 {val['top5']:.2f}%")
        metric = val['top1']
        if ema is not None:
            ema_val = evaluate(ema.module, val_loader, **eval_args)
            row.update(ema_val_loss=ema_val['loss'], ema_val_top1=ema_val['top1'], ema_val_top5=ema_val['top5'])
            summary += f", EMA val top-1 {ema_val['top1']:.2f}%"
            metric = ema_val['top1']  # as timm's train.py: the EMA weights are the ones to keep
        rows.append(row)
        log(summary)
        best_metric = max(best_metric, metric)
        if primary:
            _write_metrics(rows, out / 'metrics.csv')
            _plot(rows, out / 'curves.png', f'{cfg.model} on {source}')
            checkpoint = dict(epoch=epoch + 1, arch=cfg.model, state_dict=model.state_dict(),
                              optimizer=optimizer.state_dict(), metric=metric, best_metric=best_metric, args=args,
                              label_names=data.class_names, data_config=data.data_config(), metrics=rows,
                              rng_states=_rng_states())
            if ema is not None:
                checkpoint['state_dict_ema'] = ema.module.state_dict()
            if scaler is not None:
                checkpoint['amp_scaler'] = scaler.state_dict()
            # best.pth is in place before last.pth moves on: an interruption between the two leaves a last.pth
            # whose best epoch is saved, and resuming it only repeats this epoch
            with _replacing(out / 'last.pth') as last:
                torch.save(checkpoint, last)
                if metric >= best_metric:  # the same checkpoint: copy the file rather than serialise it again
                    with _replacing(out / 'best.pth') as best:
                        shutil.copyfile(last, best)
    return dict(final=val, best_top1=best_metric, metric_name='EMA val top-1' if ema else 'val top-1', output=out,
                epochs=num_epochs, world_size=world, rank=rank)


def predict_images(model: nn.Module, paths: List[str], top_k: int = 5,
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
    if names and len(names) != model.num_classes:
        raise TrainError(f'the model has {model.num_classes} classes but {len(names)} label names '
                         f'(config.json\'s label_names): give one name per class')
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
