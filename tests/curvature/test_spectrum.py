"""Lanczos, power iteration, SLQ and Hutchinson against numpy.linalg.eigh of dense matrices."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy.stats import wasserstein_distance

from flaxopt import curvature
from tests.curvature import problems


@pytest.fixture(scope="module")
def mlp():
  """The MLP (183 params) and the exact eigen-decomposition of its float64 Hessian."""
  with jax.enable_x64(True):
    params, batch, _, loss_fn = problems.make_problem("mlp")
    hess = problems.dense_hessian(loss_fn, params, batch)
  evals, evecs = np.linalg.eigh(hess)
  return params, batch, loss_fn, hess, evals, evecs


def _dense_matvec(a):
  a = jnp.asarray(a)
  return lambda v: {"w": a @ v["w"]}


def _with_spectrum(eigenvalues, seed=0):
  q, _ = np.linalg.qr(np.random.default_rng(seed).normal(size=(len(eigenvalues),) * 2))
  return (q * eigenvalues) @ q.T


def test_lanczos_top_k_matches_eigh_on_mlp_hessian(mlp):
  params, batch, loss_fn, _, evals, evecs = mlp
  with jax.enable_x64(True):
    matvec = lambda v: curvature.hvp(loss_fn, params, batch, v)
    values, vectors = curvature.top_eigenvalues(matvec, params, 3, jax.random.PRNGKey(0), 90)
  true = evals[::-1][:3]
  assert np.all(np.diff(np.asarray(values)) < 0)  # descending
  np.testing.assert_allclose(values, true, rtol=1e-6)
  for i in range(3):  # unit eigenvectors as pytrees, parallel to eigh's
    u = problems.flat(jax.tree.map(lambda x, i=i: x[i], vectors))
    assert abs(abs(u @ evecs[:, -1 - i]) - 1.0) < 1e-6


def test_reorthogonalization_is_needed_on_a_clustered_spectrum():
  # Three separated eigenvalues above a tight cluster: once the top Ritz value converges, plain
  # Lanczos loses orthogonality and returns ghost copies of it (Paige 1971).
  rng = np.random.default_rng(1)
  true = np.concatenate([[10.0, 9.0, 8.0], 1.0 + 1e-3 * rng.uniform(size=97)])
  with jax.enable_x64(True):
    matvec, params = _dense_matvec(_with_spectrum(true)), {"w": jnp.zeros(100)}
    ours, _ = curvature.top_eigenvalues(matvec, params, 3, jax.random.PRNGKey(0), 30)
    plain, _ = curvature.top_eigenvalues(matvec, params, 3, jax.random.PRNGKey(0), 30,
                                         reorthogonalize=False)
  np.testing.assert_allclose(ours, true[:3], rtol=1e-6)
  assert np.max(np.abs(np.asarray(plain) - true[:3]) / true[:3]) > 0.05, plain


def test_power_iteration_finds_the_largest_magnitude_eigenvalue():
  true = np.array([-12.0, 6.0, 3.0, 1.0, 0.5, 0.1])
  with jax.enable_x64(True):
    value, vector = curvature.power_iteration(_dense_matvec(_with_spectrum(true)),
                                              {"w": jnp.zeros(6)}, jax.random.PRNGKey(0), 80)
  np.testing.assert_allclose(value, -12.0, rtol=1e-9)
  np.testing.assert_allclose(np.linalg.norm(vector["w"]), 1.0, rtol=1e-12)


def test_slq_density_within_wasserstein_bound_that_wrong_scaling_fails(mlp):
  params, _, _, hess, evals, _ = mlp
  spread = evals.max() - evals.min()
  with jax.enable_x64(True):
    grid = jnp.linspace(evals.min() - 0.1 * spread, evals.max() + 0.1 * spread, 400)
    flat_params = {"w": jnp.zeros(hess.shape[0])}
    density, nodes, weights = curvature.spectral_density(
        _dense_matvec(hess), flat_params, jax.random.PRNGKey(2), 30, 30, grid)
  nodes, weights, density = (np.asarray(a).ravel() for a in (nodes, weights, density))
  np.testing.assert_allclose(weights.sum(), 1.0, rtol=1e-10)
  np.testing.assert_allclose(np.trapezoid(density, np.asarray(grid)), 1.0, rtol=1e-3)
  # W1(lambda, c * lambda) = |c - 1| E|lambda|: the bound is a 10% error in scale.
  bound = 0.1 * np.mean(np.abs(evals))
  dist = lambda x, w: wasserstein_distance(x, evals, w)
  assert dist(nodes, weights) < bound
  assert dist(np.asarray(grid), density) < bound  # the smoothed density, too
  # Wrong scalings fail it: nodes stretched 1.5x; weights |S_0j| instead of S_0j^2; equal
  # weights per node (dropping the quadrature weights).
  assert dist(1.5 * nodes, weights) > bound
  assert dist(nodes, np.sqrt(weights)) > bound
  assert dist(nodes, None) > bound


def test_bulk_edge_excludes_outliers():
  nodes = np.concatenate([np.linspace(0.0, 1.0, 995), [20.0, 30.0, 40.0, 50.0, 60.0]])
  weights = np.full(nodes.size, 1.0 / nodes.size)
  assert 0.98 < curvature.bulk_edge(nodes, weights, mass=0.99) <= 1.0
  assert curvature.bulk_edge(nodes, weights, mass=1.0) == 60.0


def test_hutchinson_trace_within_three_standard_errors(mlp):
  params, batch, loss_fn, hess, _, _ = mlp
  with jax.enable_x64(True):
    matvec = lambda v: curvature.hvp(loss_fn, params, batch, v)
    est, se = jax.jit(lambda k: curvature.hutchinson_trace(matvec, params, k, 100))(
        jax.random.PRNGKey(4))
    diag, diag_se = curvature.hutchinson_diagonal(_dense_matvec(hess), {"w": jnp.zeros(183)},
                                                  jax.random.PRNGKey(5), 50)
  exact = np.trace(hess)
  assert 0 < float(se) < 0.5 * abs(exact)
  assert abs(float(est) - exact) < 3 * float(se)
  z = np.abs(np.asarray(diag["w"]) - np.diag(hess)) / np.maximum(np.asarray(diag_se["w"]), 1e-12)
  assert np.mean(z < 3) > 0.95


@pytest.mark.parametrize("name, call", [
    ("k", lambda m, p: curvature.top_eigenvalues(m, p, 9, jax.random.PRNGKey(0), 9)),
    ("k", lambda m, p: curvature.top_eigenvalues(m, p, 0, jax.random.PRNGKey(0), 4)),
    ("num_iters", lambda m, p: curvature.top_eigenvalues(m, p, 3, jax.random.PRNGKey(0), 2)),
    ("num_steps", lambda m, p: curvature.lanczos(m, p, jax.random.PRNGKey(0), 9)),
    ("num_samples", lambda m, p: curvature.hutchinson_trace(m, p, jax.random.PRNGKey(0), 1)),
    ("num_samples", lambda m, p: curvature.hutchinson_diagonal(m, p, jax.random.PRNGKey(0), 1)),
    ("num_probes", lambda m, p: curvature.spectral_density(m, p, jax.random.PRNGKey(0), 0, 3,
                                                           jnp.linspace(0, 1, 5))),
    ("grid", lambda m, p: curvature.spectral_density(m, p, jax.random.PRNGKey(0), 1, 3,
                                                     jnp.array([1.0, 0.0]))),
])
def test_bad_input_raises_one_line_value_error(name, call):
  params = {"w": jnp.zeros(8)}
  with pytest.raises(ValueError, match=name) as info:
    call(lambda v: v, params)
  assert "\n" not in str(info.value)
