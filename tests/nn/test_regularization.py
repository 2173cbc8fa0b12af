"""Tests for flaxopt.nn.regularization: Dropout and DropConnectDense modules."""

from absl.testing import parameterized
import chex
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import scipy.stats

import flaxopt.nn as fnn

_KEY = jax.random.PRNGKey(0)


class DropoutModuleTest(parameterized.TestCase):

  def test_statistics_and_identity(self):
    x = jnp.ones((200, 500))
    m = fnn.Dropout(0.3)
    y = np.asarray(m.apply({}, x, deterministic=False, rngs={"dropout": _KEY}))
    kept = y != 0
    np.testing.assert_allclose(y[kept], 1 / 0.7, rtol=1e-6)
    self.assertAlmostEqual(1 - kept.mean(), 0.3, delta=5 * np.sqrt(0.21 / y.size))
    self.assertAlmostEqual(y.mean(), 1.0, delta=5 * np.sqrt(0.3 / 0.7 / y.size))
    chex.assert_trees_all_equal(m.apply({}, x, deterministic=True), x)
    # Same rng, same mask; another rng, another mask.
    again = m.apply({}, x, deterministic=False, rngs={"dropout": _KEY})
    other = m.apply({}, x, deterministic=False, rngs={"dropout": jax.random.PRNGKey(1)})
    chex.assert_trees_all_equal(again, y)
    self.assertFalse(np.array_equal(other, y))

  def test_field_default_and_errors(self):
    x = jnp.ones((2, 3))
    chex.assert_trees_all_equal(fnn.Dropout(0.5, deterministic=True).apply({}, x), x)
    with self.assertRaises(ValueError):  # neither the field nor the argument set
      fnn.Dropout(0.5).apply({}, x)
    with self.assertRaisesRegex(ValueError, "rate"):
      fnn.Dropout(1.0).apply({}, x, deterministic=True)


def _dense(in_features=6, out_features=5, **kw):
  m = fnn.DropConnectDense(out_features, **kw)
  x = jnp.ones((1, in_features))
  params = m.init({"params": _KEY, "dropout": _KEY}, x, deterministic=True)
  return m, params


def _masked_kernels(m, params, in_features, copies, key):
  """Feeds basis vectors e_i (``copies`` times): output rows are the masked kernel rows."""
  x = jnp.tile(jnp.eye(in_features), (copies, 1))
  out = m.apply(params, x, deterministic=False, rngs={"dropout": key})
  return np.asarray(out).reshape(copies, in_features, -1)


class DropConnectDenseTest(parameterized.TestCase):

  def test_mean_rule_is_a_plain_dense_layer(self):
    m, params = _dense(rate=0.5)
    x = jax.random.normal(jax.random.PRNGKey(1), (4, 6))
    ref = nn.Dense(5).apply(params, x)  # flax Dense with the same parameters
    chex.assert_trees_all_close(m.apply(params, x, deterministic=True), ref, rtol=1e-6)
    act = fnn.DropConnectDense(5, rate=0.5, activation=jnp.tanh)
    chex.assert_trees_all_close(act.apply(params, x, deterministic=True), jnp.tanh(ref),
                                rtol=1e-6)

  @parameterized.named_parameters(("batch_mask", False), ("per_example", True))
  def test_training_masks(self, per_example):
    rate, in_f, out_f = 0.4, 32, 32
    m, params = _dense(in_f, out_f, rate=rate, per_example=per_example, use_bias=False)
    kernel = np.asarray(params["params"]["kernel"])
    w = _masked_kernels(m, params, in_f, copies=2, key=jax.random.PRNGKey(2))
    # Every entry is 0 or W / keep (inverted convention).
    dropped = w == 0
    np.testing.assert_allclose(w[~dropped], np.broadcast_to(kernel / 0.6, w.shape)[~dropped],
                               rtol=1e-5)
    self.assertAlmostEqual(dropped.mean(), rate, delta=5 * np.sqrt(0.24 / w.size))
    # One mask for the batch vs one mask per example.
    self.assertEqual(np.array_equal(dropped[0], dropped[1]), not per_example)
    # Inputs of different examples see different weights only per example.
    self.assertEqual(np.array_equal(w[0], w[1]), not per_example)

  def test_per_example_mask_with_extra_batch_axes(self):
    m, params = _dense(rate=0.5, per_example=True)
    x = jnp.ones((2, 3, 6))
    y = m.apply(params, x, deterministic=False, rngs={"dropout": _KEY})
    chex.assert_shape(y, (2, 3, 5))
    self.assertFalse(np.array_equal(y[0, 0], y[0, 1]))

  def test_gaussian_rule_sample_mean(self):
    # No activation: the average of N(x W + b, var) samples estimates the mean rule.
    rate, s = 0.5, 4000
    m, params = _dense(rate=rate, inference="gaussian", num_samples=s)
    x = jax.random.normal(jax.random.PRNGKey(3), (3, 6))
    got = m.apply(params, x, deterministic=True, rngs={"dropout": _KEY})
    kernel = params["params"]["kernel"]
    mean = x @ kernel + params["params"]["bias"]
    sd = jnp.sqrt(rate / (1 - rate) * (x * x) @ (kernel * kernel) / s)
    np.testing.assert_array_less(np.abs(got - mean), 5 * sd + 1e-6)

  def test_gaussian_rule_with_relu_matches_closed_form(self):
    # E[relu(u)], u ~ N(mu, sigma^2) = mu Phi(mu / sigma) + sigma phi(mu / sigma).
    rate, s = 0.3, 4000
    m, params = _dense(rate=rate, inference="gaussian", num_samples=s,
                       activation=jax.nn.relu)
    x = jax.random.normal(jax.random.PRNGKey(4), (3, 6))
    got = np.asarray(m.apply(params, x, deterministic=True, rngs={"dropout": _KEY}))
    kernel = np.asarray(params["params"]["kernel"], np.float64)
    xn = np.asarray(x, np.float64)
    mu = xn @ kernel + np.asarray(params["params"]["bias"])
    sigma = np.sqrt(rate / (1 - rate) * (xn**2) @ kernel**2)
    z = mu / sigma
    expected = mu * scipy.stats.norm.cdf(z) + sigma * scipy.stats.norm.pdf(z)
    # Mean rule relu(mu) is a different number: make sure the test can tell them apart.
    self.assertGreater(np.abs(expected - np.maximum(mu, 0)).max(), 0.05)
    np.testing.assert_array_less(np.abs(got - expected), 5 * sigma / np.sqrt(s) + 1e-6)

  def test_bfloat16_under_jit(self):
    dtype = jnp.bfloat16
    m = fnn.DropConnectDense(4, rate=0.5, param_dtype=dtype, per_example=True)
    x = jnp.ones((2, 3), dtype)
    params = m.init({"params": _KEY}, x, deterministic=True)
    y = jax.jit(lambda p, v: m.apply(p, v, deterministic=False, rngs={"dropout": _KEY}))(
        params, x)
    self.assertEqual(y.dtype, dtype)
    chex.assert_tree_all_finite(y)

  @parameterized.named_parameters(
      ("bad_inference", dict(rate=0.5, inference="median"), "inference"),
      ("bad_rate", dict(rate=1.0), "rate"),
  )
  def test_bad_arguments_raise(self, kw, pattern):
    with self.assertRaisesRegex(ValueError, pattern):
      fnn.DropConnectDense(3, **kw).init({"params": _KEY}, jnp.ones((1, 2)), deterministic=True)
