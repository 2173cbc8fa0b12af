"""``load(name)``: a whole dataset as numpy arrays, read from TFDS array_record files.

Our own datasets (``mnist1d``, ``digits``, ``fashion_mnist``) are built once by the builders
in ``flaxopt.data.builders``; the TFDS catalog datasets (``mnist``, ``cifar10``) go through
``tfds.data_source``. Either way the result is read back without
TensorFlow and later loads reuse the cached files in the data directory.

Conventions: ``x`` float32 channels-last ``(N, *spatial, C)`` scaled as listed in ``SPECS``
(``mnist1d`` as generated, already standardised; images divided by their maximum pixel value, so
in [0, 1]); ``y`` int32.

Subsets are fixed, independent of the run's seed: the training split's indices are permuted
once with ``np.random.default_rng(SPLIT_SEED)``; the first ``validation_size`` of that
permutation form the validation set, the next ``num_train`` (default: all the rest) the
training set, and each is then sorted back into file order. So the validation set does not
depend on ``num_train``, a smaller subset is contained in a larger one, and
``load(name)`` with no subset returns the split in file order.

Checked at load time, each a one-line ValueError naming the dataset and the problem: NaN or
Inf in any split's inputs, labels outside ``[0, num_classes)``, and (with ``batch_size``) a
training set smaller than one batch.
"""

from __future__ import annotations

import dataclasses
import os
from typing import Any, Callable, Mapping, Optional, Sequence

import numpy as np
import tensorflow_datasets as tfds

from flaxopt.data import builders

__all__ = ["Dataset", "DatasetSpec", "SPECS", "SPLIT_SEED", "check_arrays", "load", "names"]

SPLIT_SEED = 0


@dataclasses.dataclass(frozen=True, eq=False)
class Dataset:
  """A dataset held in memory; x float32 ``(N, *spatial, C)``, y int32."""

  name: str
  num_classes: int
  x_train: np.ndarray
  y_train: np.ndarray
  x_val: np.ndarray
  y_val: np.ndarray
  x_test: np.ndarray
  y_test: np.ndarray


@dataclasses.dataclass(frozen=True)
class DatasetSpec:
  """Where a dataset lives and how its stored inputs become float32 arrays.

  ``builder``: one of our builder classes, or None for a TFDS catalog name (``tfds_name``).
  ``scale``: stored values are divided by it. ``add_channel``: append a channel axis.
  """

  tfds_name: str
  input_key: str
  num_classes: int
  scale: float = 1.0
  add_channel: bool = False
  builder: Optional[Callable[..., tfds.core.DatasetBuilder]] = None
  train_split: str = "train"
  test_split: str = "test"


SPECS: Mapping[str, DatasetSpec] = {
    "mnist1d": DatasetSpec(builders.Mnist1d.name, "signal", 10, add_channel=True,
                           builder=builders.Mnist1d),
    "digits": DatasetSpec(builders.Digits.name, "image", 10, scale=16.0, builder=builders.Digits),
    "mnist": DatasetSpec("mnist", "image", 10, scale=255.0),
    "fashion_mnist": DatasetSpec(builders.FashionMnist.name, "image", 10, scale=255.0,
                                 builder=builders.FashionMnist),
    "cifar10": DatasetSpec("cifar10", "image", 10, scale=255.0),
}


def names() -> list[str]:
  """Sorted names ``load`` accepts."""
  return sorted(SPECS)


def _catalog_sources(spec: DatasetSpec, data_dir: str, download: bool) -> Mapping[str, Any]:
  """``tfds.data_source`` for a catalog dataset, with clear errors where TFDS cannot build it."""
  builder_kwargs = {"file_format": "array_record"}
  if not download and not tfds.builder(
      spec.tfds_name, data_dir=data_dir, **builder_kwargs).is_prepared():
    raise ValueError(
        f"Dataset {spec.tfds_name!r} is not prepared in data_dir={data_dir!r} and download=False.")
  try:
    return tfds.data_source(
        spec.tfds_name, data_dir=data_dir, download=download, try_gcs=False,
        builder_kwargs=builder_kwargs,
        download_and_prepare_kwargs={
            "download_config": tfds.download.DownloadConfig(try_download_gcs=False)})
  except ModuleNotFoundError as e:
    raise RuntimeError(
        f"Preparing the TFDS catalog dataset {spec.tfds_name!r} failed: module {e.name!r} is "
        "missing. TFDS 4.9 builds catalog datasets with TensorFlow (tf.io.gfile, tf.image) and "
        "needs importlib_resources; build it once where both are installed (`tfds build "
        f"{spec.tfds_name} --file_format=array_record --data_dir={data_dir}`) and copy the "
        "directory here. Reading prepared array_record files needs neither."
    ) from e


def _builder_sources(spec: DatasetSpec, data_dir: str) -> Mapping[str, Any]:
  builder = spec.builder(data_dir=data_dir)
  if not builder.is_prepared():
    builder.check_source()  # A missing source is one line, before TFDS writes anything.
  builder.download_and_prepare()  # A no-op once the files exist.
  return builder.as_data_source()


def _bytes_feature(source: Any, key: str) -> Optional[Any]:
  """The ``tfds.features.Tensor`` stored under ``key`` when it is BYTES-encoded, else None."""
  info = getattr(source, "dataset_info", None)
  feature = info.features[key] if info is not None else None
  encoding = getattr(feature, "_encoding", None)  # tfds exposes no public accessor
  return feature if encoding == tfds.features.Encoding.BYTES else None


def _read_bytes_records(source: Any, key: str, feature: Any) -> tuple[np.ndarray, np.ndarray]:
  """(x, labels) of a split whose input is a BYTES-encoded tensor, parsed straight from protos.

  TFDS decodes record by record in Python (~0.4 ms each: 25 s for Fashion-MNIST); parsing the
  ``tf.train.Example`` protos ourselves and joining the bytes takes ~20x less. Equal to
  ``source.__getitems__`` (tests/data/test_datasets.py checks it).
  """
  from tensorflow_datasets.proto import tf_example_pb2  # pylint: disable=g-import-not-at-top
  raw = source.data_source.__getitems__(range(len(source)))
  chunks, labels = [], np.empty(len(raw), np.int64)
  for i, record in enumerate(raw):
    fields = tf_example_pb2.Example.FromString(record).features.feature
    chunks.append(fields[key].bytes_list.value[0])
    labels[i] = fields["label"].int64_list.value[0]
  x = np.frombuffer(b"".join(chunks), dtype=feature.np_dtype)
  return x.reshape((len(raw), *feature.shape)), labels


def _read_split(source: Sequence[Mapping[str, Any]], spec: DatasetSpec):
  """All records of one split as (x float32, y int32)."""
  feature = _bytes_feature(source, spec.input_key)
  if feature is not None:
    x, y = _read_bytes_records(source, spec.input_key, feature)
    x, y = x.astype(np.float32), y.astype(np.int32)
  else:
    records = source.__getitems__(range(len(source)))
    x = np.stack([r[spec.input_key] for r in records]).astype(np.float32)
    y = np.fromiter((r["label"] for r in records), dtype=np.int32, count=len(records))
  if spec.scale != 1.0:
    x /= np.float32(spec.scale)
  if spec.add_channel:
    x = x[..., None]
  return x, y


def _check_count(label: str, value: Any, low: int, high: Optional[int] = None) -> int:
  """``value`` as an int in [low, high] (no upper bound when high is None), else ValueError."""
  ok = isinstance(value, (int, np.integer)) and not isinstance(value, bool) and value >= low
  if ok and (high is None or value <= high):
    return int(value)
  bound = f">= {low}" if high is None else f"in [{low}, {high}]"
  raise ValueError(f"{label}={value!r} must be an integer {bound}.")


def check_arrays(name: str, dataset_splits: Mapping[str, tuple[np.ndarray, np.ndarray]],
                 num_classes: int, batch_size: Optional[int] = None) -> None:
  """Raises a one-line ValueError naming dataset ``name`` when its arrays cannot train.

  ``dataset_splits``: split -> (x, y). Checks: x finite (no NaN, no Inf); y integer in
  ``[0, num_classes)``; and when ``batch_size`` is given, the 'train' split holds at least
  ``batch_size`` examples (the pipeline drops partial batches, so a smaller set has no step).
  """
  for split, (x, y) in dataset_splits.items():
    finite = np.isfinite(x)
    if not finite.all():
      first = np.unravel_index(int(np.argmin(finite)), x.shape)
      kinds = "/".join(k for k, bad in (("NaN", np.isnan(x).any()), ("Inf", np.isinf(x).any()))
                       if bad)
      raise ValueError(f"dataset {name!r}: {split} inputs hold {kinds} "
                       f"({int(x.size - finite.sum())} values; first at index {first[0]}).")
    bad = np.flatnonzero((y < 0) | (y >= num_classes))
    if bad.size:
      raise ValueError(f"dataset {name!r}: {split} label {y[bad[0]].item()!r} at index {int(bad[0])} "
                       f"is outside 0..{num_classes - 1} ({bad.size} such labels).")
  if batch_size is not None:
    n = len(dataset_splits["train"][1])
    if n < batch_size:
      raise ValueError(f"dataset {name!r}: the training set has {n} examples, fewer than one "
                       f"batch (batch_size={batch_size}).")


def _subset_indices(n: int, num_train: Optional[int], validation_size: int):
  """(train_idx, val_idx): fixed disjoint subsets of range(n), each in increasing order."""
  validation_size = _check_count("validation_size", validation_size, 0, n - 1)
  if num_train is not None:
    num_train = _check_count("num_train", num_train, 1, n - validation_size)
  perm = np.random.default_rng(SPLIT_SEED).permutation(n)
  val_idx = np.sort(perm[:validation_size])
  rest = perm[validation_size:]
  train_idx = np.sort(rest if num_train is None else rest[:num_train])
  return train_idx, val_idx


def load(name: str, *, data_dir: Optional[str] = None, num_train: Optional[int] = None,
         validation_size: int = 0, download: bool = True,
         batch_size: Optional[int] = None) -> Dataset:
  """Loads dataset ``name`` into memory (building or downloading it on first use).

  Args:
    name: one of ``names()``: mnist1d, digits, fashion_mnist, mnist, cifar10.
    data_dir: TFDS data directory; default ``$FLAXOPT_DATA_DIR`` or
      ``~/.cache/flaxopt/tensorflow_datasets``.
    num_train: keep this many training examples (a fixed subset, see the module docstring).
    validation_size: carve this many examples out of the training split as a fixed
      validation set (for learning-rate selection); 0 gives empty x_val/y_val.
    download: for catalog datasets, whether TFDS may download and prepare them.
    batch_size: when given, a training set (after ``num_train``/``validation_size``) smaller
      than one batch is an error.

  Returns:
    A ``Dataset``: x float32 ``(N, *spatial, C)``, y int32.

  Raises:
    ValueError: one line naming the dataset: unknown name, bad subset sizes, a missing or
      malformed source, NaN/Inf inputs, labels out of range, fewer examples than one batch.
  """
  if name not in SPECS:
    raise ValueError(f"Unknown dataset {name!r}; valid names: {', '.join(names())}")
  spec = SPECS[name]
  _check_count("validation_size", validation_size, 0)  # Cheap checks first; bounds below.
  if num_train is not None:
    _check_count("num_train", num_train, 1)
  data_dir = os.path.expanduser(data_dir) if data_dir else builders.default_data_dir()
  if spec.builder is not None:
    sources = _builder_sources(spec, data_dir)
  else:
    sources = _catalog_sources(spec, data_dir, download)
  x_all, y_all = _read_split(sources[spec.train_split], spec)
  x_test, y_test = _read_split(sources[spec.test_split], spec)
  train_idx, val_idx = _subset_indices(len(y_all), num_train, validation_size)
  ds = Dataset(
      name=name, num_classes=spec.num_classes,
      x_train=x_all[train_idx], y_train=y_all[train_idx],
      x_val=x_all[val_idx], y_val=y_all[val_idx],
      x_test=x_test, y_test=y_test)
  check_arrays(name, {"train": (ds.x_train, ds.y_train), "validation": (ds.x_val, ds.y_val),
                      "test": (ds.x_test, ds.y_test)}, spec.num_classes, batch_size)
  return ds
