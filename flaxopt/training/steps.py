"""Pure train and eval steps: softmax cross-entropy, optional L1/L2 penalties, any optax tx.

Regularization is loss-based: ``loss = CE + l1 * sum|w| + l2 / 2 * sum w**2`` over every
parameter (biases and norm scales included), so the penalty is part of ``value`` and
``value_fn`` and second-order methods and line searches see the objective they minimise.
``l2`` follows the 1/2 convention (flax's imagenet example, init2winit): the gradient gains
``l2 * w``, as with ``optim.add_l2(l2)`` chained before the optimizer and with PyTorch's
``weight_decay=l2``.
"""

from __future__ import annotations

from typing import Any, Callable, Mapping, Optional

import jax
import jax.numpy as jnp
import optax

from flaxopt.training.state import TrainState

__all__ = ["cross_entropy", "eval_step", "regularized_loss", "step_rngs", "train_step"]

RNG_STREAMS = ("dropout", "rrelu", "pool")
Batch = Mapping[str, jax.Array]


def cross_entropy(logits: jax.Array, labels_onehot: jax.Array) -> jax.Array:
  """Per-example softmax cross-entropy, ``-sum_c y_c log softmax(z)_c`` (in float32, or in
  the logits' dtype when wider: float64 runs stay float64)."""
  dtype = jnp.promote_types(logits.dtype, jnp.float32)
  return optax.softmax_cross_entropy(logits.astype(dtype), labels_onehot.astype(dtype))


def step_rngs(rng: jax.Array, step: jax.Array, axis_name: Optional[str] = None) -> dict:
  """Keys for the model's rng streams and augmentation at ``step``: ``fold_in(rng, step)``.

  Under pmap each device also folds in its axis index, so devices draw different masks.
  """
  key = jax.random.fold_in(rng, step)
  if axis_name is not None:
    key = jax.random.fold_in(key, jax.lax.axis_index(axis_name))
  keys = jax.random.split(key, len(RNG_STREAMS) + 1)
  return {**dict(zip(RNG_STREAMS, keys[:-1])), "augment": keys[-1]}


def regularized_loss(params: Any, l1: Any = 0.0, l2: Any = 0.0) -> jax.Array:
  """``l1 * F.l1_penalty(params) + l2 / 2 * F.l2_penalty(params)``.

  Its gradient is ``l1 * sign(w) + l2 * w``. A term whose weight is a Python 0 is skipped;
  array weights (traced, e.g. stacked runs) are always applied.
  """
  import flaxopt.functional as F  # pylint: disable=g-import-not-at-top
  total = jnp.zeros((), jnp.float32)
  if isinstance(l1, jax.Array) or l1:
    total = total + l1 * F.l1_penalty(params)
  if isinstance(l2, jax.Array) or l2:
    total = total + 0.5 * l2 * F.l2_penalty(params)
  return total


def _pmean(tree: Any, axis_name: Optional[str]) -> Any:
  return tree if axis_name is None else jax.lax.pmean(tree, axis_name)


def train_step(state: TrainState, batch: Batch, *, apply_fn: Callable[..., Any],
               tx: optax.GradientTransformation, num_classes: int, l1: float = 0.0,
               l2: float = 0.0, augment_fn: Optional[Callable[..., Any]] = None,
               axis_name: Optional[str] = None) -> tuple[TrainState, dict]:
  """One optimizer step on ``batch = {'x', 'y'}``; returns the new state and batch metrics.

  ``loss(params) = mean CE(model(x), y) + penalties``; gradients (and, with ``axis_name``
  under pmap, the loss and BatchNorm statistics) are averaged over devices. The optimizer is
  always called as ``with_extra_args_support(tx).update(grads, opt_state, params,
  value=loss, grad=grads, value_fn=loss_of_params)`` so second-order methods work.
  Metrics: ``loss`` (with penalties), ``ce_loss``, ``accuracy``.
  """
  rngs = step_rngs(state.rng, state.step, axis_name)
  x, y = batch["x"], batch["y"]
  y1h = jax.nn.one_hot(y, num_classes, dtype=jnp.float32)
  if augment_fn is not None:
    x, y1h = augment_fn(rngs["augment"], x, y1h)
  model_rngs = {k: rngs[k] for k in RNG_STREAMS}

  def forward(params):
    variables = {"params": params, "batch_stats": state.batch_stats}
    logits, updates = apply_fn(variables, x, train=True, rngs=model_rngs,
                               mutable=["batch_stats"])
    ce = jnp.mean(cross_entropy(logits, y1h))
    loss = ce + regularized_loss(params, l1, l2)
    return loss, (ce, logits, updates.get("batch_stats", {}))

  def value_fn(params):
    return _pmean(forward(params)[0], axis_name)

  (loss, (ce, logits, batch_stats)), grads = jax.value_and_grad(forward, has_aux=True)(
      state.params)
  grads = _pmean(grads, axis_name)
  loss = _pmean(loss, axis_name)
  batch_stats = _pmean(batch_stats, axis_name)
  tx = optax.with_extra_args_support(tx)
  updates, opt_state = tx.update(grads, state.opt_state, state.params, value=loss,
                                 grad=grads, value_fn=value_fn)
  params = optax.apply_updates(state.params, updates)
  accuracy = jnp.mean((jnp.argmax(logits, -1) == y).astype(jnp.float32))
  metrics = {"loss": loss, "ce_loss": _pmean(ce, axis_name),
             "accuracy": _pmean(accuracy, axis_name)}
  new_state = state.replace(params=params, opt_state=opt_state, batch_stats=batch_stats,
                            step=state.step + 1)
  return new_state, metrics


def eval_step(params: Any, batch_stats: Any, batch: Batch, *, apply_fn: Callable[..., Any],
              num_classes: int, axis_name: Optional[str] = None) -> dict:
  """Sums over a masked batch ``{'x', 'y', 'mask'}``: ``loss_sum``, ``correct``, ``count``.

  The model runs in inference mode (running BatchNorm statistics, no dropout). Under pmap the
  sums are ``psum``-ed over ``axis_name``; divide ``loss_sum`` and ``correct`` by ``count``.
  """
  logits = apply_fn({"params": params, "batch_stats": batch_stats}, batch["x"], train=False)
  mask = batch["mask"].astype(jnp.float32)
  ce = cross_entropy(logits, jax.nn.one_hot(batch["y"], num_classes, dtype=jnp.float32))
  correct = (jnp.argmax(logits, -1) == batch["y"]).astype(jnp.float32)
  sums = {"loss_sum": jnp.sum(ce * mask), "correct": jnp.sum(correct * mask),
          "count": jnp.sum(mask)}
  return sums if axis_name is None else jax.lax.psum(sums, axis_name)
