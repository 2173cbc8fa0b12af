"""Orbax checkpoints of the train state, the best parameters and JSON metadata.

A checkpoint at step ``k`` holds ``state`` (the TrainState), optionally ``best`` (the
parameters and BatchNorm statistics of the best evaluation, for early stopping) and ``meta``
(JSON: the pipeline position, early-stopping state, metric sums). Orbax writes each step to
a temporary directory and renames it when complete, so a run killed mid-save leaves the
previous checkpoint intact; ``max_to_keep`` bounds how many are kept.

:meth:`Checkpointer.restore_latest` tries the checkpoints newest first: one that fails to
restore (truncated or missing files) is reported in one warning line and moved aside to
``<checkpoints>/../checkpoints_corrupt/<step>-<time>`` (never deleted), and the newest valid
one is used. When checkpoints exist but none restores it raises :class:`CheckpointError`
rather than silently starting again from step 0.
"""

from __future__ import annotations

import errno
import logging as logging_std
import os
import shutil
import time
from typing import Any, Optional

import jax
import orbax.checkpoint as ocp
from absl import logging

__all__ = ["CheckpointError", "Checkpointer", "StorageError", "is_disk_full"]


class CheckpointError(RuntimeError):
  """No checkpoint of a run can be restored (one-line message)."""


class StorageError(RuntimeError):
  """A run's output could not be written (e.g. a full disk); one-line message."""


def is_disk_full(error: BaseException) -> bool:
  """Whether ``error`` (or what it wraps) is ENOSPC / EDQUOT, as orbax/tensorstore report it."""
  while error is not None:
    if isinstance(error, OSError) and error.errno in (errno.ENOSPC, errno.EDQUOT):
      return True
    if "No space left on device" in str(error):
      return True
    error = error.__cause__ or error.__context__
  return False


def _abstract(tree: Any) -> Any:
  return jax.tree.map(ocp.utils.to_shape_dtype_struct, tree)


def _one_line(error: BaseException) -> str:
  text = " ".join(str(error).split())
  return f"{type(error).__name__}: {text[:200]}"


class _Quiet:
  """Silences orbax's own error logging while a restore is tried (we report one line)."""

  def __enter__(self):
    self._logger = logging_std.getLogger("absl")
    self._level = self._logger.level
    self._logger.setLevel(logging_std.CRITICAL)

  def __exit__(self, *exc):
    self._logger.setLevel(self._level)


class Checkpointer:
  """Saves and restores ``(state, best, meta)`` under ``<workdir>/checkpoints``."""

  def __init__(self, directory: str, *, max_to_keep: int = 3):
    self.directory = os.path.abspath(directory)
    self.max_to_keep = max_to_keep
    self.manager = self._manager()

  def _manager(self) -> ocp.CheckpointManager:
    options = ocp.CheckpointManagerOptions(max_to_keep=self.max_to_keep, create=True,
                                           enable_async_checkpointing=False,
                                           cleanup_tmp_directories=True)
    with _Quiet():  # unreadable metadata of a corrupt step: restore_latest reports it
      return ocp.CheckpointManager(self.directory, options=options)

  def latest_step(self) -> Optional[int]:
    """The newest complete checkpoint's step, or None."""
    return self.manager.latest_step()

  def save(self, step: int, state: Any, meta: dict, best: Any = None) -> None:
    """Saves step ``step`` (blocking; also when ``step`` was saved before it is skipped)."""
    if step in self.manager.all_steps():
      return
    items = {"state": ocp.args.StandardSave(state), "meta": ocp.args.JsonSave(meta)}
    if best is not None:
      items["best"] = ocp.args.StandardSave(best)
    self.manager.save(step, args=ocp.args.Composite(**items), force=True)
    self.manager.wait_until_finished()

  def restore(self, step: int, state_like: Any, best_like: Any = None) -> tuple[Any, Any, dict]:
    """Restores ``(state, best, meta)`` with the structure/sharding of the templates."""
    items = {"state": ocp.args.StandardRestore(_abstract(state_like)),
             "meta": ocp.args.JsonRestore()}
    if best_like is not None:
      items["best"] = ocp.args.StandardRestore(_abstract(best_like))
    out = self.manager.restore(step, args=ocp.args.Composite(**items))
    return out["state"], (out["best"] if best_like is not None else None), out["meta"]

  def restore_latest(self, state_like: Any, best_like: Any = None
                     ) -> Optional[tuple[int, Any, Any, dict]]:
    """``(step, state, best, meta)`` of the newest checkpoint that restores, or None if none.

    Checkpoints that fail are moved aside with a warning line each (process 0 moves).

    Raises:
      CheckpointError: checkpoints exist but none of them restores.
    """
    with _Quiet():
      self.manager.reload()
    steps = sorted(self.manager.all_steps(), reverse=True)
    failed = []
    for step in steps:
      try:
        with _Quiet():
          state, best, meta = self.restore(step, state_like, best_like)
        if not isinstance(meta, dict) or "early_stopping" not in meta:
          raise ValueError("metadata incomplete")
      except Exception as e:  # pylint: disable=broad-except
        failed.append((step, e))
        continue
      for bad, error in failed:
        self._move_aside(bad, error, step)
      if failed:
        self.manager.close()
        self.manager = self._manager()
      return step, state, best, meta
    if failed:
      tried = ", ".join(str(s) for s, _ in failed)
      raise CheckpointError(
          f"no checkpoint in {self.directory} can be restored (steps {tried}; newest: "
          f"{_one_line(failed[0][1])}); move them away to start from step 0")
    return None

  def _move_aside(self, step: int, error: BaseException, resume_step: int) -> None:
    src = os.path.join(self.directory, str(step))
    dest = os.path.join(os.path.dirname(self.directory), "checkpoints_corrupt",
                        f"{step}-{time.strftime('%Y%m%dT%H%M%S')}")
    if jax.process_index() == 0 and os.path.exists(src):
      os.makedirs(os.path.dirname(dest), exist_ok=True)
      shutil.move(src, dest)
    logging.warning("Checkpoint step %d in %s cannot be restored (%s); moved aside to %s; "
                    "resuming from step %d.", step, self.directory, _one_line(error), dest,
                    resume_step)

  def close(self) -> None:
    self.manager.wait_until_finished()
    self.manager.close()
