"""timm-groupoct: grouped-convolution, GroupNorm and Octave-convolution models for timm.

Importing the package registers its models with timm (no network access):

    import timm, timm_groupoct
    model = timm.create_model('groupnet_small', num_classes=10)
"""
from typing import List, Union

import timm

from . import models  # noqa: F401  (registers the models)
from .deploy import prepare_for_inference

__version__ = '0.1.0'

# timm keys its registry by a model module's last name: these are ours.
FAMILY_MODULES = ('groupnet', 'resnext', 'octnet')


def list_models(filter: Union[str, List[str]] = '', pretrained: bool = False, include_tags: bool = False) -> List[str]:
    """This package's model names (timm's `list_models` restricted to them)."""
    return timm.list_models(filter, module=list(FAMILY_MODULES), pretrained=pretrained, include_tags=include_tags)
