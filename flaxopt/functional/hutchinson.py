"""Hutchinson's stochastic estimators of a matrix's trace and diagonal from matrix-vector
products, over pytrees. Shared by the curvature toolkit (``flaxopt.curvature``) and the
optimizers that precondition with a Hessian diagonal (Sophia), so ``optim`` can use it
without importing ``curvature``.
"""

from __future__ import annotations

from typing import Any, Callable

import jax
import jax.numpy as jnp

__all__ = ["rademacher_like", "hutchinson_diagonal_sample", "hutchinson_diagonal"]

PyTree = Any


def rademacher_like(key: jax.Array, tree: PyTree) -> PyTree:
  """A pytree shaped like ``tree`` of independent +-1 entries (Rademacher), in each leaf's dtype."""
  leaves, treedef = jax.tree.flatten(tree)
  keys = jax.random.split(key, max(len(leaves), 1))
  out = [jax.random.rademacher(k, jnp.shape(x), dtype=jnp.result_type(x))
         for k, x in zip(keys, leaves)]
  return jax.tree.unflatten(treedef, out)


def hutchinson_diagonal_sample(matvec: Callable[[PyTree], PyTree], z: PyTree) -> PyTree:
  """One probe's estimate of diag(A): ``z * (A z)`` for a Rademacher ``z``.

  E[z (A z)] = diag(A) for z with independent +-1 entries (Bekas, Kokiopoulou & Saad 2007,
  "An estimator for the diagonal of a matrix").
  """
  return jax.tree.map(jnp.multiply, z, matvec(z))


def hutchinson_diagonal(matvec: Callable[[PyTree], PyTree], params: PyTree, key: jax.Array,
                        num_samples: int) -> tuple[PyTree, PyTree]:
  """Estimates diag(A) as the mean of ``num_samples`` probes; returns (estimate, std error).

  ``matvec(v)`` returns ``A v`` for ``v`` shaped like ``params``. The standard error is the
  per-entry sample standard deviation over probes divided by sqrt(num_samples) (Bekas et al.
  2007; Hutchinson 1990 for the trace).
  """
  if int(num_samples) < 2:
    raise ValueError(f"num_samples must be at least 2 (for a standard error), got {num_samples!r}")
  keys = jax.random.split(key, int(num_samples))
  samples = jax.lax.map(
      lambda k: hutchinson_diagonal_sample(matvec, rademacher_like(k, params)), keys)
  n = int(num_samples)
  mean = jax.tree.map(lambda s: jnp.mean(s, axis=0), samples)
  stderr = jax.tree.map(lambda s: jnp.std(s, axis=0, ddof=1) / jnp.sqrt(n), samples)
  return mean, stderr
