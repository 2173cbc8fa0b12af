"""Orbax checkpoints of the train state, the best parameters and JSON metadata.

A checkpoint at step ``k`` holds ``state`` (the TrainState), optionally ``best`` (the
parameters and BatchNorm statistics of the best evaluation, for early stopping) and ``meta``
(JSON: the pipeline position, early-stopping state, best metrics). Orbax writes each step to
a temporary directory and renames it when complete, so a run killed mid-save leaves the
previous checkpoint intact; ``max_to_keep`` bounds how many are kept.
"""

from __future__ import annotations

import os
from typing import Any, Optional

import jax
import orbax.checkpoint as ocp

__all__ = ["Checkpointer"]


def _abstract(tree: Any) -> Any:
  return jax.tree.map(ocp.utils.to_shape_dtype_struct, tree)


class Checkpointer:
  """Saves and restores ``(state, best, meta)`` under ``<workdir>/checkpoints``."""

  def __init__(self, directory: str, *, max_to_keep: int = 3):
    self.directory = os.path.abspath(directory)
    options = ocp.CheckpointManagerOptions(max_to_keep=max_to_keep, create=True,
                                           enable_async_checkpointing=False)
    self.manager = ocp.CheckpointManager(self.directory, options=options)

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

  def close(self) -> None:
    self.manager.wait_until_finished()
    self.manager.close()
