"""The input pipeline: shuffle, batch and shard a training set that lives on device.

Data order is a pure function of the seed: epoch ``e`` visits the training set in the order
``np.random.default_rng((seed, e)).permutation(n)`` and step ``k`` (0-based, counted over the
whole run) takes rows ``[i * batch_size, (i + 1) * batch_size)`` of that permutation, with
``e, i = divmod(k, n // batch_size)``.

Remainder policy: the last ``n % batch_size`` examples of each epoch's permutation are dropped
(a different subset each epoch), so every batch has exactly ``batch_size`` examples and every
epoch has ``n // batch_size`` steps. PyTorch's ``DataLoader`` keeps the partial batch by
default (``drop_last=False``); we drop it so shapes are static under jit and the batch at
step ``k`` depends on ``(seed, k)`` only, which makes resuming at step ``k`` replay exactly
the batches of an uninterrupted run.

The training arrays are copied to the devices once (replicated on every device). For
``parallel='jit'`` the batches of ``prefetch`` consecutive steps are gathered on device by one
compiled call (one host->device copy of their int32 indices, one dispatch), each batch already
sharded across the devices of a 1-D ``'data'`` mesh; a step then only looks its batch up, so the
pipeline adds no dispatch of its own to the train step (per-step gathering cost 25-35% of a
MNIST-1D step, measured by ``experiments/benchmark.py --sections=step_overhead``). For
``parallel='pmap'`` each step sends its indices and gathers a ``(devices, batch_size // devices,
...)`` batch.
With several processes (multi-host) every process holds the whole training set and
computes the same global indices; each device gathers its own slice.
"""

from __future__ import annotations

import functools
from typing import Any, Mapping, Optional, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

__all__ = [
    "DATA_AXIS",
    "MemberPipeline",
    "Pipeline",
    "batch_indices",
    "check_batch_size",
    "epoch_permutation",
    "make_mesh",
    "pmap_put",
    "shard_eval_set",
    "steps_per_epoch",
]

DATA_AXIS = "data"
PARALLEL_MODES = ("jit", "pmap")


def make_mesh(devices: Optional[Sequence[jax.Device]] = None) -> Mesh:
  """A 1-D device mesh with axis ``'data'`` over ``devices`` (default: all, every process)."""
  devices = jax.devices() if devices is None else list(devices)
  return Mesh(np.asarray(devices), (DATA_AXIS,))


def steps_per_epoch(num_examples: int, batch_size: int) -> int:
  """Number of full batches per epoch, ``num_examples // batch_size`` (partial batch dropped)."""
  if batch_size <= 0:
    raise ValueError(f"batch_size must be positive, got {batch_size}")
  if num_examples < batch_size:
    raise ValueError(
        f"batch_size {batch_size} is larger than the training set ({num_examples} examples)")
  return num_examples // batch_size


def check_batch_size(batch_size: int, num_devices: int) -> int:
  """Returns the per-device batch size; ValueError if ``batch_size`` does not divide evenly."""
  if batch_size <= 0:
    raise ValueError(f"batch_size must be positive, got {batch_size}")
  if batch_size % num_devices:
    raise ValueError(
        f"batch_size {batch_size} is not divisible by the number of devices {num_devices}")
  return batch_size // num_devices


@functools.lru_cache(maxsize=512)  # stacked runs read one epoch per member seed
def epoch_permutation(seed: int, epoch: int, num_examples: int) -> np.ndarray:
  """The order of epoch ``epoch``: ``default_rng((seed, epoch)).permutation(num_examples)``."""
  perm = np.random.default_rng((int(seed), int(epoch))).permutation(num_examples)
  perm = perm.astype(np.int32)
  perm.flags.writeable = False
  return perm


def batch_indices(seed: int, step: int, num_examples: int, batch_size: int) -> np.ndarray:
  """Training-set rows of the batch at global step ``step``; a pure function of its args."""
  epoch, i = divmod(int(step), steps_per_epoch(num_examples, batch_size))
  return epoch_permutation(seed, epoch, num_examples)[i * batch_size:(i + 1) * batch_size]


def pmap_put(x: Any, devices: Sequence[jax.Device], replicate: bool) -> jax.Array:
  """Places ``x`` for ``jax.pmap``: a copy on each device, or split along its leading axis.

  ``replicate=False`` needs ``x.shape[0] == len(devices)``. Replaces
  ``jax.device_put_replicated`` / ``device_put_sharded``, which JAX removed.
  """
  x = np.asarray(x)
  n = len(devices)
  if replicate:
    x = np.broadcast_to(x[None], (n,) + x.shape)
  sharding = NamedSharding(Mesh(np.asarray(devices), ("pmap",)), P("pmap"))
  return jax.device_put(x, sharding)


def _put(x: np.ndarray, sharding: NamedSharding) -> jax.Array:
  """Places a host array (the same on every process) as a global array with ``sharding``."""
  x = np.asarray(x)
  return jax.make_array_from_callback(x.shape, sharding, lambda index: x[index])


class Pipeline:
  """Device-resident training data; ``batch(step)`` returns ``{'x', 'y'}`` for global ``step``.

  Args:
    x: training inputs ``(N, ...)``, same on every process.
    y: integer labels ``(N,)``.
    batch_size: global batch size (over all devices and processes).
    seed: data-order seed.
    parallel: ``'jit'`` (batch sharded over the mesh's ``'data'`` axis) or ``'pmap'``
      (batch reshaped to ``(local_devices, per_device, ...)``; single process only).
    mesh: the mesh for ``'jit'`` (default: all devices).
    prefetch: ``'jit'`` only: batches gathered per compiled call (steps ``[c * prefetch,
      (c + 1) * prefetch)`` for chunk ``c``; the batches themselves do not depend on it).
  """

  def __init__(self, x: np.ndarray, y: np.ndarray, *, batch_size: int, seed: int,
               parallel: str = "jit", mesh: Optional[Mesh] = None, prefetch: int = 50):
    if parallel not in PARALLEL_MODES:
      raise ValueError(f"Unknown parallel mode {parallel!r}; valid: {', '.join(PARALLEL_MODES)}")
    if len(x) != len(y):
      raise ValueError(f"x has {len(x)} examples but y has {len(y)}")
    self.num_examples = len(x)
    self.batch_size = int(batch_size)
    self.seed = int(seed)
    self.parallel = parallel
    self.steps_per_epoch = steps_per_epoch(self.num_examples, self.batch_size)
    if parallel == "jit":
      self.mesh = make_mesh() if mesh is None else mesh
      self.num_devices = self.mesh.devices.size
      self.per_device = check_batch_size(self.batch_size, self.num_devices)
      replicated = NamedSharding(self.mesh, P())
      self.index_sharding = NamedSharding(self.mesh, P(DATA_AXIS))
      self._data = (_put(x, replicated), _put(y, replicated))
      if prefetch <= 0:
        raise ValueError(f"prefetch must be positive, got {prefetch}")
      self.prefetch = int(prefetch)
      self._replicated = replicated
      self._gather = jax.jit(_gather_steps, out_shardings=self.index_sharding)
      self._chunk: tuple[int, Any] = (-1, None)
    else:
      if jax.process_count() > 1:
        raise ValueError("parallel='pmap' runs on one process; use parallel='jit' for multi-host")
      self.mesh = None
      devices = jax.local_devices()
      self.num_devices = len(devices)
      self.per_device = check_batch_size(self.batch_size, self.num_devices)
      self._data = tuple(pmap_put(a, devices, replicate=True) for a in (x, y))
      self._devices = devices
      self._gather = jax.pmap(_gather)

  def indices(self, step: int) -> np.ndarray:
    """Global batch indices at ``step`` (host numpy, int32)."""
    return batch_indices(self.seed, step, self.num_examples, self.batch_size)

  def batch(self, step: int) -> Mapping[str, jax.Array]:
    """The batch of global step ``step``, gathered on device and laid out for ``parallel``."""
    if self.parallel == "jit":
      chunk, offset = divmod(int(step), self.prefetch)
      if self._chunk[0] != chunk:
        first = chunk * self.prefetch
        idx = np.stack([self.indices(k) for k in range(first, first + self.prefetch)])
        self._chunk = (chunk, self._gather(*self._data, _put(idx, self._replicated)))
      xs, ys = self._chunk[1]
      return {"x": xs[offset], "y": ys[offset]}
    idx = self.indices(step)
    idx = pmap_put(idx.reshape(self.num_devices, self.per_device), self._devices,
                   replicate=False)
    x, y = self._gather(*self._data, idx)
    return {"x": x, "y": y}

  def position(self, step: int, member: int = 0) -> dict[str, int]:
    """The pipeline position at ``step`` (saved with checkpoints, for the record)."""
    del member  # one seed
    epoch, i = divmod(int(step), self.steps_per_epoch)
    return {"step": int(step), "epoch": epoch, "batch_in_epoch": i, "seed": self.seed}


class MemberPipeline(Pipeline):
  """The batches of K stacked runs with their own seeds: ``batch(step)`` is ``(K, batch, ...)``.

  Member ``k``'s rows are exactly :class:`Pipeline`'s for ``seeds[k]`` (each member keeps the
  data order of its solo run); the batch axis is sharded over the mesh's ``'data'`` axis and
  the member axis is not. ``parallel='jit'`` only.
  """

  def __init__(self, x: np.ndarray, y: np.ndarray, *, batch_size: int, seeds: Sequence[int],
               mesh: Optional[Mesh] = None, prefetch: int = 50):
    super().__init__(x, y, batch_size=batch_size, seed=int(seeds[0]), parallel="jit",
                     mesh=mesh, prefetch=prefetch)
    self.seeds = tuple(int(s) for s in seeds)
    self.index_sharding = NamedSharding(self.mesh, P(None, DATA_AXIS))
    self._gather = jax.jit(_gather_steps, out_shardings=self.index_sharding)

  def indices(self, step: int) -> np.ndarray:
    """``(K, batch_size)`` rows at ``step``, one row of indices per member."""
    return np.stack([batch_indices(s, step, self.num_examples, self.batch_size)
                     for s in self.seeds])

  def position(self, step: int, member: int = 0) -> dict[str, int]:
    return {**super().position(step), "seed": self.seeds[member]}


def _gather(x: jax.Array, y: jax.Array, idx: jax.Array) -> tuple[jax.Array, jax.Array]:
  return jnp.take(x, idx, axis=0), jnp.take(y, idx, axis=0)


def _gather_steps(x: jax.Array, y: jax.Array, idx: jax.Array
                  ) -> tuple[tuple[jax.Array, ...], tuple[jax.Array, ...]]:
  """``idx`` (steps, batch) -> one ``(x, y)`` batch per step, as separate arrays."""
  xs, ys = _gather(x, y, idx)
  return tuple(xs[k] for k in range(idx.shape[0])), tuple(ys[k] for k in range(idx.shape[0]))


def shard_eval_set(x: np.ndarray, y: np.ndarray, *, chunk_size: int, parallel: str,
                   mesh: Optional[Mesh] = None) -> list[dict[str, Any]]:
  """Splits an evaluation set into device-resident chunks of ``chunk_size`` with a mask.

  The last chunk is padded with zeros (mask 0) to ``chunk_size`` so one compiled eval step
  serves every chunk. ``chunk_size`` must be divisible by the number of devices.
  """
  n = len(x)
  chunks = []
  for start in range(0, n, chunk_size):
    xs, ys = x[start:start + chunk_size], y[start:start + chunk_size]
    pad = chunk_size - len(xs)
    mask = np.concatenate([np.ones(len(xs), np.float32), np.zeros(pad, np.float32)])
    xs = np.concatenate([xs, np.zeros((pad,) + xs.shape[1:], xs.dtype)])
    ys = np.concatenate([ys, np.zeros((pad,), ys.dtype)])
    if parallel == "pmap":
      devices = jax.local_devices()
      nd = len(devices)
      put = lambda a: pmap_put(a.reshape((nd, -1) + a.shape[1:]), devices, replicate=False)
    else:
      sharding = NamedSharding(make_mesh() if mesh is None else mesh, P(DATA_AXIS))
      put = lambda a: _put(a, sharding)
    chunks.append({"x": put(xs), "y": put(ys), "mask": put(mask)})
  return chunks
