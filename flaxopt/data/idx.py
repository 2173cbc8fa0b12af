"""The idx file format of MNIST and Fashion-MNIST, read with numpy (no TensorFlow, no torch).

Format (LeCun et al., http://yann.lecun.com/exdb/mnist/; Xiao et al. 2017 reuse it): a 4-byte
magic number ``0x00 0x00 <type> <ndim>`` (type 0x08: unsigned byte, the only one these
datasets use), then ``ndim`` big-endian uint32 sizes, then ``prod(sizes)`` values in C order.
Labels are ``idx1`` (ndim 1), images ``idx3`` (ndim 3: N, rows, cols). The files ship gzipped.

Every malformed input is one ``ValueError`` line naming the file: a bad magic number, sizes
other than the expected ones, a payload shorter or longer than the header says, labels
outside ``[0, num_classes)``, a truncated or corrupt gzip stream.
"""

from __future__ import annotations

import gzip
import os
import struct
import zlib
from typing import Optional, Sequence

import numpy as np

__all__ = ["UBYTE", "read_idx", "read_images", "read_labels", "write_idx"]

UBYTE = 0x08


def _read_bytes(path: str) -> bytes:
  """The decompressed bytes of ``path`` (gzip when it ends in .gz)."""
  try:
    if path.endswith(".gz"):
      with gzip.open(path, "rb") as f:
        return f.read()
    with open(path, "rb") as f:
      return f.read()
  except (EOFError, gzip.BadGzipFile, zlib.error) as e:
    raise ValueError(f"{path}: truncated or corrupt gzip file ({type(e).__name__}: "
                     f"{' '.join(str(e).split())}).") from e


def read_idx(path: str, ndim: int) -> np.ndarray:
  """The uint8 array stored in idx file ``path``, which must have ``ndim`` axes.

  Raises:
    ValueError: one line naming ``path``: bad magic number (not ``00 00 08 <ndim>``), a payload
      whose size differs from the header's, or a corrupt gzip stream.
  """
  raw = _read_bytes(path)
  if len(raw) < 4:
    raise ValueError(f"{path}: {len(raw)} bytes, too short for an idx header.")
  zero, kind, got_ndim = struct.unpack(">HBB", raw[:4])
  if zero != 0 or kind != UBYTE or got_ndim != ndim:
    raise ValueError(f"{path}: bad magic number 0x{raw[:4].hex()}; expected "
                     f"0x{struct.pack('>HBB', 0, UBYTE, ndim).hex()} (idx{ndim}, unsigned byte).")
  header = 4 + 4 * ndim
  if len(raw) < header:
    raise ValueError(f"{path}: truncated idx header ({len(raw)} of {header} bytes).")
  shape = struct.unpack(f">{ndim}I", raw[4:header])
  size = int(np.prod(shape, dtype=np.int64))
  if len(raw) - header != size:
    raise ValueError(f"{path}: the header says shape {shape} ({size} values) but the file holds "
                     f"{len(raw) - header} bytes of data.")
  return np.frombuffer(raw, dtype=np.uint8, offset=header).reshape(shape)


def read_images(path: str, size: Sequence[int] = (28, 28)) -> np.ndarray:
  """uint8 images ``(N, *size)`` from an idx3 file; ValueError naming the file otherwise."""
  x = read_idx(path, 1 + len(size))
  if tuple(x.shape[1:]) != tuple(size):
    raise ValueError(f"{path}: images of size {tuple(x.shape[1:])}, expected {tuple(size)}.")
  return x


def read_labels(path: str, num_classes: int = 10,
                num_examples: Optional[int] = None) -> np.ndarray:
  """uint8 labels ``(N,)`` from an idx1 file, each in ``[0, num_classes)``.

  ``num_examples``: when given, N must equal it (the image file's count).
  """
  y = read_idx(path, 1)
  if num_examples is not None and len(y) != num_examples:
    raise ValueError(f"{path}: {len(y)} labels for {num_examples} images.")
  bad = np.flatnonzero(y >= num_classes)
  if bad.size:
    raise ValueError(f"{path}: label {int(y[bad[0]])} at index {int(bad[0])} is outside "
                     f"0..{num_classes - 1} ({bad.size} such labels).")
  return y


def write_idx(path: str, array: np.ndarray) -> None:
  """Writes a uint8 ``array`` as an idx file (gzipped when ``path`` ends in .gz); for tests."""
  array = np.ascontiguousarray(array, dtype=np.uint8)
  data = struct.pack(">HBB", 0, UBYTE, array.ndim) + struct.pack(
      f">{array.ndim}I", *array.shape) + array.tobytes()
  opener = gzip.open if path.endswith(".gz") else open
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  with opener(path, "wb") as f:
    f.write(data)
