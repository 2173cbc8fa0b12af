"""Optax gradient transformations written from their update rules. ``from flaxopt import optim``."""

# pylint: disable=wildcard-import
from flaxopt.optim.transform import *
from flaxopt.optim.alias import *
from flaxopt.optim.penalties import *
from flaxopt.optim.linesearch import *
from flaxopt.optim.second_order import *
from flaxopt.optim import alias as _alias
from flaxopt.optim import second_order as _second_order

from flaxopt.optim.modern_common import *
from flaxopt.optim.modern_adaptive import *
from flaxopt.optim.modern_schedule_free import *
from flaxopt.optim.modern_wrappers import *
from flaxopt.optim.precond import *
from flaxopt.optim.lr_free import *
from flaxopt.optim.hessian_diag import *
from flaxopt.optim import modern_registry as _modern_registry
from flaxopt.optim import precond as _precond
from flaxopt.optim import lr_free as _lr_free
from flaxopt.optim import hessian_diag as _hessian_diag

# Registry family "optimizer": name -> (learning_rate=..., **kwargs) -> GradientTransformation.
REGISTRY = {
    **_alias.REGISTRY,
    **_second_order.REGISTRY,
    # Post-2018 optimizers and wrappers.
    **_modern_registry.REGISTRY_A,
    # Matrix-preconditioned, curvature-aware and learning-rate-free optimizers.
    "muon": _precond.muon,
    "shampoo": _precond.shampoo,
    "soap": _precond.soap,
    "sophia": _hessian_diag.sophia,
    "prodigy": _lr_free.prodigy,
    "dadapt_adam": _lr_free.dadapt_adam,
}
