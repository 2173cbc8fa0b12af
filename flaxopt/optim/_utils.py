"""Helpers shared by the ``flaxopt.optim`` modules: argument checks, dtype rules, tree maps.

Private to the package: the public transforms in ``transform``, ``alias``,
``penalties``, ``linesearch`` and ``second_order`` are built on these.

* Argument checks raise a one-line ``ValueError`` naming the argument and the
  value, at construction time. They check concrete values only (Python
  numbers, NumPy and concrete JAX arrays of any shape, every element); traced
  values (under ``jax.vmap``/``jit``, e.g. hyperparameters stacked over a
  member axis, or ``optax.inject_hyperparams`` inside a traced ``init``) are
  skipped, so a constructor never makes a Python comparison on a tracer.
* Dtype rule: one step's arithmetic runs in ``promote_types(dtype, float32)``
  (bfloat16 and float16 are computed in float32, float64 stays float64);
  results are cast back to the dtype of the update/parameter leaf.
* Tree maps let ``None`` leaves of the first tree pass through as ``None``.
"""

from __future__ import annotations

import numbers
from typing import Any, Callable, Optional, Union

import jax
import jax.numpy as jnp
import numpy as np
import optax

ScalarLike = Union[float, jax.Array]  # a float, or an array (traced under vmap/jit).
ScalarOrSchedule = Union[ScalarLike, optax.Schedule]  # ... or a schedule ``count -> value``.

_HALF_PRECISION = (jnp.bfloat16, jnp.float16)


# ----------------------------------------------------------------------------
# Argument checks: concrete values only; traced values are skipped.
# ----------------------------------------------------------------------------


def _is_number_like(value: Any) -> bool:
  if isinstance(value, bool):
    return False
  if isinstance(value, (numbers.Real, jax.Array)):
    return True
  return isinstance(value, (np.ndarray, np.generic)) and np.issubdtype(
      np.asarray(value).dtype, np.number)


def concrete(value: Any) -> Optional[np.ndarray]:
  """``value`` as a float64 NumPy array when known at trace time, else None (a tracer)."""
  try:  # A tracer raises TracerArrayConversionError, a TypeError.
    return np.asarray(value, dtype=np.float64)
  except (TypeError, ValueError):
    return None


def check_in_range(name: str, value: Any, low: float, high: float = float("inf"), *,
                   low_open: bool = False, high_open: bool = True) -> None:
  """Raises ValueError naming ``name`` unless every element of ``value`` is in range.

  Rejects non-numbers (strings, bools, None) and NaN. Skips tracers.
  """
  if not _is_number_like(value):
    raise ValueError(f"{name} must be a number, got {value!r}.")
  v = concrete(value)
  if v is None:
    return
  ok_low = v > low if low_open else v >= low
  ok_high = v < high if high_open else v <= high
  if not np.all(ok_low & ok_high):  # NaN fails both comparisons.
    lo = "(" if low_open else "["
    hi = ")" if high_open else "]"
    hint = ""
    if getattr(value, "dtype", None) in _HALF_PRECISION:
      hint = (" (rounded to half precision: under optax.inject_hyperparams with "
              "half-precision params, pass hyperparam_dtype=jnp.float32)")
    raise ValueError(f"{name} must be in {lo}{low}, {high}{hi}, got {value!r}{hint}.")


def check_nonneg(name: str, value: Any) -> None:
  """``0 <= value < inf``."""
  check_in_range(name, value, 0.0, float("inf"))


def check_positive(name: str, value: Any) -> None:
  """``0 < value < inf``."""
  check_in_range(name, value, 0.0, float("inf"), low_open=True)


def check_decay(name: str, value: Any) -> None:
  """A decay / momentum coefficient in ``[0, 1)``."""
  check_in_range(name, value, 0.0, 1.0)


def check_open_unit(name: str, value: Any) -> None:
  """``0 < value < 1`` (line-search constants)."""
  check_in_range(name, value, 0.0, 1.0, low_open=True)


def check_positive_int(name: str, value: Any) -> None:
  """A Python int >= 1 (static: sizes and loop bounds are never traced)."""
  if not isinstance(value, int) or isinstance(value, bool) or value < 1:
    raise ValueError(f"{name} must be a positive int, got {value!r}.")


def check_int(name: str, value: Any, low: int) -> None:
  """A concrete integer (Python or 0-d array) >= ``low``; tracers are skipped."""
  if isinstance(value, jax.core.Tracer):
    return
  v = concrete(value) if _is_number_like(value) else None
  if v is None or v.ndim or not np.isfinite(v) or v != int(v) or v < low:
    raise ValueError(f"{name} must be an integer >= {low}, got {value!r}.")


def check_learning_rate(learning_rate: ScalarOrSchedule) -> None:
  """A schedule, or a number > 0 (required: None is an error)."""
  if learning_rate is None:
    raise ValueError("learning_rate is required (a positive float or an optax "
                     "schedule), got None.")
  if not callable(learning_rate):
    check_positive("learning_rate", learning_rate)


def is_concrete_less(a: Any, b: Any) -> bool:
  """``a < b`` for concrete values; True when either is traced (nothing to check)."""
  va, vb = concrete(a), concrete(b)
  return va is None or vb is None or bool(np.all(va < vb))


# ----------------------------------------------------------------------------
# Dtype rules.
# ----------------------------------------------------------------------------


def compute_dtype(x: Any) -> jnp.dtype:
  """``promote_types(dtype, float32)`` of an array, or of a pytree's widest leaf."""
  dtype = x.dtype if hasattr(x, "dtype") else optax.tree.dtype(x, "highest")
  return jnp.promote_types(dtype, jnp.float32)


# ----------------------------------------------------------------------------
# Tree maps.
# ----------------------------------------------------------------------------


def count0() -> jax.Array:
  """A fresh int32 step counter (incremented with ``optax.safe_int32_increment``)."""
  return jnp.zeros([], jnp.int32)


def tree_map_none(fn: Callable[..., Any], tree: Any, *rest: Any) -> Any:
  """``jax.tree.map(fn, tree, *rest)``; None leaves of ``tree`` pass through as None."""
  return jax.tree.map(
      lambda x, *r: None if x is None else fn(x, *r),
      tree, *rest, is_leaf=lambda x: x is None)


def tree_unzip(out: Any, like: Any, n: int) -> tuple[Any, ...]:
  """Splits a tree (shaped like ``like``) of n-tuples into n trees."""
  return tuple(tree_map_none(lambda _, o, i=i: o[i], like, out) for i in range(n))


def tree_vdot(a: Any, b: Any, dtype: Optional[jnp.dtype] = None) -> jax.Array:
  """``<a, b>`` summed over all leaves (leaves cast to ``dtype`` first when given)."""
  cast = (lambda x: x) if dtype is None else (lambda x: x.astype(dtype))
  parts = jax.tree.map(lambda x, y: jnp.vdot(cast(x), cast(y)), a, b)
  start = 0 if dtype is None else jnp.zeros((), dtype)
  return sum(jax.tree.leaves(parts), start)


def tree_axpy(a: jax.Array, x: Any, y: Any) -> Any:
  """``y + a * x`` leafwise, each result in the dtype of its ``y`` leaf."""
  a = jnp.asarray(a)
  return jax.tree.map(
      lambda xi, yi: (yi + a.astype(jnp.result_type(yi, a)) * xi).astype(yi.dtype), x, y)
