"""Model families; importing a module registers its models with timm."""
from .groupnet import *
from .resnext import *
from .octnet import *
