"""Fast, test-sized runs of the reproductions (experiments/reproduce_*.py) and their helpers."""

import math

import numpy as np
import pytest

from experiments import reproduce_glorot2010
from experiments import reproduce_he2015
from experiments import reproduce_klambauer2017
from experiments import reproduce_reddi2018
from experiments import signal_propagation as sp


def _check_reddi(r):
  assert r["theorem1/adam/final_x"] > 0.9  # Adam goes to the worst point +1 ...
  assert r["theorem1/amsgrad/final_x"] < -0.9  # ... AMSGrad to the optimum -1.
  assert r["theorem1/adam/avg_regret"] == pytest.approx(2.0 / 3.0, abs=0.05)


def _check_he(r):
  assert r["xavier/per_layer_factor"] == pytest.approx(0.5, abs=0.05)
  assert r["he/per_layer_factor"] == pytest.approx(1.0, abs=0.1)
  assert r["xavier/final_train_loss"] == pytest.approx(math.log(10.0), abs=0.02)
  assert r["he/final_train_loss"] < 0.85 * math.log(10.0)


def _check_glorot(r):
  assert r["standard/per_layer_factor"] == pytest.approx(1.0 / 3.0, abs=0.1)
  assert r["normalized/grad_var_ratio"] > 10 * r["standard/grad_var_ratio"]
  assert r["standard/activation_std"][-1] < 0.25 * r["standard/activation_std"][0]


def _check_klambauer(r):
  assert abs(r["selu/final_mean"]) < 0.1
  assert r["selu/final_var"] == pytest.approx(1.0, abs=0.2)
  assert r["relu/final_var"] < 1e-10


# module -> extra checks on its result dict (beyond result["reproduced"]).
REPRODUCTIONS = {
    "reddi2018": (reproduce_reddi2018, _check_reddi),
    "he2015": (reproduce_he2015, _check_he),
    "glorot2010": (reproduce_glorot2010, _check_glorot),
    "klambauer2017": (reproduce_klambauer2017, _check_klambauer),
}


@pytest.mark.slow
@pytest.mark.parametrize("name", list(REPRODUCTIONS))
def test_fast_reproduction_and_its_plot(name, tmp_path):
  """Each fast run once, with its plot (a missing directory is created)."""
  module, check = REPRODUCTIONS[name]
  path = tmp_path / "sub" / "repro.png"
  result = module.run(fast=True, plot_path=str(path))
  assert result["reproduced"], module.report(result)
  check(result)
  assert "REPRODUCED" in module.report(result)
  assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_layer_stats_matches_numpy():
  rng = np.random.default_rng(0)
  layers = [rng.normal(1.0, 2.0, (50, 4)), np.tanh(rng.normal(0, 3.0, (50, 4))),
            np.maximum(rng.normal(size=(50, 4)), 0.0)]
  stats = sp.layer_stats(layers, saturation=0.97, percentiles=(5, 50))
  for a, s in zip(layers, stats):
    assert s["mean"] == pytest.approx(a.mean())
    assert s["std"] == pytest.approx(a.std())
    assert s["var"] == pytest.approx(a.var())
    assert s["second_moment"] == pytest.approx((a ** 2).mean())
    assert s["zero_fraction"] == pytest.approx((a == 0).mean())
    assert s["saturation_fraction"] == pytest.approx((np.abs(a) >= 0.97).mean())
    assert s["p5"] == pytest.approx(np.percentile(a, 5))
    assert s["p50"] == pytest.approx(np.median(a))
  assert stats[2]["zero_fraction"] > 0.3  # ReLU zeros are counted.
  assert math.isnan(sp.layer_stats([layers[0]])[0]["saturation_fraction"])
  # A stacked array is read layer by layer along its leading axis.
  assert sp.layer_stats(np.stack(layers[:2]))[1]["mean"] == pytest.approx(stats[1]["mean"])


def test_forward_and_backward_gradients_match_autodiff_of_the_weights():
  """dL/ds_l from the perturbation trick agrees with dL/db_l (a bias gradient sums dL/ds)."""
  import jax  # pylint: disable=g-import-not-at-top
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
  import flaxopt.functional as F  # pylint: disable=g-import-not-at-top
  # Shapes as in the He et al. fast run, so the initializer's compiled draws are reused.
  params = sp.init_deep_mlp(jax.random.key(0), 40, 128, 4, 10, F.xavier_normal())
  params = jax.tree_util.tree_map(lambda p: p + 0.1, params)  # Non-zero biases.
  x = jnp.asarray(np.random.default_rng(1).normal(size=(5, 40)), jnp.float32)
  y = jnp.array([0, 1, 2, 0, 1])
  out = sp.forward_and_backward(params, x, y, F.tanh)
  grads = jax.jit(jax.grad(lambda p: sp.cross_entropy(sp.deep_mlp_apply(p, x, F.tanh)[0], y)
                           * x.shape[0]))(params)
  np.testing.assert_allclose(out["grad"][0].sum(0), grads["b_in"], rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(out["grad"][1:].sum(1), grads["b_hidden"], rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(out["activation"], np.tanh(out["signal"]), rtol=1e-6)
