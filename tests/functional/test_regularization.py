"""Tests for flaxopt.functional.regularization: penalties, dropout, DropConnect."""

from absl.testing import parameterized
import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import flaxopt.functional as F
from flaxopt import registry

_PARAMS = {
    "dense": {"kernel": np.array([[1.0, -2.0], [0.5, -0.75]], np.float32),
              "bias": np.array([-3.0, 4.0], np.float32)},
    "scale": np.array([0.25], np.float32),
}

# name, function, numpy reference over the leaves, gradient closed form.
_PENALTIES = (
    ("l1", F.l1_penalty, lambda ls: sum(np.abs(l).sum() for l in ls), np.sign),
    ("l2", F.l2_penalty, lambda ls: sum((l**2).sum() for l in ls), lambda w: 2 * w),
)

# The two mask ops share the math: name, function.
_MASK_OPS = (("dropout", F.dropout), ("dropconnect", F.dropconnect))


class PenaltyTest(parameterized.TestCase):

  @parameterized.named_parameters(*_PENALTIES)
  def test_value_and_grad_match_closed_form(self, fn, ref, grad_ref):
    leaves = jax.tree_util.tree_leaves(_PARAMS)
    np.testing.assert_allclose(fn(_PARAMS), ref(leaves), rtol=1e-6)
    grads = jax.grad(fn)(_PARAMS)
    chex.assert_trees_all_close(grads, jax.tree.map(grad_ref, _PARAMS))

  @parameterized.named_parameters(*_PENALTIES)
  def test_dtype_kept_and_empty_tree(self, fn, ref, grad_ref):
    del ref, grad_ref
    for dtype in (jnp.bfloat16, jnp.float32):
      out = jax.jit(fn)(jax.tree.map(lambda w: jnp.asarray(w, dtype), _PARAMS))
      self.assertEqual(out.dtype, dtype)
    with jax.enable_x64(True):
      self.assertEqual(fn({"w": jnp.ones(3, jnp.float64)}).dtype, jnp.float64)
    self.assertEqual(float(fn({})), 0.0)

  def test_l2_penalty_matches_add_l2_with_twice_the_weight(self):
    # loss + lam * l2_penalty  ==  chain(add_l2(2 lam), sgd): the documented relation.
    from flaxopt import optim  # pylint: disable=g-import-not-at-top
    lam, lr = 0.3, 0.1
    grads = jax.tree.map(jnp.ones_like, _PARAMS)
    penalized = jax.tree.map(lambda g, p: g + lam * p,
                             grads, jax.grad(F.l2_penalty)(_PARAMS))
    expected, _ = optax.sgd(lr).update(penalized, optax.sgd(lr).init(_PARAMS))
    tx = optax.chain(optim.add_l2(2 * lam), optax.sgd(lr))
    got, _ = tx.update(grads, tx.init(_PARAMS), _PARAMS)
    chex.assert_trees_all_close(got, expected, rtol=1e-6)


class MaskOpsTest(chex.TestCase):

  @chex.variants(with_jit=True, without_jit=True)
  @parameterized.named_parameters(*_MASK_OPS)
  def test_drop_rate_and_mean_preserved(self, op):
    n = 100_000
    x = jnp.ones((n,), jnp.float32)
    fn = self.variant(lambda k, r: op(x, r, k))  # rate traced: one compilation.
    for rate in (0.1, 0.5, 0.9):
      y = np.asarray(fn(jax.random.PRNGKey(1), rate))
      keep = 1 - rate
      kept = y != 0
      # Kept entries are scaled by exactly 1/keep; the rest are zero.
      np.testing.assert_allclose(y[kept], 1 / keep, rtol=1e-5)
      # 5-sigma bands; a missing or wrong 1/keep scaling is off by >= 0.1.
      tol_frac = 5 * np.sqrt(rate * keep / n)
      tol_mean = 5 * np.sqrt(rate / (keep * n))
      self.assertAlmostEqual(1 - kept.mean(), rate, delta=tol_frac)
      self.assertAlmostEqual(float(y.mean()), 1.0, delta=tol_mean)

  @parameterized.named_parameters(*_MASK_OPS)
  def test_same_key_same_mask_other_key_other_mask(self, op):
    x = jnp.arange(1.0, 65.0).reshape(8, 8)
    k1, k2 = jax.random.PRNGKey(0), jax.random.PRNGKey(1)
    chex.assert_trees_all_equal(op(x, 0.5, k1), op(x, 0.5, k1))
    self.assertFalse(np.array_equal(op(x, 0.5, k1), op(x, 0.5, k2)))

  @parameterized.named_parameters(*_MASK_OPS)
  def test_identity_when_deterministic_or_rate_zero(self, op):
    x = jnp.arange(6.0)
    self.assertIs(op(x, 0.5, None, deterministic=True), x)
    self.assertIs(op(x, 0.0, jax.random.PRNGKey(0)), x)

  @parameterized.product(op=_MASK_OPS, dtype=(jnp.bfloat16, jnp.float32))
  def test_dtype_grad_vmap(self, op, dtype):
    x = jnp.linspace(0.5, 2.0, 16, dtype=dtype)
    key = jax.random.PRNGKey(3)
    y = op[1](x, 0.25, key)
    self.assertEqual(y.dtype, dtype)
    # d/dx sum(mask * x / keep) = mask / keep = y / x.
    g = jax.grad(lambda v: op[1](v, 0.25, key).astype(jnp.float32).sum())(x)
    chex.assert_trees_all_close(g.astype(jnp.float32), (y / x).astype(jnp.float32),
                                rtol=1e-2)
    ys = jax.vmap(lambda k: op[1](x, 0.25, k))(jax.random.split(key, 3))
    chex.assert_shape(ys, (3, 16))
    chex.assert_tree_all_finite(ys)

  def test_float64(self):
    with jax.enable_x64(True):
      x = jnp.ones(8, jnp.float64)
      self.assertEqual(F.dropout(x, 0.5, jax.random.PRNGKey(0)).dtype, jnp.float64)

  @parameterized.product(op=_MASK_OPS, rate=(-0.1, 1.0, 1.5, True, "0.5", None))
  def test_bad_rate_raises(self, op, rate):
    with self.assertRaisesRegex(ValueError, "rate"):
      op[1](jnp.ones(3), rate, jax.random.PRNGKey(0))

  @parameterized.named_parameters(*_MASK_OPS)
  def test_missing_key_raises(self, op):
    with self.assertRaisesRegex(ValueError, "key"):
      op(jnp.ones(3), 0.5, None)


class DropConnectMomentsTest(parameterized.TestCase):

  def test_moments_match_monte_carlo_of_masks(self):
    kx, kw, km = jax.random.split(jax.random.PRNGKey(0), 3)
    x = jax.random.normal(kx, (2, 5))
    w = jax.random.normal(kw, (5, 3))
    rate = 0.4
    masked = F.dropconnect(jnp.broadcast_to(w, (20_000,) + w.shape), rate, km)
    samples = jnp.einsum("bi,sio->sbo", x, masked)
    mean, var = F.dropconnect_moments(x, w, rate)
    # Independent closed form in the paper's unscaled convention, divided by p (and p**2).
    p = 1 - rate
    np.testing.assert_allclose(mean, p * (x @ w) / p, rtol=1e-5)
    np.testing.assert_allclose(var, p * (1 - p) * ((x * x) @ (w * w)) / p**2, rtol=1e-5)
    se_mean = np.sqrt(var / 20_000)
    np.testing.assert_array_less(np.abs(samples.mean(0) - mean), 5 * se_mean)
    np.testing.assert_allclose(samples.var(0), var, rtol=0.05)

  def test_gaussian_samples_shape_and_moments(self):
    x = jnp.ones((4, 3))
    w = jnp.array([[1.0, -1.0], [2.0, 0.5], [0.0, 1.0]])
    s = F.dropconnect_gaussian_samples(x, w, 0.5, jax.random.PRNGKey(0), 8000)
    chex.assert_shape(s, (8000, 4, 2))
    mean, var = F.dropconnect_moments(x, w, 0.5)
    np.testing.assert_allclose(s.mean(0), mean, atol=5 * float(jnp.sqrt(var.max() / 8000)))
    np.testing.assert_allclose(s.var(0), var, rtol=0.1)
    with self.assertRaisesRegex(ValueError, "num_samples"):
      F.dropconnect_gaussian_samples(x, w, 0.5, jax.random.PRNGKey(0), 0)


class RegistryTest(parameterized.TestCase):

  @parameterized.named_parameters(*_MASK_OPS)
  def test_mask_entries_bind_rate(self, op):
    x, key = jnp.arange(1.0, 9.0), jax.random.PRNGKey(0)
    fn = registry.get("dropout", op.__name__, rate=0.5)
    chex.assert_trees_all_equal(fn(x, key), op(x, 0.5, key))
    self.assertIs(fn(x, None, deterministic=True), x)
    with pytest.raises(ValueError, match="rate"):
      registry.get("dropout", op.__name__, rate=1.0)

  @parameterized.parameters("l1", "l2")
  def test_penalty_entries_are_optax_transforms(self, name):
    tx = registry.get("penalty", name, weight=0.1)
    self.assertIsInstance(tx, optax.GradientTransformation)
    with pytest.raises(ValueError, match="weight"):
      registry.get("penalty", name, weight=-0.1)
