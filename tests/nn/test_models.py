"""Models: parameter counts, shapes, every registry name builds and runs, train vs eval."""

import math

import chex
import flax
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from flaxopt import registry
from flaxopt.nn import models

RNGS = ("params", "dropout", "rrelu", "pool")
X1D = jnp.asarray(np.random.default_rng(0).normal(size=(4, 40, 1)), jnp.float32)
X2D = jnp.asarray(np.random.default_rng(1).uniform(size=(4, 8, 8, 1)), jnp.float32)


def _rngs(seed=0):
  return dict(zip(RNGS, jax.random.split(jax.random.key(seed), len(RNGS))))


def _config(**overrides):
  config = models.default_model_config()
  config.update(overrides)
  return config


def _build(x, num_classes=10, **overrides):
  model = models.build_model(_config(**overrides), num_classes)
  variables = model.init(_rngs(), x, train=False)
  return model, variables


def _count(tree):
  return sum(int(np.prod(leaf.shape)) for leaf in jax.tree.leaves(tree))


def _run(model, variables, x, train, seed=1):
  out, state = model.apply(variables, x, train=train, rngs=_rngs(seed), mutable=["batch_stats"])
  return out, state


# ---------------------------------------------------------------- parameter counts
def _paper_cnn_count(length, channels=25, classes=10):
  """Closed form for the MNIST-1D CNN: conv out = floor((n + 2 - k) / 2) + 1."""
  n1 = (length + 2 - 5) // 2 + 1
  n2 = (n1 + 2 - 3) // 2 + 1
  n3 = (n2 + 2 - 3) // 2 + 1
  return (5 * channels + channels) + 2 * (3 * channels * channels + channels) + \
      (n3 * channels * classes + classes)


# (config overrides, input, expected parameter count)
COUNTS = [
    ({}, X1D, 5210),  # Greydanus 2020, the MNIST-1D CNN.
    ({}, X1D, _paper_cnn_count(40)),
    ({"name": "mlp", "residual": True}, X1D, 40 * 100 + 100 + 100 * 100 + 100 + 100 * 10 + 10),
    ({"name": "logistic"}, X1D, 40 * 10 + 10),
    ({"name": "logistic"}, X2D, 64 * 10 + 10),
    ({"pool": "max"}, X1D, 5210),  # SAME pools keep the strided shapes: 19, 10, 5.
    ({"name": "mlp", "activation": "maxout"}, X1D,
     40 * 200 + 200 + 100 * 200 + 200 + 100 * 10 + 10),
    ({"norm": "batch"}, X1D, 5210 + 3 * 2 * 25),
]


@pytest.mark.parametrize("overrides, x, expected", COUNTS)
def test_parameter_counts(overrides, x, expected):
  _, variables = _build(x, **overrides)
  assert _count(variables["params"]) == expected


def test_default_cnn_matches_paper_layers():
  _, variables = _build(X1D)
  shapes = jax.tree.map(jnp.shape, flax.core.unfreeze(variables["params"]))
  assert shapes == {
      "conv_0": {"kernel": (5, 1, 25), "bias": (25,)},
      "conv_1": {"kernel": (3, 25, 25), "bias": (25,)},
      "conv_2": {"kernel": (3, 25, 25), "bias": (25,)},
      "head": {"kernel": (125, 10), "bias": (10,)},
  }


def test_default_cnn_matches_reference_forward():
  """The CNN equals a hand-written lax.conv forward pass with the same weights."""
  model, variables = _build(X1D)
  p = variables["params"]
  h = X1D
  for i in range(3):
    h = jax.lax.conv_general_dilated(h, p[f"conv_{i}"]["kernel"], (2,), [(1, 1)],
                                     dimension_numbers=("NWC", "WIO", "NWC"))
    h = jax.nn.relu(h + p[f"conv_{i}"]["bias"])
  expected = h.reshape(4, -1) @ p["head"]["kernel"] + p["head"]["bias"]
  chex.assert_trees_all_close(model.apply(variables, X1D, train=False), expected,
                              rtol=1e-5, atol=1e-5)


def test_default_kernel_init_is_torch_default_bound():
  """standard_uniform: |w| <= 1/sqrt(fan_in), as torch.nn.Conv1d / Linear."""
  _, variables = _build(X1D)
  for name, fan_in in (("conv_0", 5), ("conv_1", 75), ("head", 125)):
    kernel = variables["params"][name]["kernel"]
    bound = 1 / math.sqrt(fan_in)
    assert float(jnp.max(jnp.abs(kernel))) <= bound
    assert float(jnp.max(jnp.abs(kernel))) > 0.8 * bound  # Uses the range.


# ---------------------------------------------------------------- shapes, 1D and 2D
@pytest.mark.parametrize("name", list(models.MODELS))
@pytest.mark.parametrize("x", [X1D, X2D], ids=["1d", "2d"])
def test_output_shapes(name, x):
  model, variables = _build(x, num_classes=7, name=name)
  for train in (False, True):
    out, _ = _run(model, variables, x, train)
    chex.assert_shape(out, (4, 7))
    chex.assert_tree_all_finite(out)


# ---------------------------------------------------------------- every registry name
def _names(family):
  return registry.names(family)


# model per family: conv models see spatial axes (instance norm, pools); resnet covers blocks.
FAMILY_CASES = (
    [("activation", n, {"activation": n, "name": "mlp", "depth": 2}) for n in _names("activation")]
    + [("norm", n, {"norm": n}) for n in _names("norm")]
    + [("norm", n, {"norm": n, "name": "mlp"}) for n in _names("norm") if n != "instance"]
    + [("pool", n, {"pool": n}) for n in _names("pool") + ["none", ""]]
    + [("initializer", n, {"kernel_init": n}) for n in _names("initializer")]
    + [("resnet", n, {"name": "resnet", "norm": n, "activation": a, "pool": p})
       for n, a, p in (("batch", "relu", "none"), ("group", "maxout", "max"),
                       ("weight", "prelu", "stochastic"))]
)


@pytest.mark.parametrize("family, name, overrides", FAMILY_CASES,
                         ids=[f"{f}-{n}-{o.get('name', 'cnn')}" for f, n, o in FAMILY_CASES])
def test_every_registry_name_builds_and_runs(family, name, overrides):
  del family, name
  model, variables = _build(X1D, **overrides)
  eval_out, _ = _run(model, variables, X1D, train=False)
  train_out, _ = _run(model, variables, X1D, train=True)
  for out in (eval_out, train_out):
    chex.assert_shape(out, (4, 10))
    chex.assert_tree_all_finite(out)
  grads = jax.grad(lambda p: jnp.sum(_run(model, {**variables, "params": p}, X1D, True)[0]))(
      variables["params"])
  chex.assert_tree_all_finite(grads)


@pytest.mark.parametrize("overrides", [
    {"activation": "rrelu"}, {"pool": "stochastic"}, {"dropout": 0.5},
    {"dropconnect": 0.5, "name": "mlp"}])
def test_randomness_only_in_train(overrides):
  model, variables = _build(X1D, **overrides)
  eval_a, _ = _run(model, variables, X1D, False, seed=1)
  eval_b, _ = _run(model, variables, X1D, False, seed=2)
  chex.assert_trees_all_close(eval_a, eval_b)
  train_a, _ = _run(model, variables, X1D, True, seed=1)
  train_b, _ = _run(model, variables, X1D, True, seed=2)
  train_a2, _ = _run(model, variables, X1D, True, seed=1)
  assert not np.allclose(train_a, train_b)
  chex.assert_trees_all_close(train_a, train_a2)  # Same rng, same result.


def test_dropout_zero_is_identity_in_train():
  model, variables = _build(X1D)
  a, _ = _run(model, variables, X1D, True)
  b, _ = _run(model, variables, X1D, False)
  chex.assert_trees_all_close(a, b)


@pytest.mark.parametrize("name", ["cnn", "mlp", "resnet"])
def test_batch_norm_stats_mutate_in_train_only(name):
  model, variables = _build(X1D, name=name, norm="batch")
  stats = variables["batch_stats"]
  _, new = _run(model, variables, X1D + 3.0, train=True)
  _, same = _run(model, variables, X1D + 3.0, train=False)
  changed = jax.tree.map(lambda a, b: not np.allclose(a, b), stats, new["batch_stats"])
  assert all(jax.tree.leaves(changed))
  chex.assert_trees_all_close(same["batch_stats"], stats)


def test_weight_norm_wraps_every_layer():
  _, variables = _build(X1D, norm="weight")
  params = flax.core.unfreeze(variables["params"])
  assert set(params) == {"conv_0", "conv_1", "conv_2", "head"}
  for layer in params.values():
    assert set(layer) == {"v", "g", "bias"}


def test_lsuv_gives_orthogonal_kernels():
  _, variables = _build(X1D, name="mlp", kernel_init="lsuv")
  w = variables["params"]["dense_1"]["kernel"]  # (100, 100): orthogonal.
  chex.assert_trees_all_close(w.T @ w, jnp.eye(100), atol=1e-4)


def test_residual_mlp_adds_input():
  """Residual MLP = plain MLP with h + layer(h) after the first layer (same parameters)."""
  plain, variables = _build(X1D, name="mlp", depth=3)
  residual = models.build_model(_config(name="mlp", depth=3, residual=True), 10)
  p = variables["params"]
  relu = lambda z: jnp.maximum(z, 0)
  dense = lambda name, h: h @ p[name]["kernel"] + p[name]["bias"]
  h = relu(dense("dense_0", X1D.reshape(4, -1)))
  h = h + relu(dense("dense_1", h))
  h = h + relu(dense("dense_2", h))
  chex.assert_trees_all_close(residual.apply(variables, X1D), dense("head", h), rtol=1e-5,
                              atol=1e-5)
  assert not np.allclose(plain.apply(variables, X1D), residual.apply(variables, X1D))


def test_depth_and_width_fields():
  _, variables = _build(X1D, name="mlp", depth=4, width=16)
  assert sorted(variables["params"]) == ["dense_0", "dense_1", "dense_2", "dense_3", "head"]
  _, variables = _build(X1D, depth=2, channels=8)
  assert variables["params"]["conv_1"]["kernel"].shape == (3, 8, 8)
  _, variables = _build(X2D, name="resnet", depth=2, channels=4)
  assert variables["params"]["stage2_block1"]["conv_1"]["kernel"].shape == (3, 3, 16, 16)


def test_jit_and_dtype():
  model, variables = _build(X1D, norm="batch")
  out = jax.jit(lambda v, x: model.apply(v, x, train=False))(variables, X1D)
  chex.assert_trees_all_close(out, model.apply(variables, X1D, train=False), rtol=1e-5)
  assert out.dtype == jnp.float32


# ---------------------------------------------------------------- errors
@pytest.mark.parametrize("overrides, match", [
    ({"name": "vgg"}, r"Unknown model 'vgg'; valid model names: logistic, mlp, cnn, resnet"),
    ({"activation": "relu7"}, r"Unknown activation 'relu7'.*Valid activation names"),
    ({"norm": "batchnorm"}, r"Unknown norm 'batchnorm'.*Valid norm names"),
    ({"pool": "maxx"}, r"Unknown pool 'maxx'.*Valid pool names"),
    ({"kernel_init": "glorot"}, r"Unknown initializer 'glorot'"),
    ({"norm": "group", "num_groups": 4}, r"num_groups=4 does not divide the 25 channels"),
    ({"norm": "group", "num_groups": 5, "name": "mlp", "width": 12},
     r"num_groups=5 does not divide the 12 channels"),
    ({"dropout": 1.0}, r"model.dropout=1.0"),
    ({"dropconnect": -0.1}, r"model.dropconnect=-0.1"),
    ({"depth": 0}, r"model.depth=0"),
    ({"norm": "weight", "dropconnect": 0.5}, r"norm='weight' cannot wrap DropConnectDense"),
    ({"norm": "instance", "name": "mlp"}, r"norm='instance'.*mlp"),
    ({"widht": 3}, r"Unknown model config field\(s\) \['widht'\]"),
])
def test_build_errors(overrides, match):
  config = dict(models.default_model_config().to_dict(), **overrides)
  with pytest.raises(ValueError, match=match):
    models.build_model(config, 10)


def test_conv_models_need_spatial_input():
  model = models.build_model(_config(), 10)
  with pytest.raises(ValueError, match=r"CNN needs input .* got shape \(4, 40\)"):
    model.init(_rngs(), X1D[..., 0])


def test_default_config_fields():
  config = models.default_model_config()
  for field in ("name", "width", "depth", "channels", "activation", "kernel_init", "norm",
                "num_groups", "pool", "dropout", "dropconnect", "residual"):
    assert field in config
  assert config.name == "cnn" and config.depth is None and config.channels == 25
  config.depth = 5  # The placeholder takes an int override (as from the command line).
  assert models.build_model(config, 10).depth == 5
