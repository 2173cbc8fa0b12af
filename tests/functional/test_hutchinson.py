"""Hutchinson diagonal estimator against the exact diagonal of known matrices."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import flaxopt.functional as F


def test_rademacher_entries_and_dtype():
  tree = {"a": jnp.zeros((50, 4), jnp.float32), "b": jnp.zeros(7, jnp.bfloat16)}
  z = F.rademacher_like(jax.random.PRNGKey(0), tree)
  assert z["a"].dtype == jnp.float32 and z["b"].dtype == jnp.bfloat16
  assert set(np.unique(np.asarray(z["a"]))) == {-1.0, 1.0}
  assert abs(float(jnp.mean(z["a"]))) < 0.2  # 200 fair signs: |mean| < 0.2 with p > 0.99


def test_diagonal_matrix_is_exact():
  # For a diagonal A, z (A z) = diag(A) z^2 = diag(A) exactly, with zero spread.
  d = jnp.arange(1.0, 6.0)
  est, se = F.hutchinson_diagonal(lambda v: d * v, jnp.zeros(5), jax.random.PRNGKey(1), 4)
  np.testing.assert_allclose(est, d, rtol=0, atol=0)
  np.testing.assert_allclose(se, 0.0, atol=0)


def test_dense_matrix_within_standard_errors():
  rng = np.random.default_rng(0)
  m = rng.normal(size=(6, 6))
  a = jnp.asarray(m @ m.T, jnp.float64) if jax.config.jax_enable_x64 else jnp.asarray(m @ m.T)
  params = {"w": jnp.zeros(6, a.dtype)}
  matvec = lambda v: {"w": a @ v["w"]}
  est, se = F.hutchinson_diagonal(matvec, params, jax.random.PRNGKey(2), 2000)
  z = np.abs(np.asarray(est["w"]) - np.diag(np.asarray(a))) / np.asarray(se["w"])
  assert np.all(z < 4.5), z
  # The estimator is unbiased but not exact for a dense matrix: the error is not zero.
  assert np.max(np.abs(np.asarray(est["w"]) - np.diag(np.asarray(a)))) > 0


def test_rejects_fewer_than_two_samples():
  with pytest.raises(ValueError, match="num_samples"):
    F.hutchinson_diagonal(lambda v: v, jnp.zeros(3), jax.random.PRNGKey(0), 1)
