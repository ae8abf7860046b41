"""Building blocks shared by the model families."""
from .grouped import GroupedBottleneck, resolve_groups, valid_groups_near
from .norm import GROUP_NORM_CANDIDATES, GroupNormRuleAct, get_norm_act, group_norm_groups
