"""Tests for flaxopt.functional.activations: one table, every property per row."""

import functools

from absl.testing import parameterized
import chex
import jax
import jax.numpy as jnp
from jax.test_util import check_grads
import numpy as np
import pytest
from scipy import special

from flaxopt import registry
import flaxopt.functional as F
from flaxopt.functional import activations

# (4, 6): 0, the kinks (-3, -1, 0, 1, 3, 6 are in linspace(-8, 8, 17)), moderately large values.
X = np.concatenate([np.linspace(-8.0, 8.0, 17), [-40.0, -20.0, -3.3, 0.3, 3.3, 20.0, 40.0]])
X = X.reshape(4, 6)
# Points at least 0.05 away from every kink (0, +-1, +-3, 6), for finite differences.
X_GRAD = np.array([[-4.3, -2.2, -1.6, -0.7, -0.35, 0.45], [0.8, 1.4, 2.3, 4.1, 5.2, 7.3]])
# Large magnitudes: everything must stay finite, values and gradients.
X_EXTREME = np.array([[-1e4, -3e3, -1e3, -200.0, -88.0, -30.0], [30.0, 88.0, 200.0, 1e3, 3e3, 1e4]])

SLOPES = np.array([0.125, 0.25, 0.5, -0.25, 1.5, 0.0])  # per channel; exact in float32
RRELU_MEAN = (1.0 / 8.0 + 1.0 / 3.0) / 2.0


def _jax_ref(fn, **kw):
  """A jax.nn reference evaluated in float64 (independent implementation, same convention)."""

  def ref(x):
    with jax.enable_x64(True):
      return np.asarray(fn(jnp.asarray(x, jnp.float64), **kw))

  return ref


def _maxout_ref(x, k):
  return x.reshape(x.shape[:-1] + (x.shape[-1] // k, k)).max(-1)


# id, function under test (hyperparameters bound), float64 reference (numpy or jax.nn).
CASES = (
    ("sigmoid", F.sigmoid, special.expit),
    ("tanh", F.tanh, np.tanh),
    ("hard_sigmoid", F.hard_sigmoid, _jax_ref(jax.nn.hard_sigmoid)),
    ("hard_tanh", F.hard_tanh, _jax_ref(jax.nn.hard_tanh)),
    ("relu", F.relu, _jax_ref(jax.nn.relu)),
    ("relu6", F.relu6, _jax_ref(jax.nn.relu6)),
    ("leaky_relu", F.leaky_relu, _jax_ref(jax.nn.leaky_relu)),
    ("leaky_relu_0.2", functools.partial(F.leaky_relu, negative_slope=0.2),
     _jax_ref(jax.nn.leaky_relu, negative_slope=0.2)),
    ("prelu_scalar", functools.partial(F.prelu, slope=0.25),
     lambda x: np.where(x >= 0, x, 0.25 * x)),
    ("prelu_channel", functools.partial(F.prelu, slope=SLOPES),
     lambda x: np.where(x >= 0, x, SLOPES * x)),
    ("rrelu_deterministic", F.rrelu, lambda x: np.where(x >= 0, x, RRELU_MEAN * x)),
    ("rrelu_bounds", functools.partial(F.rrelu, lower=0.1, upper=0.5),
     lambda x: np.where(x >= 0, x, 0.3 * x)),
    ("elu", F.elu, _jax_ref(jax.nn.elu)),
    ("elu_0.5", functools.partial(F.elu, alpha=0.5), _jax_ref(jax.nn.elu, alpha=0.5)),
    ("selu", F.selu, _jax_ref(jax.nn.selu)),
    ("celu", F.celu, _jax_ref(jax.nn.celu)),
    ("celu_2", functools.partial(F.celu, alpha=2.0), _jax_ref(jax.nn.celu, alpha=2.0)),
    ("gelu_exact", F.gelu, lambda x: 0.5 * x * (1.0 + special.erf(x / np.sqrt(2.0)))),
    ("gelu_tanh", functools.partial(F.gelu, approximate=True),
     _jax_ref(jax.nn.gelu, approximate=True)),
    ("silu", F.silu, _jax_ref(jax.nn.silu)),
    ("swish_1.7", functools.partial(F.swish, beta=1.7), lambda x: x * special.expit(1.7 * x)),
    ("mish", F.mish, _jax_ref(jax.nn.mish)),
    ("softplus", F.softplus, lambda x: np.logaddexp(x, 0.0)),
    ("softsign", F.softsign, _jax_ref(jax.nn.soft_sign)),
    ("hard_swish", F.hard_swish, _jax_ref(jax.nn.hard_swish)),
    ("maxout_2", functools.partial(F.maxout, num_pieces=2), functools.partial(_maxout_ref, k=2)),
    ("maxout_3", functools.partial(F.maxout, num_pieces=3), functools.partial(_maxout_ref, k=3)),
)
NAMED = CASES  # (testcase_name, *args) rows for parameterized.named_parameters

# dtype -> (rtol, atol) against the float64 reference at the dtype-rounded input.
TOLERANCES = {"float32": (2e-6, 1e-6), "bfloat16": (1e-2, 1e-2), "float64": (1e-12, 1e-12)}


def _values_and_grads(fn):
  """Jitted xs -> [(fn(x), vjp of ones)] for a list of inputs: one compilation per row."""

  def one(x):
    out, vjp = jax.vjp(fn, x)
    return out, vjp(jnp.ones_like(out))[0]

  return jax.jit(lambda xs: [one(x) for x in xs])


def _as_float64(x):
  """The dtype-rounded input as a float64 numpy array, for the float64 reference."""
  return np.asarray(x.astype(jnp.float32), np.float64)


class ActivationTableTest(chex.TestCase):

  @chex.variants(with_jit=True, without_jit=True)
  @parameterized.named_parameters(*NAMED)
  def test_value_matches_reference(self, fn, ref):
    out = self.variant(fn)(jnp.asarray(X, jnp.float32))
    self.assertEqual(out.dtype, jnp.float32)
    rtol, atol = TOLERANCES["float32"]
    np.testing.assert_allclose(np.asarray(out, np.float64), ref(X), rtol=rtol, atol=atol)

  @parameterized.named_parameters(*NAMED)
  def test_float64_value_and_gradient(self, fn, ref):
    with jax.enable_x64(True):
      jitted = jax.jit(fn)
      out = jitted(jnp.asarray(X, jnp.float64))
      self.assertEqual(out.dtype, jnp.float64)
      rtol, atol = TOLERANCES["float64"]
      np.testing.assert_allclose(np.asarray(out), ref(X), rtol=rtol, atol=atol)
      check_grads(jitted, (jnp.asarray(X_GRAD, jnp.float64),), order=1, modes=("rev",))

  @parameterized.named_parameters(*NAMED)
  def test_bfloat16_and_large_magnitudes(self, fn, ref):
    inputs = [jnp.asarray(X, jnp.bfloat16),
              jnp.asarray(X_EXTREME, jnp.float32), jnp.asarray(X_EXTREME, jnp.bfloat16)]
    results = _values_and_grads(fn)(inputs)
    chex.assert_tree_all_finite(results)
    for x, (out, grad), tol in zip(inputs, results, (TOLERANCES["bfloat16"], (1e-2, 1e-6),
                                                       (1e-2, 1e-6))):
      self.assertEqual((out.dtype, grad.dtype), (x.dtype, x.dtype))
      np.testing.assert_allclose(np.asarray(out, np.float64), ref(_as_float64(x)),
                                 rtol=tol[0], atol=tol[1], err_msg=str(x.dtype))


def test_vmap_matches_batched_call():
  x = jnp.asarray(X)
  batched = jax.jit(lambda x: [jax.vmap(fn)(x) for _, fn, _ in CASES])(x)
  direct = jax.jit(lambda x: [fn(x) for _, fn, _ in CASES])(x)
  chex.assert_trees_all_close(batched, direct)


def test_integer_input_is_promoted_to_float():
  out = F.relu(jnp.array([-2, 3]))
  assert jnp.issubdtype(out.dtype, jnp.floating)
  np.testing.assert_array_equal(out, [0.0, 3.0])


def test_known_values():
  # Closed-form anchors that pin the conventions (not just agreement with a library).
  np.testing.assert_allclose(F.hard_sigmoid(jnp.array([-3.0, 0.0, 1.5, 3.0])), [0, 0.5, 0.75, 1])
  np.testing.assert_allclose(F.selu(jnp.array([-1e4])), [-1.0507009873554805 * 1.6732632423543772],
                             rtol=1e-6)
  np.testing.assert_allclose(F.gelu(jnp.array([1.0])), [0.8413447460685429], rtol=1e-6)


# ------------------------------------------------------------------------------ rrelu


def test_rrelu_training_slopes_within_bounds_and_reproducible():
  x = -jnp.ones((4000,))
  key = jax.random.key(0)
  out = F.rrelu(x, key, lower=0.1, upper=0.4, deterministic=False)
  slopes = np.asarray(-out)
  assert slopes.min() >= 0.1 and slopes.max() <= 0.4
  assert abs(slopes.mean() - 0.25) < 0.01  # sd of the mean: 0.3/sqrt(12*4000) = 0.0014
  assert len(np.unique(slopes)) > 1000  # one slope per element, not one per call
  np.testing.assert_array_equal(out, F.rrelu(x, key, lower=0.1, upper=0.4, deterministic=False))
  assert not np.array_equal(
      out, F.rrelu(x, jax.random.key(1), lower=0.1, upper=0.4, deterministic=False))


def test_rrelu_positive_part_is_identity_and_deterministic_uses_mean_slope():
  x = jnp.array([-2.0, 3.0])
  train = F.rrelu(x, jax.random.key(0), deterministic=False)
  assert train[1] == 3.0
  np.testing.assert_allclose(F.rrelu(x), [-2.0 * RRELU_MEAN, 3.0], rtol=1e-6)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(deterministic=False), "key=None"),
        (dict(lower=0.5, upper=0.1), "lower=0.5"),
    ],
)
def test_rrelu_bad_arguments(kwargs, match):
  with pytest.raises(ValueError, match=match):
    F.rrelu(jnp.ones(3), **kwargs)


# ----------------------------------------------------------------------------- maxout


def test_maxout_axis_and_grouping():
  x = jnp.arange(2 * 6 * 3, dtype=jnp.float32).reshape(2, 6, 3)[:, ::-1]
  out = F.maxout(x, 3, axis=1)
  chex.assert_shape(out, (2, 2, 3))
  np.testing.assert_array_equal(out, np.asarray(x).reshape(2, 2, 3, 3).max(2))


@pytest.mark.parametrize(
    "num_pieces, axis, match",
    [
        (4, -1, r"size 6.*num_pieces=4"),
        (0, -1, "num_pieces=0"),
        (2.5, -1, "num_pieces=2.5"),
        (2, 3, "axis=3"),
    ],
)
def test_maxout_bad_arguments(num_pieces, axis, match):
  with pytest.raises(ValueError, match=match):
    F.maxout(jnp.ones((2, 6)), num_pieces, axis=axis)


def test_celu_zero_alpha_raises():
  with pytest.raises(ValueError, match="alpha=0"):
    F.celu(jnp.ones(2), alpha=0.0)


# --------------------------------------------------------------------------- registry


def test_registry_names_every_public_activation():
  assert set(activations.REGISTRY) == set(activations.__all__)
  assert registry.names("activation") == sorted(activations.__all__)


@pytest.mark.parametrize(
    "name, kwargs, expected",
    [
        ("leaky_relu", dict(negative_slope=0.2),
         functools.partial(F.leaky_relu, negative_slope=0.2)),
        ("prelu", dict(slope=0.1), functools.partial(F.prelu, slope=0.1)),
        ("rrelu", dict(lower=0.2, upper=0.4), lambda x: F.leaky_relu(x, 0.3)),
        ("celu", dict(alpha=2.0), functools.partial(F.celu, alpha=2.0)),
        ("gelu", dict(approximate=True), functools.partial(jax.nn.gelu, approximate=True)),
        ("swish", dict(beta=2.0), lambda x: x * jax.nn.sigmoid(2.0 * x)),
        ("maxout", dict(num_pieces=3), functools.partial(_maxout_ref, k=3)),
        ("maxout", dict(), functools.partial(_maxout_ref, k=2)),
        ("relu", dict(), jax.nn.relu),
    ],
)
def test_registry_binds_hyperparameters(name, kwargs, expected):
  x = jnp.asarray(X, jnp.float32)
  chex.assert_trees_all_close(registry.get("activation", name, **kwargs)(x),
                              jnp.asarray(expected(x)), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("name, kwargs", [("relu", dict(alpha=1.0)), ("elu", dict(alhpa=1.0))])
def test_registry_unknown_hyperparameter_raises(name, kwargs):
  with pytest.raises(ValueError, match=f"{list(kwargs)}.*{name!r}"):
    activations.REGISTRY[name](**kwargs)
