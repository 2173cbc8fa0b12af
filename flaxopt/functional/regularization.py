"""Regularization math: parameter penalties, dropout and DropConnect masks.

Pure jnp functions; randomness only through an explicit ``key``.

Conventions:

* ``l1_penalty`` / ``l2_penalty`` are plain sums, ``sum |w|`` and ``sum w**2``,
  **without** a 1/2 factor: ``grad(l2_penalty)(w) = 2 w``. The training loss
  (``config.regularizer.l2 = lam``) adds ``lam / 2 * l2_penalty(params)``,
  whose gradient ``lam * w`` is what ``optim.add_l2(lam)`` adds and what
  PyTorch's ``SGD(weight_decay=lam)`` adds: one ``l2`` convention everywhere.
* Dropout and DropConnect are *inverted*: kept units/weights are scaled by
  ``1/keep`` at training time, so the expected training output equals the
  deterministic output and inference is the identity (the "mean rule" of the
  papers with the scaling moved to training time).

Registry family ``dropout`` (the penalties ``'l1'``/``'l2'`` are the optax
transforms of family ``penalty``, the augmentations family ``augment``):

* ``'dropout'`` -> ``fn(x, key, deterministic=False)``: ``F.dropout`` with
  ``rate`` bound.
* ``'dropconnect'`` -> ``fn(w, key, deterministic=False)``: ``F.dropconnect``
  with ``rate`` bound (a weight-mask function; ``fnn.DropConnectDense`` is the
  layer).
"""

from __future__ import annotations

import functools
import numbers
from typing import Any, Callable, Optional

import jax
import jax.numpy as jnp
import numpy as np

__all__ = [
    "l1_penalty",
    "l2_penalty",
    "dropout",
    "dropconnect",
    "dropconnect_moments",
    "dropconnect_gaussian_samples",
]

Array = jax.Array


def _tree_sum(fn: Callable[[Array], Array], params: Any) -> Array:
  leaves = [jnp.sum(fn(jnp.asarray(leaf))) for leaf in jax.tree_util.tree_leaves(params)]
  if not leaves:
    return jnp.zeros((), jnp.float32)
  return functools.reduce(jnp.add, leaves)


def l1_penalty(params: Any) -> Array:
  """L1 penalty ``sum_i |w_i|`` over every leaf of a pytree.

  Formula: ``R_1(w) = sum |w|``; its subgradient is ``sign(w)`` (0 at 0).
  Lasso penalty (Tibshirani, 1996). ``None`` leaves are skipped; an empty tree
  gives 0. The result has the (promoted) dtype of the leaves.

  Args:
    params: a pytree of arrays.

  Returns:
    A scalar.
  """
  return _tree_sum(jnp.abs, params)


def l2_penalty(params: Any) -> Array:
  """L2 penalty ``sum_i w_i**2`` over every leaf of a pytree (no 1/2 factor).

  Formula: ``R_2(w) = sum w**2``, so ``grad R_2 = 2 w``. Weight decay / ridge
  (Krogh & Hertz, 1992). ``loss + lam / 2 * l2_penalty(params)`` (the
  training loss with ``regularizer.l2 = lam``) matches
  ``optax.chain(optim.add_l2(lam), opt)`` and PyTorch's ``weight_decay=lam``:
  each adds ``lam * w`` to the gradient.

  Args:
    params: a pytree of arrays.

  Returns:
    A scalar.
  """
  return _tree_sum(jnp.square, params)


def _check_rate(rate: Any) -> None:
  """Raises ValueError unless a concrete ``rate`` lies in [0, 1)."""
  if isinstance(rate, bool) or not isinstance(rate, (numbers.Real, jax.Array, np.ndarray)):
    raise ValueError(f"rate must be a number in [0, 1), got {rate!r}.")
  try:
    value = float(rate)
  except (TypeError, jax.errors.ConcretizationTypeError):
    return  # A traced rate: cannot be checked at trace time.
  if not 0.0 <= value < 1.0:
    raise ValueError(f"rate must be in [0, 1), got {rate!r}.")


def _is_zero(rate: Any) -> bool:
  try:
    return float(rate) == 0.0
  except (TypeError, jax.errors.ConcretizationTypeError):
    return False


def _inverted_mask(x: Array, rate: Any, key: Optional[Array]) -> Array:
  if key is None:
    raise ValueError("key is None but deterministic=False; pass a PRNG key.")
  keep = 1.0 - rate
  mask = jax.random.bernoulli(key, keep, x.shape)
  return jnp.where(mask, x / jnp.asarray(keep, x.dtype), jnp.zeros((), x.dtype))


def dropout(x: Array, rate: float, key: Optional[Array],
            deterministic: bool = False) -> Array:
  """Inverted dropout: zero each entry with probability ``rate``, scale the rest.

  Formula: ``y = m * x / (1 - rate)`` with ``m ~ Bernoulli(1 - rate)`` i.i.d.
  per entry, so ``E[y] = x`` and inference is the identity.
  Srivastava et al., 2014, "Dropout: a simple way to prevent neural networks
  from overfitting" (JMLR). The paper scales weights by ``p = 1 - rate`` at
  test time; the inverted form (as in PyTorch and flax) scales at training
  time instead.

  Args:
    x: input array, any shape and float dtype (kept).
    rate: drop probability in [0, 1).
    key: PRNG key; may be None when ``deterministic`` or ``rate == 0``.
    deterministic: if True, return ``x`` unchanged.

  Returns:
    Array of ``x``'s shape and dtype.

  Raises:
    ValueError: ``rate`` outside [0, 1), or a missing key.
  """
  _check_rate(rate)
  if deterministic or _is_zero(rate):
    return x
  return _inverted_mask(x, rate, key)


def dropconnect(w: Array, rate: float, key: Optional[Array],
                deterministic: bool = False) -> Array:
  """DropConnect weight mask (inverted): zero each weight with probability ``rate``.

  Formula: ``W~ = M * W / (1 - rate)``, ``M_ij ~ Bernoulli(1 - rate)``;
  a layer then computes ``a(W~ v)``. Wan et al., 2013, "Regularization of
  neural networks using DropConnect" (ICML). The paper uses unscaled masks
  (``M * W``) and infers with ``p W v``, ``p = 1 - rate``; with the inverted
  mask here ``E[W~] = W``, so the mean inference rule is plain ``W v``.
  Mathematically the same op as ``dropout`` applied to a weight array; it
  exists for the name and the docs.

  Args:
    w: weight array (e.g. a Dense kernel ``(in, out)``), any float dtype.
    rate: drop probability in [0, 1).
    key: PRNG key; may be None when ``deterministic`` or ``rate == 0``.
    deterministic: if True, return ``w`` unchanged (mean rule).

  Returns:
    Array of ``w``'s shape and dtype.
  """
  _check_rate(rate)
  if deterministic or _is_zero(rate):
    return w
  return _inverted_mask(w, rate, key)


def dropconnect_moments(x: Array, w: Array, rate: float) -> tuple[Array, Array]:
  """Mean and variance of DropConnect pre-activations ``u = x @ W~``.

  With the inverted mask ``W~ = M * W / p``, ``p = 1 - rate``:
  ``E[u] = x @ W`` and ``Var[u] = (1 - p) / p * (x * x) @ (W * W)``
  (independent Bernoulli weights). In the paper's unscaled convention this is
  ``N(p W v, p (1 - p) (W * W)(v * v))`` (Wan et al., 2013, Sec. 3), divided
  by ``p`` in mean and ``p**2`` in variance.

  Args:
    x: inputs ``(..., in)``.
    w: kernel ``(in, out)``.
    rate: drop probability in [0, 1).

  Returns:
    ``(mean, var)``, each ``(..., out)``.
  """
  _check_rate(rate)
  keep = 1.0 - rate
  mean = x @ w
  var = ((1.0 - keep) / keep) * (jnp.square(x) @ jnp.square(w))
  return mean, var.astype(mean.dtype)


def dropconnect_gaussian_samples(x: Array, w: Array, rate: float, key: Array,
                                 num_samples: int) -> Array:
  """Samples of DropConnect pre-activations from the moment-matched Gaussian.

  ``u_s ~ N(E[u], Var[u])`` with the moments of ``dropconnect_moments``; the
  paper's inference rule (Wan et al., 2013, Alg. 2) applies the activation to
  each sample and averages: ``r = mean_s a(u_s)``.

  Args:
    x: inputs ``(..., in)``.
    w: kernel ``(in, out)``.
    rate: drop probability in [0, 1).
    key: PRNG key.
    num_samples: number of Gaussian samples (>= 1).

  Returns:
    ``(num_samples, ..., out)`` sampled pre-activations (no bias).
  """
  if isinstance(num_samples, bool) or not isinstance(num_samples, int) or num_samples < 1:
    raise ValueError(f"num_samples must be a positive int, got {num_samples!r}.")
  mean, var = dropconnect_moments(x, w, rate)
  eps = jax.random.normal(key, (num_samples,) + mean.shape, mean.dtype)
  return mean + jnp.sqrt(var) * eps


# --- registry (family ``dropout``) -------------------------------------------


def _dropout_fn(rate: float) -> Callable[..., Array]:
  """``fn(x, key, deterministic=False)``: ``dropout`` with ``rate`` bound."""
  _check_rate(rate)

  def fn(x: Array, key: Optional[Array], deterministic: bool = False) -> Array:
    return dropout(x, rate, key, deterministic)

  return fn


def _dropconnect_fn(rate: float) -> Callable[..., Array]:
  """``fn(w, key, deterministic=False)``: ``dropconnect`` with ``rate`` bound."""
  _check_rate(rate)

  def fn(w: Array, key: Optional[Array], deterministic: bool = False) -> Array:
    return dropconnect(w, rate, key, deterministic)

  return fn


REGISTRY: dict[str, Callable[..., Any]] = {
    "dropout": _dropout_fn,
    "dropconnect": _dropconnect_fn,
}
