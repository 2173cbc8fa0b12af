"""flaxopt.nnx: a twin for every linen module, NNX conventions, registry, interop, errors.

Numerical equivalence with the linen modules is tests/nnx/test_equivalence.py; these
tests are about the NNX side's own contract and cost little (most run no XLA program).
"""

from __future__ import annotations

import inspect

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

import flaxopt.nn as fnn
import flaxopt.nnx as fnnx
from flaxopt import registry

X = jnp.asarray(np.random.default_rng(0).normal(size=(8, 6)), jnp.float32)


def _linen_module_names():
  return sorted(name for name, obj in vars(fnn).items()
                if inspect.isclass(obj) and issubclass(obj, nn.Module))


def test_every_linen_module_has_a_native_nnx_twin():
  names = _linen_module_names()
  assert {"Activation", "BatchNorm", "WeightNorm", "GatedPool", "DropConnectDense",
          "ResNet"} <= set(names)  # the enumeration sees the whole package.
  missing = [n for n in names if not (
      inspect.isclass(getattr(fnnx, n, None)) and issubclass(getattr(fnnx, n), nnx.Module)
      and getattr(fnnx, n).__module__.startswith("flaxopt.nnx."))]
  assert not missing, f"flaxopt.nn modules without an NNX twin in flaxopt.nnx: {missing}"


@pytest.mark.parametrize("family", ["norm", "pool"])
def test_registry_module_families_return_nnx_twins(family):
  assert fnnx.registry_names(family) == registry.names(family)
  for name, cls in fnnx.registry_table(family).items():
    linen_cls = registry.table(family)[name]
    assert issubclass(cls, nnx.Module) and cls.__name__ == linen_cls.__name__


def test_registry_get_builds_and_delegates():
  bn = fnnx.registry_get("norm", "batch", num_features=6, rngs=nnx.Rngs(0))
  assert isinstance(bn, fnnx.BatchNorm) and bn.mean.shape == (6,)
  pool = fnnx.registry_get("pool", "max", window=(2,))
  assert isinstance(pool, fnnx.MaxPool)
  relu = fnnx.registry_get("activation", "leaky_relu", negative_slope=0.5)
  np.testing.assert_allclose(relu(jnp.asarray([-2.0, 3.0])), [-1.0, 3.0])
  with pytest.raises(ValueError, match="Unknown norm 'batchh'.*Did you mean 'batch'"):
    fnnx.registry_get("norm", "batchh")


def test_batch_norm_statistics_are_batch_stats_and_follow_train_eval():
  bn = fnnx.BatchNorm(6, momentum=0.5, rngs=nnx.Rngs(0))
  assert isinstance(bn.mean, nnx.BatchStat) and isinstance(bn.scale, nnx.Param)
  bn.eval()
  bn(X)
  np.testing.assert_array_equal(bn.mean[...], np.zeros(6))  # eval: running stats unchanged
  bn.train()
  y = bn(X)
  np.testing.assert_allclose(bn.mean[...], 0.5 * np.mean(np.asarray(X), 0), rtol=1e-5)
  np.testing.assert_allclose(np.mean(np.asarray(y), 0), 0.0, atol=1e-5)
  view = nnx.view(bn, use_running_average=True)
  assert view.use_running_average and not bn.use_running_average


def test_streams_by_name_same_seed_same_masks():
  make = lambda **streams: fnnx.build_model(
      {"name": "mlp", "width": 8, "depth": 1, "dropout": 0.5, "activation": "rrelu"}, 3, (6,),
      nnx.Rngs(params=0, **streams))
  a, b, c = make(dropout=1, rrelu=2), make(dropout=1, rrelu=2), make(dropout=3, rrelu=2)
  ya, yb, yc = a(X), b(X), c(X)
  np.testing.assert_array_equal(ya, yb)
  assert not np.allclose(ya, yc)  # another 'dropout' seed, other masks.
  a.eval()
  c.eval()
  np.testing.assert_array_equal(a(X), c(X))  # eval: no randomness.
  model = make()  # no dropout/rrelu streams: deterministic fine, training needs rngs=.
  with pytest.raises(ValueError, match="has no '(dropout|rrelu)' rng stream"):
    model(X)
  np.testing.assert_array_equal(model(X, rngs=nnx.Rngs(dropout=1, rrelu=2)),
                                make(dropout=1, rrelu=2)(X, rngs=nnx.Rngs(dropout=1, rrelu=2)))


def test_weight_norm_data_dependent_init_matches_linen_data_init():
  """The explicit method gives linen's ``data_init=True`` g and bias for the same v."""
  x = X * 3 + 1
  linen = fnn.WeightNorm(nn.Dense(4), data_init=True, init_scale=0.5)
  variables = linen.init(jax.random.key(0), x)
  module = fnnx.WeightNorm(nnx.Linear(6, 4, rngs=nnx.Rngs(0)), init_scale=0.5)
  module.v[...] = variables["params"]["v"]
  module.data_dependent_init(x)
  for name in ("g", "bias"):
    np.testing.assert_allclose(getattr(module, name)[...], variables["params"][name],
                               rtol=1e-6)
  y = np.asarray(module(x))  # the paper's target: per-feature mean 0, std init_scale.
  np.testing.assert_allclose(y.mean(0), 0.0, atol=1e-5)
  np.testing.assert_allclose(y.std(0), 0.5, rtol=1e-4)


def test_linen_variables_round_trip_and_mismatch():
  config = {"name": "mlp", "width": 4, "depth": 1, "norm": "batch"}
  model = fnnx.build_model(config, 10, (6,), nnx.Rngs(0))
  linen = fnn.build_model(config, 10)
  shapes = jax.eval_shape(linen.init, jax.random.key(0), jnp.zeros((1, 6)))
  ours = fnnx.linen_variables(model)
  assert jax.tree.map(jnp.shape, ours) == jax.tree.map(lambda s: s.shape, dict(shapes))
  moved = jax.tree.map(lambda a: a + 1, ours)
  fnnx.load_linen_variables(model, moved)
  jax.tree.map(np.testing.assert_array_equal, fnnx.linen_variables(model), moved)
  bad = {**moved, "params": {**moved["params"], "head": {"kernel": jnp.zeros((3, 10))}}}
  with pytest.raises(ValueError, match="params: the linen tree"):
    fnnx.load_linen_variables(model, bad)
  with pytest.raises(ValueError, match="Unknown variable collection"):
    fnnx.load_linen_variables(model, {"cache": {}})


R = nnx.Rngs(0)
BAD = [
    (lambda: fnnx.PReLU(), "num_features"),
    (lambda: fnnx.Activation("nope"), "Unknown activation 'nope'"),
    (lambda: fnnx.Activation("prelu", {"slope": 1.0}, num_features=3), "slope"),
    (lambda: fnnx.Activation("elu", {"beta": 1.0}), "beta"),
    (lambda: fnnx.BatchNorm(6, momentum=1.5, rngs=R), "momentum"),
    (lambda: fnnx.LayerNorm(0, rngs=R), "num_features"),
    (lambda: fnnx.GroupNorm(6, num_groups=4, rngs=R), "num_groups=4"),
    (lambda: fnnx.GroupNorm(6, num_groups=2, group_size=3, rngs=R), "not both"),
    (lambda: fnnx.GroupNorm(6, group_size=4, rngs=R), "group_size=4"),
    (lambda: fnnx.WeightNorm(nnx.BatchNorm(3, rngs=R)), "WeightNorm wraps"),
    (lambda: fnnx.LPPool((2,), p_init=1.0), "p_init"),
    (lambda: fnnx.MixedPool((2,), alpha_init=1.0), "alpha_init"),
    (lambda: fnnx.MixedPool((2,), per_channel=True), "num_features"),
    (lambda: fnnx.GatedPool(2, rngs=R), "num_spatial_dims"),
    (lambda: fnnx.Dropout(1.0), "rate"),
    (lambda: fnnx.DropConnectDense(3, 4, inference="median", rngs=R), "inference"),
    (lambda: fnnx.build_model({"name": "vgg"}, 10, (40, 1), R), "Unknown model 'vgg'"),
    (lambda: fnnx.build_model({"name": "cnn", "norm": "group", "num_groups": 4}, 10,
                              (40, 1), R), "num_groups=4"),
    (lambda: fnnx.build_model({"name": "cnn"}, 10, (40,), R), "input_shape"),
    (lambda: fnnx.build_model({"name": "cnn", "api": "linen"}, 10, (40, 1), R),
     "model.api='linen'"),
    (lambda: fnnx.build_model({"name": "mlp"}, 10, (40, 0), R), "input_shape"),
    (lambda: fnnx.build_model({"name": "mlp", "width": 4}, 10, (6,), R)(X[:, :5]),
     r"built for inputs \(N, 6\)"),
    (lambda: fnnx.LinenAdapter.from_config({"name": "mlp", "dropout": 2.0}, 10, (6,)),
     "model.dropout=2.0"),
    (lambda: fnnx.LinenAdapter.from_config({"name": "mlp"}, 10, (6,)).apply({}, X, mutable=[
        "cache"]), "unknown collection"),
]


@pytest.mark.parametrize("make, match", BAD)
def test_bad_arguments_raise_value_error_naming_them(make, match):
  with pytest.raises(ValueError, match=match):
    make()
