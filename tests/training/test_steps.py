"""Train/eval steps: loss against references, extra-args optimizers, and one device vs four
devices under jit and pmap (dense model in-process; conv models run over gloo, test_train)."""

import functools
from typing import NamedTuple

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


def _init(model, x):
  # Level-1 compile: threefry compiles ~8x faster, same numbers (see loop._FAST_COMPILE).
  return jax.jit(functools.partial(model.init, train=False),
                 compiler_options={"xla_backend_optimization_level": 1})(
                     jax.random.PRNGKey(1), x)


def _state(model, tx, x):
  variables = _init(model, x[:BATCH])
  return create_train_state(variables, tx, jax.random.PRNGKey(2))


def _run(mode, devices, num_steps=3, tx=None):
  """num_steps train steps on the same batches; returns (final host state, losses)."""
  x, y = _data()
  # SGD, not Adam: the bias before BatchNorm has a zero gradient up to rounding noise, which
  # Adam's g / sqrt(v) would blow up to lr-sized steps of arbitrary sign.
  tx = tx or optax.sgd(0.5)
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


@pytest.mark.multidevice
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


@pytest.mark.parametrize("l1,l2", [(0.0, 0.0), (1e-3, 1e-2)])
def test_loss_is_cross_entropy_plus_penalties(l1, l2):
  x, y = _data()
  model = _model(norm="none")
  tx = optax.sgd(0.1)
  state = _state(model, tx, x)
  batch = {"x": jnp.asarray(x[:BATCH]), "y": jnp.asarray(y[:BATCH])}
  new, metrics = jax.jit(functools.partial(steps.train_step, apply_fn=model.apply, tx=tx,
                                           num_classes=NUM_CLASSES, l1=l1, l2=l2))(state, batch)

  @jax.jit
  def reference(params):  # jitted: eager tracing would compile ~100 tiny programs
    def objective(p):
      logits = model.apply({"params": p}, batch["x"], train=True)
      ce = optax.softmax_cross_entropy_with_integer_labels(logits, batch["y"]).mean()
      leaves = jax.tree.leaves(p)
      penalty = (l1 * sum(jnp.abs(w).sum() for w in leaves)
                 + 0.5 * l2 * sum((w ** 2).sum() for w in leaves))
      return ce + penalty, ce
    return jax.value_and_grad(objective, has_aux=True)(params)

  (loss, ce), grads = reference(state.params)
  np.testing.assert_allclose(metrics["ce_loss"], ce, rtol=1e-6)
  np.testing.assert_allclose(metrics["loss"], loss, rtol=1e-6)
  # SGD step: params - lr * grad of the same objective.
  chex.assert_trees_all_close(new.params, jax.tree.map(lambda p, g: p - 0.1 * g, state.params,
                                                        grads), rtol=1e-5, atol=1e-6)


class _Probe(NamedTuple):
  value: jax.Array
  value_fn_at_params: jax.Array
  grad_norm: jax.Array


def _probe_tx() -> optax.GradientTransformationExtraArgs:
  """Records the extra args it is given (what a line search would use); updates nothing."""
  zero = jnp.zeros(())

  def update(updates, state, params=None, *, value, grad, value_fn, **extra):
    del state, extra
    state = _Probe(value, value_fn(params), optax.tree.norm(grad))
    return jax.tree.map(jnp.zeros_like, updates), state

  return optax.GradientTransformationExtraArgs(lambda p: _Probe(zero, zero, zero), update)


def test_optimizer_gets_value_grad_and_value_fn():
  x, y = _data()
  model = _model(norm="none")
  tx = _probe_tx()
  state = _state(model, tx, x)
  batch = {"x": jnp.asarray(x[:BATCH]), "y": jnp.asarray(y[:BATCH])}
  new, metrics = jax.jit(functools.partial(steps.train_step, apply_fn=model.apply, tx=tx,
                                           num_classes=NUM_CLASSES, l2=1e-2))(state, batch)
  np.testing.assert_allclose(new.opt_state.value, metrics["loss"], rtol=1e-6)
  np.testing.assert_allclose(new.opt_state.value_fn_at_params, metrics["loss"], rtol=1e-6)
  assert float(new.opt_state.grad_norm) > 0
  chex.assert_trees_all_equal(new.params, state.params)


def test_eval_step_masked_sums_match_numpy():
  x, y = _data()
  model = _model(norm="none")
  variables = _init(model, x[:4])
  mask = (np.arange(N) < 50).astype(np.float32)
  sums = jax.jit(functools.partial(steps.eval_step, apply_fn=model.apply,
                                   num_classes=NUM_CLASSES))(
                                       variables["params"], {}, {"x": x, "y": y, "mask": mask})
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
