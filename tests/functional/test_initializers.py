"""Tests for flaxopt.functional.initializers: one table of (initializer, shape, law)."""

import math

import chex
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from flaxopt import registry
import flaxopt.functional as F
from flaxopt.functional import initializers

DENSE = (256, 512)  # fan_in 256, fan_out 512; 131072 samples
CONV = (3, 3, 64, 128)  # fan_in 576, fan_out 1152; 73728 samples
# Relative tolerance on the sample variance. Its relative sd is sqrt(2/n) <= 0.52% for these
# sizes (uniform: sqrt(0.8/n)), so 3% is >= 5.7 sd, while a truncated normal without the
# 1/0.87962566 rescale (0.774 in variance), a missing gain or a fan_in/fan_out mix-up are
# >= 22% off.
VAR_RTOL = 0.03

# id, initializer, shape, law, its scale (the normal's stddev or the uniform's bound), closed form.
CASES = (
    ("random_normal", F.random_normal(), DENSE, "normal", 0.01),
    ("random_normal_0.5", F.random_normal(stddev=0.5), DENSE, "normal", 0.5),
    ("random_uniform", F.random_uniform(), DENSE, "uniform", 0.05),
    ("random_uniform_2", F.random_uniform(scale=2.0), DENSE, "uniform", 2.0),
    ("standard_uniform", F.standard_uniform(), DENSE, "uniform", 1 / math.sqrt(256)),
    ("standard_uniform_conv", F.standard_uniform(), CONV, "uniform", 1 / math.sqrt(576)),
    ("xavier_normal", F.xavier_normal(), DENSE, "normal", math.sqrt(2 / (256 + 512))),
    ("xavier_normal_conv_gain", F.xavier_normal(gain=2.0), CONV, "normal",
     2 * math.sqrt(2 / (576 + 1152))),
    ("xavier_uniform", F.xavier_uniform(), DENSE, "uniform", math.sqrt(6 / (256 + 512))),
    ("xavier_uniform_gain", F.xavier_uniform(gain=math.sqrt(2)), DENSE, "uniform",
     math.sqrt(2) * math.sqrt(6 / (256 + 512))),
    ("he_normal", F.he_normal(), DENSE, "normal", math.sqrt(2 / 256)),
    ("he_normal_conv", F.he_normal(), CONV, "normal", math.sqrt(2 / 576)),
    ("he_normal_leaky_fan_out", F.he_normal(negative_slope=0.2, mode="fan_out"), DENSE, "normal",
     math.sqrt(2 / (1.04 * 512))),
    ("he_normal_fan_avg_conv", F.he_normal(mode="fan_avg"), CONV, "normal",
     math.sqrt(2 / ((576 + 1152) / 2))),
    ("he_uniform", F.he_uniform(), DENSE, "uniform", math.sqrt(6 / 256)),
    ("he_uniform_leaky_fan_out_conv", F.he_uniform(negative_slope=0.5, mode="fan_out"), CONV,
     "uniform", math.sqrt(6 / (1.25 * 1152))),
    ("lecun_normal", F.lecun_normal(), DENSE, "normal", 1 / math.sqrt(256)),
    ("lecun_normal_conv", F.lecun_normal(), CONV, "normal", 1 / math.sqrt(576)),
)


@pytest.mark.parametrize(
    "init, shape, law, scale", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_distribution_matches_formula(init, shape, law, scale):
  w = np.asarray(init(jax.random.key(0), shape), np.float64)
  chex.assert_shape(w, shape)
  variance = scale**2 if law == "normal" else scale**2 / 3
  assert abs(w.mean()) < 5 * math.sqrt(variance / w.size)
  np.testing.assert_allclose(w.var(), variance, rtol=VAR_RTOL)
  if law == "normal":
    # Plain normal: P(|w| > 2 sd) = 4.55%, sd of the fraction sqrt(.0455 * .9545 / n) <= 0.08%.
    # jax.nn.initializers' truncated normals (cut at 2.27 sd after their 1/0.8796 rescale,
    # so the variance test alone would pass) give 3.47% here; measured on DENSE.
    np.testing.assert_allclose(np.mean(np.abs(w) > 2 * scale), 0.0455, atol=0.005)
  else:
    assert np.abs(w).max() <= scale and np.abs(w).max() > 0.999 * scale
    assert w.min() < -0.999 * scale  # symmetric: U(-b, b), not U(0, b)


@pytest.mark.parametrize(
    "shape, expected",
    [((5, 7), (5, 7)), ((3, 3, 4, 8), (36, 72)), ((2, 3, 4, 5, 6), (120, 144)),
     ((3, 16, 8), (48, 24))],
)
def test_fans(shape, expected):
  assert initializers.fans(shape) == expected


ALL_INITS = [(c[0], c[1]) for c in CASES] + [("orthogonal", F.orthogonal())]


@pytest.mark.parametrize("dtype", ["float32", "bfloat16", "float64"])
def test_dtype_and_reproducibility(dtype):
  with jax.enable_x64(dtype == "float64"):
    for name, init in ALL_INITS:
      w = init(jax.random.key(3), (6, 4), jnp.dtype(dtype))
      assert w.dtype == jnp.dtype(dtype), name
      chex.assert_tree_all_finite(w)
      np.testing.assert_array_equal(w, init(jax.random.key(3), (6, 4), jnp.dtype(dtype)))
      assert not np.array_equal(w, init(jax.random.key(4), (6, 4), jnp.dtype(dtype))), name


@pytest.mark.parametrize(
    "shape, gain",
    [((64, 32), 1.0), ((32, 64), 1.0), ((48, 48), 2.0), ((3, 3, 8, 16), 1.0),
     ((1, 1, 32, 64), 0.5)],
)
def test_orthogonal(shape, gain):
  w = F.orthogonal(gain)(jax.random.key(1), shape)
  chex.assert_shape(w, shape)
  m = np.asarray(w, np.float64).reshape(-1, shape[-1])  # (prod(window) * in, out)
  gram = m.T @ m if m.shape[0] >= m.shape[1] else m @ m.T
  np.testing.assert_allclose(gram, gain**2 * np.eye(len(gram)), atol=1e-5)


def test_orthogonal_is_haar_not_biased_by_qr_signs():
  # Without the sign(diag(R)) correction the diagonal of Q is biased; for Haar matrices
  # E[Q_ii] = 0. Over 200 draws of 8x8, the mean diagonal entry has sd ~ 0.35/sqrt(1600) ~ 0.009.
  keys = jax.random.split(jax.random.key(0), 200)
  ws = jax.vmap(lambda k: F.orthogonal()(k, (8, 8)))(keys)
  assert abs(float(jnp.mean(jnp.diagonal(ws, axis1=1, axis2=2)))) < 0.05


def test_plugs_into_flax_kernel_init():
  model = nn.Dense(32, kernel_init=F.xavier_uniform())
  kernel = model.init(jax.random.key(0), jnp.ones((1, 16)))["params"]["kernel"]
  chex.assert_shape(kernel, (16, 32))
  assert np.abs(kernel).max() <= math.sqrt(6 / 48)
  conv = nn.Conv(8, (3, 3), kernel_init=F.he_normal())
  chex.assert_shape(conv.init(jax.random.key(0), jnp.ones((1, 5, 5, 4)))["params"]["kernel"],
                    (3, 3, 4, 8))


@pytest.mark.parametrize(
    "make, shape, match",
    [
        (F.he_normal, (5,), r"shape \(5,\)"),
        (F.xavier_uniform, (), r"shape \(\)"),
        (F.standard_uniform, (7,), r"shape \(7,\)"),
        (F.lecun_normal, (3,), r"shape \(3,\)"),
        (F.orthogonal, (4,), r"shape \(4,\)"),
        (F.he_uniform, (0, 4), r"shape \(0, 4\)"),
    ],
)
def test_undefined_fans_raise(make, shape, match):
  with pytest.raises(ValueError, match=match):
    make()(jax.random.key(0), shape)


@pytest.mark.parametrize(
    "make, kwargs, match",
    [
        (F.he_normal, dict(mode="fan_middle"), "'fan_middle'"),
        (F.he_uniform, dict(mode="in"), "'in'"),
        (F.random_normal, dict(stddev=-1.0), "stddev=-1.0"),
        (F.random_uniform, dict(scale=-0.1), "scale=-0.1"),
        (F.xavier_normal, dict(gain=-2.0), "gain=-2.0"),
    ],
)
def test_bad_hyperparameters_raise(make, kwargs, match):
  with pytest.raises(ValueError, match=match):
    make(**kwargs)


def test_bias_shapes_allowed_for_fixed_scale_inits():
  chex.assert_shape(F.random_normal()(jax.random.key(0), (5,)), (5,))
  chex.assert_shape(F.random_uniform()(jax.random.key(0), ()), ())


def test_registry():
  assert set(initializers.REGISTRY) == set(initializers.__all__) - {"fans"}
  init = registry.get("initializer", "he_normal", mode="fan_out")
  w = init(jax.random.key(0), (4, 6))
  np.testing.assert_array_equal(w, F.he_normal(mode="fan_out")(jax.random.key(0), (4, 6)))
