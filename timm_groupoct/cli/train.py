"""`timm-groupoct train --model NAME [--config RECIPE.yaml] ...`: train or fine-tune with timm's machinery.

Flags are timm train.py's where they overlap. Values come from, in rising priority: `TrainConfig`'s defaults, the
`--config` recipe, the command line. A recipe may hold any key of timm's train.py (an args.yaml it wrote carries over):
keys this command does not implement are accepted only at timm's default value (they change nothing) or when they
only affect logging; anything else is an error naming the keys.
"""
import argparse
import dataclasses
import json
import typing
from pathlib import Path
from typing import Any, Dict, Tuple

import yaml

from ..train import TrainConfig, TrainError, train
from ._common import CLIError, check_model_name

# timm train.py options that change how a run is logged or fed, never its result
NO_EFFECT_TIMM_KEYS = frozenset({
    'log_interval', 'recovery_interval', 'checkpoint_hist', 'pin_mem', 'no_prefetcher', 'log_wandb',
    'wandb_project', 'wandb_tags', 'wandb_resume_id', 'experiment', 'save_images', 'use_multi_epochs_loader',
    'synchronize_step', 'no_ddp_bb', 'worker_seeding', 'local_rank', 'config'})

_SWITCH = dict(action=argparse.BooleanOptionalAction)  # --flag / --no-flag, so a flag can undo a recipe's value

# (flags, argparse options, help) per group; argparse's dest (the first long flag) is a TrainConfig field
_OPTIONS = (
    ('Data', (
        (('--data',), dict(), "'digits' (built in, no download), an image folder DIR (DIR/train/<class>/*, "
                              "DIR/val/<class>/*), or a timm data set name: torch/cifar10, hfds/ORG/NAME, ..."),
        (('--data-dir',), dict(), "root folder of a torch/ or hfds/ data set (timm's name; an image folder also)"),
        (('--dataset',), dict(), "timm's name for --data's data set names"),
        (('--train-split',), dict(), 'training split name'),
        (('--val-split',), dict(), "validation split name (folders: also val/, valid/, ...)"),
        (('--dataset-download',), _SWITCH, 'download a torch/ or hfds/ data set if missing'),
    )),
    ('Model', (
        (('--model',), dict(), 'model name, e.g. octnet_mini'),
        (('--pretrained',), _SWITCH, 'start from published weights (fine-tuning)'),
        (('--num-classes',), dict(type=int), 'checked against the classes the data has'),
        (('--img-size',), dict(type=int), 'input size (digits: default 32; else the model cfg\'s)'),
        (('--drop',), dict(type=float), 'dropout before the classifier'),
        (('--drop-path',), dict(type=float), 'stochastic depth rate'),
        (('--freeze-backbone',), _SWITCH,
         'train only the classifier (linear probing); the backbone is what the model\'s group_matcher groups'),
    )),
    ('Optimization', (
        (('--epochs',), dict(type=int), 'epochs to train (the total, also with --resume)'),
        (('-b', '--batch-size'), dict(type=int), 'batch size per process'),
        (('--opt',), dict(), 'timm optimizer name (create_optimizer_v2): sgd, adamw, lamb, ...'),
        (('--lr',), dict(type=float), 'learning rate'),
        (('--momentum',), dict(type=float), 'SGD momentum'),
        (('--weight-decay',), dict(type=float), 'weight decay'),
        (('--clip-grad',), dict(type=float), 'clip the gradient norm to this'),
        (('--layer-decay',), dict(type=float), 'layer-wise lr decay, layers from the model\'s group_matcher'),
        (('--sched',), dict(), 'timm scheduler name (create_scheduler_v2): cosine, step, multistep, ...'),
        (('--min-lr',), dict(type=float), 'lowest learning rate of the schedule'),
        (('--warmup-lr',), dict(type=float), 'learning rate at the start of the warmup'),
        (('--warmup-epochs',), dict(type=int), 'linear warmup epochs'),
        (('--decay-epochs',), dict(type=float), "epochs between decays ('step')"),
        (('--decay-milestones',), dict(type=int, nargs='+'), "epochs at which to decay ('multistep')"),
        (('--decay-rate', '--dr'), dict(type=float), 'learning rate decay factor'),
    )),
    ('Regularization and augmentation', (
        (('--smoothing',), dict(type=float), 'label smoothing'),
        (('--mixup',), dict(type=float), 'mixup alpha (0: off)'),
        (('--cutmix',), dict(type=float), 'cutmix alpha (0: off)'),
        (('--mixup-prob',), dict(type=float), 'probability of mixing a batch'),
        (('--mixup-switch-prob',), dict(type=float), 'probability of cutmix instead of mixup when both are on'),
        (('--mixup-mode',), dict(), "'batch', 'pair' or 'elem'"),
        (('--scale',), dict(type=float, nargs=2, metavar=('MIN', 'MAX')),
         'random-resized-crop area range (image data sets; timm default 0.08 1.0)'),
        (('--aa',), dict(), "AutoAugment policy, e.g. rand-m9-mstd0.5 (image data sets)"),
        (('--reprob',), dict(type=float), 'random erase probability (image data sets)'),
        (('--hflip',), dict(type=float), 'horizontal flip probability (image data sets; timm default 0.5)'),
        (('--color-jitter',), dict(type=float), 'color jitter factor (image data sets; timm default 0.4)'),
        (('--model-ema',), _SWITCH, 'keep an EMA of the weights (evaluated and checkpointed)'),
        (('--model-ema-decay',), dict(type=float), 'EMA decay'),
        (('--model-ema-warmup',), _SWITCH, 'warm the EMA decay up'),
    )),
    ('Execution and output', (
        (('--amp',), _SWITCH, 'mixed precision (torch.autocast)'),
        (('--amp-dtype',), dict(), 'float16 or bfloat16'),
        (('--device',), dict(), 'cpu, cuda, ... (default: cuda when available); torchrun sets the index'),
        (('--channels-last',), _SWITCH, 'train in channels_last memory format'),
        (('-j', '--workers'), dict(type=int), 'data loader processes'),
        (('--seed',), dict(type=int), 'random seed'),
        (('--output',), dict(), 'output folder'),
        (('--resume',), dict(), 'continue from a last.pth written by this command'),
        (('--overwrite',), _SWITCH, 'replace the run already in --output (default: refuse, nothing is replaced)'),
        (('--lr-base',), dict(type=float), 'with no --lr: lr = lr-base x global batch / lr-base-size'),
        (('--lr-base-size',), dict(type=int), 'see --lr-base'),
        (('--lr-base-scale',), dict(), "'linear' or 'sqrt' (default: sqrt for adaptive optimizers)"),
    )),
)
_DEFAULTS = {f.name: (f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default)
             for f in dataclasses.fields(TrainConfig) if f.name != 'model'}


def add_parser(sub):
    # no argparse defaults: a flag is in the namespace only when given, so it can override the recipe
    p = sub.add_parser(
        'train', help='train or fine-tune a model (flags and recipes as timm train.py)',
        argument_default=argparse.SUPPRESS, formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Trains MODEL on digits, an image folder or a timm data set, with timm's optimizers, schedulers, "
                    "mixup/cutmix, EMA and AMP. Writes metrics.csv, curves.png, last.pth and best.pth to --output "
                    "(timm train.py's checkpoint format, ready for `timm-groupoct export`).\n"
                    'Several processes: torchrun --nproc_per_node=N -m timm_groupoct.cli train ... '
                    '(gloo on CPU, nccl on GPU; only rank 0 writes).')
    p.add_argument('-c', '--config', help="YAML recipe (keys as timm train.py's); flags override it")
    for title, options in _OPTIONS:
        group = p.add_argument_group(title)
        for flags, kwargs, help_text in options:
            dest = next(f for f in flags if f.startswith('--')).lstrip('-').replace('-', '_')
            if dest in _DEFAULTS:
                help_text += f' (default: {_DEFAULTS[dest]})'
            group.add_argument(*flags, help=help_text, **kwargs)
    p.add_argument('--no-progress', action='store_true', help='no progress bars (one line per epoch only)')
    p.set_defaults(run=run, no_progress=False)


def _timm_defaults() -> Dict[str, Any]:
    return json.loads((Path(__file__).with_name('timm_train_defaults.json')).read_text())['defaults']


def load_recipe(path: str) -> Dict[str, Any]:
    """The TrainConfig fields a YAML recipe sets. Keys of timm's train.py that this command does not implement are
    dropped when they are at timm's default or only affect logging; any other key is an error."""
    try:
        recipe = yaml.safe_load(Path(path).read_text())
    except OSError as e:
        raise CLIError(f'cannot read --config {path}: {e.strerror}') from e
    except yaml.YAMLError as e:
        raise CLIError(f'--config {path} is not valid YAML: {e}') from e
    if recipe is None:
        return {}
    if not isinstance(recipe, dict):
        raise CLIError(f'--config {path} must be a mapping of option names to values, got {type(recipe).__name__}')
    timm_defaults = _timm_defaults()
    settings, unsupported, unknown = {}, [], []
    for key, value in recipe.items():
        key = str(key).replace('-', '_')
        if key in _FIELD_TYPES:
            if value != '':  # timm writes '' for an unset text option (output, resume, dataset): ours stays
                settings[key] = _typed(key, value, path)
        elif key in timm_defaults:
            if key not in NO_EFFECT_TIMM_KEYS and value != timm_defaults[key] and value not in (None, '', [], {}):
                unsupported.append(f'{key}={value!r}')
        else:
            unknown.append(key)
    if unknown:
        raise CLIError(f'--config {path}: unknown key(s) {", ".join(unknown)} (neither a `timm-groupoct train` '
                       f'option nor one of timm train.py\'s); see `timm-groupoct train --help`')
    if unsupported:
        raise CLIError(f'--config {path}: timm train.py option(s) this command does not implement, set away from '
                       f'their defaults: {", ".join(unsupported)}. Remove them, or set them to timm\'s defaults.')
    return settings


def _field_type(hint) -> Tuple[type, bool, bool]:
    """(scalar type, is a list, may be None) of a TrainConfig annotation: Optional[float] -> (float, False, True)."""
    optional = typing.get_origin(hint) is typing.Union
    if optional:
        hint = next(a for a in typing.get_args(hint) if a is not type(None))
    if typing.get_origin(hint) is list:
        return typing.get_args(hint)[0], True, optional
    return hint, False, optional


_FIELD_TYPES = {name: _field_type(hint) for name, hint in typing.get_type_hints(TrainConfig).items()}


def _typed(key: str, value: Any, path: str) -> Any:
    """`value` as the field's type. YAML reads `1e-3` as a string (YAML 1.1 floats need a dot), so numbers are
    converted; booleans must be YAML booleans; null only where the option may be unset."""
    kind, is_list, optional = _FIELD_TYPES[key]
    if value is None and optional:
        return value
    values = value if is_list and isinstance(value, list) else [value]
    try:
        # no silent truncation (epochs: 1.5 -> 1) and no booleans as numbers (epochs: true -> 1)
        if kind is bool and not all(isinstance(v, bool) for v in values) or \
                kind in (int, float) and any(isinstance(v, bool) for v in values) or \
                kind is int and any(isinstance(v, float) and not v.is_integer() for v in values):
            raise TypeError
        converted = [kind(v) for v in values]
    except (TypeError, ValueError) as e:
        article = 'a list of' if is_list else 'an' if kind.__name__[0] in 'aeiou' else 'a'
        raise CLIError(f'--config {path}: {key}: {value!r} is not {article} {kind.__name__}') from e
    return converted if is_list else converted[0]


def config_from_args(args) -> TrainConfig:
    """TrainConfig from the defaults, then the recipe of `--config`, then the flags given."""
    settings = load_recipe(args.config) if getattr(args, 'config', None) else {}
    settings.update({k: v for k, v in vars(args).items() if k in _FIELD_TYPES})
    if not settings.get('model'):
        raise CLIError('no model: give --model NAME or a recipe with `model: NAME`')
    check_model_name(settings['model'])
    return TrainConfig(**settings)


def run(args) -> int:
    cfg = config_from_args(args)
    try:
        result = train(cfg, progress=not args.no_progress)
    except (TrainError, ImportError) as e:
        raise CLIError(str(e)) from e
    except KeyboardInterrupt:
        last = Path(cfg.output) / 'last.pth'
        kept = f'the last complete checkpoint is {last}; continue with --resume {last}' if last.is_file() else \
            'no epoch had finished, so there is no checkpoint'
        raise CLIError(f'interrupted: {kept}', exit_status=130) from None
    if result['rank'] == 0:
        print(f"done: {result['epochs']} epochs, best {result['metric_name']} {result['best_top1']:.2f}%, "
              f"outputs in {result['output']}/ (metrics.csv, curves.png, last.pth, best.pth)")
    return 0
