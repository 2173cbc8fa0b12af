"""Placing the train state and compiling steps for ``parallel='jit'`` or ``parallel='pmap'``.

* ``jit``: one program over a 1-D ``'data'`` mesh of all devices (all processes when
  multi-host). The state is replicated (``NamedSharding(mesh, P())``), the batch is split
  over ``'data'``; XLA inserts the gradient all-reduce, and BatchNorm statistics of a sharded
  batch are global automatically.
* ``pmap``: one program per local device; the state carries a leading device axis, gradients,
  loss and BatchNorm statistics are ``pmean``-ed over the axis ``'batch'`` (models are built
  with ``axis_name='batch'``). Single process only.

Both donate the state (``donate_argnums``) so optimizer buffers are updated in place.
"""

from __future__ import annotations

from typing import Any, Callable, Optional

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from flaxopt.data.pipeline import DATA_AXIS, make_mesh, pmap_put

__all__ = ["PMAP_AXIS", "Parallel"]

PMAP_AXIS = "batch"
METRIC_KEYS = ("loss", "ce_loss", "accuracy")


def _put_global(x: Any, sharding: NamedSharding) -> jax.Array:
  x = np.asarray(x)
  return jax.make_array_from_callback(x.shape, sharding, lambda index: x[index])


class Parallel:
  """Device placement and compilation for one parallel mode (``'jit'`` or ``'pmap'``)."""

  def __init__(self, mode: str, mesh: Optional[Mesh] = None):
    if mode not in ("jit", "pmap"):
      raise ValueError(f"Unknown parallel mode {mode!r}; valid: jit, pmap")
    self.mode = mode
    self.axis_name = PMAP_AXIS if mode == "pmap" else None
    if mode == "jit":
      self.mesh = make_mesh() if mesh is None else mesh
      self.replicated = NamedSharding(self.mesh, P())
      self.batch_sharding = NamedSharding(self.mesh, P(DATA_AXIS))
      self.num_devices = self.mesh.devices.size
    else:
      self.mesh = None
      self.devices = jax.local_devices()
      self.num_devices = len(self.devices)

  # -- placement -------------------------------------------------------------------------
  def put(self, tree: Any) -> Any:
    """Replicates a host/single-device pytree on every device (global array / device axis)."""
    if self.mode == "jit":
      return jax.tree.map(self._put_replicated, tree)
    return jax.tree.map(lambda a: pmap_put(a, self.devices, replicate=True), tree)

  def _put_replicated(self, a: Any) -> jax.Array:
    if isinstance(a, jax.Array) and a.sharding == self.replicated:
      return a  # already placed (e.g. restored by orbax with this sharding)
    return _put_global(a, self.replicated)

  def get(self, tree: Any) -> Any:
    """The single logical copy of a replicated pytree (drops pmap's device axis)."""
    if self.mode == "jit":
      return tree
    return jax.tree.map(lambda a: a[0], tree)

  def zeros_sums(self, members: int = 0) -> dict:
    """Metric accumulators (summed per step on device, read every ``log_every`` steps);
    ``members > 0``: one per member of a stack, shape ``(members,)``."""
    shape = (members,) if members else ()
    return self.put({k: np.zeros(shape, np.float32) for k in METRIC_KEYS + ("count",)})

  # -- compilation -----------------------------------------------------------------------
  def compile_train(self, step_fn: Callable[..., Any]) -> Callable[..., Any]:
    """``fn(state, batch, sums) -> (state, sums)``, jitted/pmapped with state+sums donated."""

    def step_and_accumulate(state, batch, sums):
      state, metrics = step_fn(state, batch)
      sums = {k: sums[k] + (metrics[k] if k in metrics else 1.0) for k in sums}
      return state, sums

    if self.mode == "jit":
      return jax.jit(step_and_accumulate, donate_argnums=(0, 2),
                     in_shardings=(self.replicated, self.batch_sharding, self.replicated),
                     out_shardings=(self.replicated, self.replicated))
    return jax.pmap(step_and_accumulate, axis_name=PMAP_AXIS, donate_argnums=(0, 2))

  def compile_stacked_train(self, step_fn: Callable[..., Any], shared_batch: bool,
                            lowering: str = "vmap", members: int = 0) -> Callable[..., Any]:
    """A stack's ``fn(state, batch, sums, hp, active) -> (state, sums)`` (``'jit'`` only).

    ``step_fn(state, batch, hp) -> (state, metrics)`` is one member's step; it is vmapped over
    the leading member axis of ``state``, ``sums``, ``hp`` (per-member hyperparameters) and
    ``active`` (bool: frozen members keep their state and add nothing to their sums), and of
    ``batch`` unless ``shared_batch`` (every member reads the same batch: one seed). The state
    and sums are donated; the batch is sharded over ``'data'`` on its batch axis.
    ``lowering``: 'vmap', or 'unroll' (``members`` separate calls in one program; see
    ``training/members.py``'s LOWERINGS).
    """
    if self.mode != "jit":
      raise ValueError("stacked runs need parallel='jit'")

    def member(state, batch, sums, hp, active):
      new, metrics = step_fn(state, batch, hp)
      new = jax.tree.map(lambda n, o: jnp.where(active, n, o), new, state)
      sums = {k: sums[k] + jnp.where(active, metrics[k] if k in metrics else 1.0, 0.0)
              for k in sums}
      return new, sums

    in_axes = (0, None if shared_batch else 0, 0, 0, 0)
    stacked = _LOWERINGS[lowering](member, in_axes, members)
    batch_sharding = (self.batch_sharding if shared_batch
                      else NamedSharding(self.mesh, P(None, DATA_AXIS)))
    return jax.jit(stacked, donate_argnums=(0, 2),
                   in_shardings=(self.replicated, batch_sharding, self.replicated,
                                 self.replicated, self.replicated),
                   out_shardings=(self.replicated, self.replicated))

  def compile_stacked_eval(self, eval_fn: Callable[..., Any], lowering: str = "vmap",
                           members: int = 0) -> Callable[..., Any]:
    """``fn(params, batch_stats, chunk) -> sums`` vmapped over the members (one chunk)."""
    stacked = _LOWERINGS[lowering](eval_fn, (0, 0, None), members)
    return jax.jit(stacked,
                   in_shardings=(self.replicated, self.replicated, self.batch_sharding),
                   out_shardings=self.replicated)

  def compile_eval(self, eval_fn: Callable[..., Any]) -> Callable[..., Any]:
    """``fn(params, batch_stats, chunk) -> sums`` (pmap: psum inside, device axis kept)."""
    if self.mode == "jit":
      return jax.jit(eval_fn, in_shardings=(self.replicated, self.replicated,
                                            self.batch_sharding),
                     out_shardings=self.replicated)
    return jax.pmap(eval_fn, axis_name=PMAP_AXIS)

  def read(self, tree: Any) -> Any:
    """Host numpy values of a (replicated) pytree: the one place the loop syncs."""
    return jax.tree.map(lambda a: np.asarray(jax.device_get(self._local(a))), self.get(tree))

  def _local(self, a: jax.Array) -> jax.Array:
    if self.mode == "jit" and not a.is_fully_addressable:
      return a.addressable_data(0)
    return a


def _unrolled(fn: Callable[..., Any], in_axes: tuple, members: int) -> Callable[..., Any]:
  """``vmap(fn, in_axes)`` as ``members`` separate calls in one program (each member's
  computation is the solo program's; outputs stacked on a new leading axis)."""
  def stacked(*args):
    outs = [fn(*[a if ax is None else jax.tree.map(lambda x, k=k: x[k], a)
                 for a, ax in zip(args, in_axes)]) for k in range(members)]
    return jax.tree.map(lambda *xs: jnp.stack(xs), *outs)
  return stacked


_LOWERINGS = {"vmap": lambda fn, in_axes, members: jax.vmap(fn, in_axes=in_axes),
              "unroll": _unrolled}
