"""Training-dynamics statistics: the gradient noise scale and update-to-parameter ratios."""

from __future__ import annotations

from typing import Any, Callable, Sequence

import jax
import jax.numpy as jnp

from flaxopt.curvature import _checks

__all__ = ["per_batch_gradients", "gradient_noise_scale", "update_ratios"]

PyTree = Any


def _sq_norm(tree: PyTree) -> jax.Array:
  return sum(jnp.sum(jnp.square(x)) for x in jax.tree.leaves(tree))


def per_batch_gradients(loss_fn: Callable[[PyTree, Any], jax.Array], params: PyTree,
                        batches: Sequence[Any]) -> PyTree:
  """``grad loss_fn(params, b)`` for each batch, stacked on a leading axis (len(batches), ...)."""
  if not isinstance(batches, (list, tuple)) or not batches:
    raise ValueError(f"batches must be a non-empty list or tuple, got {type(batches).__name__}")
  grad = jax.jit(jax.grad(loss_fn))
  grads = [grad(params, b) for b in batches]
  return jax.tree.map(lambda *g: jnp.stack(g), *grads)


def gradient_noise_scale(per_batch_grads: PyTree, batch_size: int) -> dict[str, jax.Array]:
  """The simple noise scale ``B_simple = tr(Sigma) / |G|^2`` from K per-batch gradients.

  McCandlish, Kaplan, Amodei & OpenAI Dota Team 2018, "An empirical model of large-batch
  training", App. A.1: with ``E|G_B|^2 = |G|^2 + tr(Sigma)/B``, two batch sizes give unbiased
  estimates. Here ``B_small = batch_size`` (each of the K gradients, ``|G_small|^2`` their
  mean squared norm) and ``B_big = K * batch_size`` (their mean):

    ``|G|^2 ~ (B_big |G_big|^2 - B_small |G_small|^2) / (B_big - B_small)``
    ``tr(Sigma) ~ (|G_small|^2 - |G_big|^2) / (1/B_small - 1/B_big)``

  ``Sigma`` is the per-example gradient covariance. The ratio of the two estimates is
  biased (and can be negative when ``|G|^2`` is estimated below 0: too few batches); the
  paper averages numerator and denominator over many steps before dividing.

  Args:
    per_batch_grads: a pytree whose leaves have a leading axis of K >= 2 batches (as
      ``per_batch_gradients`` returns), each the mean gradient over ``batch_size`` examples.
    batch_size: examples per batch.

  Returns:
    ``{'noise_scale', 'trace_cov', 'grad_norm_sq'}`` (scalars).

  Raises:
    ValueError: fewer than 2 batches, leaves with different K, or ``batch_size < 1``.
  """
  b = _checks.check_min_int("batch_size", batch_size, 1)
  counts = {jnp.shape(x)[0] if jnp.ndim(x) else 0 for x in jax.tree.leaves(per_batch_grads)}
  if len(counts) != 1 or min(counts) < 2:
    raise ValueError(f"per_batch_grads needs one leading batch axis of size >= 2, got {counts}")
  k = counts.pop()
  small = jnp.mean(jax.vmap(_sq_norm)(per_batch_grads))
  big = _sq_norm(jax.tree.map(lambda g: jnp.mean(g, axis=0), per_batch_grads))
  b_small, b_big = float(b), float(k * b)
  grad_norm_sq = (b_big * big - b_small * small) / (b_big - b_small)
  trace_cov = (small - big) / (1.0 / b_small - 1.0 / b_big)
  return {"noise_scale": trace_cov / grad_norm_sq, "trace_cov": trace_cov,
          "grad_norm_sq": grad_norm_sq}


def update_ratios(updates: PyTree, params: PyTree) -> dict[str, jax.Array]:
  """Per parameter array ``||update|| / ||param||`` (Frobenius norms), keyed by 'layer/name'.

  The relative step size per layer that training heuristics watch (a ratio near 1e-3 is the
  rule of thumb in Karpathy's "CS231n" notes; You, Gitman & Ginsburg 2017, LARS, set it
  per layer). A zero parameter array gives ``inf`` (or NaN for a zero update).
  """
  _checks.check_like("updates", updates, params)
  flat_u = jax.tree_util.tree_flatten_with_path(updates)[0]
  flat_p = jax.tree.leaves(params)
  return {"/".join(str(getattr(k, "key", getattr(k, "idx", k))) for k in path):
          jnp.linalg.norm(jnp.ravel(u)) / jnp.linalg.norm(jnp.ravel(p))
          for (path, u), p in zip(flat_u, flat_p)}
