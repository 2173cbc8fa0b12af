"""Signal propagation through deep MLPs: per-layer statistics of activations and gradients.

Shared by the reproductions of Glorot & Bengio 2010, He et al. 2015 and Klambauer et al. 2017
(what every script shares, data loading, plots and the command line, is experiments/common.py).
Small pure functions (numpy / jnp); ``layer_stats`` lives in ``flaxopt.training.diagnostics``
(the per-layer training diagnostics) and is re-exported here.

The deep MLP here is plain jnp so that 100 layers compile quickly: the equal-width hidden
layers are stacked and run with ``lax.scan``::

  s_1 = x W_in + b_in,  h_l = act(s_l),  s_{l+1} = h_l W_l + b_l,  logits = h_L W_out + b_out.

``s_l`` are the pre-activations ("signals") and ``dLoss/ds_l`` the back-propagated gradients;
both are returned per layer by ``forward_and_backward``.
"""

from __future__ import annotations

import functools
from typing import Any, Callable, Mapping, Optional

import jax
import jax.numpy as jnp
import optax

from flaxopt.training.diagnostics import layer_stats  # pylint: disable=unused-import

Array = jax.Array
Params = dict[str, Array]


def init_deep_mlp(key: Array, in_dim: int, width: int, depth: int, out_dim: int,
                  kernel_init: Callable[..., Array], *, dtype: Any = jnp.float32) -> Params:
  """``depth`` hidden layers of ``width`` units; kernels from ``kernel_init``, zero biases."""
  if depth < 1:
    raise ValueError(f"depth must be >= 1, got {depth!r}.")
  k_in, k_hidden, k_out = jax.random.split(key, 3)
  # Eagerly, layer by layer: the initializers' random draws are jitted per shape inside
  # jax.random, so every initializer and every call with the same shapes reuses them.
  hidden = [kernel_init(k, (width, width), dtype) for k in jax.random.split(k_hidden, depth - 1)]
  w_hidden = jnp.stack(hidden) if hidden else jnp.zeros((0, width, width), dtype)
  return {
      "w_in": kernel_init(k_in, (in_dim, width), dtype),
      "b_in": jnp.zeros((width,), dtype),
      "w_hidden": w_hidden,
      "b_hidden": jnp.zeros((depth - 1, width), dtype),
      "w_out": kernel_init(k_out, (width, out_dim), dtype),
      "b_out": jnp.zeros((out_dim,), dtype),
  }


@functools.partial(jax.jit, static_argnums=2)
def forward(params: Params, x: Array, activation: Callable[[Array], Array]) -> Array:
  """The stacked pre-activations ``s`` (depth, N, width) of ``deep_mlp_apply`` (jitted)."""
  return deep_mlp_apply(params, x, activation)[1]


def deep_mlp_apply(params: Params, x: Array, activation: Callable[[Array], Array],
                   perturbation: Optional[Array] = None) -> tuple[Array, Array]:
  """Logits and the stacked pre-activations ``s`` (depth, N, width).

  ``perturbation`` (same shape as ``s``) is added to each pre-activation: its gradient is
  ``dLoss/ds`` (zeros leave the output unchanged).
  """
  depth = params["w_hidden"].shape[0] + 1
  x = x.reshape(x.shape[0], -1)
  width = params["w_in"].shape[1]
  if perturbation is None:
    perturbation = jnp.zeros((depth, x.shape[0], width), x.dtype)
  s = x @ params["w_in"] + params["b_in"] + perturbation[0]

  def layer(s, inputs):
    w, b, p = inputs
    s_next = activation(s) @ w + b + p
    return s_next, s_next

  s_last, s_rest = jax.lax.scan(layer, s, (params["w_hidden"], params["b_hidden"],
                                           perturbation[1:]))
  signals = jnp.concatenate([s[None], s_rest], axis=0)
  logits = activation(s_last) @ params["w_out"] + params["b_out"]
  return logits, signals


def cross_entropy(logits: Array, labels: Array) -> Array:
  """Mean softmax cross-entropy over the batch."""
  return jnp.mean(optax.softmax_cross_entropy_with_integer_labels(logits, labels))


@functools.partial(jax.jit, static_argnums=3)
def forward_and_backward(params: Params, x: Array, y: Array,
                         activation: Callable[[Array], Array]) -> Mapping[str, Array]:
  """Per-layer pre-activations, activations and back-propagated gradients at ``params``.

  Returns a dict of stacked arrays (depth, N, width): ``signal`` (s_l), ``activation``
  (act(s_l)) and ``grad`` (dL/ds_l with L the *summed* cross-entropy, i.e. per-example
  gradients), plus ``loss`` (the mean cross-entropy).
  """
  depth = params["w_hidden"].shape[0] + 1
  zeros = jnp.zeros((depth, x.shape[0], params["w_in"].shape[1]), x.dtype)

  def loss_fn(p):
    logits, signals = deep_mlp_apply(params, x, activation, p)
    return cross_entropy(logits, y) * x.shape[0], signals

  (loss, signals), grads = jax.value_and_grad(loss_fn, has_aux=True)(zeros)
  return {"signal": signals, "activation": activation(signals), "grad": grads,
          "loss": loss / x.shape[0]}
