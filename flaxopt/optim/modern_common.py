"""Helpers shared by the post-2018 optimizers (``modern_*`` modules): checks, tree maps, decay.

The conventions are those of ``flaxopt.optim.transform``: None leaves pass through; moments
are stored in the parameter dtype and one step's arithmetic runs in
``promote_types(dtype, float32)``; step counters are int32. Hyperparameters may be Python
numbers or arrays (``optax.inject_hyperparams``); concrete values are validated when the
transform is built (a one-line ValueError naming the argument and value), traced values
cannot be and are not.
"""

from __future__ import annotations

from typing import Any, Callable, NamedTuple, Optional

import jax
import jax.numpy as jnp
import optax

# One copy of each shared helper (optim/_utils.py); these names are what the modules here use.
from flaxopt.optim._utils import ScalarLike, ScalarOrSchedule, compute_dtype, count0  # pylint: disable=unused-import
from flaxopt.optim._utils import tree_map_none as leaf_map  # pylint: disable=unused-import
from flaxopt.optim._utils import tree_unzip as unzip  # pylint: disable=unused-import
from flaxopt.optim._utils import check_in_range as check_range  # pylint: disable=unused-import
from flaxopt.optim._utils import check_decay as check_beta  # pylint: disable=unused-import
from flaxopt.optim._utils import check_int, check_learning_rate, check_nonneg, check_positive  # pylint: disable=unused-import

__all__ = ["add_weight_decay", "AddWeightDecayState"]



# ----------------------------------------------------------------------------
# Argument checks: concrete values only (a tracer is skipped, never concretized).
# ----------------------------------------------------------------------------


def concrete(value: Any) -> Optional[float]:
  """``float(value)`` for Python numbers and concrete 0-d arrays, else None (tracers)."""
  if isinstance(value, jax.core.Tracer):
    return None
  try:
    return float(value)
  except (TypeError, ValueError):
    return None


def check_positive_int(name: str, value: Any) -> None:
  """A concrete integer >= 1 (tracers skipped)."""
  check_int(name, value, 1)


# ----------------------------------------------------------------------------


def zeros(params: Any) -> Any:
  return leaf_map(jnp.zeros_like, params)


def bias_correction(decay: ScalarLike, count: jax.Array, dtype) -> jax.Array:
  """``1 - decay**t`` in ``dtype``."""
  return 1 - jnp.asarray(decay, dtype) ** count.astype(dtype)


def ema(decay: ScalarLike, moment: jax.Array, value: jax.Array) -> jax.Array:
  """``decay * moment + (1 - decay) * value`` in the dtype of ``value``."""
  return decay * moment.astype(value.dtype) + (1 - decay) * value


def learning_rate_at(learning_rate: ScalarOrSchedule, count: jax.Array) -> Any:
  """``learning_rate(count)`` for a schedule, else the constant."""
  return learning_rate(count) if callable(learning_rate) else learning_rate


# ----------------------------------------------------------------------------
# Weight decay as an update term (decoupled after a preconditioner, or L2 before it).
# ----------------------------------------------------------------------------


def is_zero(value: Any) -> bool:
  """True for a concrete 0."""
  return concrete(value) == 0.0


class AddWeightDecayState(NamedTuple):
  """No state."""


def add_weight_decay(weight_decay: ScalarLike,
                     mask: Optional[Any] = None) -> optax.GradientTransformation:
  r"""Adds ``weight_decay * params`` to the update: ``u -> u + lambda x`` (dtype of ``u``).

  Placed *after* a preconditioner and before the learning rate it is decoupled weight
  decay (Loshchilov & Hutter 2019) with PyTorch's scaling: ``x -= lr (u + lambda x)``,
  i.e. ``torch.optim.AdamW``'s ``x *= 1 - lr lambda`` (the paper's Algorithm 2 scales the
  decay by the schedule multiplier ``eta_t`` only, not by ``alpha``). Placed *before* a
  preconditioner it is an L2 penalty's gradient (PyTorch's ``weight_decay`` on ``Adam``,
  ``RAdam``). Same math as ``optax.add_decayed_weights``, but the update keeps its dtype
  when ``weight_decay`` is a wider array (``inject_hyperparams``).

  Args:
    weight_decay: ``lambda`` (>= 0).
    mask: optional pytree of bools (or a callable params -> pytree) selecting the leaves
      that decay, as in ``optax.add_decayed_weights``.

  Returns:
    An ``optax.GradientTransformation`` (needs ``params``).
  """
  check_nonneg("weight_decay", weight_decay)

  def update_fn(updates, state, params=None):
    if params is None:
      if is_zero(weight_decay):
        return updates, state
      raise ValueError("add_weight_decay needs params: call update(updates, state, params).")
    new = leaf_map(lambda u, p: (u + weight_decay * p.astype(compute_dtype(u))).astype(u.dtype),
                   updates, params)
    return new, state

  tx = optax.GradientTransformation(lambda _: AddWeightDecayState(), update_fn)
  return tx if mask is None else optax.masked(tx, mask)
