"""Models: parameter counts, shapes, every registry name builds and runs, train vs eval.

Cheap by construction (XLA:CPU compiles dominate): shapes and parameter counts come from
``jax.eval_shape``; runs use tiny models whose parameters are filled from numpy (no random
init to compile) and one jitted eval+train function per case.
"""

import math

import chex
import flax
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from flaxopt import registry
from flaxopt.nn import models

STREAMS = ("params", "dropout", "rrelu", "pool")
X1D = jnp.asarray(np.random.default_rng(0).normal(size=(2, 40, 1)), jnp.float32)
X2D = jnp.asarray(np.random.default_rng(1).uniform(size=(2, 8, 8, 1)), jnp.float32)
X28 = jax.ShapeDtypeStruct((2, 28, 28, 1), jnp.float32)  # Fashion-MNIST-sized, shapes only.
XS = X1D[:, :16]  # Small input for the runs.


def _rngs(seed=0):
  keys = jax.random.split(jax.random.key(seed, impl="rbg"), len(STREAMS))
  return dict(zip(STREAMS, keys))


def _config(**overrides):
  config = models.default_model_config()
  config.update(overrides)
  return config


def _shapes(x, num_classes=10, **overrides):
  """(model, variable shapes) without computing anything."""
  model = models.build_model(_config(**overrides), num_classes)
  return model, jax.eval_shape(model.init, _rngs(), x)


def _filled(x, seed=0, **overrides):
  """(model, variables) with parameters U(-0.5, 0.5) from numpy; batch_stats as initialized."""
  model, shapes = _shapes(x, **overrides)
  rng = np.random.default_rng(seed)
  params = jax.tree.map(lambda s: jnp.asarray(rng.uniform(-0.5, 0.5, s.shape), s.dtype),
                        shapes["params"])
  stats = {"batch_stats": jax.tree.map(
      lambda s: jnp.ones(s.shape, s.dtype), shapes["batch_stats"])} \
      if "batch_stats" in shapes else {}
  return model, {"params": params, **stats}


def _runner(model):
  """jit(variables, x, rngs) -> (eval logits, train logits, train batch_stats)."""
  @jax.jit
  def run(variables, x, rngs):
    eval_out = model.apply(variables, x, train=False)
    train_out, state = model.apply(variables, x, train=True, rngs=rngs,
                                   mutable=["batch_stats"])
    return eval_out, train_out, state.get("batch_stats", {})
  return run


def _count(tree):
  return sum(int(np.prod(leaf.shape)) for leaf in jax.tree.leaves(tree))


# ---------------------------------------------------------------- parameter counts
def _paper_cnn_count(length, channels=25, classes=10):
  """Closed form for the MNIST-1D CNN: conv output = floor((n + 2 - k) / 2) + 1."""
  n = length
  for k in (5, 3, 3):
    n = (n + 2 - k) // 2 + 1
  return (5 * channels + channels) + 2 * (3 * channels * channels + channels) + \
      (n * channels * classes + classes)


# (config overrides, input, expected parameter count)
COUNTS = [
    ({}, X1D, 5210),  # Greydanus 2020, the MNIST-1D CNN.
    ({}, X1D[:, :30], _paper_cnn_count(30)),
    ({"pool": "max"}, X1D, 5210),  # SAME pools keep the strided lengths 19, 10, 5.
    ({"norm": "batch"}, X1D, 5210 + 3 * 2 * 25),
    ({"norm": "weight"}, X1D, 5210 + 25 * 3 + 10),  # Plus one g per output feature.
    ({"name": "mlp", "residual": True}, X1D, 40 * 100 + 100 + 100 * 100 + 100 + 100 * 10 + 10),
    ({"name": "mlp", "activation": "maxout"}, X1D,
     40 * 200 + 200 + 100 * 200 + 200 + 100 * 10 + 10),
    ({"name": "logistic"}, X1D, 40 * 10 + 10),
    ({"name": "logistic"}, X2D, 64 * 10 + 10),
    # 2D: 8x8 -> 3x3 -> 2x2 -> 1x1.
    ({"name": "cnn"}, X2D, (25 * 25 + 25) + 2 * (9 * 25 * 25 + 25) + (25 * 10 + 10)),
    # ConvNet on 28x28 (28 -> 14 -> 7 by SAME pools or stride-2 SAME convs alike):
    # the 2 conv + 2 dense baseline, and the small one (< 100k parameters).
    ({"name": "convnet", "pool": "max"}, X28,
     (9 * 32 + 32) + (9 * 32 * 64 + 64) + (7 * 7 * 64 * 128 + 128) + (128 * 10 + 10)),
    ({"name": "convnet", "pool": "max"}, X28, 421_642),
    ({"name": "convnet"}, X28, 421_642),
    ({"name": "convnet", "pool": "max", "dense_widths": ()}, X28, 50_186),
    ({"name": "convnet", "pool": "max", "dense_widths": ()}, X28,
     (9 * 32 + 32) + (9 * 32 * 64 + 64) + (7 * 7 * 64 * 10 + 10)),
    ({"name": "convnet", "pool": "max", "conv_channels": (16, 32, 64), "kernel_size": 5,
      "dense_widths": (50, 20)}, X28,  # 28 -> 14 -> 7 -> 4.
     (25 * 16 + 16) + (25 * 16 * 32 + 32) + (25 * 32 * 64 + 64) + (4 * 4 * 64 * 50 + 50)
     + (50 * 20 + 20) + (20 * 10 + 10)),
    ({"name": "convnet", "norm": "batch", "dense_widths": (8,)}, X28,
     320 + 18_496 + (3136 * 8 + 8) + (8 * 10 + 10) + 2 * (32 + 64 + 8)),
]


def _resnet_count(c, depth=1, in_channels=1, classes=10):
  """Closed form for the ResNet (no norm): stem, 3 stages of basic blocks, 1x1 projections."""
  conv = lambda k, cin, cout: k * k * cin * cout + cout
  total = conv(3, in_channels, c)
  cin = c
  for mult in (1, 2, 4):
    for _ in range(depth):
      total += conv(3, cin, c * mult) + conv(3, c * mult, c * mult)
      total += conv(1, cin, c * mult) if cin != c * mult else 0
      cin = c * mult
  return total + 4 * c * classes + classes


COUNTS += [
    ({"name": "resnet", "channels": 16}, X28, _resnet_count(16)),
    ({"name": "resnet", "channels": 8, "depth": 2}, X28, _resnet_count(8, depth=2)),
]


@pytest.mark.parametrize("overrides, x, expected", COUNTS)
def test_parameter_counts(overrides, x, expected):
  _, shapes = _shapes(x, **overrides)
  assert _count(shapes["params"]) == expected


def test_convnet_small_is_under_100k_and_resnet_runs_at_28x28():
  """The small ConvNet fits the '<100K parameters' entry of the Fashion-MNIST table; the
  ResNet maps 28x28 inputs to logits (28 -> 14 -> 7 through its stages)."""
  _, shapes = _shapes(X28, name="convnet", pool="max", dense_widths=())
  assert _count(shapes["params"]) <= 100_000
  model, shapes = _shapes(X28, name="resnet", channels=16, norm="batch")
  out, _ = jax.eval_shape(lambda v, x: model.apply(v, x, train=True, mutable=["batch_stats"]),
                          shapes, X28)
  assert out.shape == (2, 10)


def test_convnet_matches_reference_forward():
  """conv(SAME) -> relu -> maxpool 2 (twice) -> dense -> relu -> head, by lax, same weights."""
  x = jnp.asarray(np.random.default_rng(2).uniform(size=(2, 8, 8, 1)), jnp.float32)
  model, variables = _filled(x, name="convnet", pool="max", conv_channels=(3, 4),
                             dense_widths=(5,))
  p = variables["params"]
  h = x
  for i in range(2):
    h = jax.lax.conv_general_dilated(h, p[f"conv_{i}"]["kernel"], (1, 1), "SAME",
                                     dimension_numbers=("NHWC", "HWIO", "NHWC"))
    h = jax.nn.relu(h + p[f"conv_{i}"]["bias"])
    h = jax.lax.reduce_window(h, -jnp.inf, jax.lax.max, (1, 2, 2, 1), (1, 2, 2, 1), "SAME")
  h = jax.nn.relu(h.reshape(2, -1) @ p["dense_0"]["kernel"] + p["dense_0"]["bias"])
  expected = h @ p["head"]["kernel"] + p["head"]["bias"]
  assert p["dense_0"]["kernel"].shape == (2 * 2 * 4, 5)
  chex.assert_trees_all_close(model.apply(variables, x), expected, rtol=1e-5, atol=1e-5)


def test_default_cnn_layer_shapes():
  _, shapes = _shapes(X1D)
  assert jax.tree.map(lambda s: s.shape, flax.core.unfreeze(shapes["params"])) == {
      "conv_0": {"kernel": (5, 1, 25), "bias": (25,)},
      "conv_1": {"kernel": (3, 25, 25), "bias": (25,)},
      "conv_2": {"kernel": (3, 25, 25), "bias": (25,)},
      "head": {"kernel": (125, 10), "bias": (10,)},
  }


def test_default_cnn_matches_reference_forward():
  """The CNN equals a hand-written lax.conv forward pass with the same weights."""
  model, variables = _filled(X1D)
  p = variables["params"]
  h = X1D
  for i in range(3):
    h = jax.lax.conv_general_dilated(h, p[f"conv_{i}"]["kernel"], (2,), [(1, 1)],
                                     dimension_numbers=("NWC", "WIO", "NWC"))
    h = jax.nn.relu(h + p[f"conv_{i}"]["bias"])
  expected = h.reshape(len(X1D), -1) @ p["head"]["kernel"] + p["head"]["bias"]
  chex.assert_trees_all_close(model.apply(variables, X1D), expected, rtol=1e-5, atol=1e-5)


def test_residual_mlp_matches_reference_forward():
  """Residual MLP: h = h + relu(dense(h)) after the first layer, as the MNIST-1D paper's."""
  model, variables = _filled(XS, name="mlp", depth=3, width=8, residual=True)
  p = variables["params"]
  dense = lambda name, h: h @ p[name]["kernel"] + p[name]["bias"]
  h = jax.nn.relu(dense("dense_0", XS.reshape(len(XS), -1)))
  h = h + jax.nn.relu(dense("dense_1", h))
  h = h + jax.nn.relu(dense("dense_2", h))
  chex.assert_trees_all_close(model.apply(variables, XS), dense("head", h), rtol=1e-5,
                              atol=1e-5)


# (kernel_init, bound on |w| given fan_in); checked on a real init of a tiny MLP.
INIT_BOUNDS = [
    ("standard_uniform", lambda fan_in: 1 / math.sqrt(fan_in)),  # torch Linear/Conv default.
    ("random_uniform", lambda fan_in: 0.05),
]


@pytest.mark.parametrize("kernel_init, bound", INIT_BOUNDS, ids=[n for n, _ in INIT_BOUNDS])
def test_kernel_init_reaches_every_kernel(kernel_init, bound):
  model = models.build_model(_config(name="mlp", width=32, depth=1, kernel_init=kernel_init),
                             10)
  params = model.init(_rngs(), XS)["params"]
  for name in ("dense_0", "head"):
    kernel = params[name]["kernel"]
    top = float(jnp.max(jnp.abs(kernel)))
    assert 0.8 * bound(kernel.shape[0]) < top <= bound(kernel.shape[0]), (name, top)
    np.testing.assert_array_equal(params[name]["bias"], 0.0)


# ---------------------------------------------------------------- shapes, 1D and 2D
@pytest.mark.parametrize("name", list(models.MODELS))
@pytest.mark.parametrize("x", [X1D, X2D], ids=["1d", "2d"])
def test_output_shapes(name, x):
  model, shapes = _shapes(x, num_classes=7, name=name, norm="batch" if name != "logistic"
                          else "none")
  for train in (False, True):
    out, _ = jax.eval_shape(
        lambda v, x, r, t=train: model.apply(v, x, train=t, rngs=r, mutable=["batch_stats"]),
        shapes, x, _rngs())
    assert out.shape == (len(x), 7) and out.dtype == jnp.float32


def test_depth_width_channels_fields():
  _, shapes = _shapes(X1D, name="mlp", depth=4, width=16)
  assert sorted(shapes["params"]) == ["dense_0", "dense_1", "dense_2", "dense_3", "head"]
  assert shapes["params"]["dense_3"]["kernel"].shape == (16, 16)
  _, shapes = _shapes(X1D, depth=2, channels=8)
  assert sorted(shapes["params"]) == ["conv_0", "conv_1", "head"]
  assert shapes["params"]["conv_1"]["kernel"].shape == (3, 8, 8)
  _, shapes = _shapes(X2D, name="resnet", depth=2, channels=4)
  assert shapes["params"]["stage2_block1"]["conv_1"]["kernel"].shape == (3, 3, 16, 16)
  assert "proj" in shapes["params"]["stage1_block0"]  # Downsampling block: projection.
  assert "proj" not in shapes["params"]["stage1_block1"]


def test_weight_norm_wraps_every_layer():
  _, shapes = _shapes(X1D, norm="weight")
  params = flax.core.unfreeze(shapes["params"])
  assert set(params) == {"conv_0", "conv_1", "conv_2", "head"}
  for layer in params.values():
    assert set(layer) == {"v", "g", "bias"}


# ---------------------------------------------------------------- every registry name runs
# Tiny models: activations on an MLP; norms and pools on a 2-layer CNN (spatial axes);
# the ResNet once per norm family that has state or wraps layers.
TINY = {"mlp": {"name": "mlp", "width": 10, "depth": 2},
        "cnn": {"name": "cnn", "channels": 5, "depth": 2},
        "resnet": {"name": "resnet", "channels": 5, "depth": 1},
        "convnet": {"name": "convnet", "conv_channels": (5, 5), "dense_widths": (5,)}}
RUN_CASES = (
    [("mlp", {"activation": n}) for n in registry.names("activation")]
    + [("cnn", {"norm": n}) for n in registry.names("norm")]
    + [("mlp", {"norm": n}) for n in registry.names("norm") if n != "instance"]
    + [("cnn", {"pool": n}) for n in registry.names("pool") + ["none", ""]]
    + [("resnet", {"norm": "batch", "pool": "max", "activation": "rrelu"}),
       ("resnet", {"norm": "weight", "activation": "maxout", "dropout": 0.2}),
       ("cnn", {"dropout": 0.3, "dropconnect": 0.3, "activation": "prelu"}),
       ("convnet", {"norm": "batch", "pool": "max", "dropout": 0.2}),
       ("logistic", {"dropconnect": 0.5})]
)


@pytest.mark.parametrize("model_name, overrides", RUN_CASES,
                         ids=[f"{m}-" + "-".join(f"{v}" for v in o.values())
                              for m, o in RUN_CASES])
def test_every_registry_name_builds_and_runs(model_name, overrides):
  model, variables = _filled(XS, **{**TINY.get(model_name, {"name": model_name}), **overrides})
  eval_out, train_out, stats = _runner(model)(variables, XS, _rngs(1))
  for out in (eval_out, train_out):
    chex.assert_shape(out, (len(XS), 10))
    chex.assert_tree_all_finite(out)
  assert jax.tree.structure(stats) == jax.tree.structure(variables.get("batch_stats", {}))


# (config overrides) with randomness in training: rrelu slopes, stochastic pool, dropout,
# dropconnect. Evaluation must ignore the rngs; training must use them.
RANDOM_CASES = [
    {"name": "mlp", "width": 10, "activation": "rrelu"},
    {"name": "cnn", "channels": 5, "depth": 2, "pool": "stochastic"},
    {"name": "mlp", "width": 10, "dropout": 0.5},
    {"name": "mlp", "width": 10, "dropconnect": 0.5},
]


@pytest.mark.parametrize("overrides", RANDOM_CASES,
                         ids=["rrelu", "stochastic_pool", "dropout", "dropconnect"])
def test_randomness_only_in_train(overrides):
  model, variables = _filled(XS, **overrides)
  run = _runner(model)
  eval_a, train_a, _ = run(variables, XS, _rngs(1))
  eval_b, train_b, _ = run(variables, XS, _rngs(2))
  _, train_a2, _ = run(variables, XS, _rngs(1))
  chex.assert_trees_all_close(eval_a, eval_b)
  assert not np.allclose(train_a, train_b)
  chex.assert_trees_all_close(train_a, train_a2)  # Same rngs, same result.


def test_no_randomness_means_train_equals_eval():
  model, variables = _filled(XS, **TINY["cnn"])
  eval_out, train_out, _ = _runner(model)(variables, XS, _rngs(1))
  chex.assert_trees_all_close(eval_out, train_out)


def test_batch_norm_stats_mutate_in_train_only():
  model, variables = _filled(XS, **TINY["cnn"], norm="batch")
  eval_out, train_out, stats = _runner(model)(variables, XS + 3.0, _rngs(1))
  changed = jax.tree.map(lambda a, b: not np.allclose(a, b), variables["batch_stats"], stats)
  assert all(jax.tree.leaves(changed))
  assert not np.allclose(eval_out, train_out)  # Batch vs running statistics.


def test_cnn_gradients_finite_and_nonzero():
  model, variables = _filled(XS, **TINY["cnn"])
  loss = lambda p: jnp.sum(model.apply({"params": p}, XS, train=True) ** 2)
  grads = jax.grad(loss)(variables["params"])
  chex.assert_tree_all_finite(grads)
  assert all(float(jnp.abs(g).sum()) > 0 for g in jax.tree.leaves(grads))


# ---------------------------------------------------------------- errors
@pytest.mark.parametrize("overrides, match", [
    ({"name": "vgg"}, r"Unknown model 'vgg'; valid model names: logistic, mlp, cnn, convnet, "
                      r"resnet"),
    ({"activation": "relu7"}, r"Unknown activation 'relu7'.*Valid activation names"),
    ({"norm": "batchnorm"}, r"Unknown norm 'batchnorm'.*Valid norm names"),
    ({"pool": "maxx"}, r"Unknown pool 'maxx'.*Valid pool names"),
    ({"kernel_init": "glorot"}, r"Unknown initializer 'glorot'"),
    ({"norm": "group", "num_groups": 4}, r"num_groups=4 does not divide the 25 channels"),
    ({"norm": "group", "name": "mlp", "width": 12},
     r"num_groups=5 does not divide the 12 channels"),
    ({"norm": "group", "name": "resnet", "channels": 10, "num_groups": 20},
     r"num_groups=20 does not divide the 10 channels"),
    ({"dropout": 1.0}, r"model.dropout=1.0"),
    ({"dropconnect": -0.1}, r"model.dropconnect=-0.1"),
    ({"depth": 0}, r"model.depth=0"),
    ({"width": 2.5}, r"model.width=2.5"),
    ({"norm": "weight", "dropconnect": 0.5}, r"norm='weight' cannot wrap DropConnectDense"),
    ({"norm": "instance", "name": "mlp"}, r"norm='instance'.*mlp"),
    ({"widht": 3}, r"Unknown model config field\(s\) \['widht'\]"),
    ({"conv_channels": ()}, r"model.conv_channels=\(\) must be a non-empty sequence"),
    ({"dense_widths": (10, 0)}, r"model.dense_widths=\(10, 0\) must be a sequence of positive"),
    ({"kernel_size": 4}, r"model.kernel_size=4 must be odd"),
    ({"name": "convnet", "norm": "group", "conv_channels": (10, 20), "dense_widths": (12,)},
     r"num_groups=5 does not divide the 12 channels of the convnet"),
    ({"name": "convnet", "norm": "instance"}, r"norm='instance'.*convnet's dense layers"),
])
def test_build_errors(overrides, match):
  config = dict(models.default_model_config().to_dict(), **overrides)
  with pytest.raises(ValueError, match=match):
    models.build_model(config, 10)


def test_bad_num_classes():
  with pytest.raises(ValueError, match=r"num_classes=0"):
    models.build_model(models.default_model_config(), 0)


def test_conv_models_need_spatial_input():
  with pytest.raises(ValueError, match=r"CNN needs input .* got shape \(2, 40\)"):
    _shapes(X1D[..., 0])


def test_default_config_fields():
  config = models.default_model_config()
  expected = {"name": "cnn", "api": "linen", "width": 100, "depth": None, "channels": 25, "residual": False,
              "activation": "relu", "num_pieces": 2, "kernel_init": "standard_uniform",
              "norm": "none", "num_groups": 5, "pool": "none", "dropout": 0.0,
              "dropconnect": 0.0, "conv_channels": (32, 64), "kernel_size": 3,
              "dense_widths": (128,)}
  assert config.to_dict() == expected
  config.depth = 5  # The placeholder takes an int override (as from the command line).
  model = models.build_model(config, 10, axis_name="batch")
  assert model.depth == 5 and model.axis_name == "batch"


@pytest.mark.parametrize("name", list(models.MODELS))
def test_defaults_have_one_source(name):
  """Each model built from default_model_config() equals the class built with no arguments:
  the config's defaults are the dataclass fields, not a copy of them."""
  config = models.default_model_config()
  config.name = name
  built = models.build_model(config, 10)
  assert built == models.MODELS[name](num_classes=10)


def test_config_tuple_fields_take_lists():
  """A JSON round trip turns tuples into lists; the model gets tuples back (hashable fields)."""
  model = models.build_model({"name": "convnet", "conv_channels": [8, 16], "dense_widths": []},
                             10)
  assert model.conv_channels == (8, 16) and model.dense_widths == ()
