"""flaxopt.sweep.spec: the study fields' string syntax and the settings they expand to."""

import ml_collections
import numpy as np
import pytest

from configs import tiny
from flaxopt.sweep import spec as spec_lib
from flaxopt.training.config import apply_overrides


# ---------------------------------------------------------------------------------------
# String syntax.
# ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("text, expected", [
    ("adam", "adam"), ("3", 3), ("-2", -2), ("1e-3", 1e-3), ("0.5", 0.5), ("true", True),
    ("False", False), ("none", "none"), ("", ""), (" relu ", "relu"),
])
def test_parse_value(text, expected):
  value = spec_lib.parse_value(text)
  assert value == expected and type(value) is type(expected)


@pytest.mark.parametrize("spec, field, values", [
    ("optimizer.name=adam,nadam,sgd", "optimizer.name", ["adam", "nadam", "sgd"]),
    ("batch_size=2,8", "batch_size", [2, 8]),
    ("augment.ops=|random_translate|random_translate,gaussian_noise", "augment.ops",
     ["", "random_translate", "random_translate,gaussian_noise"]),
    ("optimizer.learning_rate=1e-3", "optimizer.learning_rate", [1e-3]),
])
def test_parse_axis(spec, field, values):
  assert spec_lib.parse_axis(spec) == (field, values)


@pytest.mark.parametrize("spec", ["optimizer.name", "=adam", "model.norm=", "seed=1,1"])
def test_parse_axis_rejects(spec):
  with pytest.raises(ValueError, match="Axis"):
    spec_lib.parse_axis(spec)


def test_parse_variant():
  spec = "aug: augment.ops=random_translate,gaussian_noise; model.dropout=0.1"
  assert spec_lib.parse_variant(spec) == (
      "aug", [("augment.ops", "random_translate,gaussian_noise"), ("model.dropout", 0.1)])
  assert spec_lib.parse_variant("base:") == ("base", [])
  for bad in ("no colon", "a=b: c=d", "x: model.dropout"):
    with pytest.raises(ValueError, match="Variant"):
      spec_lib.parse_variant(bad)


@pytest.mark.parametrize("spec, seeds", [
    ("0,1,2", [0, 1, 2]), ("3:6", [3, 4, 5]), (2, [0, 1]), ((4, 7), [4, 7]),
])
def test_parse_seeds(spec, seeds):
  assert spec_lib.parse_seeds(spec) == seeds


@pytest.mark.parametrize("spec", ["", "1,1", 0])
def test_parse_seeds_rejects(spec):
  with pytest.raises(ValueError, match="seeds"):
    spec_lib.parse_seeds(spec)


@pytest.mark.parametrize("spec, grid", [
    ("", []),
    ("1e-4:1e-1:4", [1e-4, 1e-3, 1e-2, 1e-1]),
    ("1e-3:1:7", [10 ** (-3 + k / 2) for k in range(7)]),
    ("3e-3,1e-2", [3e-3, 1e-2]),
])
def test_parse_lr_grid(spec, grid):
  np.testing.assert_allclose(spec_lib.parse_lr_grid(spec), grid, rtol=1e-3)


@pytest.mark.parametrize("spec", ["1e-1:1e-3:3", "0:1:3", "1e-3:1e-1:1", "1e-3,-1"])
def test_parse_lr_grid_rejects(spec):
  with pytest.raises(ValueError, match="lr_grid"):
    spec_lib.parse_lr_grid(spec)


def test_make_settings_is_the_product_variants_first():
  settings = spec_lib.make_settings(["model.norm=none,batch", "batch_size=2,8"],
                                   ["plain:", "drop: model.dropout=0.1"])
  assert len(settings) == 8
  assert settings[0].key == "plain,model.norm=none,batch_size=2"
  assert settings[-1].key == "drop,model.norm=batch,batch_size=8"
  assert dict(settings[-1].overrides) == {"model.dropout": 0.1, "model.norm": "batch",
                                          "batch_size": 8}
  assert spec_lib.make_settings([], [])[0].key == "base"
  assert spec_lib.make_settings(["augment.ops=|random_translate"], [])[0].key == "augment.ops=''"


@pytest.mark.parametrize("axes, variants, match", [
    (["seed=1,2", "seed=3"], [], "twice"),
    ([], ["a b:", "a/b:"], "same directory"),
    ([], ["x:", "x: seed=1"], "repeat"),
])
def test_make_settings_rejects(axes, variants, match):
  with pytest.raises(ValueError, match=match):
    spec_lib.make_settings(axes, variants)


def test_apply_overrides():
  base = tiny.get_config()
  base.lock()
  config = apply_overrides(base, [
      ("model.activation", "tanh"), ("optimizer.learning_rate", 1),
      ("optimizer.momentum", 0.8), ("augment.random_translate.max_shift", 2), ("model.depth", 3)])
  assert (config.model.activation, config.optimizer.momentum, config.model.depth) == \
      ("tanh", 0.8, 3)
  assert config.optimizer.learning_rate == 1.0
  assert config.augment.random_translate.max_shift == 2
  assert base.model.activation == "relu" and "momentum" not in base.optimizer  # a copy
  with pytest.raises(ValueError, match="'model.actvation'"):
    apply_overrides(base, [("model.actvation", "tanh")])
  with pytest.raises(ValueError, match="'batchsize'"):
    apply_overrides(base, [("batchsize", 3)])
  with pytest.raises(ValueError, match="'batch_size'"):
    apply_overrides(base, [("batch_size", "big")])


def test_as_study_fills_defaults_and_rejects_unknown_fields():
  study = spec_lib.as_study(tiny.get_config())
  assert study.base.model.name == "mlp" and tuple(study.axes) == () and study.seeds == "0,1"
  bad = ml_collections.ConfigDict({"base": tiny.get_config(), "axis": ("seed=1",)})
  with pytest.raises(ValueError, match="axis"):
    spec_lib.as_study(bad)


