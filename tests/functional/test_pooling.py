"""Tests for flaxopt.functional.pooling against numpy window loops and flax.linen pooling."""

import itertools

from absl.testing import parameterized
import chex
import flax.linen as nn
import jax
from jax.test_util import check_grads
import jax.numpy as jnp
import numpy as np
import pytest

import flaxopt.functional as F


def _np_windows(x, window, strides, padding, with_padding=False):
  """Every window by explicit index loops, as an object array (N, *out, C) of 1-D arrays.

  Each entry lists the window's real (non-padding) values in row-major offset
  order; with ``with_padding`` it lists every offset (padding as 0) and comes
  with a boolean array marking the real ones.
  """
  x = np.asarray(x, np.float64)
  spatial = x.shape[1:-1]
  pads, outs = [], []
  for n, w, s in zip(spatial, window, strides):
    if padding == "VALID":
      outs.append((n - w) // s + 1)
      pads.append(0)
    else:  # SAME: ceil(n / s) outputs, the odd padding element at the end.
      out = -(-n // s)
      outs.append(out)
      pads.append(max((out - 1) * s + w - n, 0) // 2)
  result = np.empty((x.shape[0], *outs, x.shape[-1]), dtype=object)
  for b, c in itertools.product(range(x.shape[0]), range(x.shape[-1])):
    for pos in itertools.product(*(range(o) for o in outs)):
      values, real = [], []
      for offset in itertools.product(*(range(w) for w in window)):
        idx = [p * s + o - lo for p, s, o, lo in zip(pos, strides, offset, pads)]
        inside = all(0 <= i < n for i, n in zip(idx, spatial))
        values.append(x[(b, *idx, c)] if inside else 0.0)
        real.append(inside)
      values, real = np.array(values), np.array(real)
      result[(b, *pos, c)] = (values, real) if with_padding else values[real]
  return result


def _np_pool(x, window, strides, padding, reduce):
  windows = _np_windows(x, window, strides, padding)
  return np.vectorize(reduce, otypes=[np.float64])(windows)


def _np_stochastic_expectation(v):
  a = np.maximum(v, 0)
  return (a * v).sum() / a.sum() if a.sum() > 0 else v.mean()


# name -> (window, strides, padding, input shape).
GEOMETRIES = {
    "1d_same_stride2": ((3,), (2,), "SAME", (2, 8, 2)),
    "2d_valid": ((2, 2), None, "VALID", (2, 4, 6, 3)),
    "2d_same_overlap": ((3, 2), (2, 1), "SAME", (1, 5, 4, 2)),
}

# op name -> (fn(x, window, strides, padding), numpy per-window reduction or None).
OPS = {
    "max_pool": (F.max_pool, np.max),
    "avg_pool_exclude_pad": (
        lambda x, w, s, p: F.avg_pool(x, w, s, p, count_include_pad=False), np.mean),
    "stochastic_pool_test_time": (
        lambda x, w, s, p: F.stochastic_pool(x, w, s, p, deterministic=True),
        _np_stochastic_expectation),
    "lp_pool_p3": (lambda x, w, s, p: F.lp_pool(x, 3.0, w, s, p),
                   lambda v: np.mean(np.abs(v) ** 3) ** (1 / 3)),
    "mixed_pool_0.3": (lambda x, w, s, p: F.mixed_pool(x, 0.3, w, s, p),
                       lambda v: 0.3 * v.max() + 0.7 * v.mean()),
}

CASES = tuple((f"{op}_{geo}", op, geo) for op in OPS for geo in GEOMETRIES)


def _input(shape, seed=0):
  return np.random.default_rng(seed).normal(size=shape).astype(np.float32)


class PoolingTest(chex.TestCase):

  @chex.variants(with_jit=True, without_jit=True)
  @parameterized.named_parameters(*CASES)
  def test_matches_numpy_window_loop(self, op, geo):
    fn, reduce = OPS[op]
    window, strides, padding, shape = GEOMETRIES[geo]
    x = _input(shape)
    out = self.variant(lambda x: fn(x, window, strides, padding))(x)
    expected = _np_pool(x, window, window if strides is None else strides, padding, reduce)
    chex.assert_shape(out, expected.shape)
    chex.assert_trees_all_close(out, expected.astype(np.float32), atol=1e-5, rtol=1e-5)

  @parameterized.named_parameters(*((geo, geo) for geo in GEOMETRIES))
  def test_max_and_avg_match_flax(self, geo):
    window, strides, padding, shape = GEOMETRIES[geo]
    x = _input(shape, seed=1)
    strides = window if strides is None else strides
    chex.assert_trees_all_close(F.max_pool(x, window, strides, padding),
                                nn.max_pool(x, window, strides, padding))
    for include in (True, False):
      chex.assert_trees_all_close(
          F.avg_pool(x, window, strides, padding, count_include_pad=include),
          nn.avg_pool(x, window, strides, padding, count_include_pad=include), atol=1e-6)

  def test_gated_pool_matches_numpy(self):
    window, strides, padding, shape = GEOMETRIES["2d_same_overlap"]
    x = _input(shape, seed=2)
    gate = np.linspace(-1, 1, 6 * 2).reshape(2, 6).astype(np.float32)  # per channel (C, K)
    out = F.gated_pool(x, gate, window, strides, padding)
    windows = _np_windows(x, window, strides, padding, with_padding=True)
    expected = np.zeros(out.shape)
    for idx in np.ndindex(windows.shape):
      values, real = windows[idx]
      s = 1 / (1 + np.exp(-(gate[idx[-1]] * values).sum()))
      expected[idx] = s * values[real].max() + (1 - s) * values[real].mean()
    chex.assert_trees_all_close(out, expected.astype(np.float32), atol=1e-5)
    # A saturated gate picks max pooling; a closed one average pooling.
    xs = _input((2, 4, 4, 3), seed=3) + 3  # positive, so w . x_R is large
    chex.assert_trees_all_close(F.gated_pool(xs, jnp.full(4, 50.0), (2, 2)),
                                F.max_pool(xs, (2, 2)), atol=1e-5)
    chex.assert_trees_all_close(F.gated_pool(xs, jnp.full(4, -50.0), (2, 2)),
                                F.avg_pool(xs, (2, 2)), atol=1e-5)

  def test_lp_pool_limits_and_pytorch_convention(self):
    x = _input((2, 4, 4, 3), seed=4)
    # p = 1: average of |x|.
    chex.assert_trees_all_close(F.lp_pool(x, 1.0, (2, 2)), F.avg_pool(jnp.abs(x), (2, 2)),
                                atol=1e-6)
    # Large p with large values: no overflow (50**300 is inf in float32), tends to max |x|.
    big = 50 * x
    out = F.lp_pool(big, 300.0, (2, 2))
    chex.assert_tree_all_finite(out)
    chex.assert_trees_all_close(out, F.max_pool(jnp.abs(big), (2, 2)), rtol=5e-3)
    # PyTorch's LPPool2d is the p-th root of the sum: ours * K^(1/p).
    torch_style = _np_pool(np.abs(x), (2, 2), (2, 2), "VALID", lambda v: (v ** 3).sum() ** (1 / 3))
    chex.assert_trees_all_close(F.lp_pool(x, 3.0, (2, 2)) * 4 ** (1 / 3),
                                torch_style.astype(np.float32), rtol=1e-5)

  def test_mixed_pool_endpoints_and_per_channel_alpha(self):
    x = _input((2, 4, 4, 3), seed=5)
    chex.assert_trees_all_close(F.mixed_pool(x, 1.0, (2, 2)), F.max_pool(x, (2, 2)))
    chex.assert_trees_all_close(F.mixed_pool(x, 0.0, (2, 2)), F.avg_pool(x, (2, 2)), atol=1e-6)
    alpha = jnp.array([0.0, 0.5, 1.0])
    out = F.mixed_pool(x, alpha, (2, 2))
    chex.assert_trees_all_close(out[..., 1], 0.5 * (F.max_pool(x, (2, 2)) +
                                                    F.avg_pool(x, (2, 2)))[..., 1], atol=1e-6)

  def test_stochastic_pool_samples_window_members(self):
    x = jnp.abs(_input((3, 4, 6, 2), seed=6))
    out = jax.jit(lambda k: F.stochastic_pool(x, (2, 3), key=k))(jax.random.key(0))
    windows = _np_windows(x, (2, 3), (2, 3), "VALID")
    for idx in np.ndindex(windows.shape):
      self.assertIn(np.float32(out[idx]), windows[idx].astype(np.float32))

  def test_stochastic_pool_frequencies(self):
    """5000 draws of one window [1, 2, 3, 4, 0, 0]: frequencies a_i / sum(a)."""
    draws = 5000
    window = np.array([1.0, 2.0, 3.0, 4.0, 0.0, 0.0], np.float32)
    x = jnp.broadcast_to(jnp.asarray(window).reshape(1, 6, 1), (draws, 6, 1))
    out = np.asarray(jax.jit(lambda x: F.stochastic_pool(x, (6,), key=jax.random.key(42)))(x))
    counts = np.array([(out == v).sum() for v in window[:4]])
    self.assertEqual(counts.sum(), draws)  # zeros are never drawn
    expected = draws * window[:4] / window.sum()
    chi2 = ((counts - expected) ** 2 / expected).sum()
    self.assertLess(chi2, 21.1)  # p = 1e-4 critical value, 3 degrees of freedom
    # A uniform sampler over the 4 positive values fails the same test.
    uniform_chi2 = ((draws / 4 - expected) ** 2 / expected).sum()
    self.assertGreater(uniform_chi2, 21.1)

  def test_stochastic_pool_negative_and_zero_windows(self):
    x = jnp.array([0.0, 0.0, -1.0, -3.0, -2.0, 5.0]).reshape(1, 6, 1)
    for deterministic, key in ((True, None), (False, jax.random.key(1))):
      out = jax.jit(lambda x, key: F.stochastic_pool(x, (2,), key=key,
                                                     deterministic=deterministic))(x, key)
      chex.assert_tree_all_finite(out)
      self.assertEqual(float(out[0, 0, 0]), 0.0)  # all-zero window
      self.assertEqual(float(out[0, 2, 0]), 5.0)  # the negative never drawn
      if deterministic:
        self.assertAlmostEqual(float(out[0, 1, 0]), -2.0)  # no positive: uniform, the mean
    grads = jax.jit(jax.grad(lambda x: F.stochastic_pool(x, (2,), deterministic=True).sum()))(x)
    chex.assert_tree_all_finite(grads)

  def test_check_grads(self):
    """One check of every op's gradient (x, p, alpha, gate): the outputs concatenated."""
    x = np.random.default_rng(7).normal(size=(1, 4, 4, 2))
    gate = np.linspace(-0.5, 0.5, 4)

    def all_ops(x, p, alpha, gate):
      outs = (F.avg_pool(x, (2, 2), (1, 1), "SAME", count_include_pad=False),
              F.max_pool(x, (2, 2)),
              F.stochastic_pool(jnp.abs(x) + 0.1, (2, 2), deterministic=True),
              F.lp_pool(x, p, (2, 2)),
              F.mixed_pool(x, alpha, (2, 2)),
              F.gated_pool(x, gate, (2, 2)))
      return jnp.concatenate([o.ravel() for o in outs])

    with jax.enable_x64(True):
      check_grads(jax.jit(all_ops), (x, 2.5, 0.3, gate), order=1, modes=("rev",),
                  atol=1e-5, rtol=1e-5)

  def test_lp_pool_zero_window_gradients_finite(self):
    x = jnp.zeros((1, 2, 2, 1))
    g_x, g_p = jax.jit(jax.grad(lambda x, p: F.lp_pool(x, p, (2, 2)).sum(), argnums=(0, 1)))(
        x, 3.0)
    chex.assert_tree_all_finite((g_x, g_p))

  @parameterized.named_parameters(*((op, op) for op in OPS))
  def test_dtypes_kept(self, op):
    fn = jax.jit(lambda x: OPS[op][0](x, (2, 2), None, "VALID"))
    x = _input((2, 4, 4, 3), seed=8)
    out = fn(jnp.asarray(x, jnp.bfloat16))
    self.assertEqual(out.dtype, jnp.bfloat16)
    chex.assert_trees_all_close(out.astype(np.float32), fn(x), atol=0.05)
    with jax.enable_x64(True):
      self.assertEqual(fn(jnp.asarray(x, jnp.float64)).dtype, jnp.float64)


X = np.zeros((2, 5, 5, 3), np.float32)


@pytest.mark.parametrize("call, message", [
    (lambda: F.max_pool(X, (6, 2)), r"window \(6, 2\) is larger .*\(2, 5, 5, 3\)"),
    (lambda: F.avg_pool(X, (2,)), "window must be 2 positive ints"),
    (lambda: F.max_pool(X, (2, 2), padding="FULL"), "padding must be one of"),
    (lambda: F.max_pool(X, (2, 0)), "positive ints"),
    (lambda: F.stochastic_pool(X, (2, 2)), "needs a PRNG key"),
    (lambda: F.lp_pool(X, 0.5, (2, 2)), "p >= 1"),
    (lambda: F.mixed_pool(X, 1.5, (2, 2)), r"alpha must lie in \[0, 1\]"),
    (lambda: F.gated_pool(X, jnp.zeros(3), (2, 2)), r"gate must have shape \(4,\)"),
    (lambda: jax.jit(lambda x: F.max_pool(x, (7, 7)))(X), r"window \(7, 7\)"),
])
def test_bad_arguments_raise(call, message):
  with pytest.raises(ValueError, match=message):
    call()
