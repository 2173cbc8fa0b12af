"""Loss-landscape slices: the loss along one or two directions in parameter space.

Li, Xu, Taylor, Studer & Goldstein 2018, "Visualizing the loss landscape of neural nets":
``f(a) = L(theta + a d)`` (1-D) or ``f(a, b) = L(theta + a d1 + b d2)`` (2-D) with
filter-normalized random directions, or given directions (e.g. the top Hessian eigenvectors
from ``top_eigenvalues``).
"""

from __future__ import annotations

from typing import Any, Callable, Optional, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from flaxopt.curvature import _checks

__all__ = ["filter_normalized_direction", "loss_landscape", "plot_landscape_1d",
           "plot_landscape_2d"]

PyTree = Any


def filter_normalized_direction(key: jax.Array, params: PyTree, *,
                                ignore_vectors: bool = True) -> PyTree:
  """A Gaussian direction ``d`` rescaled filter by filter to the norms of ``params``' filters.

  ``d_{i,j} <- d_{i,j} ||theta_{i,j}|| / ||d_{i,j}||`` for filter j of layer i (Li et al.
  2018, Sec. 4). A filter is one output unit: flax kernels are ``(..., in, out)``, so a filter
  is a slice along the last axis (PyTorch's weights are ``(out, in, ...)``: the first axis).
  Leaves with at most one axis (biases, norm scales) get ``0`` when ``ignore_vectors`` (the
  paper's ``ignore='biasbn'``), else are normalized as one filter.
  """
  leaves, treedef = jax.tree.flatten(params)
  keys = jax.random.split(key, max(len(leaves), 1))
  out = []
  for k, p in zip(keys, leaves):
    d = jax.random.normal(k, jnp.shape(p), jnp.result_type(p))
    if jnp.ndim(p) <= 1:
      if ignore_vectors:
        d = jnp.zeros_like(d)
      else:
        d = d * jnp.linalg.norm(p) / (jnp.linalg.norm(d) + 1e-10)
    else:
      axes = tuple(range(jnp.ndim(p) - 1))
      norm_p = jnp.sqrt(jnp.sum(p * p, axis=axes, keepdims=True))
      norm_d = jnp.sqrt(jnp.sum(d * d, axis=axes, keepdims=True))
      d = d * norm_p / (norm_d + 1e-10)
    out.append(d)
  return jax.tree.unflatten(treedef, out)


def loss_landscape(loss_fn: Callable[[PyTree, Any], jax.Array], params: PyTree, batch: Any,
                   directions: PyTree | Sequence[PyTree], grid: Any) -> jax.Array:
  """The loss on a 1-D line or a 2-D plane through ``params``.

  Args:
    loss_fn: ``loss_fn(params, batch) -> scalar``.
    params: the centre ``theta``.
    batch: the data the loss is evaluated on.
    directions: one pytree shaped like ``params`` (1-D slice) or a tuple/list of one or two.
    grid: the coefficients: a 1-D array used along every direction, or a tuple of one array
      per direction.

  Returns:
    ``L(theta + a d)`` of shape (len(grid),), or ``L(theta + a d1 + b d2)`` of shape
    (len(grid_a), len(grid_b)) (row = first direction). Evaluated with ``lax.map``.

  Raises:
    ValueError: a direction not shaped like ``params``, more than two directions, a grid
      per direction of the wrong count, or a non-scalar loss.
  """
  if isinstance(directions, (tuple, list)):
    directions = list(directions)
  else:
    directions = [directions]
  if not 1 <= len(directions) <= 2:
    raise ValueError(f"directions must hold 1 or 2 directions, got {len(directions)}")
  for i, d in enumerate(directions):
    _checks.check_like(f"directions[{i}]", d, params)
  _checks.check_scalar_output("loss_fn", loss_fn, params, batch)
  if isinstance(grid, (tuple, list)) and len(grid) and np.ndim(grid[0]) == 1:
    grids = [jnp.asarray(g) for g in grid]
  else:
    grids = [jnp.asarray(grid)] * len(directions)
  if len(grids) != len(directions) or any(g.ndim != 1 for g in grids):
    raise ValueError(f"grid must be a 1-D array or one 1-D array per direction "
                     f"({len(directions)}), got {len(grids)}")
  mesh = jnp.meshgrid(*grids, indexing="ij")
  coords = jnp.stack([m.ravel() for m in mesh], axis=-1)

  def point(c):
    p = params
    for i, d in enumerate(directions):
      p = jax.tree.map(lambda x, y, i=i: x + c[i].astype(jnp.result_type(x)) * y, p, d)
    return loss_fn(p, batch)

  values = jax.lax.map(point, coords)
  return values.reshape(tuple(g.size for g in grids))


def _figure(path: str):
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
  import os  # pylint: disable=g-import-not-at-top
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  return plt


def plot_landscape_1d(grid: Any, losses: Any, path: str, *, labels: Optional[Sequence[str]] = None,
                      title: str = "", log: bool = False) -> str:
  """Line plot of one or more 1-D slices (``losses`` (G,) or (S, G)) against ``grid``."""
  plt = _figure(path)
  losses = np.atleast_2d(np.asarray(losses))
  fig, ax = plt.subplots(figsize=(5, 3.6))
  for i, row in enumerate(losses):
    ax.plot(np.asarray(grid), row, label=labels[i] if labels else None)
  if log:
    ax.set_yscale("log")
  ax.set(xlabel="step along direction", ylabel="loss", title=title)
  if labels:
    ax.legend()
  fig.tight_layout()
  fig.savefig(path, dpi=100)
  plt.close(fig)
  return path


def plot_landscape_2d(grid_a: Any, grid_b: Any, losses: Any, path: str, *, title: str = "",
                      levels: int = 30) -> str:
  """Contour plot of a 2-D slice ``losses`` (len(grid_a), len(grid_b))."""
  plt = _figure(path)
  fig, ax = plt.subplots(figsize=(4.6, 4))
  cs = ax.contour(np.asarray(grid_a), np.asarray(grid_b), np.asarray(losses).T, levels=levels)
  ax.clabel(cs, fontsize=6)
  ax.set(xlabel="direction 1", ylabel="direction 2", title=title)
  fig.tight_layout()
  fig.savefig(path, dpi=100)
  plt.close(fig)
  return path
