"""The training hook: curvature metrics against dense references on a tiny build_model MLP."""

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.flatten_util import ravel_pytree

from flaxopt import curvature
from flaxopt.nn import models
from flaxopt.training import curvature_log


@pytest.fixture(scope="module")
def setup():
  model = models.build_model({"name": "mlp", "width": 6, "depth": 1, "norm": "batch",
                              "dropout": 0.5, "activation": "tanh"}, 3)
  x = jax.random.normal(jax.random.PRNGKey(0), (16, 4, 1))
  y = jax.random.randint(jax.random.PRNGKey(1), (16,), 0, 3)
  variables = model.init(jax.random.PRNGKey(2), x[:2])
  batches = [{"x": x[i:i + 8], "y": y[i:i + 8]} for i in (0, 8)]
  loss_fn = curvature_log.model_loss_fn(model, 3, variables["batch_stats"])
  return model, variables, batches, loss_fn


def test_model_loss_fn_is_train_mode_without_dropout(setup):
  model, variables, batches, loss_fn = setup
  b = batches[0]
  no_drop = model.clone(dropout=0.0)
  logits, _ = no_drop.apply(variables, b["x"], train=True, mutable=["batch_stats"])
  expected = -jnp.mean(jnp.take_along_axis(jax.nn.log_softmax(logits), b["y"][:, None], 1))
  np.testing.assert_allclose(loss_fn(variables["params"], b), expected, rtol=1e-6)
  # Train mode: batch statistics, so not the eval-mode (running average) output.
  eval_logits = no_drop.apply(variables, b["x"], train=False)
  assert not np.allclose(eval_logits, logits, atol=1e-3)


def test_metrics_match_dense_hessian_and_noise_scale(setup):
  _, variables, batches, loss_fn = setup
  params = variables["params"]
  config = {"curvature": {"every": 5, "num_batches": 2, "top_k": 2, "trace_samples": 30,
                          "lanczos_iters": 40}}
  out = curvature_log.curvature_metrics(config, loss_fn, params, batches,
                                        jax.random.PRNGKey(3), 0.1)
  flat, unravel = ravel_pytree(params)
  mean_loss = lambda f: sum(loss_fn(unravel(f), b) for b in batches) / 2.0
  hess = np.asarray(jax.jit(jax.hessian(mean_loss))(flat), np.float64)
  evals = np.linalg.eigvalsh(hess)[::-1]
  np.testing.assert_allclose(out["top_eigenvalues"], evals[:2], rtol=1e-3)
  assert out["sharpness"] == out["top_eigenvalues"][0]
  assert abs(out["hessian_trace"] - np.trace(hess)) < 3 * out["hessian_trace_stderr"]
  grads = curvature.per_batch_gradients(loss_fn, params, batches)
  np.testing.assert_allclose(out["noise_scale"],
                             curvature.gradient_noise_scale(grads, 8)["noise_scale"], rtol=1e-4)
  assert out["two_over_lr"] == pytest.approx(20.0)
  json.dumps(out)  # plain floats, ready for metrics.jsonl
  assert curvature_log.should_log(config, 10) and not curvature_log.should_log(config, 7)
  assert not curvature_log.should_log({"curvature": {"every": 0}}, 10)


def test_diverged_model_logs_nan_not_an_error(setup):
  _, variables, batches, loss_fn = setup
  params = jax.tree.map(lambda p: p.at[...].set(jnp.nan), variables["params"])
  out = curvature_log.curvature_metrics({}, loss_fn, params, batches, jax.random.PRNGKey(0), 0.5)
  assert all(np.isnan(out[k]) for k in curvature_log.METRICS if k != "two_over_lr")
  assert out["two_over_lr"] == 4.0


@pytest.mark.parametrize("section, field", [
    ({"trace_samples": 1}, "trace_samples"), ({"every": -1}, "every"),
    ({"top_k": 3, "lanczos_iters": 2}, "lanczos_iters"), ({"topk": 1}, "topk")])
def test_bad_config_raises(section, field):
  with pytest.raises(ValueError, match=field):
    curvature_log.should_log({"curvature": section}, 1)


def test_plot_sharpness(tmp_path):
  records = [{"step": s, "sharpness": v, "two_over_lr": 20.0}
             for s, v in ((0, 1.0), (10, 15.0), (20, float("nan")))] + [{"step": 30}]
  path = curvature_log.plot_sharpness(records, str(tmp_path / "s.png"))
  assert (tmp_path / "s.png").stat().st_size > 0 and path.endswith("s.png")
  assert curvature_log.plot_sharpness([{"step": 1}], str(tmp_path / "t.png")) is None
