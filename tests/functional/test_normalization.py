"""Tests for flaxopt.functional.normalization against numpy closed forms and flax.linen."""

from absl.testing import parameterized
import chex
import flax.linen as nn
import jax
from jax.test_util import check_grads
import jax.numpy as jnp
import numpy as np
import pytest

import flaxopt.functional as F

EPS = 1e-5


def _np_norm(x, axes, scale=None, bias=None, eps=EPS):
  """Closed form in float64: (x - mean) / sqrt(var + eps) * scale + bias."""
  x = np.asarray(x, np.float64)
  mean = x.mean(axis=axes, keepdims=True)
  var = ((x - mean) ** 2).mean(axis=axes, keepdims=True)
  return _np_norm_affine((x - mean) / np.sqrt(var + eps), scale, bias)


def _np_group_norm(x, groups, scale=None, bias=None):
  c = x.shape[-1]
  g = np.asarray(x, np.float64).reshape(*x.shape[:-1], groups, c // groups)
  axes = tuple(range(1, g.ndim - 2)) + (g.ndim - 1,)
  y = _np_norm(g, axes).reshape(x.shape)
  return _np_norm_affine(y, scale, bias)


def _np_norm_affine(y, scale, bias):
  if scale is not None:
    y = y * np.asarray(scale, np.float64)
  if bias is not None:
    y = y + np.asarray(bias, np.float64)
  return y


SHAPE = (4, 3, 5, 8)
_RNG = np.random.default_rng(0)
X = (_RNG.normal(size=SHAPE) * 2 + 1).astype(np.float32)
SCALE = _RNG.uniform(0.5, 1.5, size=SHAPE[-1]).astype(np.float32)
BIAS = _RNG.normal(size=SHAPE[-1]).astype(np.float32)

# name -> (fn(x, scale, bias), numpy reference(x, scale, bias)).
CASES = {
    "batch_norm": (lambda x, s, b: F.batch_norm(x, s, b),
                   lambda x, s, b: _np_norm(x, (0, 1, 2), s, b)),
    "layer_norm": (lambda x, s, b: F.layer_norm(x, s, b),
                   lambda x, s, b: _np_norm(x, (-1,), s, b)),
    "instance_norm": (lambda x, s, b: F.instance_norm(x, s, b),
                      lambda x, s, b: _np_norm(x, (1, 2), s, b)),
    "group_norm": (lambda x, s, b: F.group_norm(x, 2, s, b),
                   lambda x, s, b: _np_group_norm(x, 2, s, b)),
    "batch_norm_given_stats": (
        lambda x, s, b: F.batch_norm(x, s, b, mean=jnp.full((8,), 0.5), var=jnp.full((8,), 3.0)),
        lambda x, s, b: _np_norm_affine((np.float64(x) - 0.5) / np.sqrt(3.0 + EPS), s, b)),
}
NAMED = tuple((name, name) for name in CASES)


class NormalizationTest(chex.TestCase):

  @chex.variants(with_jit=True, without_jit=True)
  @parameterized.named_parameters(*NAMED)
  def test_matches_closed_form(self, name):
    fn, reference = CASES[name]
    for scale, bias in ((None, None), (SCALE, BIAS)):
      out = self.variant(fn)(X, scale, bias)
      chex.assert_shape(out, SHAPE)
      chex.assert_trees_all_close(out, reference(X, scale, bias).astype(np.float32),
                                  atol=2e-5, rtol=2e-5)

  @parameterized.named_parameters(*NAMED)
  def test_dtypes_kept_and_bfloat16_close(self, name):
    fn, reference = CASES[name]
    fn = jax.jit(fn)
    out = fn(jnp.asarray(X, jnp.bfloat16), SCALE, BIAS)
    self.assertEqual(out.dtype, jnp.bfloat16)
    # bfloat16 input rounding (~0.4%) is the only error: statistics are float32.
    chex.assert_trees_all_close(out.astype(np.float32),
                                reference(X, SCALE, BIAS).astype(np.float32), atol=0.06)
    with jax.enable_x64(True):
      out64 = fn(jnp.asarray(X, jnp.float64), SCALE, BIAS)
      self.assertEqual(out64.dtype, jnp.float64)
      np.testing.assert_allclose(out64, reference(X, SCALE, BIAS), atol=1e-12, rtol=1e-12)

  @parameterized.named_parameters(*(n for n in NAMED if n[0] != "batch_norm_given_stats"))
  def test_constant_input_gives_zeros_and_finite_grads(self, name):
    fn, _ = CASES[name]
    const = jnp.full((2, 3, 2, 4), 7.25, jnp.float32)
    out, grads = jax.jit(jax.value_and_grad(
        lambda x: jnp.sum(fn(x, None, None) ** 2 + fn(x, None, None) * jnp.arange(4.0))))(const)
    self.assertEqual(float(out), 0.0)  # A sum of squares: zero only if every output is 0.
    chex.assert_tree_all_finite(grads)

  def test_check_grads(self):
    """One check of every normalizer's gradient (x, scale, bias): the outputs concatenated."""
    x = np.random.default_rng(1).normal(size=(2, 3, 2, 4))
    s = np.linspace(0.5, 1.5, 4)
    b = np.linspace(-1, 1, 4)

    def all_norms(x, s, b):
      outs = (F.batch_norm(x, s, b), F.layer_norm(x, s, b), F.instance_norm(x, s, b),
              F.group_norm(x, 2, s, b), F.weight_norm(x, s))
      return jnp.concatenate([o.ravel() for o in outs])

    with jax.enable_x64(True):
      check_grads(jax.jit(all_norms), (x, s, b), order=1, modes=("rev",), atol=1e-5, rtol=1e-5)

  def test_large_mean_is_stable_in_float32(self):
    """Mean 1e4, std 1: E[x^2]-E[x]^2 loses every digit in float32; two-pass does not."""
    rng = np.random.default_rng(2)
    x = (1e4 + rng.normal(size=(512, 4))).astype(np.float32)
    for out, axis in ((F.batch_norm(x), 0), (F.layer_norm(x.T), 1)):
      out = np.asarray(out, np.float64)
      # Input quantization at 1e4 is ~5e-4 (float32 ulp), so ~1e-3 is the best possible.
      np.testing.assert_allclose(out.mean(axis), 0, atol=2e-3)
      np.testing.assert_allclose(out.std(axis), 1, atol=2e-3)
    # The one-pass formula (what this test guards against) fails on the same data.
    xj = jnp.asarray(x)
    fast_var = jnp.mean(xj * xj, 0) - jnp.mean(xj, 0) ** 2
    self.assertGreater(float(jnp.max(jnp.abs(fast_var - 1))), 0.1)

  def test_matches_flax_layer_and_group_norm(self):
    variables = {"params": {"scale": SCALE, "bias": BIAS}}
    ln = nn.LayerNorm(epsilon=EPS, use_fast_variance=False).apply(variables, X)
    chex.assert_trees_all_close(F.layer_norm(X, SCALE, BIAS), ln, atol=1e-5)
    gn = nn.GroupNorm(num_groups=4, epsilon=EPS, use_fast_variance=False).apply(variables, X)
    chex.assert_trees_all_close(F.group_norm(X, 4, SCALE, BIAS), gn, atol=1e-5)

  def test_special_cases_of_group_norm(self):
    x2 = X.reshape(-1, SHAPE[-1])
    pairs = jax.jit(lambda x, x2: (
        (F.group_norm(x2, 1, SCALE, BIAS), F.layer_norm(x2, SCALE, BIAS)),
        (F.group_norm(x, SHAPE[-1], SCALE, BIAS), F.instance_norm(x, SCALE, BIAS))))(X, x2)
    for group, special in pairs:
      chex.assert_trees_all_close(group, special, atol=1e-6)

  def test_moments_mask(self):
    where = np.arange(SHAPE[0])[:, None, None, None] < 3
    mean, var, count = F.moments(X, (0, 1, 2), where=where, return_count=True)
    chex.assert_trees_all_close(mean, X[:3].mean((0, 1, 2)), atol=1e-5)
    chex.assert_trees_all_close(var, X[:3].var((0, 1, 2)), atol=1e-5)
    chex.assert_trees_all_close(count, np.full(SHAPE[-1], 3 * 3 * 5.0))

  @chex.variants(with_jit=True, without_jit=True)
  def test_weight_norm(self):
    rng = np.random.default_rng(3)
    v = rng.normal(size=(3, 3, 2, 5)).astype(np.float32)
    v[..., 1] = 0  # A zero filter stays zero, with finite gradients.
    g = rng.normal(size=5).astype(np.float32)
    w = self.variant(F.weight_norm)(v, g)
    norms = np.sqrt((v.astype(np.float64) ** 2).sum((0, 1, 2)))
    expected = v * np.where(norms > 0, g / np.where(norms > 0, norms, 1), 0)
    chex.assert_trees_all_close(w, expected.astype(np.float32), atol=1e-6)
    chex.assert_tree_all_finite(jax.grad(lambda v: jnp.sum(F.weight_norm(v, g) ** 2))(v))
    self.assertEqual(F.weight_norm(jnp.asarray(v, jnp.bfloat16), g).dtype, jnp.bfloat16)


@pytest.mark.parametrize("call, message", [
    (lambda: F.group_norm(X, 3), "num_groups=3 does not divide the 8 channels"),
    (lambda: F.layer_norm(X, eps=0.0), "eps must be > 0"),
    (lambda: F.batch_norm(X, mean=jnp.zeros(8)), "both mean and var"),
    (lambda: F.instance_norm(X[:, 0, 0]), "at least one spatial axis"),
    (lambda: F.group_norm(X, 0), "num_groups must be a positive int"),
])
def test_bad_arguments_raise(call, message):
  with pytest.raises(ValueError, match=message):
    call()


def test_group_norm_error_raised_at_trace_time():
  with pytest.raises(ValueError, match="num_groups=3"):
    jax.jit(lambda x: F.group_norm(x, 3))(X)
