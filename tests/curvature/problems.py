"""Small float64 test problems (an MLP and a 1-D CNN of a few hundred parameters) with dense
references built independently of flaxopt.curvature: ``jax.hessian`` / ``jax.jacobian`` on the
flattened parameters."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.flatten_util import ravel_pytree

NUM_CLASSES = 3


def mlp_init(key, d_in=5, width=20):
  k1, k2, k3, k4 = jax.random.split(key, 4)
  return {"dense_0": {"kernel": jax.random.normal(k1, (d_in, width)) / np.sqrt(d_in),
                      "bias": 0.1 * jax.random.normal(k3, (width,))},
          "head": {"kernel": jax.random.normal(k2, (width, NUM_CLASSES)) / np.sqrt(width),
                   "bias": 0.1 * jax.random.normal(k4, (NUM_CLASSES,))}}


def mlp_apply(params, batch):
  h = jnp.tanh(batch["x"].reshape(batch["x"].shape[0], -1) @ params["dense_0"]["kernel"]
               + params["dense_0"]["bias"])
  return h @ params["head"]["kernel"] + params["head"]["bias"]


def cnn_init(key, length=10, c_in=2, channels=4):
  k1, k2, k3 = jax.random.split(key, 3)
  flat = (length - 2) * channels
  return {"conv": {"kernel": jax.random.normal(k1, (3, c_in, channels)) / np.sqrt(3 * c_in),
                   "bias": 0.1 * jax.random.normal(k3, (channels,))},
          "head": {"kernel": jax.random.normal(k2, (flat, NUM_CLASSES)) / np.sqrt(flat),
                   "bias": jnp.zeros(NUM_CLASSES)}}


def cnn_apply(params, batch):
  h = jax.lax.conv_general_dilated(batch["x"], params["conv"]["kernel"], (1,), "VALID",
                                   dimension_numbers=("NWC", "WIO", "NWC"))
  h = jnp.tanh(h + params["conv"]["bias"])
  return h.reshape(h.shape[0], -1) @ params["head"]["kernel"] + params["head"]["bias"]


def cross_entropy(logits, batch):
  return jnp.mean(optax.softmax_cross_entropy_with_integer_labels(logits, batch["y"]))


def make_problem(name, key=0, n=12):
  """(params, batch, apply_fn, loss_fn) for 'mlp' (183 params) or 'cnn' (127 params), float64."""
  k1, k2, k3 = jax.random.split(jax.random.PRNGKey(key), 3)
  if name == "mlp":
    params, apply_fn, x = mlp_init(k1), mlp_apply, jax.random.normal(k2, (n, 5))
  else:
    params, apply_fn, x = cnn_init(k1), cnn_apply, jax.random.normal(k2, (n, 10, 2))
  params = jax.tree.map(lambda a: jnp.asarray(a, jnp.float64), params)
  batch = {"x": jnp.asarray(x, jnp.float64), "y": jax.random.randint(k3, (n,), 0, NUM_CLASSES)}
  loss_fn = lambda p, b: cross_entropy(apply_fn(p, b), b)
  return params, batch, apply_fn, loss_fn


def dense_hessian(loss_fn, params, batch):
  flat, unravel = ravel_pytree(params)
  return np.asarray(jax.jit(jax.hessian(lambda f, b: loss_fn(unravel(f), b)))(flat, batch))


def dense_ggn(apply_fn, output_loss_fn, params, batch):
  """J^T H_out J from the explicit Jacobian (N*C, n) and output Hessian (N*C, N*C)."""
  flat, unravel = ravel_pytree(params)
  z = jax.jit(apply_fn)(params, batch)
  jac = np.asarray(jax.jit(jax.jacobian(lambda f, b: apply_fn(unravel(f), b)))(flat, batch))
  jac = jac.reshape(z.size, -1)
  h_out = np.asarray(jax.jit(jax.hessian(lambda o, b: output_loss_fn(o.reshape(z.shape), b)))(
      z.reshape(-1), batch))
  return jac.T @ h_out @ jac


def flat(tree):
  return np.asarray(ravel_pytree(tree)[0])
