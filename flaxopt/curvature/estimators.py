"""Hutchinson's stochastic trace and diagonal estimators of a curvature matrix."""

from __future__ import annotations

from typing import Any, Callable

import jax
import jax.numpy as jnp

import flaxopt.functional as F
from flaxopt.curvature import _checks

__all__ = ["hutchinson_trace", "hutchinson_diagonal"]

PyTree = Any


def _vdot(a: PyTree, b: PyTree) -> jax.Array:
  return sum(jnp.vdot(x, y) for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)))


def hutchinson_trace(matvec: Callable[[PyTree], PyTree], params: PyTree, key: jax.Array,
                     num_samples: int) -> tuple[jax.Array, jax.Array]:
  """Estimates ``tr(A)`` as the mean of ``z^T A z`` over Rademacher probes ``z``.

  ``E[z^T A z] = tr(A)`` for independent +-1 entries, with the smallest variance among
  i.i.d. probes, ``2 (||A||_F^2 - sum_i A_ii^2)`` (Hutchinson 1990, "A stochastic estimator
  of the trace of the influence matrix for Laplacian smoothing splines"; Avron & Toledo 2011).
  Returns ``(estimate, standard error)``, the error being the sample standard deviation of
  the probes over ``sqrt(num_samples)``.

  Raises:
    ValueError: ``num_samples < 2``.
  """
  n = _checks.check_min_int("num_samples", num_samples, 2)
  keys = jax.random.split(key, n)
  samples = jax.lax.map(lambda k: (lambda z: _vdot(z, matvec(z)))(F.rademacher_like(k, params)),
                        keys)
  return jnp.mean(samples), jnp.std(samples, ddof=1) / jnp.sqrt(n)


def hutchinson_diagonal(matvec: Callable[[PyTree], PyTree], params: PyTree, key: jax.Array,
                        num_samples: int) -> tuple[PyTree, PyTree]:
  """Estimates ``diag(A)`` as the mean of ``z * (A z)`` (Bekas, Kokiopoulou & Saad 2007).

  The estimator shared with the optimizers is ``flaxopt.functional.hutchinson_diagonal``;
  this is it, with the curvature toolkit's argument checks. Returns ``(estimate, standard
  error)`` as pytrees shaped like ``params``.

  Raises:
    ValueError: ``num_samples < 2``.
  """
  _checks.check_min_int("num_samples", num_samples, 2)
  return F.hutchinson_diagonal(matvec, params, key, num_samples)
