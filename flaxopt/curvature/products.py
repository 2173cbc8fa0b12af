"""Curvature matrix-vector products over pytrees: Hessian, generalized Gauss-Newton, Fisher.

All products are matrix-free (never form the matrix) and jit-able; ``v`` and the results are
pytrees shaped like ``params``. ``loss_fn(params, batch) -> scalar`` is the mean loss over the
batch. Models with BatchNorm enter in train mode (batch statistics, so the loss couples the
examples of a batch and that coupling is part of the curvature) with dropout off: build
``loss_fn``/``apply_fn`` that way (``flaxopt.training.curvature_log.model_loss_fn`` does).
"""

from __future__ import annotations

from typing import Any, Callable, Sequence

import jax
import jax.numpy as jnp

from flaxopt.curvature import _checks

__all__ = ["hvp", "ggn_vp", "fisher_vp", "hessian_matvec", "mean_loss_and_grad",
           "batch_size", "FISHER_VARIANTS"]

PyTree = Any
FISHER_VARIANTS = ("empirical", "sampled")


def hvp(loss_fn: Callable[[PyTree, Any], jax.Array], params: PyTree, batch: Any,
        v: PyTree) -> PyTree:
  """Hessian-vector product ``H v``, ``H = d^2 loss_fn(params, batch) / d params^2``.

  Forward-over-reverse: ``H v = d/dt grad(loss)(params + t v) |_{t=0}``, a ``jax.jvp`` of
  ``jax.grad`` (Pearlmutter 1994, "Fast exact multiplication by the Hessian"); about the cost
  of two gradients.

  Raises:
    ValueError: ``loss_fn`` does not return a scalar, or ``v`` is not shaped like ``params``.
  """
  _checks.check_like("v", v, params)
  _checks.check_scalar_output("loss_fn", loss_fn, params, batch)
  grad_fn = jax.grad(lambda p: loss_fn(p, batch))
  return jax.jvp(grad_fn, (params,), (v,))[1]


def ggn_vp(apply_fn: Callable[[PyTree, Any], Any], output_loss_fn: Callable[[Any, Any], jax.Array],
           params: PyTree, batch: Any, v: PyTree) -> PyTree:
  """Generalized Gauss-Newton product ``G v = J^T H_out J v``.

  ``z = apply_fn(params, batch)`` are the model's outputs (e.g. logits), ``loss =
  output_loss_fn(z, batch)`` a scalar, ``J = dz/dparams`` and ``H_out = d^2 loss / dz^2``.
  ``G`` drops the term ``sum_i (dloss/dz_i) d^2 z_i / dparams^2`` of the Hessian, so it is
  positive semi-definite for a convex ``output_loss_fn`` (Schraudolph 2002, "Fast curvature
  matrix-vector products for second-order gradient descent"; Martens 2010, "Deep learning via
  Hessian-free optimization"). Computed as a jvp (``J v``), an HVP of the output loss, and a
  vjp (``J^T``). Equals the Hessian when ``apply_fn`` is linear in ``params``.

  Raises:
    ValueError: ``output_loss_fn`` does not return a scalar, or ``v`` is not shaped like
      ``params``.
  """
  _checks.check_like("v", v, params)
  outputs = jax.eval_shape(apply_fn, params, batch)
  _checks.check_scalar_output("output_loss_fn", output_loss_fn, outputs, batch)
  z, jv = jax.jvp(lambda p: apply_fn(p, batch), (params,), (v,))
  hjv = jax.jvp(jax.grad(lambda o: output_loss_fn(o, batch)), (z,), (jv,))[1]
  _, vjp_fn = jax.vjp(lambda p: apply_fn(p, batch), params)
  return vjp_fn(hjv)[0]


def fisher_vp(apply_fn: Callable[[PyTree, Any], jax.Array], params: PyTree, batch: Any,
              v: PyTree, *, variant: str = "sampled", key: jax.Array | None = None,
              num_samples: int = 1, label_key: str = "y") -> PyTree:
  """Fisher-vector product ``F v`` of the mean softmax cross-entropy over the batch.

  ``logits = apply_fn(params, batch)`` of shape (N, C); labels ``batch[label_key]`` (N,) ints.
  With ``g_i = J_i^T r_i`` the gradient of example i's loss, ``r_i = softmax(z_i) - e_{y_i}``:

  * ``variant='empirical'``: ``F v = (1/N) sum_i g_i (g_i . v)`` at the data's labels
    ``y_i`` (the "empirical Fisher"). It is *not* the GGN/Fisher in general, and can be a poor
    curvature proxy away from the optimum (Kunstner, Hennig & Balles 2019, "Limitations of the
    empirical Fisher approximation for natural gradient descent").
  * ``variant='sampled'``: the same with ``y_i ~ softmax(z_i)`` drawn from the model
    (``num_samples`` draws per example, averaged; ``key`` required). Its expectation is the
    true Fisher ``(1/N) sum_i J_i^T (diag(p_i) - p_i p_i^T) J_i``, which for softmax
    cross-entropy is exactly the GGN (Martens 2014, "New insights and perspectives on the
    natural gradient method", Sec. 9.2).

  Computed without per-example gradients: ``u = J v`` (one jvp), weights ``w_i = r_i . u_i``,
  then ``J^T (w r) / N`` (one vjp).

  Raises:
    ValueError: unknown ``variant``, ``v`` not shaped like ``params``, logits not (N, C),
      ``num_samples < 1``, or ``variant='sampled'`` without ``key``.
  """
  if variant not in FISHER_VARIANTS:
    raise ValueError(f"variant must be one of {FISHER_VARIANTS}, got {variant!r}")
  _checks.check_like("v", v, params)
  num_samples = _checks.check_min_int("num_samples", num_samples, 1)
  if variant == "sampled" and key is None:
    raise ValueError("key is required for variant='sampled' (labels drawn from the model)")
  shape = jax.eval_shape(apply_fn, params, batch).shape
  if len(shape) != 2:
    raise ValueError(f"apply_fn must return logits of shape (N, C), got shape {shape}")
  n, c = shape
  z, jv = jax.jvp(lambda p: apply_fn(p, batch), (params,), (v,))
  probs = jax.nn.softmax(jax.lax.stop_gradient(z), axis=-1)
  if variant == "empirical":
    labels = jnp.asarray(batch[label_key])[None]  # (1, N)
  else:
    labels = jax.random.categorical(key, jnp.log(probs), axis=-1, shape=(num_samples, n))
  r = probs[None] - jax.nn.one_hot(labels, c, dtype=z.dtype)  # (S, N, C)
  w = jnp.sum(r * jv[None], axis=-1, keepdims=True)  # (S, N, 1)
  cotangent = jnp.mean(w * r, axis=0) / n
  _, vjp_fn = jax.vjp(lambda p: apply_fn(p, batch), params)
  return vjp_fn(cotangent.astype(z.dtype))[0]


def batch_size(batch: Any) -> int:
  """The leading dimension of the first leaf of ``batch`` (its number of examples)."""
  leaves = jax.tree.leaves(batch)
  if not leaves or not jnp.shape(leaves[0]):
    raise ValueError("batches must hold arrays with a leading example axis")
  return int(jnp.shape(leaves[0])[0])


def _weights(batches: Sequence[Any]) -> list[float]:
  if isinstance(batches, dict) or not isinstance(batches, (list, tuple)) or not batches:
    raise ValueError(f"batches must be a non-empty list or tuple of batches, got "
                     f"{type(batches).__name__}")
  sizes = [batch_size(b) for b in batches]
  total = float(sum(sizes))
  return [s / total for s in sizes]


def hessian_matvec(loss_fn: Callable[[PyTree, Any], jax.Array], params: PyTree,
                   batches: Sequence[Any]) -> Callable[[PyTree], PyTree]:
  """``v -> H v`` for the mean loss over a dataset given as a list of batches.

  ``H = sum_b (n_b / N) H_b`` with ``H_b`` the Hessian of ``loss_fn(params, batch_b)`` (a
  mean over the batch's ``n_b`` examples) and ``N = sum_b n_b``: the Hessian of the dataset's
  mean loss, accumulated one batch (chunk) at a time so memory is that of one batch. Each
  chunk's product is jitted once per batch shape; arrays sharded over a device mesh stay
  sharded (XLA inserts the cross-device reductions). With BatchNorm in train mode each batch's
  statistics are its own, so the result depends on how the data is batched.
  """
  weights = _weights(batches)
  _checks.check_scalar_output("loss_fn", loss_fn, params, batches[0])
  chunk = jax.jit(lambda p, b, v: hvp(loss_fn, p, b, v))

  def matvec(v: PyTree) -> PyTree:
    _checks.check_like("v", v, params)
    total = None
    for w, b in zip(weights, batches):
      hv = jax.tree.map(lambda x, w=w: w * x, chunk(params, b, v))
      total = hv if total is None else jax.tree.map(jnp.add, total, hv)
    return total

  return matvec


def mean_loss_and_grad(loss_fn: Callable[[PyTree, Any], jax.Array], params: PyTree,
                       batches: Sequence[Any]) -> tuple[jax.Array, PyTree]:
  """Dataset mean loss and its gradient, batches weighted by size (as ``hessian_matvec``)."""
  weights = _weights(batches)
  step = jax.jit(jax.value_and_grad(loss_fn))
  loss, grad = 0.0, None
  for w, b in zip(weights, batches):
    l, g = step(params, b)
    loss = loss + w * l
    g = jax.tree.map(lambda x, w=w: w * x, g)
    grad = g if grad is None else jax.tree.map(jnp.add, grad, g)
  return loss, grad
