"""The config module: schema coverage, one-line errors, defaults from one source, overrides,
and property tests (hypothesis): a bad value of any field of any config in configs/ is a
ConfigError; a config that validates builds (model + optimizer, abstractly: no training)."""

import importlib
import inspect
import math
import os

import jax
import jax.numpy as jnp
import ml_collections
import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

import flaxopt.functional as F
from flaxopt.init.lsuv import lsuv
from flaxopt.init.rbm import pretrain_mlp, train_rbm
from flaxopt.training import config as config_lib
from flaxopt.training import loop

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
CONFIG_NAMES = sorted(f[:-3] for f in os.listdir(os.path.join(REPO, "configs"))
                      if f.endswith(".py") and f != "__init__.py")
CONFIGS = {name: importlib.import_module(f"configs.{name}").get_config()
           for name in CONFIG_NAMES}
# Example shapes (without the batch axis) of the datasets the configs use.
INPUT_SHAPES = {"mnist1d": (40, 1), "digits": (8, 8, 1)}


def _with(config, **fields):
  tree = config_lib.complete(config).to_dict()
  for dotted, value in fields.items():
    node = tree
    *parents, leaf = dotted.split(".")
    for part in parents:
      node = node[part]
    node[leaf] = value
  return ml_collections.ConfigDict(tree)  # types follow the new values


@pytest.mark.parametrize("name", CONFIG_NAMES)
def test_every_field_of_every_config_is_in_the_schema_and_valid(name):
  flat = config_lib.flatten(CONFIGS[name].to_dict())
  missing = sorted(set(flat) - set(config_lib.schema()))
  assert not missing, missing
  config_lib.validate(CONFIGS[name])


def test_default_config_is_the_schema_defaults():
  flat = config_lib.flatten(config_lib.default_config().to_dict())
  assert set(flat) == set(config_lib.schema())
  assert all(flat[k] == f.default for k, f in config_lib.schema().items())


def test_defaults_have_one_source():
  """init.* are the keyword defaults of lsuv / train_rbm / pretrain_mlp; augment.* the ops'."""
  kw = lambda fn: {p.name: p.default for p in inspect.signature(fn).parameters.values()}
  init = config_lib.init_config()
  assert (init.lsuv_tol, init.lsuv_max_iters) == (kw(lsuv)["tol"], kw(lsuv)["max_iters"])
  assert (init.rbm_steps, init.rbm_batch_size, init.rbm_k, init.rbm_learning_rate) == tuple(
      kw(train_rbm)[k] for k in ("steps", "batch_size", "k", "learning_rate"))
  assert init.rbm_visible == kw(pretrain_mlp)["visible"]
  augment = config_lib.augment_config().to_dict()
  assert augment.pop("ops") == ""
  assert augment == F.augment_defaults()


# One table: overrides -> the one-line message (a fragment).
BAD = [
    ({"seed": -1}, "seed=-1: must be in [0, 2.14748e+09]"),
    ({"eval_batch_size": -1}, "eval_batch_size=-1: must be >= 0"),
    ({"diagnostics.every": -1}, "diagnostics.every=-1: must be >= 0"),
    ({"max_to_keep": 0}, "max_to_keep=0: must be >= 1"),
    ({"optimizer.warmup_steps": -10}, "optimizer.warmup_steps=-10: must be >= 0"),
    ({"augment.random_translate.max_shift": -1},
     "augment.random_translate.max_shift=-1: must be >= 0"),
    ({"augment.random_translate.max_shift": [2, -1]},
     "augment.random_translate.max_shift=[2, -1]: must be >= 0"),
    ({"early_stopping.enabled": True, "early_stopping.metric": "val_loss"},
     "early_stopping.metric='val_loss': needs a validation split"),
    ({"batch_size": 10.5}, "batch_size=10.5: must be a int, got float"),
    ({"model.residual": "yes"}, "model.residual='yes': must be a bool, got str"),
    ({"optimizer.learning_rate": math.nan}, "optimizer.learning_rate=nan: must be finite"),
    ({"optimizer.b3": 0.5}, "optimizer.b3=0.5: not an argument of optimizer 'adam'. Did you "
                            "mean 'b2'? Valid: b1, b2,"),
    ({"augment.ops": "cutout,l2"}, "augment.ops='cutout,l2': Unknown augment 'l2'"),
    ({"augment.amplitude_scale.low": 2.0}, "augment.amplitude_scale.high=1.2: must be >= "
                                           "augment.amplitude_scale.low=2.0"),
    ({"dataset.data_dir": "/no/such/folder/data"},
     "dataset.data_dir='/no/such/folder/data': no such folder: /no/such/folder"),
    ({"model.conv_channels": (4, -1)}, "model.conv_channels=(4, -1): must be >= 1"),
    ({"model.dense_widths": 128}, "model.dense_widths=128: must be a list of ints, got int"),
    ({"curvature.trace_samples": 1}, "curvature.trace_samples=1: must be >= 2"),
    ({"optimizer.schedule": "warmup_cosine", "optimizer.warmup_steps": 7000},
     "optimizer.warmup_steps=7000: must be <= num_train_steps=6000"),
]


@pytest.mark.parametrize("fields,message", BAD, ids=[",".join(f) for f, _ in BAD])
def test_bad_field_is_a_one_line_config_error(fields, message):
  with pytest.raises(config_lib.ConfigError) as e:
    loop.validate_config(_with(CONFIGS["default"], **fields))
  assert message in str(e.value) and "\n" not in str(e.value), str(e.value)


@pytest.mark.parametrize("field,value,message", [
    ("batchsize", 3, "batchsize=3: unknown field. Did you mean 'batch_size'? Valid fields of "
                     "the top level: augment, batch_size,"),
    ("model.widht", 3, "model.widht=3: unknown field. Did you mean 'width'? Valid fields of "
                       "section 'model': activation,"),
    ("augment.cutout.radius", 3, "augment.cutout.radius=3: unknown field. Valid fields of "
                                 "section 'augment.cutout': fill, prob, size"),
    ("early_stoping.patience", 3, "early_stoping.patience=3: unknown field. Did you mean "
                                  "'early_stopping'?"),
])
def test_unknown_field_lists_its_section_with_a_suggestion(field, value, message):
  config = CONFIGS["tiny"]
  with config.unlocked():
    tree = config.to_dict()
  node = tree
  *parents, leaf = field.split(".")
  for part in parents:
    node = node.setdefault(part, {})
  node[leaf] = value
  with pytest.raises(config_lib.ConfigError) as e:
    config_lib.validate(tree)
  assert message in str(e.value) and "\n" not in str(e.value), str(e.value)


def test_early_stopping_metric_without_validation_split_is_fine_when_disabled():
  config_lib.validate(_with(CONFIGS["tiny"], **{"early_stopping.metric": "val_loss"}))


def test_complete_fills_missing_fields_and_diff_names_changed_ones():
  partial = {"optimizer": {"name": "sgd", "learning_rate": 0.1}, "batch_size": 10}
  full = config_lib.complete(partial)
  assert full.batch_size == 10 and full.optimizer.schedule == "constant"
  assert full.max_to_keep == config_lib.schema()["max_to_keep"].default
  other = _with(full, batch_size=20, **{"model.width": 3})
  assert config_lib.diff(full, other) == ["batch_size", "model.width"]
  assert config_lib.diff(full, other, ignore=["batch_size"]) == ["model.width"]


# ---------------------------------------------------------------------------------------
# Property tests.
# ---------------------------------------------------------------------------------------
def _bad_values(field: config_lib.Field) -> st.SearchStrategy:
  """Values ``field`` must reject: a wrong type, or out of range / not an allowed name."""
  wrong_type = st.just("x") if field.kind is not str else st.integers(-3, 3)
  options = [wrong_type]
  if field.kind in (int, float):
    number = st.integers if field.kind is int else (
        lambda lo, hi: st.floats(lo, hi, allow_nan=False))
    if field.low is not None:
      below = number(-10**6, int(field.low) - 1) if field.kind is int else st.floats(
          -1e6, field.low, exclude_max=not field.low_open)
      options.append(below)
    if field.high is not None:
      above = number(int(field.high) + 1, int(field.high) + 10**6) if field.kind is int else \
          st.floats(field.high, 1e6, exclude_min=not field.high_open)
      options.append(above)
  elif field.kind is str and (field.choices or field.family):
    options.append(st.sampled_from(["not_a_name", "RELU ", "?"]))
  return st.one_of(*options)


_CHECKABLE = sorted(k for k, f in config_lib.schema().items()
                    if not (f.kind is str and not f.choices and not f.family))


@settings(max_examples=30, deadline=None, suppress_health_check=list(HealthCheck))
@given(name=st.sampled_from(CONFIG_NAMES), field=st.sampled_from(_CHECKABLE), data=st.data())
def test_property_bad_value_of_any_field_is_a_config_error(name, field, data):
  value = data.draw(_bad_values(config_lib.schema()[field]))
  assert config_lib.schema()[field].why_bad(value), (field, value)
  with pytest.raises(config_lib.ConfigError) as e:
    config_lib.validate(_with(CONFIGS[name], **{field: value}))
  assert str(e.value).startswith(f"{field}=") and "\n" not in str(e.value)


def _good_values() -> dict[str, st.SearchStrategy]:
  from flaxopt import registry  # pylint: disable=g-import-not-at-top
  return {
      "model.activation": st.sampled_from(registry.names("activation")),
      "model.norm": st.sampled_from(registry.names("norm")),
      "model.pool": st.sampled_from(["none"] + registry.names("pool")),
      "model.kernel_init": st.sampled_from(registry.names("initializer")),
      "model.width": st.integers(1, 32),
      "model.channels": st.integers(1, 8),
      "model.depth": st.one_of(st.none(), st.integers(1, 3)),
      "model.dropout": st.floats(0.0, 0.9),
      "optimizer.name": st.sampled_from(registry.names("optimizer")),
      "optimizer.learning_rate": st.floats(1e-6, 10.0),
  }


@settings(max_examples=20, deadline=None, suppress_health_check=list(HealthCheck))
@given(name=st.sampled_from(CONFIG_NAMES), data=st.data())
def test_property_a_config_that_validates_builds(name, data):
  """validate() passing => model.init and tx.init trace (eval_shape: no compile, no data)."""
  from flaxopt.nn import models  # pylint: disable=g-import-not-at-top
  goods = _good_values()
  fields = data.draw(st.lists(st.sampled_from(sorted(goods)), min_size=1, max_size=3,
                              unique=True))
  config = _with(CONFIGS[name], **{f: data.draw(goods[f]) for f in fields})
  try:
    config_lib.validate(config)
  except config_lib.ConfigError as e:
    assert "\n" not in str(e)
    return
  model = models.build_model(config.model, 10)
  x = jax.ShapeDtypeStruct((2,) + INPUT_SHAPES[config.dataset.name], jnp.float32)
  rngs = {s: jax.random.key(0) for s in ("params", "dropout", "rrelu", "pool")}
  variables = jax.eval_shape(lambda x: model.init(rngs, x, train=False), x)
  tx = loop.make_optimizer(config.optimizer, loop.make_schedule(config.optimizer, 100))
  jax.eval_shape(tx.init, variables["params"])
