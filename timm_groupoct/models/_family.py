"""What every family's `_create_*` shares: timm's builder, plus a clear error instead of a random init."""
from typing import Any, Callable, Dict, Optional

import torch.nn as nn
from timm.models import build_model_with_cfg
from timm.models._builder import resolve_pretrained_cfg

__all__ = ['build_model']

_WEIGHT_SOURCES = ('hf_hub_id', 'url', 'file', 'state_dict')


def _check_weights_exist(variant: str, kwargs: Dict[str, Any]) -> None:
    cfg = resolve_pretrained_cfg(
        variant, pretrained_cfg=kwargs.get('pretrained_cfg'), pretrained_cfg_overlay=kwargs.get('pretrained_cfg_overlay'))
    if any(getattr(cfg, k, None) for k in _WEIGHT_SOURCES):
        return
    tag = f'.{cfg.tag}' if cfg.tag else ''
    raise RuntimeError(
        f"No pretrained weights are published for '{variant}{tag}', so pretrained=True would leave it randomly "
        f"initialised. Load weights you have with pretrained_cfg_overlay=dict(hf_hub_id='ORG/REPO') or "
        f"dict(file='PATH.safetensors'), or a model name 'hf-hub:ORG/REPO' / 'local-dir:PATH'; or use "
        f"pretrained=False to train from scratch.")


def build_model(
        model_cls: type,
        variant: str,
        pretrained: bool,
        feature_cfg: Optional[Dict[str, Any]] = None,
        pretrained_filter_fn: Optional[Callable] = None,
        **kwargs,
) -> nn.Module:
    """`build_model_with_cfg`, refusing `pretrained=True` where the resolved cfg names no weights."""
    if pretrained:
        _check_weights_exist(variant, kwargs)
    return build_model_with_cfg(
        model_cls, variant, pretrained, feature_cfg=feature_cfg, pretrained_filter_fn=pretrained_filter_fn, **kwargs)
