"""Train/eval steps: loss against references, extra-args optimizers, and one device vs four
devices under jit and pmap (dense model in-process; conv models run over gloo, test_train)."""

import functools

import chex
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import pytest

from flaxopt.data import pipeline
from flaxopt.nn import models
from flaxopt.training import steps
from flaxopt.training.parallel import Parallel
from flaxopt.training.state import create_train_state

NUM_CLASSES, N, BATCH = 3, 64, 16


def _data():
  rng = np.random.default_rng(0)
  x = rng.normal(size=(N, 6, 1)).astype(np.float32)
  return x, (x[:, :3, 0].argmax(-1)).astype(np.int32)


def _model(axis_name=None, norm="batch"):
  cfg = ml_collections.ConfigDict(dict(name="mlp", width=8, depth=2, norm=norm))
  return models.build_model(cfg, NUM_CLASSES, axis_name=axis_name)


def _state(model, tx, x):
  variables = model.init(jax.random.PRNGKey(1), x[:BATCH], train=False)
  return create_train_state(variables, tx, jax.random.PRNGKey(2))


def _run(mode, devices, num_steps=3, tx=None):
  """num_steps train steps on the same batches; returns (final host state, losses)."""
  x, y = _data()
  tx = tx or optax.adam(1e-2)
  par = Parallel(mode, mesh=pipeline.make_mesh(devices) if mode == "jit" else None)
  if mode == "pmap":
    par.devices, par.num_devices = devices, len(devices)
  model = _model(par.axis_name)
  pipe = pipeline.Pipeline(x, y, batch_size=BATCH, seed=0, parallel=mode, mesh=par.mesh)
  fn = par.compile_train(functools.partial(steps.train_step, apply_fn=model.apply, tx=tx,
                                           num_classes=NUM_CLASSES, axis_name=par.axis_name))
  state, losses = par.put(_state(_model(), tx, x)), []
  for k in range(num_steps):
    state, sums = fn(state, pipe.batch(k), par.zeros_sums())
    losses.append(par.read(sums)["loss"])
  return jax.device_get(par.get(state)), np.array(losses)


@pytest.mark.timeout(120)
def test_one_device_jit_four_devices_jit_and_pmap_agree():
  assert jax.device_count() == 4
  ref, ref_losses = _run("jit", jax.devices()[:1])
  for mode in ("jit", "pmap"):
    state, losses = _run(mode, jax.devices())
    np.testing.assert_allclose(losses, ref_losses, rtol=1e-5)
    chex.assert_trees_all_close(state.params, ref.params, rtol=1e-5, atol=1e-6)
    chex.assert_trees_all_close(state.batch_stats, ref.batch_stats, rtol=1e-5, atol=1e-6)
    assert int(state.step) == 3


@pytest.mark.parametrize("l1,l2", [(0.0, 0.0), (1e-3, 0.0), (0.0, 1e-2), (1e-3, 1e-2)])
def test_loss_is_cross_entropy_plus_penalties(l1, l2):
  x, y = _data()
  model = _model(norm="none")
  tx = optax.sgd(0.1)
  state = _state(model, tx, x)
  batch = {"x": jnp.asarray(x[:BATCH]), "y": jnp.asarray(y[:BATCH])}
  new, metrics = jax.jit(functools.partial(steps.train_step, apply_fn=model.apply, tx=tx,
                                           num_classes=NUM_CLASSES, l1=l1, l2=l2))(state, batch)
  logits = model.apply({"params": state.params}, batch["x"], train=True)
  ce = optax.softmax_cross_entropy_with_integer_labels(logits, batch["y"]).mean()
  leaves = jax.tree.leaves(state.params)
  penalty = l1 * sum(jnp.abs(w).sum() for w in leaves) + l2 * sum((w ** 2).sum() for w in leaves)
  np.testing.assert_allclose(metrics["ce_loss"], ce, rtol=1e-6)
  np.testing.assert_allclose(metrics["loss"], ce + penalty, rtol=1e-6)
  # SGD step: params - lr * grad of the same objective.
  grads = jax.grad(lambda p: optax.softmax_cross_entropy_with_integer_labels(
      model.apply({"params": p}, batch["x"], train=True), batch["y"]).mean()
      + l1 * sum(jnp.abs(w).sum() for w in jax.tree.leaves(p))
      + l2 * sum((w ** 2).sum() for w in jax.tree.leaves(p)))(state.params)
  chex.assert_trees_all_close(new.params, jax.tree.map(lambda p, g: p - 0.1 * g, state.params,
                                                        grads), rtol=1e-5, atol=1e-6)


def test_extra_args_optimizer_gets_value_and_value_fn():
  """optax.lbfgs (zoom line search) needs value, grad and value_fn: the loss must drop."""
  x, y = _data()
  model = _model(norm="none")
  tx = optax.lbfgs()
  state = _state(model, tx, x)
  batch = {"x": jnp.asarray(x[:BATCH]), "y": jnp.asarray(y[:BATCH])}
  step = jax.jit(functools.partial(steps.train_step, apply_fn=model.apply, tx=tx,
                                   num_classes=NUM_CLASSES))
  losses = []
  for _ in range(5):
    state, metrics = step(state, batch)
    losses.append(float(metrics["loss"]))
  chex.assert_tree_all_finite(state.params)
  assert losses[-1] < 0.8 * losses[0], losses


def test_eval_step_masked_sums_match_numpy():
  x, y = _data()
  model = _model(norm="none")
  variables = model.init(jax.random.PRNGKey(1), x[:4], train=False)
  mask = (np.arange(N) < 50).astype(np.float32)
  sums = steps.eval_step(variables["params"], {}, {"x": x, "y": y, "mask": mask},
                         apply_fn=model.apply, num_classes=NUM_CLASSES)
  logits = np.asarray(model.apply(variables, x, train=False), np.float64)
  logp = logits - np.log(np.exp(logits).sum(-1, keepdims=True))
  ce = -logp[np.arange(N), y]
  np.testing.assert_allclose(sums["loss_sum"], (ce * mask).sum(), rtol=1e-5)
  np.testing.assert_allclose(sums["correct"], ((logits.argmax(-1) == y) * mask).sum())
  assert float(sums["count"]) == 50


def test_step_rngs_depend_on_step_only():
  rng = jax.random.PRNGKey(0)
  a, b = steps.step_rngs(rng, 3), steps.step_rngs(rng, 3)
  c = steps.step_rngs(rng, 4)
  chex.assert_trees_all_equal(a, b)
  assert not np.array_equal(a["dropout"], c["dropout"])
