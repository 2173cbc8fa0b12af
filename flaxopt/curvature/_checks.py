"""Argument checks shared by the curvature toolkit (trace-time, one-line ValueErrors)."""

from __future__ import annotations

from typing import Any, Callable

import jax
import numpy as np

PyTree = Any


def num_params(params: PyTree) -> int:
  """Total number of entries over the leaves of ``params``."""
  return int(sum(np.prod(np.shape(x), dtype=np.int64) for x in jax.tree.leaves(params)))


def check_like(name: str, v: PyTree, params: PyTree) -> None:
  """Raises ValueError unless ``v`` has ``params``' tree structure and leaf shapes."""
  v_def, p_def = jax.tree.structure(v), jax.tree.structure(params)
  if v_def != p_def:
    raise ValueError(f"{name} must be shaped like params: tree {v_def} != {p_def}")
  for a, b in zip(jax.tree.leaves(v), jax.tree.leaves(params)):
    if np.shape(a) != np.shape(b):
      raise ValueError(f"{name} must be shaped like params: leaf shape {np.shape(a)} != "
                       f"{np.shape(b)}")


def check_scalar_output(name: str, fn: Callable[..., Any], *args: Any) -> None:
  """Raises ValueError unless ``fn(*args)`` is a real scalar (checked abstractly)."""
  out = jax.eval_shape(fn, *args)
  if not hasattr(out, "shape") or out.shape != ():
    shape = getattr(out, "shape", type(out).__name__)
    raise ValueError(f"{name} must return a scalar, got shape {shape}")


def check_min_int(name: str, value: Any, minimum: int) -> int:
  """``int(value)``, or ValueError when it is not an integer >= ``minimum``."""
  if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
    raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")
  return int(value)
