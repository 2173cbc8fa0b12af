"""Claim checks of the curvature reproductions on tiny inputs (the full runs are scripts)."""

import json

import jax
import ml_collections
import numpy as np
import pytest

from experiments import curvature_repro as R


def test_cohen_check_accepts_edge_of_stability_and_rejects_others():
  lr = 0.1  # 2/lr = 20
  rise = np.concatenate([np.linspace(4.0, 20.0, 14), 20.0 + np.sin(np.arange(6))])
  falling = np.linspace(1.0, 0.3, 20)
  assert R.check_cohen(rise, falling, lr)["holds"]
  assert R.check_cohen(rise, falling, lr)["tail_median_ratio"] == pytest.approx(
      np.median(rise[14:]) / 20.0)
  assert not R.check_cohen(rise + 8.0, falling, lr)["holds"]  # starts above 0.5 * 2/lr
  assert not R.check_cohen(rise * 0.5, falling, lr)["holds"]  # never reaches the edge
  assert not R.check_cohen(rise * 1.5, falling, lr)["holds"]  # far above it
  assert not R.check_cohen(rise, falling[::-1], lr)["holds"]  # loss went up
  assert not R.check_cohen(rise, np.append(falling[:-1], np.nan), lr)["holds"]  # diverged


@pytest.mark.parametrize("larger, smaller, holds", [
    ([4.0, 6.0, 5.0], [2.0, 2.5, 2.5], True),   # mean 5 vs 2.33: 2.14x
    ([4.0, 4.0, 4.0], [2.5, 2.5, 2.5], False),  # 1.6x < 2
    ([9.0, np.nan, 9.0], [1.0, 1.0, 1.0], False),
    ([9.0, 9.0, 9.0], [1.0, 0.0, 1.0], False),
])
def test_ratio_check(larger, smaller, holds):
  assert R.check_ratio(larger, smaller, 2.0)["holds"] is holds


def test_within_tolerance():
  assert R.within([0.50, 0.48], [0.46, 0.50], 0.1)
  assert not R.within([0.50, 0.40], [0.46, 0.50], 0.1)


def test_sharpness_of_a_quadratic_model():
  # Linear model, MSE: Hessian = kron(I_10, X^T X / N) (0.5 * mean ||Wx - t||^2, no bias term
  # contribution separated): compare with numpy on the explicit matrix.
  model = R.MLP(width=3, depth=0)
  x = np.random.default_rng(0).normal(size=(16, 4)).astype(np.float32)
  batch = {"x": jax.numpy.asarray(x), "y": jax.numpy.zeros(16, jax.numpy.int32)}
  params = R.init_params(model, 0, x)
  xa = np.concatenate([x, np.ones((16, 1))], axis=1)
  expected = np.linalg.eigvalsh(xa.T @ xa / 16).max()
  got = R.sharpness(R.mse_loss(model), params, [batch], num_iters=10)
  np.testing.assert_allclose(got, expected, rtol=1e-4)


def test_loss_range_along_gradient_of_a_quadratic():
  # L(w) = 0.5 * w^2 at w = 1: g = 1, L(1 - s) over s in lr * [0.1, 0.4] with lr = 1.
  loss_fn = lambda p, b: 0.5 * p["w"] ** 2
  got = R.loss_range_along_gradient(loss_fn, {"w": 1.0}, None, 1.0, [0.1, 0.25, 0.4])
  np.testing.assert_allclose(got, 0.5 * (0.9 ** 2 - 0.6 ** 2), rtol=1e-6)


def test_write_result(tmp_path, monkeypatch):
  monkeypatch.setattr(R, "RESULTS_DIR", str(tmp_path / "published"))
  paths = R.write_result("x", {"holds": True, "v": float("nan")}, str(tmp_path / "w"), True)
  assert len(paths) == 2
  for path in paths:
    with open(path) as f:
      assert json.load(f)["holds"] is True
  with pytest.raises(SystemExit) as info:
    R.finish("y", {"holds": False}, str(tmp_path / "w"), False)
  assert info.value.code == 1
  assert not (tmp_path / "published" / "y.json").exists()
