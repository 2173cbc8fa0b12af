"""Optax gradient transformations written from their update rules. ``from flaxopt import optim``."""

# pylint: disable=wildcard-import
from flaxopt.optim.transform import *
from flaxopt.optim.alias import *
from flaxopt.optim.penalties import *
from flaxopt.optim.linesearch import *
from flaxopt.optim.second_order import *
from flaxopt.optim import alias as _alias
from flaxopt.optim import second_order as _second_order

# Registry family "optimizer": name -> (learning_rate=..., **kwargs) -> GradientTransformation.
REGISTRY = {**_alias.REGISTRY, **_second_order.REGISTRY}

# Issue 17, part A: post-2018 optimizers and wrappers (modern_* modules).
from flaxopt.optim.modern_common import *
from flaxopt.optim.modern_adaptive import *
from flaxopt.optim.modern_schedule_free import *
from flaxopt.optim.modern_wrappers import *
from flaxopt.optim import modern_registry as _modern_registry

REGISTRY.update(_modern_registry.REGISTRY_A)
