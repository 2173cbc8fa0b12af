"""Tests of LSUV (flaxopt.init.lsuv) and of apply_data_dependent_init's dispatch."""

import functools
from typing import Any

import chex
import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from flaxopt import registry
from flaxopt.init import apply_data_dependent_init
from flaxopt.init.lsuv import kernel_layers, layer_outputs, lsuv

TOL = 0.1


class DeepMLP(nn.Module):
  """8 tanh Dense layers + a classifier; ``train`` only so it matches the model protocol."""
  depth: int = 8
  width: int = 32
  param_dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x, train: bool = False):
    x = x.reshape(x.shape[0], -1)
    for _ in range(self.depth):
      x = jnp.tanh(nn.Dense(self.width, param_dtype=self.param_dtype)(x))
    return nn.Dense(10, param_dtype=self.param_dtype)(x)


class Block(nn.Module):
  features: int

  @nn.compact
  def __call__(self, x):
    return nn.relu(nn.Conv(self.features, (3, 3), name="conv")(x))


class SmallCNN(nn.Module):
  """Conv layers nested in blocks (paths two deep), then a Dense classifier."""

  @nn.compact
  def __call__(self, x, train: bool = False):
    x = Block(8, name="block1")(x)
    x = Block(16, name="block2")(x)
    x = nn.max_pool(x, (2, 2), (2, 2))
    return nn.Dense(10)(x.reshape(x.shape[0], -1))


def _init(model, shape, key=0, scale=3.0):
  """Variables for ``model`` drawn with numpy (shapes from eval_shape: no XLA compile).

  Kernels N(0, 1/fan_in), biases zero, other parameters one; the input is ``scale`` * N(0, 1).
  """
  rng = np.random.default_rng(key)
  x = jnp.asarray(scale * rng.standard_normal(shape), jnp.float32)
  shapes = jax.eval_shape(model.init, jax.random.key(0), x)

  def draw(path, leaf):
    if path[-1].key in ("kernel", "v"):  # v: WeightNorm's direction.
      fan_in = int(np.prod(leaf.shape[:-1]))
      return jnp.asarray(rng.standard_normal(leaf.shape) / np.sqrt(fan_in), leaf.dtype)
    fill = jnp.zeros if path[-1].key == "bias" else jnp.ones  # Ones: WeightNorm's gain g.
    return fill(leaf.shape, leaf.dtype)

  return jax.tree_util.tree_map_with_path(draw, shapes), x


@functools.partial(jax.jit, static_argnums=0)
def _intermediates(model, variables, x):
  _, state = model.apply(variables, x, capture_intermediates=True, mutable=["intermediates"])
  return state["intermediates"]


def _reference_variances(model, variables, x):
  """Output variances of every Dense/Conv, from flax's own capture_intermediates."""
  flat = jax.tree_util.tree_flatten_with_path(_intermediates(model, variables, x))[0]
  out = {}
  for path, value in flat:
    names = tuple(p.key for p in path if isinstance(p, jax.tree_util.DictKey))[:-1]
    node = variables["params"]
    for n in names:
      node = node.get(n, {})
    if "kernel" in node:
      out[names] = float(np.var(np.asarray(value, np.float64)))
  return out


MODELS = [
    ("deep_mlp", DeepMLP(), (64, 12)),
    ("cnn", SmallCNN(), (8, 8, 8, 3)),
]


@pytest.mark.parametrize("name,model,shape", MODELS, ids=[m[0] for m in MODELS])
def test_lsuv_output_variances_within_tolerance(name, model, shape):
  del name
  variables, x = _init(model, shape)
  new, reports = lsuv(model.apply, variables, x, tol=TOL, max_iters=10)
  ref = _reference_variances(model, new, x)
  assert sorted(r.path for r in reports) == sorted(ref)  # Every Dense/Conv (order: below).
  for report in reports:
    assert report.converged
    assert abs(ref[report.path] - 1.0) < TOL, (report, ref[report.path])
    np.testing.assert_allclose(report.final_var, ref[report.path], rtol=1e-4)
  # Only kernels change, each by one positive scalar; everything else is untouched.
  chex.assert_trees_all_equal_shapes_and_dtypes(new, variables)
  flat_old = jax.tree_util.tree_flatten_with_path(variables)[0]
  flat_new = jax.tree_util.tree_leaves(new)
  for (path, old), value in zip(flat_old, flat_new):
    if path[-1].key == "kernel":
      ratio = np.asarray(value) / np.asarray(old)
      np.testing.assert_allclose(ratio, ratio.flat[0], rtol=1e-5)
      assert ratio.flat[0] > 0
    else:
      np.testing.assert_array_equal(value, old)


def test_lsuv_iterates_with_biases_and_respects_max_iters():
  model = DeepMLP(depth=3)
  variables, x = _init(model, (64, 12))
  # Biases that differ between units add their own variance: one rescaling is not exact.
  variables = jax.tree_util.tree_map_with_path(
      lambda p, v: 0.5 * jax.random.normal(jax.random.key(len(p)), v.shape)
      if p[-1].key == "bias" else v, variables)
  new, reports = lsuv(model.apply, variables, x)
  assert max(r.iterations for r in reports) >= 2  # The bias makes one rescaling inexact.
  ref = _reference_variances(model, new, x)
  assert all(abs(v - 1.0) < TOL for v in ref.values())
  _, capped = lsuv(model.apply, variables, x, max_iters=1)
  assert all(r.iterations <= 1 for r in capped)


def test_lsuv_orthogonal_key_redraws_orthogonal_kernels():
  model = DeepMLP(depth=1)
  variables, x = _init(model, (64, 12))
  new, reports = lsuv(model.apply, variables, x, orthogonal_key=jax.random.key(7))
  for report in reports:
    w = np.asarray(new["params"][report.path[0]]["kernel"], np.float64)
    gram = w.T @ w if w.shape[0] >= w.shape[1] else w @ w.T
    np.testing.assert_allclose(gram / gram[0, 0], np.eye(len(gram)), atol=1e-4)


def test_lsuv_keeps_bfloat16_kernels():
  model = DeepMLP(depth=2, param_dtype=jnp.bfloat16)
  variables, x = _init(model, (64, 12))
  new, reports = lsuv(model.apply, variables, x)
  chex.assert_trees_all_equal_dtypes(new, variables)
  assert all(abs(r.final_var - 1.0) < TOL for r in reports)


def test_lsuv_leaves_dead_layer_alone():
  model = DeepMLP(depth=2)
  variables, x = _init(model, (16, 12))
  layer = variables["params"]["Dense_0"]
  layer["kernel"] = jnp.zeros_like(layer["kernel"])
  new, reports = lsuv(model.apply, variables, x)
  assert not reports[0].converged and reports[0].iterations == 0
  chex.assert_tree_all_finite(new)
  np.testing.assert_array_equal(new["params"]["Dense_0"]["kernel"], 0.0)


@pytest.mark.parametrize("kwargs", [{"tol": 0.0}, {"max_iters": 0}, {"max_iters": 2.5},
                                    {"target_var": -1.0}])
def test_lsuv_rejects_bad_arguments(kwargs):
  model = DeepMLP(depth=1)
  variables, x = _init(model, (4, 12))
  with pytest.raises(ValueError, match=str(list(kwargs.values())[0])):
    lsuv(model.apply, variables, x, **kwargs)


def test_layer_outputs_same_under_jit_and_paths_in_forward_order():
  model = SmallCNN()
  variables, x = _init(model, (2, 8, 8, 3))
  eager = layer_outputs(model.apply, variables, x)
  jitted = jax.jit(lambda v, x: layer_outputs(model.apply, v, x))(variables, x)
  assert list(eager) == [("block1", "conv"), ("block2", "conv"), ("Dense_0",)]
  assert kernel_layers(model.apply, variables, x) == list(eager)
  chex.assert_trees_all_close(eager, dict(jitted), rtol=1e-5)


def test_registry_lsuv_is_orthogonal_base_init():
  init = registry.get("initializer", "lsuv")
  w = np.asarray(init(jax.random.key(0), (32, 10)), np.float64)  # Shape as in DeepMLP.
  np.testing.assert_allclose(w.T @ w, np.eye(10), atol=1e-5)


def _config(kernel_init="he_normal", pretrain=None):
  config = ml_collections.ConfigDict({"model": {"kernel_init": kernel_init}})
  if pretrain is not None:
    config.init = {"pretrain": pretrain, "rbm_steps": 20, "rbm_batch_size": 16}
  return config


# name -> (config, which layers change: 'none' | 'all' | 'hidden')
DISPATCH = {
    "default_no_init_field": (_config(), "none"),
    "pretrain_none": (_config(pretrain="none"), "none"),
    "lsuv": (_config(kernel_init="lsuv"), "all"),
    "rbm": (_config(pretrain="rbm"), "hidden"),
    "rbm_then_lsuv": (_config(kernel_init="lsuv", pretrain="rbm"), "all"),
}


@pytest.mark.parametrize("name", list(DISPATCH))
def test_apply_data_dependent_init_dispatch(name):
  config, changed = DISPATCH[name]
  model = DeepMLP(depth=2, width=16)
  variables, x = _init(model, (32, 12))
  new = apply_data_dependent_init(config, model, variables, x, jax.random.key(3))
  if changed == "none":
    assert new is variables
    return
  chex.assert_trees_all_equal_shapes_and_dtypes(new, variables)
  for layer in ("Dense_0", "Dense_1", "Dense_2"):
    same = np.array_equal(new["params"][layer]["kernel"], variables["params"][layer]["kernel"])
    expect_same = changed == "hidden" and layer == "Dense_2"
    assert same == expect_same, layer
  if config.model.kernel_init == "lsuv":
    ref = _reference_variances(model, new, x)
    assert all(abs(v - 1.0) < TOL for v in ref.values())


def test_apply_data_dependent_init_rejects_unknown_pretrain():
  model = DeepMLP(depth=1)
  variables, x = _init(model, (4, 12))
  with pytest.raises(ValueError, match="'dbn'"):
    apply_data_dependent_init(_config(pretrain="dbn"), model, variables, x, jax.random.key(0))


def test_lsuv_through_build_model_with_weight_norm():
  """The project's MLP with WeightNorm layers: LSUV rescales each gain g (no kernel there)."""
  from flaxopt.nn import models  # pylint: disable=g-import-not-at-top
  model_config = models.default_model_config()
  model_config.update({"name": "mlp", "kernel_init": "lsuv", "norm": "weight", "width": 16})
  model = models.build_model(model_config, 10)
  variables, x = _init(model, (32, 12, 1))
  config = ml_collections.ConfigDict({"model": model_config.to_dict()})
  new = apply_data_dependent_init(config, model, variables, x, jax.random.key(0))
  apply_fn = lambda v, x: model.apply(v, x, train=False)
  outs = layer_outputs(apply_fn, new, x)
  assert len(outs) == len(kernel_layers(apply_fn, variables, x)) >= 2
  for path, out in outs.items():
    assert abs(float(jnp.var(out)) - 1.0) < TOL, path
    assert "g" in new["params"][path[0]]
