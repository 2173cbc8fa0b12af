"""Tests for flaxopt.nn activation modules."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from flaxopt.functional import activations
import flaxopt.nn as fnn

X = jnp.asarray(np.linspace(-3.0, 3.0, 24).reshape(4, 6), jnp.float32)
KEY = jax.random.key(0)


@pytest.mark.parametrize("shared, slope_shape", [(False, (6,)), (True, ())])
def test_prelu_init_and_gradient(shared, slope_shape):
  module = fnn.PReLU(shared=shared)
  variables = module.init(KEY, X)
  slope = variables["params"]["slope"]
  chex.assert_shape(slope, slope_shape)
  np.testing.assert_array_equal(slope, np.full(slope_shape, 0.25))
  chex.assert_trees_all_close(module.apply(variables, X), jnp.where(X >= 0, X, 0.25 * X))
  grads = jax.grad(lambda v: jnp.sum(module.apply(v, X)))(variables)["params"]["slope"]
  # d/da sum(prelu(x)) = sum of the negative inputs (per channel unless shared).
  neg = np.where(np.asarray(X) < 0, np.asarray(X), 0.0)
  expected = neg.sum() if shared else neg.sum(axis=0)
  chex.assert_trees_all_close(grads, jnp.asarray(expected, jnp.float32), rtol=1e-6)
  assert np.all(np.asarray(grads) != 0)


def test_prelu_keeps_input_dtype_with_float32_params():
  module = fnn.PReLU()
  x = X.astype(jnp.bfloat16)
  variables = module.init(KEY, x)
  assert variables["params"]["slope"].dtype == jnp.float32
  assert module.apply(variables, x).dtype == jnp.bfloat16


def test_swish_learnable_beta():
  module = fnn.Swish()
  variables = module.init(KEY, X)
  np.testing.assert_array_equal(variables["params"]["beta"], 1.0)
  chex.assert_trees_all_close(module.apply(variables, X), jax.nn.silu(X), rtol=1e-6)
  grad = jax.grad(lambda v: jnp.sum(module.apply(v, X)))(variables)["params"]["beta"]
  s = jax.nn.sigmoid(X)
  chex.assert_trees_all_close(grad, jnp.sum(X * X * s * (1 - s)), rtol=1e-5)


def test_rrelu_module_uses_rng_stream():
  module = fnn.RReLU(lower=0.1, upper=0.3)
  x = -jnp.ones((8, 16))
  chex.assert_trees_all_close(module.apply({}, x), -0.2 * jnp.ones_like(x))
  train = module.apply({}, x, deterministic=False, rngs={"rrelu": jax.random.key(1)})
  assert 0.1 <= float(-train.max()) and float(-train.min()) <= 0.3
  assert len(np.unique(np.asarray(train))) > 100  # one slope per element
  np.testing.assert_array_equal(
      train, module.apply({}, x, deterministic=False, rngs={"rrelu": jax.random.key(1)}))
  other = module.apply({}, x, deterministic=False, rngs={"rrelu": jax.random.key(2)})
  assert not np.array_equal(train, other)


def test_maxout_module():
  out = fnn.Maxout(3).apply({}, X)
  chex.assert_shape(out, (4, 2))
  np.testing.assert_array_equal(out, np.asarray(X).reshape(4, 2, 3).max(-1))


@pytest.mark.parametrize("name", sorted(activations.REGISTRY))
def test_activation_every_registry_name(name):
  module = fnn.Activation(name)
  variables = module.init({"params": KEY, "rrelu": KEY}, X)
  rngs = {"rrelu": jax.random.key(5)}
  apply = jax.jit(module.apply, static_argnames="deterministic")
  out_eval = apply(variables, X, deterministic=True)
  out_train = apply(variables, X, deterministic=False, rngs=rngs)
  expected_shape = (4, 3) if name == "maxout" else X.shape
  chex.assert_shape((out_eval, out_train), expected_shape)
  chex.assert_tree_all_finite((out_eval, out_train))
  # Deterministic output is the functional registry's default-hyperparameter function
  # (prelu: its slope starts at 0.25, the functional default too).
  chex.assert_trees_all_close(out_eval, activations.REGISTRY[name]()(X), rtol=1e-6)
  assert ("slope" in variables.get("params", {}).get("prelu", {})) == (name == "prelu")
  if name != "rrelu":
    chex.assert_trees_all_close(out_train, out_eval)
  else:
    assert not np.allclose(out_train, out_eval)


@pytest.mark.parametrize(
    "name, kwargs, expected",
    [
        ("leaky_relu", {"negative_slope": 0.2}, lambda x: jnp.where(x >= 0, x, 0.2 * x)),
        ("prelu", {"slope_init": 0.1, "shared": True}, lambda x: jnp.where(x >= 0, x, 0.1 * x)),
        ("rrelu", {"lower": 0.2, "upper": 0.4}, lambda x: jnp.where(x >= 0, x, 0.3 * x)),
        ("maxout", {"num_pieces": 6}, lambda x: jnp.max(x, axis=-1, keepdims=True)),
    ],
)
def test_activation_kwargs(name, kwargs, expected):
  module = fnn.Activation(name, kwargs)
  variables = module.init(KEY, X)
  chex.assert_trees_all_close(module.apply(variables, X), expected(X), rtol=1e-6)


@pytest.mark.parametrize(
    "name, kwargs, match",
    [
        ("relu7", {}, "'relu7'"),
        ("prelu", {"slope": 0.1}, r"\['slope'\].*'prelu'.*slope_init"),
        ("elu", {"beta": 1.0}, r"\['beta'\].*'elu'"),
    ],
)
def test_activation_bad_arguments(name, kwargs, match):
  with pytest.raises(ValueError, match=match):
    fnn.Activation(name, kwargs).init(KEY, X)
