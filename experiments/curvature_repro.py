"""Shared library code of the curvature reproductions (reproduce_cohen2021, _ghorbani2019,
_keskar2017, _santurkar2018): MNIST-1D data, small MLPs with and without BatchNorm, training
loops, the claim checks (pure functions on the measured numbers, tested on tiny inputs) and
the JSON output. No absl flags here, so tests can import it.

BatchNorm is always in train mode (batch statistics), as in the curvature toolkit; no
running averages are kept because the claims are about the training loss.
"""

from __future__ import annotations

import functools
import json
import os
from typing import Any, Callable, Optional, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax

import flaxopt.functional as F
from flaxopt import curvature

PyTree = Any
RESULTS_DIR = "docs/results"


# ---------------------------------------------------------------------------------------
# Data and models.
# ---------------------------------------------------------------------------------------
def load_mnist1d(num_train: int) -> dict[str, np.ndarray]:
  """The first ``num_train`` MNIST-1D training examples, inputs flattened to (N, 40)."""
  from flaxopt.data import datasets  # pylint: disable=g-import-not-at-top
  ds = datasets.load("mnist1d")
  x = np.asarray(ds.x_train[:num_train], np.float32).reshape(min(num_train, len(ds.x_train)), -1)
  return {"x": x, "y": np.asarray(ds.y_train[:num_train], np.int32)}


class MLP(nn.Module):
  """Dense -> [BatchNorm (batch statistics)] -> activation, ``depth`` times, then a linear head."""

  width: int = 32
  depth: int = 2
  batch_norm: bool = False
  input_scale: float = 1.0
  activation: Callable[[jax.Array], jax.Array] = jnp.tanh
  num_classes: int = 10

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    x = self.input_scale * x
    for i in range(self.depth):
      x = nn.Dense(self.width, name=f"dense_{i}")(x)
      if self.batch_norm:
        scale = self.param(f"bn_scale_{i}", nn.initializers.ones, (self.width,))
        bias = self.param(f"bn_bias_{i}", nn.initializers.zeros, (self.width,))
        x = F.batch_norm(x, scale, bias)
      x = self.activation(x)
    return nn.Dense(self.num_classes, name="head")(x)


def cross_entropy_loss(model: nn.Module) -> Callable[[PyTree, Any], jax.Array]:
  """``loss_fn(params, batch)``: mean softmax cross-entropy of ``model`` on ``batch``."""
  def loss_fn(params, batch):
    logits = model.apply({"params": params}, batch["x"])
    return jnp.mean(optax.softmax_cross_entropy_with_integer_labels(logits, batch["y"]))
  return loss_fn


def mse_loss(model: nn.Module) -> Callable[[PyTree, Any], jax.Array]:
  """``loss_fn(params, batch)``: ``0.5 * mean_i ||f(x_i) - onehot(y_i)||^2`` (Cohen et al.'s MSE)."""
  def loss_fn(params, batch):
    out = model.apply({"params": params}, batch["x"])
    target = jax.nn.one_hot(batch["y"], out.shape[-1], dtype=out.dtype)
    return 0.5 * jnp.mean(jnp.sum((out - target) ** 2, axis=-1))
  return loss_fn


def init_params(model: nn.Module, seed: int, x: np.ndarray) -> PyTree:
  return model.init(jax.random.PRNGKey(seed), jnp.asarray(x[:2]))["params"]


def batches_of(data: dict[str, np.ndarray], size: int) -> list[dict[str, jax.Array]]:
  """``data`` cut into consecutive batches of ``size`` (a shorter last batch is dropped)."""
  n = (len(data["y"]) // size) * size
  return [{k: jnp.asarray(v[i:i + size]) for k, v in data.items()} for i in range(0, n, size)]


@functools.partial(jax.jit, static_argnames=("loss_fn", "num_iters"))
def _top_eigenvalue(loss_fn, params, batches, key, num_iters):
  matvec = curvature.hessian_matvec(loss_fn, params, list(batches))
  return curvature.top_eigenvalues(matvec, params, 1, key, num_iters)[0][0]


def sharpness(loss_fn, params, batches, seed: int = 0, num_iters: int = 20) -> float:
  """Top eigenvalue of the Hessian of the mean loss over ``batches`` (Lanczos, ``num_iters``
  steps). Compiled once per ``loss_fn`` object and batch shapes."""
  return float(_top_eigenvalue(loss_fn, params, tuple(batches), jax.random.PRNGKey(seed),
                               num_iters))


def sgd_step(loss_fn, tx):
  """A jitted ``(params, opt_state, batch) -> (params, opt_state, loss)`` step."""
  @jax.jit
  def step(params, opt_state, batch):
    loss, grads = jax.value_and_grad(loss_fn)(params, batch)
    updates, opt_state = tx.update(grads, opt_state, params)
    return optax.apply_updates(params, updates), opt_state, loss
  return step


# ---------------------------------------------------------------------------------------
# Claim checks (the claims are fixed in each script's docstring).
# ---------------------------------------------------------------------------------------
def check_cohen(sharpness_curve: Sequence[float], loss_curve: Sequence[float],
                learning_rate: float, *, start_fraction: float = 0.5,
                band: tuple[float, float] = (0.8, 1.2), tail: float = 0.3) -> dict[str, Any]:
  """Edge of stability: sharpness starts below ``start_fraction * 2/lr``, its median over the
  last ``tail`` of the measurements lies in ``band * 2/lr``, and the loss falls overall
  (final loss below the initial one)."""
  s, l = np.asarray(sharpness_curve, float), np.asarray(loss_curve, float)
  threshold = 2.0 / learning_rate
  last = s[int(np.floor((1.0 - tail) * len(s))):]
  median_ratio = float(np.median(last) / threshold)
  out = {"two_over_lr": threshold, "initial_sharpness_ratio": float(s[0] / threshold),
         "tail_median_ratio": median_ratio, "initial_loss": float(l[0]),
         "final_loss": float(l[-1])}
  out["holds"] = bool(s[0] < start_fraction * threshold and band[0] <= median_ratio <= band[1]
                      and np.isfinite(l[-1]) and l[-1] < l[0])
  return out


def check_ratio(larger: Sequence[float], smaller: Sequence[float], factor: float) -> dict[str, Any]:
  """``mean(larger) >= factor * mean(smaller)`` over seeds (all values finite, positive)."""
  a, b = np.asarray(larger, float), np.asarray(smaller, float)
  ok = bool(np.all(np.isfinite(a)) and np.all(np.isfinite(b)) and np.all(b > 0))
  ratio = float(np.mean(a) / np.mean(b)) if ok else float("nan")
  return {"ratio": ratio, "factor": factor, "holds": bool(ok and ratio >= factor)}


def within(values_a: Sequence[float], values_b: Sequence[float], rel: float) -> bool:
  """Whether every pair (a_i, b_i) differs by at most ``rel`` of the larger."""
  a, b = np.asarray(values_a, float), np.asarray(values_b, float)
  return bool(np.all(np.abs(a - b) <= rel * np.maximum(np.abs(a), np.abs(b))))


# ---------------------------------------------------------------------------------------
# Output.
# ---------------------------------------------------------------------------------------
def write_result(name: str, result: dict[str, Any], workdir: str, publish: bool) -> list[str]:
  """Writes ``result`` as ``<workdir>/<name>.json`` (and ``docs/results/<name>.json`` when
  ``publish``); returns the paths written."""
  paths = [os.path.join(workdir, f"{name}.json")]
  if publish:
    paths.append(os.path.join(RESULTS_DIR, f"{name}.json"))
  for path in paths:
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path, "w") as f:
      json.dump(result, f, indent=1, sort_keys=True, allow_nan=True)
      f.write("\n")
  return paths


def finish(name: str, result: dict[str, Any], workdir: str, publish: bool) -> None:
  """Writes the result, prints it, exits 0 when ``result['holds']`` else 1."""
  for path in write_result(name, result, workdir, publish):
    print(f"wrote {path}")
  print(json.dumps(result, indent=1, sort_keys=True))
  print(f"claim {'HOLDS' if result['holds'] else 'FAILS'}")
  raise SystemExit(0 if result["holds"] else 1)


# ---------------------------------------------------------------------------------------
# The experiments (each script is a thin absl main over one of these).
# ---------------------------------------------------------------------------------------
def _activation(name: str) -> Callable[[jax.Array], jax.Array]:
  return {"tanh": jnp.tanh, "relu": jax.nn.relu}[name]


def _full_batch(config) -> dict[str, jax.Array]:
  return {k: jnp.asarray(v) for k, v in load_mnist1d(config.num_train).items()}


def run_cohen(config) -> dict[str, Any]:
  """Full-batch GD with MSE at each of ``config.learning_rates``; sharpness every
  ``config.measure_every`` steps; the edge-of-stability check per learning rate."""
  batch = _full_batch(config)
  model = MLP(width=config.width, depth=config.depth, input_scale=config.input_scale,
              activation=_activation(config.activation))
  loss_fn = mse_loss(model)
  result: dict[str, Any] = {"runs": {}}
  for lr in config.learning_rates:
    params = init_params(model, config.seed, np.asarray(batch["x"]))
    tx = optax.sgd(lr)
    opt_state, step = tx.init(params), sgd_step(loss_fn, tx)
    steps, sharp, losses = [], [], []
    for i in range(config.num_steps + 1):
      if i % config.measure_every == 0:
        steps.append(i)
        sharp.append(sharpness(loss_fn, params, [batch], seed=i, num_iters=config.lanczos_iters))
        losses.append(float(loss_fn(params, batch)))
      if i < config.num_steps:
        params, opt_state, _ = step(params, opt_state, batch)
    check = check_cohen(sharp, losses, lr)
    result["runs"][f"lr={lr:g}"] = {**check, "steps": steps, "sharpness": sharp, "loss": losses}
  result["holds"] = all(r["holds"] for r in result["runs"].values())
  return result


def _train(step, params, opt_state, data, *, batch_size, num_steps, rng):
  """``num_steps`` minibatch steps of ``step`` (from ``sgd_step``), sampling each batch
  without replacement from ``data`` with ``rng``; returns (params, opt_state)."""
  n = len(data["y"])
  for _ in range(num_steps):
    idx = rng.choice(n, batch_size, replace=False)
    params, opt_state, _ = step(params, opt_state,
                                {k: jnp.asarray(v[idx]) for k, v in data.items()})
  return params, opt_state


def run_ghorbani(config) -> dict[str, Any]:
  """Per seed and with/without BatchNorm: train briefly, then the top Hessian eigenvalue over
  the bulk edge (``bulk_edge`` at ``config.bulk_mass`` of the SLQ measure)."""
  data = load_mnist1d(config.num_train)
  batches = batches_of(data, config.batch_size)[:config.hessian_batches]
  result: dict[str, Any] = {"runs": []}
  ratios = {False: [], True: []}
  for seed in range(config.num_seeds):
    for bn in (False, True):
      model = MLP(width=config.width, depth=config.depth, batch_norm=bn,
                  activation=_activation(config.activation))
      loss_fn = cross_entropy_loss(model)
      params = init_params(model, seed, data["x"])
      tx = optax.sgd(config.learning_rate, config.momentum)
      params, _ = _train(sgd_step(loss_fn, tx), params, tx.init(params), data,
                         batch_size=config.batch_size, num_steps=config.num_steps,
                         rng=np.random.default_rng(seed))
      matvec = curvature.hessian_matvec(loss_fn, params, batches)
      top = float(curvature.top_eigenvalues(matvec, params, 1, jax.random.PRNGKey(seed),
                                            config.lanczos_iters)[0][0])
      grid = jnp.linspace(-1.2 * abs(top), 1.2 * abs(top), 240)
      density, nodes, weights = curvature.spectral_density(
          matvec, params, jax.random.PRNGKey(100 + seed), config.slq_probes, config.slq_steps,
          grid)
      edge = curvature.bulk_edge(nodes, weights, config.bulk_mass)
      ratio = top / edge if edge > 0 else float("inf")
      ratios[bn].append(ratio)
      result["runs"].append({"seed": seed, "batch_norm": bn, "top_eigenvalue": top,
                             "bulk_edge": edge, "ratio": ratio,
                             "loss": float(loss_fn(params, batches[0])),
                             "density_grid": np.asarray(grid).tolist(),
                             "density": np.asarray(density).tolist()})
  check = check_ratio(ratios[False], ratios[True], config.factor)
  result.update(ratio_no_bn=ratios[False], ratio_bn=ratios[True], **check)
  return result


def _train_to_loss(step, mean_loss, params, opt_state, data, full, *, batch_size, target,
                   max_steps, check_every, rng):
  """Minibatch training until the full training loss is <= ``target`` (checked every
  ``check_every`` steps) or ``max_steps``; returns (params, steps, loss)."""
  steps, loss = 0, float("inf")
  while steps < max_steps:
    params, opt_state = _train(step, params, opt_state, data, batch_size=batch_size,
                               num_steps=check_every, rng=rng)
    steps += check_every
    loss = float(np.mean([float(mean_loss(params, b)) for b in full]))
    if loss <= target or not np.isfinite(loss):
      break
  return params, steps, loss


def run_keskar(config) -> dict[str, Any]:
  """Per seed: small- and large-batch training (same optimizer) to the same training-loss
  target, then the top Hessian eigenvalue of the full training loss."""
  data = load_mnist1d(config.num_train)
  full = batches_of(data, config.hessian_batch_size)
  model = MLP(width=config.width, depth=config.depth, activation=_activation(config.activation))
  loss_fn = cross_entropy_loss(model)
  mean_loss = jax.jit(loss_fn)
  tx = optax.adam(config.learning_rate)
  step = sgd_step(loss_fn, tx)
  runs = {"small": [], "large": []}
  for seed in range(config.num_seeds):
    for name, batch_size in (("small", config.small_batch), ("large", config.large_batch)):
      params = init_params(model, seed, data["x"])
      params, steps, loss = _train_to_loss(
          step, mean_loss, params, tx.init(params), data, full, batch_size=batch_size,
          target=config.target_loss, max_steps=config.max_steps,
          check_every=config.check_every, rng=np.random.default_rng(seed))
      top = sharpness(loss_fn, params, full, seed=seed, num_iters=config.lanczos_iters)
      runs[name].append({"seed": seed, "batch_size": batch_size, "steps": steps,
                         "train_loss": loss, "top_eigenvalue": top})
  loss_small = [r["train_loss"] for r in runs["small"]]
  loss_large = [r["train_loss"] for r in runs["large"]]
  check = check_ratio([r["top_eigenvalue"] for r in runs["large"]],
                      [r["top_eigenvalue"] for r in runs["small"]], config.factor)
  same_loss = within(loss_small, loss_large, config.loss_tolerance)
  return {"runs": runs, "losses_within_tolerance": same_loss, **check,
          "holds": bool(check["holds"] and same_loss)}


def loss_range_along_gradient(loss_fn, params, batch, learning_rate: float,
                              steps: Sequence[float]) -> float:
  """``max - min`` of ``L(theta - s g)`` over ``s in learning_rate * steps``, ``g`` the
  gradient on ``batch`` (Santurkar et al. 2018, Sec. 3.1, Fig. 4a)."""
  return float(_range(loss_fn, params, batch, learning_rate, steps))


def run_santurkar(config) -> dict[str, Any]:
  """Per seed, with/without BatchNorm: SGD training; every ``measure_every`` steps the range
  of the loss along the gradient on the current batch; the mean range over training."""
  data = load_mnist1d(config.num_train)
  steps_grid = np.linspace(config.step_min, config.step_max, config.num_points)
  ranges = {False: [], True: []}
  runs = []
  for seed in range(config.num_seeds):
    for bn in (False, True):
      model = MLP(width=config.width, depth=config.depth, batch_norm=bn,
                  activation=_activation(config.activation))
      loss_fn = cross_entropy_loss(model)
      range_fn = jax.jit(lambda p, b, loss_fn=loss_fn: _range(loss_fn, p, b, config.learning_rate,
                                                              steps_grid))
      tx = optax.sgd(config.learning_rate)
      step = sgd_step(loss_fn, tx)
      params = init_params(model, seed, data["x"])
      opt_state = tx.init(params)
      rng = np.random.default_rng(seed)
      curve = []
      for i in range(config.num_steps):
        idx = rng.choice(len(data["y"]), config.batch_size, replace=False)
        batch = {k: jnp.asarray(v[idx]) for k, v in data.items()}
        if i % config.measure_every == 0:
          curve.append(float(range_fn(params, batch)))
        params, opt_state, loss = step(params, opt_state, batch)
      ranges[bn].append(float(np.mean(curve)))
      runs.append({"seed": seed, "batch_norm": bn, "mean_range": ranges[bn][-1],
                   "range_curve": curve, "final_batch_loss": float(loss)})
  check = check_ratio(ranges[False], ranges[True], config.factor)
  return {"runs": runs, "range_no_bn": ranges[False], "range_bn": ranges[True], **check}


def _range(loss_fn, params, batch, learning_rate, steps):
  grad = jax.grad(loss_fn)(params, batch)
  values = curvature.loss_landscape(loss_fn, params, batch, jax.tree.map(jnp.negative, grad),
                                    learning_rate * jnp.asarray(steps))
  return jnp.max(values) - jnp.min(values)
