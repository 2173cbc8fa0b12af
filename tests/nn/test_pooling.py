"""Tests for flaxopt.nn pooling modules: registry wiring, rng stream, learned parameters."""

import chex
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import flaxopt.functional as F
import flaxopt.nn as fnn
from flaxopt import registry

RNGS = {"params": jax.random.key(0), "pool": jax.random.key(1)}
X2 = np.abs(np.random.default_rng(0).normal(size=(2, 4, 6, 3))).astype(np.float32)
X1 = X2[:, 0]  # (N, L, C)

# name -> (extra kwargs, functional reference(x, params, window, strides, padding)).
TABLE = {
    "max": ({}, lambda x, p, w, s, pad: F.max_pool(x, w, s, pad)),
    "avg": ({}, lambda x, p, w, s, pad: F.avg_pool(x, w, s, pad)),
    "stochastic": ({}, lambda x, p, w, s, pad: F.stochastic_pool(x, w, s, pad,
                                                                  deterministic=True)),
    "lp": ({"p_init": 3.0},
           lambda x, p, w, s, pad: F.lp_pool(x, 1 + jax.nn.softplus(p["p_raw"]), w, s, pad)),
    "mixed": ({"alpha_init": 0.25},
              lambda x, p, w, s, pad: F.mixed_pool(x, jax.nn.sigmoid(p["alpha_logit"]), w, s,
                                                   pad)),
    "gated": ({}, lambda x, p, w, s, pad: F.gated_pool(x, p["gate"], w, s, pad)),
}


@pytest.mark.parametrize("name", sorted(TABLE))
@pytest.mark.parametrize("x, window, strides, padding", [
    (X1, (2,), None, "VALID"),
    (X2, (2, 2), (1, 2), "SAME"),
])
def test_registry_module_matches_functional(name, x, window, strides, padding):
  assert registry.names("pool") == sorted(TABLE)
  kwargs, reference = TABLE[name]
  module = registry.get("pool", name, window=window, strides=strides, padding=padding, **kwargs)
  variables = jax.jit(module.init)(RNGS, x)
  apply = jax.jit(module.apply, static_argnames="deterministic")
  out = apply(variables, x, deterministic=True)
  expected = reference(x, variables.get("params", {}), window, strides, padding)
  chex.assert_trees_all_close(out, expected, atol=1e-6)
  sampled = apply(variables, x, deterministic=False, rngs={"pool": jax.random.key(2)})
  chex.assert_equal_shape((sampled, expected))
  chex.assert_tree_all_finite(sampled)


def test_learned_parameters_start_at_their_init():
  x = X2
  p = fnn.LPPool(window=(2, 2), p_init=3.0).init(RNGS, x)["params"]["p_raw"]
  np.testing.assert_allclose(1 + jax.nn.softplus(p), 3.0, rtol=1e-6)
  a = fnn.MixedPool(window=(2, 2), alpha_init=0.25, per_channel=True).init(RNGS, x)
  np.testing.assert_allclose(jax.nn.sigmoid(a["params"]["alpha_logit"]), np.full(3, 0.25),
                             rtol=1e-6)
  g = fnn.GatedPool(window=(2, 3), per_channel=True).init(RNGS, x)["params"]["gate"]
  assert g.shape == (3, 6)


@pytest.mark.parametrize("module, param", [
    (fnn.LPPool(window=(2, 2), per_channel=True), "p_raw"),
    (fnn.MixedPool(window=(2, 2)), "alpha_logit"),
    (fnn.GatedPool(window=(2, 2)), "gate"),
    (fnn.GatedPool(window=(2, 2), per_channel=True), "gate"),
])
def test_learned_parameters_get_gradients_and_stay_in_range(module, param):
  x = np.random.default_rng(1).normal(size=(2, 4, 4, 3)).astype(np.float32)
  target = np.random.default_rng(2).normal(size=(2, 2, 2, 3)).astype(np.float32)
  variables = module.init(RNGS, x)

  def loss(params):
    return jnp.mean((module.apply({"params": params}, x) - target) ** 2)

  grads = jax.jit(jax.grad(loss))(variables["params"])
  assert np.all(np.abs(np.asarray(grads[param])) > 0), grads
  # Push the raw parameter far in both directions: the constrained value stays in range.
  for shift in (-30.0, 30.0):
    params = {param: variables["params"][param] + shift}
    if param == "p_raw":
      assert np.all(1 + jax.nn.softplus(params[param]) >= 1)
    if param == "alpha_logit":
      alpha = jax.nn.sigmoid(params[param])
      assert np.all((alpha >= 0) & (alpha <= 1))
    chex.assert_tree_all_finite(module.apply({"params": params}, x))


def test_stochastic_pool_uses_the_pool_rng_stream():
  module = fnn.StochasticPool(window=(2, 3))
  apply = jax.jit(lambda key: module.apply({}, X2, deterministic=False, rngs={"pool": key}))
  out = [apply(jax.random.key(k)) for k in (0, 0, 1)]
  chex.assert_trees_all_equal(out[0], out[1])  # same key, same draw, bit for bit
  assert np.any(out[0] != out[2])
  with pytest.raises(Exception, match="pool"):
    module.apply({}, X2, deterministic=False)  # no 'pool' rng given


@pytest.mark.parametrize("module, message", [
    (fnn.LPPool(window=(2, 2), p_init=1.0), "p_init > 1"),
    (fnn.MixedPool(window=(2, 2), alpha_init=1.0), "0 < alpha_init < 1"),
    (fnn.MaxPool(window=(5, 5)), r"window \(5, 5\) is larger"),
])
def test_bad_module_arguments_raise(module, message):
  with pytest.raises(ValueError, match=message):
    module.init(RNGS, X2)


def test_stochastic_pool_trains_inside_a_model():
  class Net(nn.Module):

    @nn.compact
    def __call__(self, x, train):
      x = nn.Dense(4)(x)
      x = registry.get("pool", "stochastic", window=(2, 2))(x, deterministic=not train)
      return jnp.sum(x ** 2)

  net = Net()
  variables = net.init(RNGS, X2, train=False)
  grads = jax.jit(jax.grad(
      lambda v: net.apply(v, X2, train=True, rngs={"pool": jax.random.key(3)})))(variables)
  chex.assert_tree_all_finite(grads)
  assert np.abs(np.asarray(grads["params"]["Dense_0"]["kernel"])).sum() > 0
