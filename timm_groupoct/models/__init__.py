"""Model families; importing a module registers its models with timm. Each family's classes and checkpoint filter
are reached through its module (`timm_groupoct.models.octnet.checkpoint_filter_fn`)."""
from . import groupnet, octnet, resnext  # noqa: F401 (registration)
