"""Registry entries (family ``optimizer``) for the optimizers of the ``modern_*`` modules.

Every entry is ``name -> constructor(learning_rate=..., **kwargs)``. The wrappers build their
inner optimizer by registry name: ``lookahead(learning_rate, base="adam", sync_period=5,
alpha=0.5, **base_kwargs)`` and ``sam(learning_rate, base="sgd", rho=0.05, eps=1e-12,
adaptive=False, **base_kwargs)``; keywords the wrapper does not take go to the base.
"""

from __future__ import annotations

from typing import Any, Callable

import optax

from flaxopt.optim import modern_adaptive
from flaxopt.optim import modern_schedule_free
from flaxopt.optim import modern_wrappers

__all__ = ["lookahead_by_name", "sam_by_name"]


def _base(base: str, learning_rate: Any, base_kwargs: dict) -> optax.GradientTransformation:
  from flaxopt import registry  # pylint: disable=g-import-not-at-top  (avoids a cycle)
  # optax.inject_hyperparams binds the signature and passes the (empty) **base_kwargs dict
  # as a keyword named base_kwargs: unpack it.
  nested = base_kwargs.pop("base_kwargs", None)
  if isinstance(nested, dict):
    base_kwargs = {**nested, **base_kwargs}
  if base in ("lookahead", "sam"):
    raise ValueError(f"base must be a plain optimizer name, got {base!r}.")
  return registry.get("optimizer", base, learning_rate=learning_rate, **base_kwargs)


def lookahead_by_name(learning_rate: Any, base: str = "adam", sync_period: int = 5,
                      alpha: float = 0.5, **base_kwargs: Any) -> optax.GradientTransformation:
  """``lookahead(registry.get("optimizer", base, learning_rate, **base_kwargs), k, alpha)``."""
  return modern_wrappers.lookahead(_base(base, learning_rate, base_kwargs), sync_period, alpha)


def sam_by_name(learning_rate: Any, base: str = "sgd", rho: float = 0.05, eps: float = 1e-12,
                adaptive: bool = False, **base_kwargs: Any) -> optax.GradientTransformation:
  """``sam(registry.get("optimizer", base, learning_rate, **base_kwargs), rho, eps)``."""
  return modern_wrappers.sam(_base(base, learning_rate, base_kwargs), rho, eps, adaptive)


REGISTRY_A: dict[str, Callable[..., optax.GradientTransformation]] = {
    "adamw": modern_adaptive.adamw,
    "radam": modern_adaptive.radam,
    "lion": modern_adaptive.lion,
    "lamb": modern_adaptive.lamb,
    "lars": modern_adaptive.lars,
    "adopt": modern_adaptive.adopt,
    "ademamix": modern_adaptive.ademamix,
    "schedule_free_sgd": modern_schedule_free.schedule_free_sgd,
    "schedule_free_adamw": modern_schedule_free.schedule_free_adamw,
    "lookahead": lookahead_by_name,
    "sam": sam_by_name,
}
