"""TFDS builders for the embedded datasets, written as array_record without TensorFlow.

Each dataset is a pure generator function (``mnist1d_arrays``, ``digits_arrays``) that returns
numpy arrays per split, wrapped in a ``tfds.core.GeneratorBasedBuilder`` so it is built once
into a TFDS data directory (``file_format='array_record'``) and read back with
``builder.as_data_source()``, which needs neither TensorFlow nor a network.

* ``mnist1d``: MNIST-1D (Greydanus, "Scaling down deep learning", 2020), produced locally by
  ``mnist1d.data.make_dataset(get_dataset_args())`` (defaults: 5000 signals of length 40, seed
  42, first 4000 train / last 1000 test). Nothing is downloaded.
* ``digits``: scikit-learn's 1797 8x8 handwritten digits (UCI optdigits test set, Alpaydin &
  Kaynak 1998; ``sklearn.datasets.load_digits``, bundled with scikit-learn), split 1437/360
  by ``train_test_split(test_size=360, stratify=y, random_state=0)``. Pixels are stored as the
  raw uint8 counts 0..16; ``flaxopt.data.load`` divides by 16.
* ``fashion_mnist``: Fashion-MNIST (Xiao, Rasul & Vollgraf, "Fashion-MNIST: a Novel Image
  Dataset for Benchmarking Machine Learning Algorithms", 2017): 60,000 train / 10,000 test
  28x28 grey images of 10 clothing classes, stored as raw uint8 0..255. Built from the four
  standard idx files (``FASHION_MNIST_FILES``), parsed by ``flaxopt.data.idx``, found in
  ``<data_dir>/fashion_mnist``, ``<data_dir>`` or where Debian's ``dataset-fashion-mnist``
  package installs them (``DEBIAN_FASHION_MNIST_DIR``). Nothing is downloaded. Registered
  under its own builder name, ``flaxopt_fashion_mnist``, so it does not clash with the TFDS
  catalog's ``fashion_mnist`` (which needs TensorFlow to prepare).

Examples keep their generation order on disk (``disable_shuffling=True``), so record ``i`` of
a split is row ``i`` of the generator's array.
"""

from __future__ import annotations

import os
import random
from typing import Iterator, Mapping, Optional

import numpy as np
import tensorflow_datasets as tfds

from flaxopt.data import idx

__all__ = [
    "DEBIAN_FASHION_MNIST_DIR",
    "DIGITS_TEST_SIZE",
    "DIGITS_SPLIT_SEED",
    "Digits",
    "FASHION_MNIST_FILES",
    "FashionMnist",
    "Mnist1d",
    "default_data_dir",
    "digits_arrays",
    "fashion_mnist_arrays",
    "find_fashion_mnist",
    "mnist1d_arrays",
]

Arrays = Mapping[str, tuple[np.ndarray, np.ndarray]]  # split -> (x, y)

DIGITS_TEST_SIZE = 360
DIGITS_SPLIT_SEED = 0
_DATA_DIR_ENV = "FLAXOPT_DATA_DIR"

# split -> (images file, labels file): the names every Fashion-MNIST (and MNIST) mirror uses.
FASHION_MNIST_FILES: Mapping[str, tuple[str, str]] = {
    "train": ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"),
    "test": ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"),
}
# Where `apt-get install dataset-fashion-mnist` puts the four files (`dpkg -L` lists them).
DEBIAN_FASHION_MNIST_DIR = "/usr/share/datasets/fashion-mnist"
FASHION_MNIST_URL = "https://github.com/zalandoresearch/fashion-mnist#get-the-data"


def default_data_dir() -> str:
  """The TFDS data directory: ``$FLAXOPT_DATA_DIR``, else ``~/.cache/flaxopt/tensorflow_datasets``."""
  env = os.environ.get(_DATA_DIR_ENV)
  if env:
    return os.path.expanduser(env)
  return os.path.join(os.path.expanduser("~"), ".cache", "flaxopt", "tensorflow_datasets")


def mnist1d_arrays() -> Arrays:
  """MNIST-1D with the package's default arguments: {'train': (x, y), 'test': (x, y)}.

  x: float32 (N, 40) (generated in float64, standardised over the whole set by the package),
  y: int64 labels 0..9. 4000 train / 1000 test. Greydanus, "Scaling down deep learning", 2020.

  ``make_dataset`` reseeds Python's and numpy's global generators (seed 42); their previous
  states are restored afterwards, so calling this leaves no trace on global randomness.
  """
  # Imported here: the mnist1d package pulls in matplotlib and requests at import.
  from mnist1d.data import get_dataset_args, make_dataset  # pylint: disable=g-import-not-at-top

  np_state, py_state = np.random.get_state(), random.getstate()
  try:
    data = make_dataset(get_dataset_args())
  finally:
    np.random.set_state(np_state)
    random.setstate(py_state)
  return {
      "train": (data["x"].astype(np.float32), data["y"].astype(np.int64)),
      "test": (data["x_test"].astype(np.float32), data["y_test"].astype(np.int64)),
  }


def digits_arrays() -> Arrays:
  """sklearn's 8x8 digits split 1437/360 (stratified, ``random_state=0``).

  x: uint8 (N, 8, 8, 1) raw pixel counts in 0..16, y: int64 labels 0..9. Each split keeps the
  order ``train_test_split`` returns.
  """
  from sklearn.datasets import load_digits  # pylint: disable=g-import-not-at-top
  from sklearn.model_selection import train_test_split  # pylint: disable=g-import-not-at-top

  digits = load_digits()
  x = digits.images.astype(np.uint8)[..., None]
  y = digits.target.astype(np.int64)
  x_tr, x_te, y_tr, y_te = train_test_split(
      x, y, test_size=DIGITS_TEST_SIZE, stratify=y, random_state=DIGITS_SPLIT_SEED)
  return {"train": (x_tr, y_tr), "test": (x_te, y_te)}


def find_fashion_mnist(data_dir: Optional[str] = None) -> str:
  """The first folder holding the four Fashion-MNIST idx files.

  Looks in ``<data_dir>/fashion_mnist``, ``<data_dir>`` (when given), then
  ``DEBIAN_FASHION_MNIST_DIR``. A folder holding some but not all four files is an error naming
  the missing ones; no folder at all is an error saying how to get them.
  """
  candidates = ([os.path.join(data_dir, "fashion_mnist"), data_dir] if data_dir else [])
  candidates.append(DEBIAN_FASHION_MNIST_DIR)
  names = [name for pair in FASHION_MNIST_FILES.values() for name in pair]
  for folder in candidates:
    present = [n for n in names if os.path.isfile(os.path.join(folder, n))]
    if len(present) == len(names):
      return folder
    if present:
      missing = sorted(set(names) - set(present))
      raise ValueError(f"fashion_mnist: {folder} holds {len(present)} of the 4 idx files; "
                       f"missing {', '.join(missing)}.")
  raise ValueError(
      f"fashion_mnist: idx files not found in {', '.join(candidates)}; install them with "
      f"`apt-get install dataset-fashion-mnist` (Debian/Ubuntu) or download {', '.join(names)} "
      f"from {FASHION_MNIST_URL} into <data_dir>/fashion_mnist.")


def fashion_mnist_arrays(source_dir: str) -> Arrays:
  """Fashion-MNIST from the idx files in ``source_dir``: {'train': (x, y), 'test': (x, y)}.

  x: uint8 (N, 28, 28, 1) pixels 0..255, y: int64 labels 0..9; 60,000 train / 10,000 test in
  file order. Xiao, Rasul & Vollgraf 2017. Malformed files raise ValueError naming the file.
  """
  out = {}
  for split, (images, labels) in FASHION_MNIST_FILES.items():
    x = idx.read_images(os.path.join(source_dir, images), (28, 28))
    y = idx.read_labels(os.path.join(source_dir, labels), 10, num_examples=len(x))
    out[split] = (x[..., None], y.astype(np.int64))
  return out


class _ArrayBuilder(tfds.core.GeneratorBasedBuilder, skip_registration=True):
  """A builder whose splits come from one ``arrays()`` function; subclasses set the rest."""

  VERSION = tfds.core.Version("1.0.0")
  RELEASE_NOTES = {"1.0.0": "Initial release."}
  INPUT_KEY: str = ""
  INPUT_FEATURE: tfds.features.FeatureConnector
  NUM_CLASSES = 10
  HOMEPAGE = ""
  CITATION = ""
  # No download checksums. Declared so TFDS does not look for a checksums file next to this
  # module: that lookup needs `importlib_resources`, which this environment lacks.
  url_infos = None

  def __init__(self, **kwargs):
    kwargs.setdefault("file_format", "array_record")
    super().__init__(**kwargs)

  @staticmethod
  def arrays() -> Arrays:
    raise NotImplementedError

  def check_source(self) -> None:
    """Raises ValueError when the data to build from is missing (before TFDS writes anything)."""

  def _info(self) -> tfds.core.DatasetInfo:
    return tfds.core.DatasetInfo(
        builder=self,
        description=(self.__doc__ or "").strip(),
        features=tfds.features.FeaturesDict({
            self.INPUT_KEY: self.INPUT_FEATURE,
            "label": tfds.features.ClassLabel(num_classes=self.NUM_CLASSES),
        }),
        supervised_keys=(self.INPUT_KEY, "label"),
        homepage=self.HOMEPAGE,
        citation=self.CITATION,
        disable_shuffling=True,
    )

  def _split_generators(self, dl_manager):
    del dl_manager  # Nothing is downloaded.
    return {split: self._generate_examples(x, y) for split, (x, y) in self.arrays().items()}

  def _generate_examples(self, x: np.ndarray, y: np.ndarray) -> Iterator[tuple[int, dict]]:
    for i in range(len(y)):
      yield i, {self.INPUT_KEY: x[i], "label": int(y[i])}


class Mnist1d(_ArrayBuilder):
  """MNIST-1D: 10-class 1D signals of length 40 (4000 train / 1000 test), made locally."""

  name = "flaxopt_mnist1d"
  INPUT_KEY = "signal"
  INPUT_FEATURE = tfds.features.Tensor(shape=(40,), dtype=np.float32)
  HOMEPAGE = "https://github.com/greydanus/mnist1d"
  CITATION = ("@article{greydanus2020scaling, title={Scaling down deep learning}, "
              "author={Greydanus, Sam}, journal={arXiv preprint arXiv:2011.14439}, year={2020}}")
  arrays = staticmethod(mnist1d_arrays)


class Digits(_ArrayBuilder):
  """sklearn 8x8 handwritten digits (pixels 0..16), stratified 1437/360 split (seed 0)."""

  name = "flaxopt_digits"
  INPUT_KEY = "image"
  INPUT_FEATURE = tfds.features.Tensor(shape=(8, 8, 1), dtype=np.uint8)
  HOMEPAGE = "https://scikit-learn.org/stable/datasets/toy_dataset.html#digits-dataset"
  CITATION = ("Alpaydin, E. and Kaynak, C. (1998). Optical Recognition of Handwritten Digits. "
              "UCI Machine Learning Repository.")
  arrays = staticmethod(digits_arrays)


class FashionMnist(_ArrayBuilder):
  """Fashion-MNIST: 28x28 grey clothing images, 10 classes, 60,000 train / 10,000 test."""

  name = "flaxopt_fashion_mnist"
  INPUT_KEY = "image"
  # Stored as one bytes string per image (not 784 int64 values): 10x faster to read back.
  INPUT_FEATURE = tfds.features.Tensor(shape=(28, 28, 1), dtype=np.uint8,
                                       encoding=tfds.features.Encoding.BYTES)
  HOMEPAGE = "https://github.com/zalandoresearch/fashion-mnist"
  CITATION = ("@article{xiao2017fashion, title={Fashion-MNIST: a Novel Image Dataset for "
              "Benchmarking Machine Learning Algorithms}, author={Xiao, Han and Rasul, Kashif "
              "and Vollgraf, Roland}, journal={arXiv preprint arXiv:1708.07747}, year={2017}}")

  def __init__(self, *, source_dir: Optional[str] = None, **kwargs):
    """``source_dir``: the idx files' folder; default ``find_fashion_mnist(data_dir)``."""
    super().__init__(**kwargs)
    self._source_dir = source_dir
    self._search_dir = kwargs.get("data_dir")

  def source_dir(self) -> str:
    return self._source_dir or find_fashion_mnist(self._search_dir)

  def check_source(self) -> None:
    self.source_dir()

  def arrays(self) -> Arrays:  # pytype: disable=signature-mismatch
    return fashion_mnist_arrays(self.source_dir())
