"""Builders of the embedded datasets: array_record round trip, no TensorFlow, no network."""

import os
import random
import sys

import numpy as np
import pytest
import requests
from sklearn import datasets as sk_datasets
import tensorflow_datasets as tfds

from flaxopt.data import builders


def _mnist1d_reference():
  """Straight from the mnist1d package, default arguments (seed 42)."""
  from mnist1d.data import get_dataset_args, make_dataset  # pylint: disable=g-import-not-at-top
  data = make_dataset(get_dataset_args())
  return {"train": (data["x"], data["y"]), "test": (data["x_test"], data["y_test"])}


# name -> (builder class, input feature, per-example shape, stored dtype, split sizes,
#          reference arrays: the package's own output for mnist1d, our split for digits)
CASES = {
    "mnist1d": (builders.Mnist1d, "signal", (40,), np.float32, {"train": 4000, "test": 1000},
                _mnist1d_reference),
    "digits": (builders.Digits, "image", (8, 8, 1), np.uint8, {"train": 1437, "test": 360},
               builders.digits_arrays),
}


def _no_network(*args, **kwargs):
  raise AssertionError(f"network access attempted: {args} {kwargs}")


@pytest.fixture(scope="session")
def built(tmp_path_factory):
  """Builds every embedded dataset once, with the network forbidden; returns (dir, sources)."""
  data_dir = str(tmp_path_factory.mktemp("tfds"))
  with pytest.MonkeyPatch.context() as mp:
    mp.setattr(requests, "get", _no_network)
    mp.setattr(requests.Session, "request", _no_network)
    sources = {}
    for name, (cls, *_) in CASES.items():
      builder = cls(data_dir=data_dir)
      builder.download_and_prepare()
      sources[name] = builder.as_data_source()
  return data_dir, sources


def _read(source, key):
  records = source.__getitems__(range(len(source)))
  return np.stack([r[key] for r in records]), np.array([r["label"] for r in records])


@pytest.mark.parametrize("name", list(CASES))
def test_round_trip_matches_generator(built, name):
  """Records read back equal the generator's arrays (mnist1d: a second, fresh generation)."""
  _, sources = built
  _, key, shape, dtype, sizes, reference = CASES[name]
  expected = reference()
  for split, size in sizes.items():
    x, y = _read(sources[name][split], key)
    assert x.shape == (size, *shape) and x.dtype == dtype
    np.testing.assert_array_equal(x, expected[split][0].astype(dtype))
    np.testing.assert_array_equal(y, expected[split][1])
  assert "tensorflow" not in sys.modules


def test_mnist1d_is_balanced(built):
  _, sources = built
  y = np.concatenate([_read(sources["mnist1d"][s], "signal")[1] for s in ("train", "test")])
  np.testing.assert_array_equal(np.bincount(y, minlength=10), 500)  # 5000 signals, 500 each.


def test_mnist1d_arrays_restores_global_rng(monkeypatch):
  """make_dataset reseeds numpy's and Python's global generators; mnist1d_arrays undoes it."""
  import mnist1d.data  # pylint: disable=g-import-not-at-top

  def fake_make_dataset(args):
    mnist1d.data.set_seed(args.seed)
    x, y = np.random.normal(size=(5, 40)), np.random.randint(0, 10, size=5)
    return {"x": x[:4], "y": y[:4], "x_test": x[4:], "y_test": y[4:]}

  monkeypatch.setattr(mnist1d.data, "make_dataset", fake_make_dataset)
  np.random.seed(7)
  random.seed(7)
  np_state, py_state = np.random.get_state()[1].copy(), random.getstate()
  out = builders.mnist1d_arrays()
  assert out["train"][0].shape == (4, 40) and out["train"][0].dtype == np.float32
  np.testing.assert_array_equal(np.random.get_state()[1], np_state)
  assert random.getstate() == py_state


def test_digits_split_is_stratified_partition(built):
  _, sources = built
  x_tr, y_tr = _read(sources["digits"]["train"], "image")
  x_te, y_te = _read(sources["digits"]["test"], "image")
  full = sk_datasets.load_digits()
  # The two splits together are exactly the 1797 sklearn images (as sets of rows).
  rows = lambda x: np.sort(x.reshape(len(x), -1).view([("", x.dtype)] * 64).ravel())
  x_all = np.concatenate([x_tr, x_te])[..., 0].astype(np.float64)
  np.testing.assert_array_equal(rows(x_all), rows(full.images))
  np.testing.assert_array_equal(
      np.bincount(np.concatenate([y_tr, y_te])), np.bincount(full.target))
  # Stratified: each class's test share is within one example of 360/1797.
  expected = np.bincount(full.target) * builders.DIGITS_TEST_SIZE / len(full.target)
  assert np.all(np.abs(np.bincount(y_te, minlength=10) - expected) <= 1)


def test_files_are_array_record_and_reused(built, monkeypatch):
  data_dir, _ = built
  for cls, *_ in CASES.values():
    builder = cls(data_dir=data_dir)
    assert builder.is_prepared()
    assert builder.info.file_format == tfds.core.FileFormat.ARRAY_RECORD
    files = list(builder.data_path.glob("*.array_record*"))
    assert len(files) == 2, files  # One file per split.
    # A second build must not regenerate.
    monkeypatch.setattr(cls, "arrays", staticmethod(lambda: pytest.fail("regenerated")))
    cls(data_dir=data_dir).download_and_prepare()
    assert len(cls(data_dir=data_dir).as_data_source()["test"]) > 0


@pytest.mark.parametrize("env, expected", [
    ("/some/where", "/some/where"),
    ("", "~/.cache/flaxopt/tensorflow_datasets"),
])
def test_default_data_dir(monkeypatch, env, expected):
  monkeypatch.setenv("FLAXOPT_DATA_DIR", env)
  assert builders.default_data_dir() == os.path.expanduser(expected)
