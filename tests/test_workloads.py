"""The workload table and configs: every workload validates, builds, and keeps the protocol."""

import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs import workloads
from flaxopt.data import datasets
from flaxopt.nn import models

try:  # The one config module's validator; the loop's before it existed.
  from flaxopt.training.config import validate as _validate  # pylint: disable=g-import-not-at-top
except ImportError:
  from flaxopt.training.loop import validate_config as _validate  # pylint: disable=g-import-not-at-top

# Training-split sizes of the datasets (before the validation split is held out).
TRAIN_SPLIT = {"mnist1d": 4000, "digits": 1437, "fashion_mnist": 60000}
INPUT_SHAPE = {"mnist1d": (40, 1), "digits": (8, 8, 1), "fashion_mnist": (28, 28, 1)}
REQUIRED = ("mnist1d_cnn", "mnist1d_mlp", "digits_mlp", "fashion_mnist_cnn",
            "fashion_mnist_cnn_small", "fashion_mnist_mlp")


def test_required_workloads_exist_each_with_a_config_file():
  assert set(REQUIRED) <= set(workloads.names())
  folder = os.path.dirname(workloads.__file__)
  for name in workloads.names():
    assert os.path.isfile(os.path.join(folder, f"{name}.py")), name


@pytest.mark.parametrize("name", workloads.names())
def test_workload_config_keeps_the_protocol(name):
  w = workloads.get(name)
  config = w.get_config()
  _validate(config)
  assert config.num_train_steps == w.budget  # The table is the one source of the budget.
  assert 0 < config.eval_every <= 0.02 * w.budget  # Time-to-target resolved to 2%.
  assert config.dataset.validation_size > 0  # Selection on validation, never on test.
  assert w.target is None or 0.0 < w.target <= 1.0
  assert w.metric == "val_accuracy" and w.loss == "cross_entropy"
  n = TRAIN_SPLIT[config.dataset.name]
  train_idx, val_idx = datasets._subset_indices(  # pylint: disable=protected-access
      n, config.dataset.num_train or None, config.dataset.validation_size)
  assert len(train_idx) >= config.batch_size and len(val_idx) > 0


@pytest.mark.parametrize("name, split", [
    ("mnist1d_cnn", (3500, 500)), ("mnist1d_mlp", (3500, 500)), ("digits_mlp", (1150, 287)),
    ("fashion_mnist_cnn", (55000, 5000)), ("fashion_mnist_cnn_small", (10000, 5000)),
    ("fashion_mnist_mlp", (55000, 5000))])
def test_declared_splits(name, split):
  config = workloads.get(name).get_config()
  train_idx, val_idx = datasets._subset_indices(  # pylint: disable=protected-access
      TRAIN_SPLIT[config.dataset.name], config.dataset.num_train or None,
      config.dataset.validation_size)
  assert (len(train_idx), len(val_idx)) == split


def test_small_fashion_workload_is_nested_in_the_full_one():
  """Same validation images; the small training set is a subset of the full one."""
  full, small = (workloads.get(n).get_config().dataset
                 for n in ("fashion_mnist_cnn", "fashion_mnist_cnn_small"))
  tr_full, val_full = datasets._subset_indices(60000, full.num_train or None,  # pylint: disable=protected-access
                                               full.validation_size)
  tr_small, val_small = datasets._subset_indices(60000, small.num_train or None,  # pylint: disable=protected-access
                                                 small.validation_size)
  np.testing.assert_array_equal(val_full, val_small)
  assert set(tr_small.tolist()) <= set(tr_full.tolist())


# name -> (lowest, highest) parameter count of its model.
PARAMS = {"mnist1d_cnn": (5210, 5210), "fashion_mnist_cnn": (1, 100_000),
          "fashion_mnist_cnn_small": (1, 100_000), "fashion_mnist_mlp": (269_322, 269_322)}


@pytest.mark.parametrize("name", sorted(PARAMS))
def test_model_builds_with_its_parameter_count(name):
  config = workloads.get(name).get_config()
  model = models.build_model(config.model, 10)
  x = jax.ShapeDtypeStruct((2, *INPUT_SHAPE[config.dataset.name]), jnp.float32)
  shapes = jax.eval_shape(model.init, jax.random.key(0), x)
  count = sum(int(np.prod(s.shape)) for s in jax.tree.leaves(shapes["params"]))
  low, high = PARAMS[name]
  assert low <= count <= high


@pytest.mark.parametrize("name, match", [
    ("fashion_mnist_cnn_smal", r"Unknown workload 'fashion_mnist_cnn_smal'\. Did you mean "
                               r"'fashion_mnist_cnn_small'\? Valid workloads: digits_mlp, "),
    ("imagenet", r"Unknown workload 'imagenet'\. Valid workloads: "),
])
def test_unknown_workload_is_one_line_with_suggestion(name, match):
  with pytest.raises(ValueError, match=match) as info:
    workloads.get(name)
  assert "\n" not in str(info.value)


@pytest.mark.parametrize("budget, every", [(6000, 120), (600, 12), (30, 1), (12000, 240)])
def test_eval_every_is_two_percent(budget, every):
  assert workloads.eval_every(budget) == every


@pytest.mark.parametrize("name", [n for n in workloads.names()
                                  if workloads.get(n).target is not None])
def test_target_is_the_median_best_validation_accuracy_of_the_committed_runs(name):
  from experiments import workload_targets  # pylint: disable=g-import-not-at-top
  from flaxopt.sweep import stats  # pylint: disable=g-import-not-at-top
  runs = workload_targets.run_dirs(name)
  assert len(runs) >= 5, runs
  records = [stats.read_metrics(os.path.join(d, "metrics.jsonl")) for d in runs]
  assert workloads.get(name).target == pytest.approx(stats.workload_target(records), abs=1e-12)
  for d in runs:  # each run is the workload's baseline config (only the seed varies)
    import json  # pylint: disable=g-import-not-at-top
    with open(os.path.join(d, "config.json")) as f:
      config = json.load(f)
    want = workloads.get(name).get_config().to_dict()
    assert config["optimizer"] == want["optimizer"] and config["model"]["name"] == \
        want["model"]["name"] and config["num_train_steps"] == want["num_train_steps"]


def test_published_targets_table_is_generated_from_the_runs():
  from experiments import workload_targets  # pylint: disable=g-import-not-at-top
  with open(os.path.join(workload_targets.PUBLISHED, "targets.md")) as f:
    assert f.read() == workload_targets.table()
