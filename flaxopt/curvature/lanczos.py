"""Extreme eigenvalues and spectral densities of symmetric curvature operators: Lanczos,
power iteration and stochastic Lanczos quadrature.

The operator is any ``matvec(v) -> A v`` over pytrees shaped like ``params`` (``hvp``,
``ggn_vp``, ``hessian_matvec``...). Internally vectors are flattened with
``jax.flatten_util.ravel_pytree``; Lanczos vectors are kept as a (num_steps, n) array.
"""

from __future__ import annotations

from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax.flatten_util import ravel_pytree

from flaxopt.curvature import _checks

__all__ = ["LanczosResult", "lanczos", "tridiagonal", "top_eigenvalues", "power_iteration",
           "spectral_density", "bulk_edge", "gaussian_kernel_density"]

PyTree = Any
BREAKDOWN = 1e-10  # relative size of beta below which the Krylov space is exhausted


class LanczosResult(NamedTuple):
  """``alphas`` (m,) and ``betas`` (m-1,) of the tridiagonal T; ``vectors`` (m, n) the basis."""
  alphas: jax.Array
  betas: jax.Array
  vectors: jax.Array


def tridiagonal(alphas: jax.Array, betas: jax.Array) -> jax.Array:
  """The symmetric tridiagonal matrix with diagonal ``alphas`` and off-diagonal ``betas``."""
  return jnp.diag(alphas) + jnp.diag(betas, 1) + jnp.diag(betas, -1)


def _flat_matvec(matvec: Callable[[PyTree], PyTree], params: PyTree):
  flat, unravel = ravel_pytree(params)

  def mv(x: jax.Array) -> jax.Array:
    return ravel_pytree(matvec(unravel(x)))[0].astype(flat.dtype)

  return flat, unravel, mv


def _restart_vector(j: jax.Array, n: int, dtype: Any) -> jax.Array:
  """A deterministic, dense, non-degenerate vector for restart ``j`` (after a breakdown)."""
  i = jnp.arange(1, n + 1, dtype=dtype)
  return jnp.cos(0.6180339887498949 * i * (j + 1).astype(dtype) + 0.3 * i * i / n)


def lanczos(matvec: Callable[[PyTree], PyTree], params: PyTree, key: jax.Array,
            num_steps: int, *, reorthogonalize: bool = True,
            start: jax.Array | None = None) -> LanczosResult:
  """``num_steps`` steps of the Lanczos tridiagonalization ``V A V^T = T`` from a random start.

  Three-term recurrence ``beta_j v_{j+1} = A v_j - alpha_j v_j - beta_{j-1} v_{j-1}``
  (Lanczos 1950; Golub & Van Loan, Matrix Computations, Alg. 10.1.1). With
  ``reorthogonalize=True`` each new vector is orthogonalized against all previous ones
  (classical Gram-Schmidt, applied twice), which keeps ``V`` orthonormal in floating point;
  without it orthogonality is lost as Ritz values converge and spurious copies ("ghosts") of
  converged eigenvalues appear (Paige 1971). On breakdown (``beta`` ~ 0: an invariant
  subspace) the next vector is a fixed quasi-random one (``cos`` of a Weyl sequence, cheap to
  compile) orthogonalized against ``V``, with ``beta = 0``. ``start`` (flat, length n) replaces the random (Gaussian) start vector.

  Raises:
    ValueError: ``num_steps < 1`` or larger than the parameter count.
  """
  flat, _, mv = _flat_matvec(matvec, params)
  n = flat.size
  m = _checks.check_min_int("num_steps", num_steps, 1)
  if m > n:
    raise ValueError(f"num_steps={m} exceeds the parameter count {n}")
  dtype = flat.dtype
  v0 = jax.random.normal(key, (n,), dtype) if start is None else jnp.asarray(start, dtype)
  v0 = v0 / jnp.linalg.norm(v0)

  def orthogonalize(w, vectors):
    for _ in range(2):
      w = w - vectors.T @ (vectors @ w)
    return w

  def body(j, carry):
    vectors, alphas, betas, v, v_prev, beta_prev = carry
    vectors = vectors.at[j].set(v)
    w = mv(v)
    alpha = jnp.vdot(w, v)
    w = w - alpha * v - beta_prev * v_prev
    if reorthogonalize:
      w = orthogonalize(w, vectors)
    beta = jnp.linalg.norm(w)
    scale = jnp.maximum(jnp.abs(alphas).max(), jnp.abs(alpha)) + 1.0
    broke = beta <= BREAKDOWN * scale
    fresh = orthogonalize(_restart_vector(j, n, dtype), vectors)
    w = jnp.where(broke, fresh, w)
    beta = jnp.where(broke, 0.0, beta)
    v_next = w / jnp.linalg.norm(w)
    return (vectors, alphas.at[j].set(alpha), betas.at[j].set(beta), v_next, v, beta)

  init = (jnp.zeros((m, n), dtype), jnp.zeros(m, dtype), jnp.zeros(m, dtype), v0,
          jnp.zeros(n, dtype), jnp.zeros((), dtype))
  vectors, alphas, betas, *_ = jax.lax.fori_loop(0, m, body, init)
  return LanczosResult(alphas, betas[:m - 1], vectors)


def top_eigenvalues(matvec: Callable[[PyTree], PyTree], params: PyTree, k: int,
                    key: jax.Array, num_iters: int, *,
                    reorthogonalize: bool = True) -> tuple[jax.Array, PyTree]:
  """The ``k`` largest (algebraic) eigenvalues of ``A``, descending, and their eigenvectors.

  Lanczos with full reorthogonalization for ``num_iters`` steps, then the Ritz pairs of the
  tridiagonal ``T`` (``eigh``): eigenvalues ``theta`` and vectors ``V^T s`` (Golub & Van Loan
  Sec. 10.1; as in PyHessian, Yao et al. 2020, which uses power iteration with deflation
  instead). ``num_iters`` equal to the parameter count is exact up to rounding.

  Returns:
    ``(eigenvalues (k,), eigenvectors)``: the eigenvectors as a pytree shaped like
    ``params`` with a leading axis of size k, unit norm over the whole tree.

  Raises:
    ValueError: ``k < 1``, ``k`` larger than the parameter count, ``num_iters < k``, or
      ``num_iters`` larger than the parameter count.
  """
  n = _checks.num_params(params)
  k = _checks.check_min_int("k", k, 1)
  if k > n:
    raise ValueError(f"k={k} exceeds the parameter count {n}")
  num_iters = _checks.check_min_int("num_iters", num_iters, 1)
  if num_iters < k:
    raise ValueError(f"num_iters={num_iters} must be >= k={k}")
  result = lanczos(matvec, params, key, num_iters, reorthogonalize=reorthogonalize)
  theta, s = jnp.linalg.eigh(tridiagonal(result.alphas, result.betas))
  order = jnp.argsort(-theta)[:k]
  vectors = (result.vectors.T @ s[:, order]).T  # (k, n)
  _, unravel = ravel_pytree(params)
  return theta[order], jax.vmap(unravel)(vectors)


def power_iteration(matvec: Callable[[PyTree], PyTree], params: PyTree, key: jax.Array,
                    num_iters: int) -> tuple[jax.Array, PyTree]:
  """The eigenvalue of largest magnitude (with sign) and its unit eigenvector, by power iteration.

  ``v <- A v / ||A v||``, eigenvalue ``v^T A v`` (von Mises 1929). Converges at rate
  ``|lambda_2 / lambda_1|`` to the largest-*magnitude* eigenvalue, which for an indefinite
  Hessian can be a negative one; ``top_eigenvalues`` returns the largest algebraic ones.
  """
  num_iters = _checks.check_min_int("num_iters", num_iters, 1)
  flat, unravel, mv = _flat_matvec(matvec, params)
  v = jax.random.normal(key, flat.shape, flat.dtype)
  v = v / jnp.linalg.norm(v)

  def body(_, v):
    w = mv(v)
    return w / jnp.linalg.norm(w)

  v = jax.lax.fori_loop(0, num_iters, body, v)
  return jnp.vdot(v, mv(v)), unravel(v)


def gaussian_kernel_density(grid: jax.Array, nodes: jax.Array, weights: jax.Array,
                            sigma: float) -> jax.Array:
  """``sum_j weights_j N(grid; nodes_j, sigma^2)``, evaluated at every grid point."""
  d = (grid[:, None] - nodes.reshape(-1)[None, :]) / sigma
  k = jnp.exp(-0.5 * d * d) / (sigma * jnp.sqrt(2 * jnp.pi))
  return k @ weights.reshape(-1)


def spectral_density(matvec: Callable[[PyTree], PyTree], params: PyTree, key: jax.Array,
                     num_probes: int, num_steps: int, grid: jax.Array,
                     sigma: float | None = None) -> tuple[jax.Array, jax.Array, jax.Array]:
  """Eigenvalue density of ``A`` by stochastic Lanczos quadrature, smoothed by a Gaussian.

  For each of ``num_probes`` random unit Gaussian start vectors, ``num_steps`` Lanczos steps
  give a tridiagonal ``T`` with eigen-decomposition ``T = S diag(theta) S^T``; the Gauss
  quadrature ``v^T f(A) v ~ sum_j S_{0j}^2 f(theta_j)`` estimates ``(1/n) tr f(A)``. The
  density is ``phi(t) = (1/P) sum_p sum_j S_{0j}^2 N(t; theta_j, sigma^2)``, which
  integrates to 1 (the eigenvalue distribution, not counts) (Lin, Saad & Yang 2016; Ghorbani,
  Krishnan & Xiao 2019, "An investigation into neural net optimization via Hessian eigenvalue
  density", Sec. 3; Papyan 2018). PyHessian's ``density`` plots the same with weights summed
  over probes and ``sigma`` defaulting to 1e-5 (on its grid); here ``sigma`` defaults to two
  grid spacings.

  Returns:
    ``(density on grid, nodes (P, m), weights (P, m))``; each probe's weights sum to 1/P.

  Raises:
    ValueError: ``num_probes < 1``, ``num_steps`` < 1 or above the parameter count, a grid
      that is not 1-D with at least 2 increasing points, or ``sigma <= 0``.
  """
  num_probes = _checks.check_min_int("num_probes", num_probes, 1)
  grid = jnp.asarray(grid)
  if grid.ndim != 1 or grid.size < 2 or not bool(jnp.all(jnp.diff(grid) > 0)):
    raise ValueError(f"grid must be 1-D, increasing, with >= 2 points; got shape {grid.shape}")
  if sigma is None:
    sigma = 2.0 * float(grid[1] - grid[0])
  if not sigma > 0:
    raise ValueError(f"sigma must be > 0, got {sigma!r}")

  def probe(k):
    r = lanczos(matvec, params, k, num_steps)
    theta, s = jnp.linalg.eigh(tridiagonal(r.alphas, r.betas))
    return theta, s[0] ** 2

  nodes, weights = jax.lax.map(probe, jax.random.split(key, num_probes))
  weights = weights / num_probes
  density = gaussian_kernel_density(grid.astype(nodes.dtype), nodes, weights, sigma)
  return density, nodes, weights


def bulk_edge(nodes: jax.Array, weights: jax.Array, mass: float = 0.99) -> float:
  """Upper edge of the spectrum's bulk: the ``mass`` quantile of the SLQ spectral measure.

  The smallest node ``t`` with ``sum_{theta_j <= t} w_j >= mass * sum w``. Outlier
  eigenvalues (a handful out of n) carry a mass of about (count / n), so for ``1 - mass``
  above that they lie beyond the edge (Ghorbani et al. 2019 compare the top eigenvalue with
  the bulk this way, by eye on the density; Papyan 2018).
  """
  if not 0.0 < mass <= 1.0:
    raise ValueError(f"mass must be in (0, 1], got {mass!r}")
  x = np.asarray(nodes, np.float64).ravel()
  w = np.asarray(weights, np.float64).ravel()
  order = np.argsort(x)
  cdf = np.cumsum(w[order]) / np.sum(w)
  return float(x[order][min(np.searchsorted(cdf, mass - 1e-12), x.size - 1)])
