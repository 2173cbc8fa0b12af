"""Small shared helpers for the preconditioned and learning-rate-free optimizers.

Hyperparameter checks run on concrete values only (Python numbers, concrete arrays):
a JAX tracer (``optax.inject_hyperparams``, ``vmap`` over hyperparameters) is skipped,
never an error.
"""

from __future__ import annotations

import math
from typing import Any, Callable, Optional

import jax
import jax.numpy as jnp
import optax

# One copy of each shared helper (optim/_utils.py); these names are what the modules here use.
from flaxopt.optim._utils import ScalarOrSchedule, compute_dtype, count0  # pylint: disable=unused-import
from flaxopt.optim._utils import tree_map_none as tree_map  # pylint: disable=unused-import
from flaxopt.optim._utils import tree_unzip as unzip  # pylint: disable=unused-import
from flaxopt.optim._utils import check_in_range as check_range  # pylint: disable=unused-import
from flaxopt.optim._utils import check_decay as check_beta  # pylint: disable=unused-import
from flaxopt.optim._utils import check_int, check_nonneg, check_positive  # pylint: disable=unused-import




def concrete(value: Any) -> Optional[float]:
  """``float(value)`` for Python numbers and concrete 0-d arrays, else None (tracers)."""
  try:
    return float(value)
  except (TypeError, ValueError):
    return None


def check_learning_rate(learning_rate: ScalarOrSchedule, *, allow_zero: bool = False) -> None:
  """A schedule, or a finite positive number (>= 0 when ``allow_zero``)."""
  if learning_rate is None:
    raise ValueError("learning_rate is required (a positive float or an optax schedule), "
                     "got None.")
  if callable(learning_rate):
    return
  check_range("learning_rate", learning_rate, 0.0, math.inf, low_open=not allow_zero)


def lr_at(learning_rate: ScalarOrSchedule, count: jax.Array) -> Any:
  """The learning rate at step ``count`` (a schedule is called, a constant returned)."""
  return learning_rate(count) if callable(learning_rate) else learning_rate


def scalar_dtype(tree: Any) -> jnp.dtype:
  """The widest compute dtype over a tree's leaves (for global scalars such as D)."""
  leaves = [x for x in jax.tree.leaves(tree) if x is not None]
  return jnp.result_type(*[compute_dtype(x) for x in leaves]) if leaves else jnp.float32


def tree_sum(tree: Any) -> jax.Array:
  """Sum of all entries over the leaves."""
  return sum((jnp.sum(x) for x in jax.tree.leaves(tree)), 0.0)


def tree_vdot(a: Any, b: Any) -> jax.Array:
  """Sum over leaves of <a, b>."""
  return sum((jnp.vdot(x, y) for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b))),
             0.0)



increment = optax.safe_int32_increment
