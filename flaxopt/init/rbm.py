"""Restricted Boltzmann machines trained by contrastive divergence, and greedy MLP pre-training.

Hinton & Salakhutdinov, "Reducing the dimensionality of data with neural networks",
Science 313 (2006): a stack of RBMs is trained greedily, layer by layer, each on the hidden
probabilities of the one below, and the stacked weights initialize a deep network.
CD-k: Hinton, "Training products of experts by minimizing contrastive divergence",
Neural Computation 14 (2002); practical choices (weights N(0, 0.01^2), zero biases,
mean-field visible reconstructions, sampled binary hidden states) follow Hinton,
"A practical guide to training restricted Boltzmann machines", UTML TR 2010-003.

Energies (binary hidden ``h``, weights ``W`` of shape (num_visible, num_hidden)):

* Bernoulli-Bernoulli: ``E(v, h) = -b_v.v - b_h.h - v.W.h`` with ``v`` in {0, 1}
  (real data in [0, 1] are read as probabilities, as in the 2006 paper's MNIST).
* Gaussian-Bernoulli (unit variance, standardized data):
  ``E(v, h) = |v - b_v|^2 / 2 - b_h.h - v.W.h``.

In both, ``p(h_j = 1 | v) = sigmoid(b_h + v.W)``; ``E[v | h] = sigmoid(b_v + W.h)`` (Bernoulli)
or ``b_v + W.h`` (Gaussian).

Which layers ``pretrain_mlp`` initializes: the hidden Dense layers of an MLP, i.e. every layer
with a 2-D kernel except the last (the classifier keeps its ``model.init`` weights). Weights
become ``W`` and biases the hidden biases ``b_h`` of the matching RBM. Models with any other
kernel (convolutions) are refused with a ValueError instead of being half pre-trained.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any, Callable, Mapping, NamedTuple, Sequence

import flax
import jax
import jax.numpy as jnp

from flaxopt.init.lsuv import kernel_layers, module_params

__all__ = [
    "RBMParams", "VISIBLE_UNITS", "rbm_init", "hidden_probs", "visible_mean",
    "cd_gradients", "cd_update", "reconstruction_error", "train_rbm", "pretrain_stack",
    "pretrain_mlp", "PretrainReport",
]


class RBMParams(NamedTuple):
  """RBM parameters: ``w`` (num_visible, num_hidden), ``b_visible``, ``b_hidden``."""
  w: jax.Array
  b_visible: jax.Array
  b_hidden: jax.Array


def _bernoulli_mean(pre: jax.Array) -> jax.Array:
  return jax.nn.sigmoid(pre)


def _gaussian_mean(pre: jax.Array) -> jax.Array:
  return pre


# Visible unit type -> E[v | h] as a function of the visible pre-activation b_v + W.h.
VISIBLE_UNITS: Mapping[str, Callable[[jax.Array], jax.Array]] = {
    "bernoulli": _bernoulli_mean,
    "gaussian": _gaussian_mean,
}


def _check_visible(visible: str) -> None:
  if visible not in VISIBLE_UNITS:
    raise ValueError(
        f"Unknown RBM visible unit type {visible!r}; valid: {', '.join(VISIBLE_UNITS)}.")


def rbm_init(key: jax.Array, num_visible: int, num_hidden: int, *, stddev: float = 0.01,
             dtype: Any = jnp.float32) -> RBMParams:
  """Initial RBM parameters: ``W ~ N(0, stddev^2)``, zero biases (Hinton 2010, Sec. 8)."""
  if num_visible < 1 or num_hidden < 1:
    raise ValueError(f"RBM sizes must be >= 1, got num_visible={num_visible!r}, "
                     f"num_hidden={num_hidden!r}.")
  w = stddev * jax.random.normal(key, (num_visible, num_hidden), dtype)
  return RBMParams(w, jnp.zeros((num_visible,), dtype), jnp.zeros((num_hidden,), dtype))


def hidden_probs(params: RBMParams, v: jax.Array) -> jax.Array:
  """``p(h = 1 | v) = sigmoid(b_h + v W)``."""
  return jax.nn.sigmoid(v @ params.w + params.b_hidden)


def visible_mean(params: RBMParams, h: jax.Array, visible: str = "bernoulli") -> jax.Array:
  """``E[v | h]``: ``sigmoid(b_v + h W^T)`` (Bernoulli) or ``b_v + h W^T`` (Gaussian)."""
  _check_visible(visible)
  return VISIBLE_UNITS[visible](h @ params.w.T + params.b_visible)


def reconstruction_error(params: RBMParams, v: jax.Array, visible: str = "bernoulli") -> jax.Array:
  """Mean squared error of the mean-field reconstruction ``E[v | p(h | v)]`` of ``v``."""
  recon = visible_mean(params, hidden_probs(params, v), visible)
  return jnp.mean(jnp.square(v - recon))


def cd_gradients(params: RBMParams, v0: jax.Array, key: jax.Array, *, k: int = 1,
                 visible: str = "bernoulli") -> RBMParams:
  """CD-k estimate of the log-likelihood gradient (ascent direction), averaged over the batch.

  ``dW = <v h>_data - <v h>_k``, ``db_v = <v>_data - <v>_k``, ``db_h = <h>_data - <h>_k``,
  where the k-step chain alternates sampled binary hidden states and mean-field visible
  reconstructions, and the statistics use hidden probabilities (Hinton 2002; 2010, Sec. 3).
  """
  _check_visible(visible)
  if not (isinstance(k, int) and k >= 1):
    raise ValueError(f"CD-k needs an int k >= 1, got k={k!r}.")
  ph0 = hidden_probs(params, v0)

  def gibbs(carry, step_key):
    _, ph = carry
    h = jax.random.bernoulli(step_key, ph).astype(v0.dtype)
    vk = visible_mean(params, h, visible)
    return (vk, hidden_probs(params, vk)), None

  (vk, phk), _ = jax.lax.scan(gibbs, (v0, ph0), jax.random.split(key, k))
  n = v0.shape[0]
  return RBMParams(
      w=(v0.T @ ph0 - vk.T @ phk) / n,
      b_visible=jnp.mean(v0 - vk, axis=0),
      b_hidden=jnp.mean(ph0 - phk, axis=0))


def cd_update(params: RBMParams, v0: jax.Array, key: jax.Array, *, learning_rate: float,
              k: int = 1, visible: str = "bernoulli") -> RBMParams:
  """One CD-k step of gradient ascent: ``theta <- theta + learning_rate * cd_gradients``."""
  grads = cd_gradients(params, v0, key, k=k, visible=visible)
  return jax.tree_util.tree_map(lambda p, g: p + (learning_rate * g).astype(p.dtype),
                                params, grads)


@functools.partial(jax.jit, static_argnames=("num_hidden", "steps", "batch_size", "k",
                                             "visible"))
def _train_rbm(key, data, learning_rate, *, num_hidden, steps, batch_size, k, visible):
  init_key, loop_key = jax.random.split(key)
  params = rbm_init(init_key, data.shape[1], num_hidden, dtype=data.dtype)

  def step(params, step_key):
    batch_key, cd_key = jax.random.split(step_key)
    idx = jax.random.randint(batch_key, (batch_size,), 0, data.shape[0])
    batch = data[idx]
    error = reconstruction_error(params, batch, visible)
    params = cd_update(params, batch, cd_key, learning_rate=learning_rate, k=k, visible=visible)
    return params, error

  return jax.lax.scan(step, params, jax.random.split(loop_key, steps))


def train_rbm(key: jax.Array, data: jax.Array, num_hidden: int, *, steps: int = 1000,
              batch_size: int = 100, k: int = 1, learning_rate: float = 0.01,
              visible: str = "bernoulli") -> tuple[RBMParams, jax.Array]:
  """Trains one RBM on ``data`` (N, num_visible) by CD-k on random mini-batches (jitted scan).

  Returns the parameters and the mini-batch reconstruction error before each update
  (shape ``(steps,)``), which falls as training proceeds. Plain CD without the momentum and
  weight decay of the 2006 paper.
  """
  _check_visible(visible)
  for name, value in (("steps", steps), ("batch_size", batch_size), ("k", k)):
    if not (isinstance(value, int) and value >= 1):
      raise ValueError(f"train_rbm: {name} must be an int >= 1, got {value!r}.")
  if not learning_rate > 0:
    raise ValueError(f"train_rbm: learning_rate must be positive, got {learning_rate!r}.")
  data = jnp.asarray(data)
  if data.ndim != 2:
    raise ValueError(f"train_rbm: data must be (N, num_visible), got shape {data.shape}.")
  if visible == "bernoulli" and bool(jnp.any((data < 0) | (data > 1))):
    raise ValueError("train_rbm: Bernoulli visible units need data in [0, 1]; "
                     "use visible='gaussian' for standardized data.")
  return _train_rbm(key, data, learning_rate, num_hidden=num_hidden, steps=steps,
                    batch_size=batch_size, k=k, visible=visible)


def pretrain_stack(key: jax.Array, data: jax.Array, hidden_sizes: Sequence[int], *,
                   visible: str = "gaussian", **train_kwargs: Any
                   ) -> tuple[list[RBMParams], list[jax.Array]]:
  """Greedy layer-wise pre-training (Hinton & Salakhutdinov 2006).

  RBM ``i`` is trained on the hidden probabilities of RBM ``i-1`` (the first on ``data``, with
  ``visible`` units); every higher RBM is Bernoulli-Bernoulli. ``train_kwargs`` go to
  ``train_rbm``. Returns the RBMs and their reconstruction-error curves.
  """
  rbms, curves = [], []
  inputs = jnp.asarray(data)
  for i, (num_hidden, layer_key) in enumerate(zip(hidden_sizes,
                                                  jax.random.split(key, len(hidden_sizes)))):
    params, errors = train_rbm(layer_key, inputs, num_hidden,
                               visible=visible if i == 0 else "bernoulli", **train_kwargs)
    rbms.append(params)
    curves.append(errors)
    inputs = hidden_probs(params, inputs)
  return rbms, curves


@dataclasses.dataclass(frozen=True)
class PretrainReport:
  """Per pre-trained layer: its path, and the RBM reconstruction error first and last step."""
  path: tuple[str, ...]
  initial_error: float
  final_error: float


def _set_layer(params: Mapping[str, Any], path: Sequence[str], rbm: RBMParams) -> dict[str, Any]:
  node = dict(params)
  if len(path) > 1:
    node[path[0]] = _set_layer(node[path[0]], path[1:], rbm)
    return node
  layer = dict(node[path[0]])
  layer["kernel"] = rbm.w.astype(layer["kernel"].dtype)
  if "bias" in layer:
    layer["bias"] = rbm.b_hidden.astype(layer["bias"].dtype)
  node[path[0]] = layer
  return node


def pretrain_mlp(apply_fn: Callable[[Any, jax.Array], Any], variables: Mapping[str, Any],
                 x_batch: jax.Array, key: jax.Array, *, visible: str = "gaussian",
                 **train_kwargs: Any) -> tuple[Any, list[PretrainReport]]:
  """Initializes an MLP's hidden Dense layers from a greedily trained stack of RBMs.

  The layers are found in forward order (``flaxopt.init.lsuv.kernel_layers``); all but the
  last (the classifier) are replaced: ``kernel <- W_i``, ``bias <- b_hidden_i``. The RBMs are
  trained on ``x_batch`` flattened to (N, features) by ``pretrain_stack``.

  Raises:
    ValueError: when a layer's kernel is not 2-D (a conv model) or is weight-normalized
      (no ``kernel`` parameter), when the model has fewer
      than two Dense layers, or when the kernel shapes do not chain (input size, or a layer
      whose fan-in is not the previous layer's fan-out, e.g. maxout).
  """
  frozen = isinstance(variables, flax.core.FrozenDict)
  variables = flax.core.unfreeze(variables)
  params = variables["params"]
  paths = kernel_layers(apply_fn, variables, x_batch)
  for path in paths:
    if "kernel" not in module_params(params, path):
      raise ValueError(f"RBM pre-training sets Dense kernels; layer {'/'.join(path)} has "
                       f"params {sorted(module_params(params, path))} (weight norm?).")
  kernels = [module_params(params, p)["kernel"] for p in paths]
  for path, kernel in zip(paths, kernels):
    if kernel.ndim != 2:
      raise ValueError(f"RBM pre-training initializes MLPs (Dense layers); layer "
                       f"{'/'.join(path)} has a kernel of shape {kernel.shape}.")
  if len(paths) < 2:
    raise ValueError(f"RBM pre-training needs an MLP with a hidden layer; found "
                     f"{len(paths)} Dense layer(s).")
  data = jnp.reshape(x_batch, (x_batch.shape[0], -1)).astype(jnp.float32)
  fan_in = data.shape[1]
  for path, kernel in zip(paths[:-1], kernels[:-1]):
    if kernel.shape[0] != fan_in:
      raise ValueError(f"RBM pre-training: layer {'/'.join(path)} has fan-in "
                       f"{kernel.shape[0]}, expected {fan_in} (the layer below's width).")
    fan_in = kernel.shape[1]
  rbms, curves = pretrain_stack(key, data, [k.shape[1] for k in kernels[:-1]],
                                visible=visible, **train_kwargs)
  for path, rbm in zip(paths, rbms):
    params = _set_layer(params, path, rbm)
  variables = {**variables, "params": params}
  reports = [PretrainReport(path, float(c[0]), float(c[-1])) for path, c in zip(paths, curves)]
  if frozen:
    variables = flax.core.freeze(variables)
  return variables, reports
