"""Tests of RBMs, CD-k and greedy MLP pre-training (flaxopt.init.rbm)."""

import functools
import itertools

import chex
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from flaxopt.init import rbm


def _sigmoid(z):
  return 1.0 / (1.0 + np.exp(-z))


def _np_visible_mean(params, h, visible):
  pre = h @ params.w.T + params.b_visible
  return _sigmoid(pre) if visible == "bernoulli" else pre


def _expected_negative_stats(params, v0, k, visible):
  """E[v_k^T p(h|v_k)], E[v_k], E[p(h|v_k)] over the CD-k chain, by enumerating hidden states."""
  params = rbm.RBMParams(*(np.asarray(p, np.float64) for p in params))
  num_hidden = params.w.shape[1]
  states = np.array(list(itertools.product([0.0, 1.0], repeat=num_hidden)))

  def expect(v, depth):
    ph = _sigmoid(v @ params.w + params.b_hidden)
    if depth == k:
      return np.outer(v, ph), v, ph
    total = [0.0, 0.0, 0.0]
    for h in states:
      prob = np.prod(np.where(h == 1.0, ph, 1.0 - ph))
      for i, term in enumerate(expect(_np_visible_mean(params, h, visible), depth + 1)):
        total[i] = total[i] + prob * term
    return total

  per_example = [expect(v, 0) for v in np.asarray(v0, np.float64)]
  return [np.mean([e[i] for e in per_example], axis=0) for i in range(3)]


def _tiny_rbm(num_visible=4, num_hidden=3, seed=0):
  rng = np.random.default_rng(seed)
  return rbm.RBMParams(jnp.asarray(rng.normal(0, 0.8, (num_visible, num_hidden)), jnp.float32),
                       jnp.asarray(rng.normal(0, 0.3, num_visible), jnp.float32),
                       jnp.asarray(rng.normal(0, 0.3, num_hidden), jnp.float32))


# (visible units, k): the CD-k expectation is checked against exact enumeration.
CD_CASES = [("bernoulli", 1), ("gaussian", 1), ("bernoulli", 2)]


@pytest.mark.parametrize("visible,k", CD_CASES)
def test_cd_gradients_expectation_matches_enumeration(visible, k):
  params = _tiny_rbm()
  rng = np.random.default_rng(1)
  v0 = (rng.random((6, 4)) < 0.5).astype(np.float32)
  if visible == "gaussian":
    v0 = rng.normal(size=(6, 4)).astype(np.float32)
  num_keys = 4000
  grads = jax.jit(jax.vmap(functools.partial(rbm.cd_gradients, params, jnp.asarray(v0), k=k,
                                             visible=visible)))(
                                                 jax.random.split(jax.random.key(0), num_keys))
  mean = jax.tree_util.tree_map(lambda g: np.mean(np.asarray(g, np.float64), 0), grads)
  neg_vh, neg_v, neg_h = _expected_negative_stats(params, v0, k, visible)
  ph0 = _sigmoid(v0 @ np.asarray(params.w, np.float64) + np.asarray(params.b_hidden))
  # Monte-Carlo error of the mean of 4000 draws of O(1) terms: ~0.01; tolerance 4 sigma-ish.
  np.testing.assert_allclose(mean.w, v0.T @ ph0 / len(v0) - neg_vh, atol=0.04)
  np.testing.assert_allclose(mean.b_visible, v0.mean(0) - neg_v, atol=0.04)
  np.testing.assert_allclose(mean.b_hidden, ph0.mean(0) - neg_h, atol=0.04)


class TestConditionals(chex.TestCase):

  @chex.variants(with_jit=True, without_jit=True)
  def test_conditionals_match_numpy(self):
    params = _tiny_rbm()
    v = np.random.default_rng(2).normal(size=(5, 4)).astype(np.float32)
    ph = self.variant(rbm.hidden_probs)(params, v)
    np.testing.assert_allclose(ph, _sigmoid(v @ params.w + params.b_hidden), rtol=1e-5)
    for visible in rbm.VISIBLE_UNITS:
      got = self.variant(functools.partial(rbm.visible_mean, visible=visible))(params, ph)
      np.testing.assert_allclose(got, _np_visible_mean(params, np.asarray(ph), visible),
                                 rtol=1e-5, atol=1e-6)
      err = self.variant(functools.partial(rbm.reconstruction_error, visible=visible))(params, v)
      want = np.mean((v - _np_visible_mean(params, np.asarray(ph), visible)) ** 2)
      np.testing.assert_allclose(err, want, rtol=1e-5)


@pytest.mark.parametrize("dtype", [jnp.float32, jnp.bfloat16])
def test_cd_update_keeps_dtype_and_is_finite(dtype):
  params = jax.tree_util.tree_map(lambda p: p.astype(dtype), _tiny_rbm())
  v0 = jnp.asarray(np.random.default_rng(3).random((6, 4)) < 0.5, dtype)
  new = jax.jit(functools.partial(rbm.cd_update, learning_rate=0.1, k=1))(
      params, v0, jax.random.key(0))
  chex.assert_trees_all_equal_shapes_and_dtypes(new, params)
  chex.assert_tree_all_finite(new)


def _prototype_data(n=512, num_visible=36, seed=0):
  """Binary vectors: 5 random prototypes with 5% of the bits flipped."""
  rng = np.random.default_rng(seed)
  protos = rng.random((5, num_visible)) < 0.5
  x = np.logical_xor(protos[rng.integers(0, 5, n)], rng.random((n, num_visible)) < 0.05)
  return x.astype(np.float32)


# visible -> (data transform, learning rate, bound on error(end) / error(start))
TRAIN_CASES = {
    "bernoulli": (lambda x: x, 0.1, 0.5),
    "gaussian": (lambda x: (x - x.mean(0)) / x.std(0), 0.01, 0.8),
}


@pytest.mark.parametrize("visible", list(TRAIN_CASES))
def test_reconstruction_error_falls_during_cd_training(visible):
  transform, lr, bound = TRAIN_CASES[visible]
  data = transform(_prototype_data())
  params, errors = rbm.train_rbm(jax.random.key(0), data, 16, steps=200, batch_size=64,
                                 learning_rate=lr, visible=visible)
  errors = np.asarray(errors)
  assert errors.shape == (200,)
  assert errors[-20:].mean() < bound * errors[:20].mean(), (errors[:3], errors[-3:])
  final = rbm.reconstruction_error(params, data, visible)
  initial = rbm.reconstruction_error(rbm.rbm_init(jax.random.key(0), 36, 16), data, visible)
  assert final < bound * initial


class MLP(nn.Module):
  @nn.compact
  def __call__(self, x, train: bool = False):
    x = x.reshape(x.shape[0], -1)
    x = nn.sigmoid(nn.Dense(16, name="hidden1")(x))
    x = nn.sigmoid(nn.Dense(8, name="hidden2")(x))
    return nn.Dense(5, name="out")(x)


class ConvNet(nn.Module):
  @nn.compact
  def __call__(self, x, train: bool = False):
    x = nn.Conv(4, (3,))(x)
    return nn.Dense(5)(x.reshape(x.shape[0], -1))


def _variables(model, x):
  shapes = jax.eval_shape(model.init, jax.random.key(0), x)
  rng = np.random.default_rng(0)
  return jax.tree_util.tree_map(lambda s: jnp.asarray(rng.normal(size=s.shape), s.dtype), shapes)


def test_pretrain_mlp_sets_hidden_layers_from_the_stacked_rbms():
  x = _prototype_data(n=256).reshape(256, 6, 6)  # Flattened by the model and by pretraining.
  model = MLP()
  variables = _variables(model, x)
  kwargs = dict(steps=30, batch_size=32, learning_rate=0.1)
  new, reports = rbm.pretrain_mlp(model.apply, variables, x, jax.random.key(5),
                                  visible="bernoulli", **kwargs)
  rbms, curves = rbm.pretrain_stack(jax.random.key(5), x.reshape(256, 36), [16, 8],
                                    visible="bernoulli", **kwargs)
  for name, machine in zip(("hidden1", "hidden2"), rbms):
    np.testing.assert_array_equal(new["params"][name]["kernel"], machine.w)
    np.testing.assert_array_equal(new["params"][name]["bias"], machine.b_hidden)
  chex.assert_trees_all_equal(new["params"]["out"], variables["params"]["out"])
  assert [r.path for r in reports] == [("hidden1",), ("hidden2",)]
  assert reports[0].final_error == pytest.approx(float(curves[0][-1]))
  # The stack's second RBM was trained on the first one's hidden probabilities.
  assert rbms[1].w.shape == (16, 8)


# name -> (model, input shape, pretrain_mlp kwargs, error fragment)
BAD_CASES = {
    "conv_model": (ConvNet(), (4, 6, 1), {}, "kernel of shape"),
    "bernoulli_out_of_range": (MLP(), (4, 36), {"visible": "bernoulli"}, "in \\[0, 1\\]"),
    "unknown_visible": (MLP(), (4, 36), {"visible": "poisson"}, "'poisson'"),
    "bad_k": (MLP(), (4, 36), {"k": 0}, "k=0|got 0"),
}


@pytest.mark.parametrize("name", list(BAD_CASES))
def test_pretrain_mlp_rejects_bad_input(name):
  model, shape, kwargs, fragment = BAD_CASES[name]
  x = jnp.asarray(np.random.default_rng(0).normal(size=shape) * 2.0, jnp.float32)
  with pytest.raises(ValueError, match=fragment):
    rbm.pretrain_mlp(model.apply, _variables(model, x), x, jax.random.key(0),
                     steps=2, batch_size=2, **kwargs)
