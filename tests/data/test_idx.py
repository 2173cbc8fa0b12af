"""The idx parser and the Fashion-MNIST builder: small idx files written here, plus the real set.

The real-data test reads the Debian package's files (`apt-get install dataset-fashion-mnist`)
and is skipped where they are absent.
"""

import gzip
import os
import struct
import sys

import numpy as np
import pytest

from flaxopt import data
from flaxopt.data import builders
from flaxopt.data import datasets
from flaxopt.data import idx

RNG = np.random.default_rng(0)
IMAGES = RNG.integers(0, 256, size=(7, 28, 28), dtype=np.uint8)
LABELS = np.array([9, 0, 0, 3, 0, 2, 7], np.uint8)


def _write_raw(path, payload: bytes):
  opener = gzip.open if str(path).endswith(".gz") else open
  with opener(path, "wb") as f:
    f.write(payload)
  return str(path)


def _header(magic_type, dims):
  return struct.pack(">HBB", 0, magic_type, len(dims)) + struct.pack(f">{len(dims)}I", *dims)


@pytest.mark.parametrize("suffix", [".gz", ""])
@pytest.mark.parametrize("array", [IMAGES, LABELS], ids=["idx3", "idx1"])
def test_round_trip(tmp_path, suffix, array):
  path = str(tmp_path / f"a{suffix}")
  idx.write_idx(path, array)
  np.testing.assert_array_equal(idx.read_idx(path, array.ndim), array)


def test_reads_the_format_as_specified(tmp_path):
  """An idx1 file written byte by byte from the format's definition, not by write_idx."""
  path = _write_raw(tmp_path / "l.gz", b"\x00\x00\x08\x01" + b"\x00\x00\x00\x03" + b"\x02\x09\x00")
  np.testing.assert_array_equal(idx.read_labels(path), [2, 9, 0])
  path = _write_raw(tmp_path / "i", b"\x00\x00\x08\x03" + struct.pack(">3I", 1, 2, 3)
                    + bytes(range(6)))
  np.testing.assert_array_equal(idx.read_images(path, (2, 3)), [[[0, 1, 2], [3, 4, 5]]])


def _gz_bytes(array):
  return gzip.compress(_header(8, array.shape) + array.tobytes())


# name -> (file name, bytes written to disk (not re-gzipped), reader, message pattern)
BAD_FILES = {
    "bad_magic": ("m.gz", gzip.compress(b"\x08\x03\x00\x00" + bytes(8)),
                  lambda p: idx.read_labels(p), r"bad magic number 0x08030000"),
    "float_type": ("t.gz", gzip.compress(_header(0x0D, (2,)) + bytes(8)),
                   lambda p: idx.read_labels(p), r"bad magic number 0x00000d01"),
    "labels_as_images": ("l.gz", _gz_bytes(LABELS), lambda p: idx.read_images(p),
                         r"bad magic number 0x00000801; expected 0x00000803"),
    "wrong_image_size": ("s.gz", _gz_bytes(IMAGES[:, :27]), lambda p: idx.read_images(p),
                         r"images of size \(27, 28\), expected \(28, 28\)"),
    "short_payload": ("p.gz", gzip.compress(_header(8, (7, 28, 28)) + bytes(100)),
                      lambda p: idx.read_images(p), r"shape \(7, 28, 28\) \(5488 values\) but "
                                                    r"the file holds 100 bytes"),
    "long_payload": ("q.gz", gzip.compress(_header(8, (2,)) + bytes(3)),
                     lambda p: idx.read_labels(p), r"\(2 values\) but the file holds 3 bytes"),
    "short_header": ("h.gz", gzip.compress(b"\x00\x00\x08\x03\x00"),
                     lambda p: idx.read_images(p), r"truncated idx header \(5 of 16 bytes\)"),
    "empty": ("e.gz", gzip.compress(b""), lambda p: idx.read_labels(p), r"0 bytes, too short"),
    "label_10": ("y.gz", _gz_bytes(np.array([1, 10, 2, 12], np.uint8)),
                 lambda p: idx.read_labels(p),
                 r"label 10 at index 1 is outside 0..9 \(2 such labels\)"),
    "label_count": ("c.gz", _gz_bytes(LABELS), lambda p: idx.read_labels(p, num_examples=6),
                    r"7 labels for 6 images"),
    "truncated_gz": ("g.gz", _gz_bytes(IMAGES)[:-40], lambda p: idx.read_images(p),
                     r"truncated or corrupt gzip file \(EOFError"),
    "corrupt_gz": ("x.gz", _gz_bytes(LABELS)[:12] + b"garbage!" * 4,
                   lambda p: idx.read_labels(p), r"truncated or corrupt gzip file"),
    "not_gzip": ("n.gz", b"plain text, not gzip", lambda p: idx.read_labels(p),
                 r"truncated or corrupt gzip file \(BadGzipFile"),
}


@pytest.mark.parametrize("case", list(BAD_FILES))
def test_malformed_file_is_one_line_naming_it(tmp_path, case):
  name, payload, reader, match = BAD_FILES[case]
  path = str(tmp_path / name)
  with open(path, "wb") as f:
    f.write(payload)
  with pytest.raises(ValueError, match=match) as info:
    reader(path)
  message = str(info.value)
  assert message.startswith(f"{path}: ") and "\n" not in message


# ---------------------------------------------------------------- the Fashion-MNIST builder
SMALL = {"train": 30, "test": 10}


def _write_small_source(folder):
  """Four idx files like Fashion-MNIST's with 30 train / 10 test images; returns the arrays."""
  rng = np.random.default_rng(1)
  out = {}
  for split, (images, labels) in builders.FASHION_MNIST_FILES.items():
    x = rng.integers(0, 256, size=(SMALL[split], 28, 28), dtype=np.uint8)
    y = (np.arange(SMALL[split]) % 10).astype(np.uint8)
    idx.write_idx(os.path.join(folder, images), x)
    idx.write_idx(os.path.join(folder, labels), y)
    out[split] = (x, y)
  return out


@pytest.fixture
def no_debian(monkeypatch, tmp_path):
  """Points the Debian fallback at an empty folder, so only the test's files are found."""
  monkeypatch.setattr(builders, "DEBIAN_FASHION_MNIST_DIR", str(tmp_path / "no_debian"))


def test_missing_source_says_how_to_get_it(tmp_path, no_debian):
  with pytest.raises(ValueError, match=r"fashion_mnist: idx files not found in .*"
                     r"apt-get install dataset-fashion-mnist.*zalandoresearch") as info:
    data.load("fashion_mnist", data_dir=str(tmp_path))
  assert "\n" not in str(info.value)
  assert not (tmp_path / builders.FashionMnist.name).exists()  # Nothing written.


def test_partial_source_names_missing_files(tmp_path, no_debian):
  folder = tmp_path / "fashion_mnist"
  folder.mkdir()
  idx.write_idx(str(folder / "train-images-idx3-ubyte.gz"), IMAGES)
  with pytest.raises(ValueError, match=r"holds 1 of the 4 idx files; missing "
                                       r"t10k-images-idx3-ubyte.gz, t10k-labels"):
    builders.find_fashion_mnist(str(tmp_path))


def test_malformed_source_fails_at_load_naming_the_file(tmp_path, no_debian):
  folder = str(tmp_path / "fashion_mnist")
  _write_small_source(folder)
  labels = os.path.join(folder, "t10k-labels-idx1-ubyte.gz")
  idx.write_idx(labels, np.full(SMALL["test"], 11, np.uint8))
  with pytest.raises(ValueError, match=rf"{labels}: label 11 at index 0 is outside 0..9"):
    data.load("fashion_mnist", data_dir=str(tmp_path))


def test_builds_and_loads_small_source(tmp_path, no_debian):
  """load('fashion_mnist') from idx files in <data_dir>/fashion_mnist: values, order, dtype."""
  arrays = _write_small_source(str(tmp_path / "fashion_mnist"))
  ds = data.load("fashion_mnist", data_dir=str(tmp_path), validation_size=5)
  assert ds.num_classes == 10
  assert ds.x_train.shape == (25, 28, 28, 1) and ds.x_val.shape == (5, 28, 28, 1)
  train_idx, val_idx = datasets._subset_indices(30, None, 5)
  x, y = arrays["train"]
  np.testing.assert_array_equal(ds.x_train[..., 0] * 255, x[train_idx])
  np.testing.assert_array_equal(ds.y_val, y[val_idx])
  np.testing.assert_array_equal(ds.x_test[..., 0], arrays["test"][0] / np.float32(255))
  np.testing.assert_array_equal(ds.y_test, arrays["test"][1])
  # Our proto reader equals TFDS's own record-by-record decoding.
  source = builders.FashionMnist(data_dir=str(tmp_path)).as_data_source()["test"]
  records = source.__getitems__(range(len(source)))
  np.testing.assert_array_equal(np.stack([r["image"] for r in records])[..., 0],
                                arrays["test"][0])
  assert "tensorflow" not in sys.modules


REAL = builders.DEBIAN_FASHION_MNIST_DIR


@pytest.mark.skipif(not os.path.isdir(REAL), reason="apt-get install dataset-fashion-mnist")
def test_real_fashion_mnist_files():
  """The Debian package's files: 60,000 + 10,000 28x28 images, balanced classes (Xiao 2017)."""
  arrays = builders.fashion_mnist_arrays(builders.find_fashion_mnist(None))
  (x_tr, y_tr), (x_te, y_te) = arrays["train"], arrays["test"]
  assert x_tr.shape == (60000, 28, 28, 1) and x_te.shape == (10000, 28, 28, 1)
  np.testing.assert_array_equal(np.bincount(y_tr, minlength=10), 6000)
  np.testing.assert_array_equal(np.bincount(y_te, minlength=10), 1000)
  np.testing.assert_array_equal(y_tr[:10], [9, 0, 0, 3, 0, 2, 7, 2, 5, 5])  # Ankle boot first.
  assert x_tr.min() == 0 and x_tr.max() == 255
  assert 70 < x_tr.mean() < 80  # The mean pixel is 72.9 (0.286 of 255), a known statistic.
