"""flaxopt.data.load: shapes, scaling, fixed subsets, catalog loading, error messages."""

import dataclasses
import sys

import numpy as np
from PIL import Image
import pytest
from sklearn import datasets as sk_datasets
import tensorflow_datasets as tfds

from flaxopt import data
from flaxopt.data import datasets


@pytest.fixture(scope="session")
def data_dir(tmp_path_factory):
  return str(tmp_path_factory.mktemp("tfds"))


def _small_mnist1d():
  """Stands in for the real generator here (tests/data/test_builders.py builds the real one)."""
  rng = np.random.default_rng(0)
  return {split: (rng.normal(size=(n, 40)).astype(np.float32), np.arange(n) % 10)
          for split, n in (("train", 60), ("test", 20))}


@pytest.fixture(scope="session")
def loaded(data_dir):
  """Every embedded dataset, loaded whole (built on the first call); mnist1d made small."""
  with pytest.MonkeyPatch.context() as mp:
    mp.setattr(datasets.builders.Mnist1d, "arrays", staticmethod(_small_mnist1d))
    return {name: data.load(name, data_dir=data_dir) for name in ("mnist1d", "digits")}


# name -> (train shape, test shape, (min, max) of x or None)
SHAPES = {
    "mnist1d": ((60, 40, 1), (20, 40, 1), None),
    "digits": ((1437, 8, 8, 1), (360, 8, 8, 1), (0.0, 1.0)),
}


@pytest.mark.parametrize("name", list(SHAPES))
def test_load_shapes_dtypes_ranges(loaded, name):
  ds = loaded[name]
  train_shape, test_shape, value_range = SHAPES[name]
  assert ds.name == name and ds.num_classes == 10
  assert ds.x_train.shape == train_shape and ds.x_test.shape == test_shape
  assert ds.x_val.shape == (0, *train_shape[1:]) and ds.y_val.shape == (0,)
  assert ds.y_train.shape == train_shape[:1] and ds.y_test.shape == test_shape[:1]
  for x, y in ((ds.x_train, ds.y_train), (ds.x_val, ds.y_val), (ds.x_test, ds.y_test)):
    assert x.dtype == np.float32 and y.dtype == np.int32
  assert set(np.unique(ds.y_train)) == set(range(10))
  if value_range is not None:
    assert (ds.x_train.min(), ds.x_train.max()) == value_range
  assert "tensorflow" not in sys.modules


def test_digits_pixels_are_sklearn_counts_over_16(loaded):
  ds = loaded["digits"]
  full = sk_datasets.load_digits()
  x = np.concatenate([ds.x_train, ds.x_test])[..., 0] * 16
  np.testing.assert_array_equal(np.sort(x.reshape(-1, 64), axis=0),
                                np.sort(full.images.reshape(-1, 64), axis=0))


def test_mnist1d_adds_channel_axis(loaded):
  small = _small_mnist1d()
  np.testing.assert_array_equal(loaded["mnist1d"].x_train, small["train"][0][..., None])
  np.testing.assert_array_equal(loaded["mnist1d"].y_test, small["test"][1])


@pytest.mark.parametrize("num_train, validation_size", [
    (None, 0), (100, 0), (1237, 200)])
def test_subsets_are_fixed_nested_and_disjoint(data_dir, loaded, num_train, validation_size):
  full = loaded["digits"]
  ds = data.load("digits", data_dir=data_dir, num_train=num_train,
                 validation_size=validation_size)
  n_train = 1437 - validation_size if num_train is None else num_train
  assert ds.x_train.shape[0] == n_train and ds.x_val.shape[0] == validation_size
  np.testing.assert_array_equal(ds.x_test, full.x_test)
  train_idx, val_idx = datasets._subset_indices(1437, num_train, validation_size)
  np.testing.assert_array_equal(ds.x_train, full.x_train[train_idx])
  np.testing.assert_array_equal(ds.y_train, full.y_train[train_idx])
  np.testing.assert_array_equal(ds.x_val, full.x_train[val_idx])
  np.testing.assert_array_equal(ds.y_val, full.y_train[val_idx])


@pytest.mark.parametrize("n, num_train, validation_size", [
    (100, None, 0), (100, 10, 20), (100, None, 20), (100, 80, 20), (7, 1, 6)])
def test_subset_indices_fixed_disjoint_sorted(n, num_train, validation_size):
  train, val = datasets._subset_indices(n, num_train, validation_size)
  assert len(val) == validation_size
  assert len(train) == (n - validation_size if num_train is None else num_train)
  assert not set(train.tolist()) & set(val.tolist())
  assert set(train.tolist()) | set(val.tolist()) <= set(range(n))
  assert np.all(np.diff(train) > 0) and np.all(np.diff(val) > 0)
  again = datasets._subset_indices(n, num_train, validation_size)
  np.testing.assert_array_equal(again[0], train)
  np.testing.assert_array_equal(again[1], val)


def test_subset_indices_nested_and_validation_independent_of_num_train():
  val_a = datasets._subset_indices(100, 10, 20)
  val_b = datasets._subset_indices(100, 40, 20)
  np.testing.assert_array_equal(val_a[1], val_b[1])
  assert set(val_a[0]) <= set(val_b[0])
  train_all, val_none = datasets._subset_indices(100, None, 0)
  np.testing.assert_array_equal(train_all, np.arange(100))
  assert val_none.shape == (0,)


@pytest.mark.parametrize("kwargs, match", [
    ({"name": "mnist2"}, r"Unknown dataset 'mnist2'; valid names: cifar10, digits, "
                         r"fashion_mnist, mnist, mnist1d"),
    ({"num_train": 0}, r"num_train=0"),
    ({"num_train": -3}, r"num_train=-3"),
    ({"num_train": 2.5}, r"num_train=2.5"),
    ({"num_train": True}, r"num_train=True"),
    ({"num_train": 1438}, r"num_train=1438 must be an integer in \[1, 1437\]"),
    ({"num_train": 1400, "validation_size": 100}, r"num_train=1400 .*\[1, 1337\]"),
    ({"validation_size": -1}, r"validation_size=-1"),
    ({"validation_size": 1437}, r"validation_size=1437"),
])
def test_load_errors(data_dir, loaded, kwargs, match):
  del loaded  # Built already, so the errors come from the arguments.
  kwargs = {"name": "digits", **kwargs}
  with pytest.raises(ValueError, match=match):
    data.load(kwargs.pop("name"), data_dir=data_dir, **kwargs)


def test_dataset_is_frozen(loaded):
  with pytest.raises(dataclasses.FrozenInstanceError):
    loaded["digits"].name = "x"


def test_default_data_dir_from_env(monkeypatch, data_dir, loaded):
  monkeypatch.setenv("FLAXOPT_DATA_DIR", data_dir)
  monkeypatch.setattr(datasets.builders.Digits, "arrays",
                      staticmethod(lambda: pytest.fail("rebuilt instead of reusing the cache")))
  np.testing.assert_array_equal(data.load("digits").x_test, loaded["digits"].x_test)


# A small catalog-like dataset: the same features as tfds 'mnist' ('image' PNG, 'label').
_TINY_SPLITS = {"train": (12, 0), "test": (5, 1)}


def _tiny_images(n, seed):
  rng = np.random.default_rng(seed)
  return rng.integers(0, 256, size=(n, 6, 6, 1), dtype=np.uint8), np.arange(n) % 3


def _sorted_rows(x, y):
  flat = x.reshape(len(x), -1)
  order = np.lexsort(flat.T[::-1])
  return flat[order], y[order]


class FlaxoptTestTinyImages(tfds.core.GeneratorBasedBuilder):
  """Tiny mnist-like dataset for testing the catalog path (PNG images via PIL, no TF)."""

  VERSION = tfds.core.Version("1.0.0")
  url_infos = None  # No checksums file lookup (needs importlib_resources).

  def _info(self):
    return tfds.core.DatasetInfo(
        builder=self,
        features=tfds.features.FeaturesDict({
            "image": tfds.features.Image(shape=(6, 6, 1)),
            "label": tfds.features.ClassLabel(num_classes=3)}),
        supervised_keys=("image", "label"))

  def _split_generators(self, dl_manager):
    return {split: self._generate_examples(*args) for split, args in _TINY_SPLITS.items()}

  def _generate_examples(self, n, seed):
    x, y = _tiny_images(n, seed)
    for i in range(n):
      yield i, {"image": Image.fromarray(x[i, ..., 0]), "label": int(y[i])}


def test_catalog_path_reads_tfds_data_source(tmp_path, monkeypatch):
  tiny_dir = str(tmp_path)
  FlaxoptTestTinyImages(data_dir=tiny_dir, file_format="array_record").download_and_prepare()
  monkeypatch.setitem(datasets.SPECS, "tiny",
                      datasets.DatasetSpec(FlaxoptTestTinyImages.name, "image", 3, scale=255.0))
  ds = data.load("tiny", data_dir=tiny_dir, validation_size=2)
  assert ds.num_classes == 3 and ds.x_val.shape == (2, 6, 6, 1)
  # TFDS shuffles catalog-style datasets on disk: compare as sorted (image, label) rows.
  for split, x, y in (("train", np.concatenate([ds.x_train, ds.x_val]),
                       np.concatenate([ds.y_train, ds.y_val])),
                      ("test", ds.x_test, ds.y_test)):
    assert x.dtype == np.float32 and y.dtype == np.int32
    x_ref, y_ref = _tiny_images(*_TINY_SPLITS[split])
    got_x, got_y = _sorted_rows(x * 255, y)
    want_x, want_y = _sorted_rows(x_ref.astype(np.float32), y_ref)
    np.testing.assert_allclose(got_x, want_x, atol=1e-4)
    np.testing.assert_array_equal(got_y, want_y)
    assert x.min() >= 0.0 and x.max() <= 1.0
  assert "tensorflow" not in sys.modules


def test_catalog_not_prepared_without_download(tmp_path):
  with pytest.raises(ValueError, match=r"'mnist' is not prepared .* download=False"):
    data.load("mnist", data_dir=str(tmp_path), download=False)


# ---------------------------------------------------------------- load-time data checks
def _splits(**bad):
  """Clean float inputs and labels for three splits, with the given (split, x or y) replaced."""
  rng = np.random.default_rng(0)
  out = {s: (rng.normal(size=(n, 4, 1)).astype(np.float32), np.arange(n) % 10)
         for s, n in (("train", 20), ("validation", 5), ("test", 8))}
  for key, value in bad.items():
    split, part = key.split("__")
    x, y = out[split]
    out[split] = (value, y) if part == "x" else (x, value)
  return out


def _with(a, index, value):
  """A copy of ``a`` with flat element ``index`` set to ``value``."""
  a = np.array(a)
  a.flat[index] = value
  return a


CLEAN = _splits()
# (replacements, batch_size, message pattern)
BAD_DATA = {
    "nan_train": ({"train__x": _with(CLEAN["train"][0], 13, np.nan)}, None,
                  r"dataset 'toy': train inputs hold NaN \(1 values; first at index 3\)"),
    "inf_test": ({"test__x": _with(CLEAN["test"][0], 31, -np.inf)}, None,
                 r"dataset 'toy': test inputs hold Inf \(1 values; first at index 7\)"),
    "label_10": ({"validation__y": _with(CLEAN["validation"][1], 2, 10)}, None,
                 r"dataset 'toy': validation label 10 at index 2 is outside 0..9 \(1 such"),
    "label_negative": ({"train__y": _with(CLEAN["train"][1], 0, -1)}, None,
                       r"train label -1 at index 0 is outside 0..9"),
    "smaller_than_batch": ({}, 21, r"dataset 'toy': the training set has 20 examples, fewer "
                                   r"than one batch \(batch_size=21\)"),
}


@pytest.mark.parametrize("case", list(BAD_DATA))
def test_check_arrays_errors(case):
  replacements, batch_size, match = BAD_DATA[case]
  with pytest.raises(ValueError, match=match) as info:
    datasets.check_arrays("toy", _splits(**replacements), 10, batch_size)
  assert "\n" not in str(info.value)


def test_check_arrays_accepts_clean_data():
  datasets.check_arrays("toy", CLEAN, 10, batch_size=20)  # Exactly one batch is enough.
  datasets.check_arrays("toy", {**CLEAN, "validation": (np.zeros((0, 4, 1)), np.zeros(0))}, 10)


def test_load_rejects_nan_inputs_and_small_training_set(tmp_path, monkeypatch, data_dir, loaded):
  with pytest.raises(ValueError, match=r"dataset 'digits': the training set has 100 examples, "
                                       r"fewer than one batch \(batch_size=128\)"):
    data.load("digits", data_dir=data_dir, num_train=100, batch_size=128)
  assert len(data.load("digits", data_dir=data_dir, batch_size=1437).y_train) == 1437
  poisoned = _small_mnist1d()
  poisoned["test"][0][4, 7] = np.nan
  monkeypatch.setattr(datasets.builders.Mnist1d, "arrays", staticmethod(lambda: poisoned))
  with pytest.raises(ValueError, match=r"dataset 'mnist1d': test inputs hold NaN"):
    data.load("mnist1d", data_dir=str(tmp_path))
