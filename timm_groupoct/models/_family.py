"""What the families share: the timm model API of a staged classifier, and a builder that refuses to return a
randomly initialised model for `pretrained=True`."""
import math
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple, Union

import torch
import torch.nn as nn
import torch.nn.functional as F
from timm.data import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD
from timm.layers import LayerType, create_classifier
from timm.models import build_model_with_cfg, checkpoint_seq
from timm.models._builder import resolve_pretrained_cfg
from timm.models._features import FeatureGetterNet, feature_take_indices

from ..layers import conv_norm_act, get_conv_norm_layers
from ._weights import CheckpointError, check_state_dict_fits, fetch_hub_weights, load_checkpoint, weights_file_in

__all__ = ['default_cfg', 'build_model', 'check_int', 'check_rate', 'check_num_classes', 'make_stem',
           'resolve_stem_stride', 'stage_strides', 'StagePlan', 'plan_stages', 'StagedClassifier',
           'StagedFeatureGetterNet']

# in the order timm's loader prefers them
_WEIGHT_SOURCES = ('state_dict', 'file', 'hf_hub_id', 'url')


def _checked_filter(filter_fn: Optional[Callable], source: str, cfg: Dict[str, Any]) -> Callable:
    """The family's key filter followed by a fit check that names `source` and the first mismatching keys, so a
    wrong checkpoint fails before any weight is copied."""
    classifiers = cfg.get('classifier') or ()
    classifiers = (classifiers,) if isinstance(classifiers, str) else tuple(classifiers)
    adaptable = [f'{c}.{p}' for c in classifiers for p in ('weight', 'bias')] + [f'{cfg.get("first_conv")}.weight']

    def filter_and_check(state_dict: Dict[str, torch.Tensor], model: nn.Module) -> Dict[str, torch.Tensor]:
        if filter_fn is not None:
            state_dict = filter_fn(state_dict, model)
        check_state_dict_fits(model, state_dict, source, adaptable=adaptable)
        return state_dict
    return filter_and_check


def _weights_source(variant: str, kwargs: Dict[str, Any]) -> Tuple[str, Dict[str, Any]]:
    """Where `pretrained=True` would load from, and the resolved cfg; an error if nowhere."""
    cfg = resolve_pretrained_cfg(
        variant, pretrained_cfg=kwargs.get('pretrained_cfg'),
        pretrained_cfg_overlay=kwargs.get('pretrained_cfg_overlay'))
    for k in _WEIGHT_SOURCES:
        value = getattr(cfg, k, None)
        if value is not None and (not isinstance(value, str) or value):
            return (value if isinstance(value, str) else f'the given {k}'), cfg.to_dict()
    tag = f'.{cfg.tag}' if cfg.tag else ''
    raise RuntimeError(
        f"No pretrained weights are published for '{variant}{tag}', so pretrained=True would leave it randomly "
        f"initialised. Load weights you have with pretrained_cfg_overlay=dict(hf_hub_id='ORG/REPO') or "
        f"dict(file='PATH.safetensors'), or a model name 'hf-hub:ORG/REPO' / 'local-dir:PATH' (folders that "
        f"`timm-groupoct export` and `timm-groupoct convert` write); or use pretrained=False to train from scratch.")


def _read_weights(cfg: Dict[str, Any]) -> Optional[Dict[str, torch.Tensor]]:
    """The weights a file or Hub source names, read by this package; None where timm reads them (a given
    state dict, a URL)."""
    if cfg.get('state_dict') is not None:
        return None
    if cfg.get('source') == 'local-dir' or (cfg.get('file') and Path(cfg['file']).is_dir()):
        return load_checkpoint(weights_file_in(cfg['file']))
    if cfg.get('source') == 'hf-hub' or (cfg.get('hf_hub_id') and not cfg.get('file')):
        return fetch_hub_weights(cfg['hf_hub_id'])
    if cfg.get('file'):
        return load_checkpoint(cfg['file'])
    return None


def default_cfg(**kwargs) -> Dict[str, Any]:
    """A pretrained cfg for this package's models: ImageNet defaults, stem conv `stem.0.conv`, classifier `fc`."""
    return {
        'num_classes': 1000, 'input_size': (3, 224, 224), 'pool_size': (7, 7),
        'crop_pct': 0.875, 'interpolation': 'bilinear',
        'mean': IMAGENET_DEFAULT_MEAN, 'std': IMAGENET_DEFAULT_STD,
        'first_conv': 'stem.0.conv', 'classifier': 'fc', 'license': 'apache-2.0',
        **kwargs,
    }


def build_model(
        model_cls: type,
        variant: str,
        pretrained: bool,
        pretrained_filter_fn: Optional[Callable] = None,
        **kwargs,
) -> nn.Module:
    """`build_model_with_cfg` for a `StagedClassifier` configured with `depths`: `features_only` goes through
    `forward_intermediates` (levels: the stem, then each stage), `pretrained=True` where the resolved cfg names no
    weights is an error, and `device` / `dtype` (timm's `create_model` arguments) place the model: it is built
    on `device` (the meta device included), then cast to `dtype`."""
    if pretrained:
        source, cfg = _weights_source(variant, kwargs)
        pretrained_filter_fn = _checked_filter(pretrained_filter_fn, source, cfg)
        state_dict = _read_weights(cfg)
        overlay = dict(kwargs.get('pretrained_cfg_overlay') or {})
        if state_dict is not None:  # read here, safely and with errors that name the file; timm takes it as is
            overlay.update(state_dict=state_dict, source='')
        # timm keeps the file's classifier only where the cfg's class count equals the model's: give it the
        # file's own count, so that a head that fits is loaded, not replaced by a random one
        weights = state_dict if state_dict is not None else cfg.get('state_dict')
        head = f'{cfg.get("classifier")}.weight'
        if isinstance(weights, dict) and isinstance(weights.get(head), torch.Tensor):
            file_classes = weights[head].shape[0]
            if cfg.get('source') in ('local-dir', 'hf-hub') and cfg.get('num_classes') != file_classes:
                raise CheckpointError(
                    f'{source}: its config.json says num_classes={cfg.get("num_classes")}, but its weights have a '
                    f'{file_classes}-class classifier ({head}): correct config.json, or export the folder again')
            overlay['num_classes'] = file_classes
        kwargs['pretrained_cfg_overlay'] = overlay
    levels = len(kwargs['depths']) + 1
    if kwargs.get('features_only'):
        _check_out_indices(kwargs.get('out_indices'), levels)
    feature_cfg = dict(feature_cls=StagedFeatureGetterNet, out_indices=tuple(range(levels)))
    device, dtype = kwargs.pop('device', None), kwargs.pop('dtype', None)
    with torch.device(device) if device is not None else nullcontext():
        model = build_model_with_cfg(
            model_cls, variant, pretrained, feature_cfg=feature_cfg, pretrained_filter_fn=pretrained_filter_fn,
            **kwargs)
    if dtype is not None:
        model.to(dtype=dtype)
    if pretrained:
        for m in (model, getattr(model, 'model', None)):  # loaded: keep no second reference, restore the source
            if isinstance(getattr(m, 'pretrained_cfg', None), dict):
                m.pretrained_cfg.pop('state_dict', None)
                m.pretrained_cfg['source'] = cfg.get('source', '')
    return model


def check_int(name: str, value: Any, minimum: int = 1, note: str = '') -> int:
    """`value` if it is an integer >= `minimum` (not a bool), else a ValueError naming `name`."""
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f'{name} must be an integer >= {minimum}{note}, got {value!r}')
    return value


def check_rate(name: str, value: Any, high: float = 1., high_included: bool = False) -> float:
    """`value` if it is a number in [0, high) (or [0, high] with `high_included`), else a ValueError naming `name`."""
    is_number = isinstance(value, (int, float)) and not isinstance(value, bool)
    if not is_number or not (0. <= value < high or (high_included and value == high)):
        interval = f'[0, {high:g}{"]" if high_included else ")"}'
        raise ValueError(f'{name} must be a number in {interval}, got {value!r}')
    return float(value)


def _check_out_indices(out_indices: Any, levels: int) -> None:
    """features_only's `out_indices`: None (all levels), n (the last n) or level indices (negative from the end)."""
    if out_indices is None:
        return
    if isinstance(out_indices, int) and not isinstance(out_indices, bool):
        if not 0 < out_indices <= levels:
            raise ValueError(f'out_indices={out_indices} asks for the last {out_indices} feature levels; this model '
                             f'has {levels} (the stem, then each stage): give 1 to {levels}')
        return
    indices = out_indices if isinstance(out_indices, (list, tuple)) else [out_indices]
    bad = [i for i in indices if isinstance(i, bool) or not isinstance(i, int) or not -levels <= i < levels]
    if bad or not indices:
        raise ValueError(f'out_indices must be level indices from 0 to {levels - 1} (or -{levels} to -1; this model '
                         f'has {levels} feature levels: the stem, then each stage), got {out_indices!r}')
    absolute = [i % levels for i in indices]
    if absolute != sorted(set(absolute)):  # features come out in level order, once each
        raise ValueError(f'out_indices must name each level once, in increasing order (levels {absolute} for '
                         f'{out_indices!r}): use {tuple(sorted(set(absolute)))}')


def check_num_classes(num_classes: int) -> None:
    check_int('num_classes', num_classes, minimum=0, note=' (0 removes the classifier)')


def _classifier(num_features: int, num_classes: int, global_pool: str) -> Tuple[nn.Module, nn.Module]:
    """timm's `create_classifier` (global pool, fc), with a ValueError for a pool it cannot build."""
    if not global_pool and num_classes:
        raise ValueError(f"global_pool='' (no pooling) leaves feature maps the fc cannot take: use it with "
                         f"num_classes=0, or pool ('avg', 'max', 'avgmax', 'catavgmax'), got num_classes={num_classes}")
    try:
        return create_classifier(num_features, num_classes, pool_type=global_pool)
    except AssertionError as e:  # timm asserts on an unknown pool type
        raise ValueError(f"global_pool must be a pool type timm knows ('avg', 'max', 'avgmax', 'catavgmax', "
                         f"'fast', ...) or '' with num_classes=0, got {global_pool!r}") from e


# stem type -> (allowed stem strides, default)
STEM_STRIDES = {'double': ((1, 2, 4), 1), 'single': ((1, 2), 1), 'resnet': ((4,), 4)}


def resolve_stem_stride(stem_type: str, stem_stride: Optional[int]) -> int:
    """`stem_stride`, or the stem type's default; a ValueError for an unknown type or a stride it cannot do."""
    if stem_type not in STEM_STRIDES:
        raise ValueError(f"stem_type must be one of {', '.join(STEM_STRIDES)}, got {stem_type!r}")
    allowed, default = STEM_STRIDES[stem_type]
    stem_stride = default if stem_stride is None else stem_stride
    if stem_stride not in allowed:
        raise ValueError(
            f"stem_stride for stem_type={stem_type!r} must be {' or '.join(map(str, allowed))}, got {stem_stride}")
    return stem_stride


def make_stem(stem_type: str, in_chans: int, out_chs: int, stride: int, norm_layer: LayerType,
              act_layer: LayerType) -> nn.Sequential:
    """(N, in_chans, H, W) -> (N, out_chs, H / stride, W / stride).

    'double': two 3x3 conv-norm-act, the first strided for stride >= 2, both for 4;
    'single': one 3x3 conv-norm-act (CIFAR ResNeXt); 'resnet': 7x7 stride-2 conv-norm-act + 3x3 stride-2 max pool.
    """
    layers = get_conv_norm_layers(norm_layer, act_layer)
    if stem_type == 'double':
        return nn.Sequential(
            conv_norm_act(in_chans, out_chs, 3, layers, stride=min(stride, 2)),
            conv_norm_act(out_chs, out_chs, 3, layers, stride=max(1, stride // 2)),
        )
    if stem_type == 'single':
        return nn.Sequential(conv_norm_act(in_chans, out_chs, 3, layers, stride=stride))
    return nn.Sequential(
        conv_norm_act(in_chans, out_chs, 7, layers, stride=2),
        nn.MaxPool2d(kernel_size=3, stride=2, padding=1),
    )


def stage_strides(depths: Sequence[int], widths: Sequence[int], strides: Optional[Sequence[int]],
                  default: int) -> Tuple[int, ...]:
    """Each stage's stride (`default` for all when None); a ValueError unless there is one per depth and width,
    every depth and width is a positive integer and every stride is 1 or 2."""
    for name, values in (('depths', depths), ('widths', widths), ('strides', strides)):
        if values is not None and (isinstance(values, (str, bytes)) or not isinstance(values, Sequence)):
            raise ValueError(f'{name} must be a sequence with one entry per stage, got {values!r}')
    strides = tuple(strides) if strides is not None else (default,) * len(depths)
    if not len(depths) == len(widths) == len(strides) or not depths:
        raise ValueError(
            f'depths, widths and strides need one entry per stage (at least one stage), got {len(depths)}, '
            f'{len(widths)} and {len(strides)}')
    for i, (depth, width, stride) in enumerate(zip(depths, widths, strides)):
        check_int(f'depths[{i}] (blocks in stage {i})', depth)
        check_int(f'widths[{i}] (channels of stage {i})', width)
        if isinstance(stride, bool) or stride not in (1, 2):
            raise ValueError(f'strides[{i}] must be 1 or 2 (a stage halves its input or keeps it), got {stride!r}')
    return strides


@dataclass(frozen=True)
class StagePlan:
    """How one stage is built: its first block's stride, the dilation of its 3x3 convs (`first_dilation` for the
    first block's), the network's reduction after it, and its blocks' drop-path rates."""
    stride: int
    dilation: int
    first_dilation: int
    reduction: int
    drop_path_rates: Tuple[float, ...]


def plan_stages(depths: Sequence[int], strides: Sequence[int], stem_stride: int, output_stride: Optional[int],
                drop_path_rate: float) -> List[StagePlan]:
    """Each stage's stride and dilation for `output_stride` (None: no dilation), as timm's ResNet does it: once
    the network's stride reaches `output_stride`, the stages after stop striding and dilate by the stride they
    would have taken instead. Drop-path rates rise linearly over all blocks, from 0 to `drop_path_rate`."""
    check_rate('drop_path_rate', drop_path_rate)
    natural = stem_stride * math.prod(strides)
    reachable = sorted({stem_stride * math.prod(strides[:i + 1]) for i in range(len(strides))})
    if output_stride is not None and output_stride not in reachable:
        raise ValueError(f'output_stride must be one of {", ".join(map(str, reachable))} for this model (its '
                         f'stages end at these strides; {natural} without dilation), got {output_stride!r}')
    output_stride = output_stride or natural
    rates = torch.linspace(0, drop_path_rate, sum(depths), device='cpu').tolist()  # (not on a meta device)
    plans, net_stride, dilation, start = [], stem_stride, 1, 0
    for depth, stride in zip(depths, strides):
        first_dilation = dilation
        if net_stride * stride > output_stride:
            dilation, stride = dilation * stride, 1
        net_stride *= stride
        plans.append(StagePlan(stride, dilation, first_dilation, net_stride, tuple(rates[start:start + depth])))
        start += depth
    return plans


class StagedFeatureGetterNet(FeatureGetterNet):
    """timm's `FeatureGetterNet` (features_only through `forward_intermediates`) with `set_grad_checkpointing`,
    which detection and segmentation training calls on a backbone."""

    @torch.jit.ignore
    def set_grad_checkpointing(self, enable: bool = True) -> None:
        self.model.set_grad_checkpointing(enable)


class StagedClassifier(nn.Module):
    """The timm model API for a stem -> stages -> global pool -> fc network.

    A subclass builds `stem`, `stages` (an nn.Sequential of stages), `feature_info` (the stem, then one entry per
    stage), `num_features`, and calls `init_head`. Two hooks say how tensors flow: `enter_stages` (stem output ->
    what the first stage takes) and `stage_output` (what a stage returns -> one NCHW tensor); both are identities
    here.
    """
    grad_checkpointing: bool
    stem_level: int

    def init_stem(self, stem_type: str, in_chans: int, stem_width: int, stem_stride: Optional[int],
                  norm_layer: LayerType, act_layer: LayerType) -> int:
        """Build `stem` (see `make_stem`) and the first `feature_info` entry; returns the stem's stride.

        The first feature level is, as in timm's ResNet, the stem's stride-2 activation where the stem goes on to
        stride 4 (the output of `stem.0`, before the max pool or the second strided conv), so that ImageNet-size
        models have levels at strides 2, 4, 8, 16 and 32; a stem of stride 1 or 2 is a level as a whole.
        """
        check_int('in_chans', in_chans)
        check_int('stem_width', stem_width)
        stem_stride = resolve_stem_stride(stem_type, stem_stride)
        self.in_chans = in_chans  # timm reads it (input config of exports, data config resolution)
        self.stem = make_stem(stem_type, in_chans, stem_width, stem_stride, norm_layer, act_layer)
        split = stem_stride == 4
        self.stem_level = 0 if split else len(self.stem) - 1  # index of the stem module that ends level 0
        self.feature_info = [dict(num_chs=stem_width, reduction=2 if split else stem_stride,
                                  module='stem.0' if split else 'stem')]
        return stem_stride

    def init_head(self, num_classes: int, global_pool: str, drop_rate: float) -> None:
        check_num_classes(num_classes)
        check_rate('drop_rate', drop_rate)
        self.num_classes = num_classes
        self.drop_rate = drop_rate
        self.head_hidden_size = self.num_features
        self.grad_checkpointing = False
        self.global_pool, self.fc = _classifier(self.num_features, num_classes, global_pool)

    @torch.jit.ignore
    def init_weights(self, zero_init_last: bool = True) -> None:
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode='fan_out', nonlinearity='relu')
        if zero_init_last:
            for m in self.modules():
                if hasattr(m, 'zero_init_last'):  # residual blocks: start as their shortcut (timm's convention)
                    m.zero_init_last()

    def enter_stages(self, x: torch.Tensor) -> torch.Tensor:
        return x

    def stage_output(self, x: torch.Tensor) -> torch.Tensor:
        return x

    @torch.jit.ignore
    def group_matcher(self, coarse: bool = False) -> Dict[str, Any]:
        return dict(stem=r'^stem', blocks=r'^stages\.(\d+)' if coarse else r'^stages\.(\d+)\.(\d+)')

    @torch.jit.ignore
    def set_grad_checkpointing(self, enable: bool = True) -> None:
        self.grad_checkpointing = enable

    @torch.jit.ignore
    def get_classifier(self) -> nn.Module:
        return self.fc

    def reset_classifier(self, num_classes: int, global_pool: str = 'avg') -> None:
        check_num_classes(num_classes)
        self.num_classes = num_classes
        self.global_pool, self.fc = _classifier(self.num_features, num_classes, global_pool)

    def forward_intermediates(
            self,
            x: torch.Tensor,
            indices: Optional[Union[int, List[int]]] = None,
            norm: bool = False,
            stop_early: bool = False,
            output_fmt: str = 'NCHW',
            intermediates_only: bool = False,
    ) -> Union[List[torch.Tensor], Tuple[torch.Tensor, List[torch.Tensor]]]:
        """Features and the outputs of the stem's first level (index 0, see `init_stem`) and of each stage (1..n),
        each one NCHW tensor.

        Args:
            indices: take the last n levels if int, all if None, these levels if a sequence.
            norm: unused (no final norm in these models).
            stop_early: stop after the last level asked for.
            intermediates_only: return only the intermediates.
        """
        assert output_fmt == 'NCHW', 'Output shape must be NCHW.'
        intermediates = []
        take_indices, max_index = feature_take_indices(len(self.stages) + 1, indices)
        for i, module in enumerate(self.stem):
            x = module(x)
            if i == self.stem_level and 0 in take_indices:
                intermediates.append(x)
        state = self.enter_stages(x)
        if torch.jit.is_scripting() or not stop_early:  # stages can't be sliced in torchscript
            stages = self.stages
        else:
            stages = self.stages[:max_index]
        for feat_idx, stage in enumerate(stages, start=1):
            if self.grad_checkpointing and not torch.jit.is_scripting():
                state = checkpoint_seq(stage, state)
            else:
                state = stage(state)
            if feat_idx in take_indices:
                intermediates.append(self.stage_output(state))
        if intermediates_only:
            return intermediates
        return self.stage_output(state), intermediates

    def prune_intermediate_layers(
            self,
            indices: Union[int, List[int]] = 1,
            prune_norm: bool = False,
            prune_head: bool = True,
    ) -> List[int]:
        """Drop the stages after the last level in `indices` (and the head); return the kept indices."""
        take_indices, max_index = feature_take_indices(len(self.stages) + 1, indices)
        self.stages = self.stages[:max_index]
        if prune_head:
            self.reset_classifier(0, '')
        return take_indices

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        state = self.enter_stages(self.stem(x))
        if self.grad_checkpointing and not torch.jit.is_scripting():
            state = checkpoint_seq(self.stages, state)
        else:
            state = self.stages(state)
        return self.stage_output(state)

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        x = self.global_pool(x)
        if self.drop_rate:
            x = F.dropout(x, p=float(self.drop_rate), training=self.training)
        return x if pre_logits else self.fc(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))
