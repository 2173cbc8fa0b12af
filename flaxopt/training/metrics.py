"""Run outputs: metrics.jsonl, TensorBoard event files (tensorboardX), JSON files, progress.

Only process 0 writes (``jax.process_index() == 0``); other processes get no-op writers.
"""

from __future__ import annotations

import json
import math
import os
from typing import Any, Mapping, Optional

import jax
import numpy as np
from absl import logging

__all__ = ["MetricWriter", "format_progress", "read_json", "read_jsonl", "to_jsonable",
           "truncate_jsonl", "write_json"]


def to_jsonable(value: Any) -> Any:
  """Converts numpy/jax scalars, arrays and ConfigDict-like mappings to JSON types."""
  if isinstance(value, Mapping):
    return {str(k): to_jsonable(v) for k, v in value.items()}
  if isinstance(value, (list, tuple)):
    return [to_jsonable(v) for v in value]
  if isinstance(value, (np.ndarray, jax.Array)):
    value = np.asarray(value)
    return value.item() if value.ndim == 0 else value.tolist()
  if isinstance(value, np.generic):
    return value.item()
  if isinstance(value, float) and not math.isfinite(value):
    return str(value)  # 'nan' / 'inf': strict JSON has no NaN
  return value


def write_json(path: str, obj: Any) -> None:
  """Writes ``obj`` as indented JSON atomically (tmp file + rename), on process 0 only."""
  if jax.process_index() != 0:
    return
  tmp = path + ".tmp"
  with open(tmp, "w") as f:
    json.dump(to_jsonable(obj), f, indent=2, sort_keys=True)
    f.write("\n")
  os.replace(tmp, path)


def read_json(path: str) -> Any:
  """The JSON object in ``path``."""
  with open(path) as f:
    return json.load(f)


def read_jsonl(path: str) -> list[dict]:
  """The records of a JSON-lines file ([] if it does not exist).

  A last line cut short (a process killed mid-write, a full disk) is dropped with a warning;
  a bad line elsewhere raises ValueError naming the file and line.
  """
  if not os.path.exists(path):
    return []
  with open(path) as f:
    lines = [line for line in f.read().split("\n")]
  records = []
  for i, line in enumerate(lines):
    if not line.strip():
      continue
    try:
      records.append(json.loads(line))
    except json.JSONDecodeError:
      if any(l.strip() for l in lines[i + 1:]):
        raise ValueError(f"{path}: line {i + 1} is not JSON: {line[:80]!r}") from None
      logging.warning("Dropped the truncated last line of %s: %r", path, line[:80])
  return records


def truncate_jsonl(path: str, max_step: int) -> None:
  """Keeps the records of ``path`` with ``step <= max_step`` (atomic rewrite; cut lines go)."""
  if not os.path.exists(path):
    return
  kept = [r for r in read_jsonl(path) if r["step"] <= max_step]
  tmp = path + ".tmp"
  with open(tmp, "w") as f:
    f.writelines(json.dumps(r) + "\n" for r in kept)
  os.replace(tmp, path)


class MetricWriter:
  """Appends evaluation records to ``metrics.jsonl`` and scalars to TensorBoard.

  ``resume_step``: records with a larger step (written after the checkpoint a resumed run
  starts from) are dropped from metrics.jsonl and purged from TensorBoard, so a resumed run's
  files equal those of an uninterrupted one.
  """

  def __init__(self, workdir: str, resume_step: Optional[int] = None):
    self.enabled = jax.process_index() == 0
    self.path = os.path.join(workdir, "metrics.jsonl")
    self._tb = None
    if not self.enabled:
      return
    if resume_step is not None:
      truncate_jsonl(self.path, resume_step)
    elif os.path.exists(self.path):
      os.remove(self.path)
    from tensorboardX import SummaryWriter  # pylint: disable=g-import-not-at-top
    self._tb = SummaryWriter(os.path.join(workdir, "tensorboard"),
                             purge_step=None if resume_step is None else resume_step + 1)

  def write(self, record: Mapping[str, Any]) -> None:
    """Appends one record (must contain ``step``) and its numeric fields as TB scalars."""
    if not self.enabled:
      return
    record = to_jsonable(record)
    with open(self.path, "a") as f:
      f.write(json.dumps(record) + "\n")
    step = int(record["step"])
    for key, value in record.items():
      if key != "step" and isinstance(value, (int, float)):
        self._tb.add_scalar(key, value, step)
    self._tb.flush()

  def close(self) -> None:
    if self._tb is not None:
      self._tb.close()


def format_progress(step: int, total: int, loss: float, steps_per_sec: float) -> str:
  """``step 1000/6000 (17%)  loss 0.4123  812.3 steps/s  ETA 6s``."""
  eta = (total - step) / steps_per_sec if steps_per_sec > 0 else float("inf")
  eta_str = f"{eta:.0f}s" if math.isfinite(eta) else "?"
  return (f"step {step}/{total} ({100 * step / max(total, 1):.0f}%)  loss {loss:.4f}  "
          f"{steps_per_sec:.1f} steps/s  ETA {eta_str}")


def log_progress(message: str) -> None:
  """Logs a progress line on process 0."""
  if jax.process_index() == 0:
    logging.info(message)
