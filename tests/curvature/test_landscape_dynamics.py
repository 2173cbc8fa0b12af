"""Loss-landscape slices, filter normalization, the gradient noise scale and update ratios."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from flaxopt import curvature


def _quadratic():
  a = jnp.diag(jnp.array([4.0, 1.0, 0.25]))
  loss_fn = lambda p, b: 0.5 * (p["w"] - b) @ a @ (p["w"] - b)
  return loss_fn, {"w": jnp.zeros(3)}, jnp.array([1.0, -1.0, 2.0])


def test_1d_and_2d_slices_match_closed_form():
  loss_fn, params, centre = _quadratic()
  params = {"w": centre}  # the minimum: L(theta + a d) = 0.5 a^2 d^T A d
  e0, e1 = {"w": jnp.array([1.0, 0.0, 0.0])}, {"w": jnp.array([0.0, 1.0, 0.0])}
  grid = jnp.linspace(-1.0, 1.0, 5)
  line = curvature.loss_landscape(loss_fn, params, centre, e0, grid)
  np.testing.assert_allclose(line, 0.5 * 4.0 * grid ** 2, rtol=1e-6)
  grid_b = jnp.array([0.0, 2.0])
  plane = curvature.loss_landscape(loss_fn, params, centre, (e0, e1), (grid, grid_b))
  assert plane.shape == (5, 2)
  np.testing.assert_allclose(plane, 2.0 * grid[:, None] ** 2 + 0.5 * grid_b[None] ** 2,
                             rtol=1e-6)


def test_filter_normalized_direction_matches_filter_norms():
  params = {"conv": {"kernel": jax.random.normal(jax.random.PRNGKey(0), (3, 2, 4)) * 3.0,
                     "bias": jnp.ones(4)}}
  d = curvature.filter_normalized_direction(jax.random.PRNGKey(1), params)
  norms = lambda k: np.sqrt(np.sum(np.asarray(k) ** 2, axis=(0, 1)))  # one per output filter
  np.testing.assert_allclose(norms(d["conv"]["kernel"]), norms(params["conv"]["kernel"]),
                             rtol=1e-5)
  np.testing.assert_array_equal(d["conv"]["bias"], 0.0)  # biases ignored (Li et al.)
  kept = curvature.filter_normalized_direction(jax.random.PRNGKey(1), params,
                                               ignore_vectors=False)
  np.testing.assert_allclose(np.linalg.norm(kept["conv"]["bias"]), 2.0, rtol=1e-5)


def test_landscape_plots_write_files(tmp_path):
  grid = np.linspace(-1, 1, 4)
  assert (tmp_path / "a.png").name in curvature.plot_landscape_1d(
      grid, grid ** 2, str(tmp_path / "a.png"))
  curvature.plot_landscape_2d(grid, grid, grid[:, None] ** 2 + grid[None] ** 2,
                              str(tmp_path / "b.png"))
  assert (tmp_path / "b.png").stat().st_size > 0


def test_gradient_noise_scale_recovers_known_noise():
  # Per-example gradients g ~ N(G, Sigma): E|g_B|^2 = |G|^2 + tr(Sigma)/B exactly.
  rng = np.random.default_rng(0)
  g_true, sigma_diag = np.array([1.0, -2.0, 0.5, 0.0]), np.array([4.0, 1.0, 9.0, 2.0])
  k, b = 4000, 8
  examples = g_true + np.sqrt(sigma_diag) * rng.normal(size=(k, b, 4))
  grads = {"w": jnp.asarray(examples.mean(axis=1))}
  out = curvature.gradient_noise_scale(grads, b)
  np.testing.assert_allclose(out["trace_cov"], sigma_diag.sum(), rtol=0.05)
  np.testing.assert_allclose(out["grad_norm_sq"], g_true @ g_true, rtol=0.05)
  np.testing.assert_allclose(out["noise_scale"], sigma_diag.sum() / (g_true @ g_true), rtol=0.1)
  with pytest.raises(ValueError, match="per_batch_grads"):
    curvature.gradient_noise_scale({"w": grads["w"][:1]}, b)


def test_per_batch_gradients_and_update_ratios():
  loss_fn = lambda p, b: jnp.mean((b @ p["w"]) ** 2)
  params = {"w": jnp.array([1.0, 2.0])}
  batches = [jnp.ones((2, 2)), jnp.eye(2)]
  grads = curvature.per_batch_gradients(loss_fn, params, batches)
  np.testing.assert_allclose(grads["w"], [[6.0, 6.0], [1.0, 2.0]], rtol=1e-6)
  ratios = curvature.update_ratios({"w": jnp.array([0.3, 0.4])}, params)
  np.testing.assert_allclose(ratios["w"], 0.5 / np.sqrt(5.0), rtol=1e-6)
