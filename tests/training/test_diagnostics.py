"""Per-layer training diagnostics (flaxopt/training/diagnostics.py).

Statistics against numpy; activations and gradients of ``compute_diagnostics`` against an
independent ``model.apply`` / ``jax.grad``; the JSON-lines log and the plot. Dense models
only (all-reduces of conv models hang on the forced in-process CPU devices, tests/conftest.py).
"""

import functools
import json
import os

import chex
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import pytest

from flaxopt.nn import models
from flaxopt.training import diagnostics as D
from flaxopt.training import steps as steps_lib
from flaxopt.training.state import create_train_state

_RNG = np.random.default_rng(0)
PERCENTILES = (5.0, 50.0, 99.0)
# name -> a float64 sample with exact zeros (ReLU) or values near +-1 (tanh); one shape, so
# the jitted statistics compile once per dtype.
ARRAYS = {
    "normal": _RNG.normal(1.0, 2.0, (6, 8)),
    "tanh": np.tanh(_RNG.normal(0.0, 3.0, (6, 8))),
    "relu": np.maximum(_RNG.normal(size=(6, 8)), 0.0),
}
_JIT_STATS = jax.jit(lambda x: D.array_stats(x, saturation=0.97, percentiles=PERCENTILES))


@pytest.mark.parametrize("name", list(ARRAYS))
@pytest.mark.parametrize("dtype", [jnp.float32, jnp.bfloat16])
def test_array_stats_matches_numpy(name, dtype):
  a = jnp.asarray(ARRAYS[name], dtype)
  ref = np.asarray(a.astype(jnp.float32), np.float64).ravel()
  got = _JIT_STATS(a)
  expected = {
      "mean": ref.mean(), "std": ref.std(), "var": ref.var(), "second_moment": (ref ** 2).mean(),
      "zero_fraction": (ref == 0).mean(), "saturation_fraction": (np.abs(ref) >= 0.97).mean(),
      **{f"p{q:g}": np.percentile(ref, q) for q in PERCENTILES}}
  assert set(got) == set(expected)
  for key, value in expected.items():
    assert got[key].dtype == jnp.float32, key
    np.testing.assert_allclose(float(got[key]), value, rtol=1e-5, atol=1e-6, err_msg=key)
  # The host-side float64 version agrees.
  host = D.layer_stats([ref], saturation=0.97, percentiles=PERCENTILES)[0]
  for key, value in expected.items():
    assert host[key] == pytest.approx(value), key


def test_array_stats_edge_cases():
  assert np.isnan(D.array_stats(jnp.ones(3))["saturation_fraction"])
  assert "p50" not in D.array_stats(jnp.ones(3), percentiles=())
  with pytest.raises(ValueError, match=r"\(0,\)"):
    D.array_stats(jnp.zeros((0,)))


def _tiny_config():
  """configs/tiny.py (an MLP of 16 units, batch 20) with batch norm and dropout."""
  from configs import tiny  # pylint: disable=g-import-not-at-top
  config = tiny.get_config()
  config.model.norm = "batch"
  config.model.dropout = 0.2
  config.checkpoint_every = 0
  return config


@pytest.fixture(scope="module")
def setup():
  """The model of configs/tiny.py (+ batch norm, dropout) and a batch of its shape."""
  config = _tiny_config()
  model = models.build_model(config.model, 10)
  x = jnp.asarray(_RNG.normal(size=(config.batch_size, 40, 1)), jnp.float32)
  y = jnp.asarray(_RNG.integers(0, 10, config.batch_size), jnp.int32)
  variables = jax.jit(model.init)({"params": jax.random.PRNGKey(0)}, x)  # eager: slower
  state = create_train_state(variables, tx=optax.sgd(0.1), rng=jax.random.PRNGKey(2))
  return model, state, x, y


def test_compute_diagnostics_matches_independent_forward_and_grad(setup):
  model, state, x, y = setup
  rngs = {k: v for k, v in steps_lib.step_rngs(state.rng, state.step).items()
          if k in steps_lib.RNG_STREAMS}
  # The same static arguments as maybe_log_diagnostics passes: one compilation for both.
  out = D.compute_diagnostics(model, state.params, state.batch_stats, x, y, rngs,
                              num_classes=10, saturation=0.99)
  assert {"dense_0", "norm_0", "act_0", "Dropout_0", "head", "output"} <= set(
      out["activations"])
  assert set(out["gradients"]) == {
      f"{layer}/{p}" for layer, params in state.params.items() for p in params}

  def loss_fn(params):
    logits, _ = model.apply({"params": params, "batch_stats": state.batch_stats}, x,
                            train=True, rngs=rngs, mutable=["batch_stats"])
    return jnp.mean(optax.softmax_cross_entropy_with_integer_labels(logits, y)), logits

  (loss, logits), grads = jax.jit(jax.value_and_grad(loss_fn, has_aux=True))(state.params)
  stats = jax.jit(functools.partial(D.array_stats, saturation=0.99))  # eager: slower
  chex.assert_trees_all_close(out["loss"], loss, rtol=1e-5)
  chex.assert_trees_all_close(out["activations"]["output"], stats(logits),
                              rtol=1e-5,
                              atol=1e-6)
  chex.assert_trees_all_close(out["gradients"]["head/kernel"],
                              stats(grads["head"]["kernel"]),
                              rtol=1e-4, atol=1e-7)
  # Dropout (train mode, rate 0.2) zeroes activations after the ReLU.
  assert float(out["activations"]["Dropout_0"]["zero_fraction"]) > float(
      out["activations"]["act_0"]["zero_fraction"]) - 1e-6
  chex.assert_tree_all_finite(out)


def _config(every, num_train_steps=6):
  config = ml_collections.ConfigDict({"num_train_steps": num_train_steps})
  config.diagnostics = D.default_config()
  config.diagnostics.every = every
  return config


def test_maybe_log_diagnostics_writes_every_n_steps_and_plots(setup, tmp_path):
  model, state, x, y = setup
  batch = {"x": x, "y": y}
  log = lambda config, step: D.maybe_log_diagnostics(config, state, batch, step, str(tmp_path),
                                                     model=model, num_classes=10)
  assert log(_config(0), 4) is None
  assert log(ml_collections.ConfigDict({"num_train_steps": 6}), 4) is None  # no section
  assert not os.listdir(tmp_path)
  assert log(_config(2), 3) is None
  record = log(_config(2), 4)
  assert record["step"] == 4 and "act_0" in record["activations"]
  assert not (tmp_path / D.PLOT_FILE).exists()  # only at the last logged step
  log(_config(2), 6)
  lines = (tmp_path / D.DIAGNOSTICS_FILE).read_text().splitlines()
  assert [json.loads(line)["step"] for line in lines] == [4, 6]
  assert json.loads(lines[0]) == json.loads(json.dumps(record))
  assert (tmp_path / D.PLOT_FILE).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
  with pytest.raises(ValueError, match="-1"):
    log(_config(-1), 4)


def test_plot_without_records_is_none(tmp_path):
  assert D.plot_diagnostics(str(tmp_path)) is None

