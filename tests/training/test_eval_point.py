"""The loop's optional extras: curvature logged at evaluations, and schedule-free runs
evaluated at their averaged point with BatchNorm statistics recomputed there."""

import json
import os

import jax
import jax.flatten_util
import jax.numpy as jnp
import numpy as np
import pytest

from configs import tiny
from flaxopt import optim
from flaxopt.training import checkpoint as checkpoint_lib
from flaxopt.training import curvature_log
from flaxopt.training import eval_point as eval_point_lib
from flaxopt.training import loop
from flaxopt.training.config import apply_overrides


def _config(**overrides):
  return apply_overrides(tiny.get_config(), list(overrides.items()))


def _records(workdir):
  with open(os.path.join(workdir, "metrics.jsonl")) as f:
    return [json.loads(line) for line in f]


def _final_state(config, workdir):
  """The checkpointed state at the last step, restored with the run's own template."""
  setup = loop._validated_setup(config)  # pylint: disable=protected-access
  template = setup.par.get(loop._init_state(setup))  # pylint: disable=protected-access
  ckpt = checkpoint_lib.Checkpointer(os.path.join(workdir, "checkpoints"))
  state, _, _ = ckpt.restore(int(config.num_train_steps), template)
  ckpt.close()
  return setup, state


@pytest.mark.slow
def test_curvature_is_logged_and_matches_the_dense_hessian(tmp_path):
  config = _config(**{"num_train_steps": 20, "curvature.every": 20, "curvature.num_batches": 2,
                      "curvature.top_k": 2, "curvature.lanczos_iters": 40,
                      "curvature.trace_samples": 4, "model.width": 8})
  workdir = str(tmp_path / "run")
  loop.train_and_evaluate(config, workdir)
  last = _records(workdir)[-1]
  assert last["step"] == 20
  lr = config.optimizer.learning_rate
  np.testing.assert_allclose(last["two_over_lr"], 2.0 / lr, rtol=1e-12)
  assert last["sharpness"] == last["top_eigenvalues"][0] >= last["top_eigenvalues"][1]
  assert os.path.exists(os.path.join(workdir, "sharpness.png"))

  # Independent reference: eigenvalues of the dense Hessian of the same loss on the same
  # batches at the checkpointed parameters.
  setup, state = _final_state(config, workdir)
  batches = eval_point_lib.fixed_train_batches(setup.ds.x_train, setup.ds.y_train,
                                               config.batch_size, 2)
  loss_fn = curvature_log.model_loss_fn(setup.model, setup.ds.num_classes, state.batch_stats)
  flat, unravel = jax.flatten_util.ravel_pytree(state.params)
  mean_loss = lambda f: jnp.mean(jnp.stack([loss_fn(unravel(f), b) for b in batches]))
  # Jitted: eager jax.hessian compiles every primitive on its own (~150 programs, ~12 s).
  eigs = np.linalg.eigvalsh(np.asarray(jax.jit(jax.hessian(mean_loss))(flat), np.float64))[::-1]
  np.testing.assert_allclose(last["top_eigenvalues"], eigs[:2], rtol=2e-3)
  np.testing.assert_allclose(last["hessian_trace"], eigs.sum(),
                             atol=4 * last["hessian_trace_stderr"] + 1e-6)


def test_curvature_every_must_align_with_evaluations():
  with pytest.raises(ValueError, match="curvature.every=30: must be a multiple of eval_every=20"):
    loop.validate_config(_config(**{"curvature.every": 30}))


def test_only_schedule_free_states_get_an_eval_point():
  params = {"w": jnp.ones((3, 2))}
  assert eval_point_lib.eval_point_fn(None, optim.adam(1e-3).init(params), [], {}) is None
  tx = optim.schedule_free_adamw(1e-3)
  assert eval_point_lib.eval_point_fn(None, tx.init(params), [{"x": np.zeros((2, 3))}],
                                      {}) is not None


@pytest.mark.slow
def test_schedule_free_run_is_evaluated_at_x_with_recomputed_batch_stats(tmp_path):
  config = _config(**{"num_train_steps": 20, "optimizer.name": "schedule_free_adamw",
                      "optimizer.learning_rate": 5e-3, "model.norm": "batch",
                      "checkpoint_every": 0})
  workdir = str(tmp_path / "run")
  loop.train_and_evaluate(config, workdir)
  last = _records(workdir)[-1]
  setup, state = _final_state(config, workdir)

  # Jitted: eager model applications compile every primitive on its own.
  @jax.jit
  def test_loss(params, batch_stats):
    logits = setup.model.apply({"params": params, "batch_stats": batch_stats},
                               setup.ds.x_test, train=False)
    labels = jax.nn.one_hot(setup.ds.y_test, setup.ds.num_classes)
    return jnp.mean(-jnp.sum(labels * jax.nn.log_softmax(logits), -1))

  # x from the optimizer state; BatchNorm statistics at x: the mean over the first 8
  # training batches of each batch's own statistics (torch's update_bn rule).
  x = optim.schedule_free_eval_params(state.params, state.opt_state)
  batches = eval_point_lib.fixed_train_batches(setup.ds.x_train, setup.ds.y_train,
                                               config.batch_size, 8)
  @jax.jit
  def batch_statistics(x, xb):
    zeros = jax.tree.map(jnp.zeros_like, state.batch_stats)
    _, upd = setup.model.apply({"params": x, "batch_stats": zeros}, xb, train=True,
                               rngs={"dropout": jax.random.PRNGKey(0)},
                               mutable=["batch_stats"])
    return upd["batch_stats"]

  per_batch = [batch_statistics(x, b["x"]) for b in batches]
  momentum = 0.99  # fnn.BatchNorm's default: new = m * old + (1 - m) * batch statistic
  stats_x = jax.tree.map(lambda *s: jnp.mean(jnp.stack(s), 0) / (1 - momentum), *per_batch)
  np.testing.assert_allclose(last["test_loss"], float(test_loss(x, stats_x)), rtol=1e-4)
  # ... and not the training point with its running statistics.
  assert abs(last["test_loss"] - float(test_loss(state.params, state.batch_stats))) > 1e-4


def test_nnx_needs_no_linen_only_features():
  with pytest.raises(ValueError, match="model.kernel_init='lsuv': is linen-only"):
    loop.validate_config(_config(**{"model.api": "nnx", "model.kernel_init": "lsuv"}))
  with pytest.raises(ValueError, match="model.api='keras': must be one of linen, nnx"):
    loop.validate_config(_config(**{"model.api": "keras"}))


@pytest.mark.slow
def test_nnx_model_trains_in_the_loop_and_resumes_bit_identically(tmp_path):
  """model.api='nnx' through the same loop: a run stopped at step 30 and resumed to 60 ends
  with exactly the metrics of an uninterrupted 60-step run, and the loss falls."""
  config = _config(**{"model.api": "nnx", "model.norm": "batch", "checkpoint_every": 30})
  whole = loop.train_and_evaluate(config, str(tmp_path / "whole"))
  split = str(tmp_path / "split")
  loop.train_and_evaluate(apply_overrides(config, [("num_train_steps", 30)]), split)
  resumed = loop.train_and_evaluate(config, split)
  timing = ("wall_time", "train_time", "steps_per_sec")
  strip = lambda r: {k: v for k, v in r.items() if k not in timing}
  assert strip(resumed["final"]) == strip(whole["final"])
  records = _records(str(tmp_path / "whole"))
  assert records[-1]["train_loss"] < records[0]["train_loss"]
  assert [r["step"] for r in _records(split)] == [20, 30, 40, 60]  # 30: the first end
