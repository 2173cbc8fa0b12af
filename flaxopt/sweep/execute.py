"""Executing a study's runs: in this process or in worker processes, resumably.

Interrupted anywhere and restarted, ``execute`` redoes no completed run and repairs a member
whose files are partial. Each member's workdir is inspected first (:func:`inspect_member`):

* ``new``: no files (or an empty folder). Trained.
* ``done``: a finished ``summary.json`` (completed, early_stopped, diverged) and a
  ``metrics.jsonl`` that holds its final evaluation and nothing later (a run that diverged
  before its first evaluation has none). Skipped.
* ``resume``: no summary, or an unfinished (preempted) or unreadable one. The summary is moved
  aside, a partial last line of metrics.jsonl (a process killed while appending) dropped, and
  the loop resumes from its newest checkpoint.
* ``redo``: a finished summary whose metrics are missing, unreadable or end elsewhere; an
  unreadable config.json; checkpoints without metrics.jsonl. The workdir is moved aside
  (``<dir>.partial``) and the run trained from scratch.

Nothing is deleted: what a repair replaces is renamed ``*.partial`` (``.partial.1``, ...).
Same seed, same result, so a redone member ends where the lost one would have.
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import json
import multiprocessing
import os
import re
import time
from typing import Callable, Optional, Sequence

import ml_collections

from flaxopt.sweep import plan as plan_lib

__all__ = ["FINISHED", "MemberState", "execute", "inspect_member", "load_json",
           "repair_member", "scan_metrics", "worker_xla_flags"]

FINISHED = ("completed", "early_stopped", "diverged")
# Forces several host devices; stripped for worker processes (one CPU device per run).
_FORCE_DEVICES = re.compile(r"--xla_force_host_platform_device_count=\d+")


@dataclasses.dataclass(frozen=True)
class MemberState:
  """What a member's workdir holds: ``new``, ``done``, ``resume`` or ``redo``, and why."""

  status: str
  reason: str = ""


def load_json(path: str) -> tuple[object, bool]:
  """(value, ok): ``(None, True)`` if missing, ``(None, False)`` if not valid JSON."""
  try:
    with open(path) as f:
      return json.load(f), True
  except FileNotFoundError:
    return None, True
  except (OSError, ValueError):
    return None, False


def scan_metrics(path: str) -> tuple[list[dict], bool, bool]:
  """``(records, partial_tail, broken)`` of a metrics.jsonl.

  ``partial_tail``: the last line is cut off (no newline or not JSON), as a process killed
  while appending leaves it; ``broken``: a line before the last is not a JSON object.
  """
  try:
    with open(path) as f:
      text = f.read()
  except FileNotFoundError:
    return [], False, False
  lines = text.split("\n")
  tail = lines.pop()  # '' when the file ends in a newline
  records, broken = [], False
  for i, line in enumerate(lines):
    if not line.strip():
      continue
    try:
      record = json.loads(line)
      if not isinstance(record, dict) or "step" not in record:
        raise ValueError(line)
      records.append(record)
    except ValueError:
      if i == len(lines) - 1 and not tail:
        return records, True, broken
      broken = True
  return records, bool(tail.strip()), broken


def inspect_member(workdir: str) -> MemberState:
  """The state of a member's workdir (see the module docstring's table)."""
  if not os.path.isdir(workdir) or not os.listdir(workdir):
    return MemberState("new")
  _, config_ok = load_json(os.path.join(workdir, plan_lib.CONFIG))
  if not config_ok:
    return MemberState("redo", "config.json is not valid JSON")
  records, partial_tail, broken = scan_metrics(os.path.join(workdir, plan_lib.METRICS))
  if broken:
    return MemberState("redo", "metrics.jsonl has a line that is not a JSON record")
  summary, summary_ok = load_json(os.path.join(workdir, plan_lib.SUMMARY))
  if not summary_ok or (summary is not None and not isinstance(summary, dict)):
    return MemberState("resume", "summary.json is not valid JSON")
  if summary is not None and summary.get("status") in FINISHED:
    if partial_tail:
      return MemberState("redo", "metrics.jsonl ends in a partial line after the run finished")
    if not records:
      if summary["status"] == "diverged":  # may stop before its first evaluation
        return MemberState("done")
      return MemberState("redo", "summary.json without metrics.jsonl records")
    final_step = (summary.get("final") or {}).get("step")
    steps = [r["step"] for r in records]
    if (final_step is not None and final_step not in steps) or \
        (isinstance(summary.get("step"), int) and steps[-1] > summary["step"]):
      return MemberState("redo", f"metrics.jsonl (steps up to {steps[-1]}) does not match "
                         f"summary.json (final step {final_step})")
    return MemberState("done")
  ckpt_dir = os.path.join(workdir, "checkpoints")
  if os.path.isdir(ckpt_dir) and os.listdir(ckpt_dir) and \
      not os.path.exists(os.path.join(workdir, plan_lib.METRICS)):
    return MemberState("redo", "checkpoints without metrics.jsonl")
  if summary is not None:
    return MemberState("resume", f"summary.json has status {summary.get('status')!r}")
  if partial_tail:
    return MemberState("resume", "metrics.jsonl ends in a partial line")
  return MemberState("resume")


def _aside(path: str) -> str:
  """A free name ``<path>.partial`` (or ``.partial.1``, ...) to move ``path`` to."""
  target, n = path + ".partial", 0
  while os.path.exists(target):
    n += 1
    target = f"{path}.partial.{n}"
  return target


def repair_member(workdir: str, state: MemberState) -> None:
  """Makes a ``resume`` / ``redo`` member trainable (see the module docstring)."""
  if state.status == "redo":
    os.replace(workdir, _aside(workdir))
    return
  if state.status != "resume":
    return
  summary = os.path.join(workdir, plan_lib.SUMMARY)
  if os.path.exists(summary):
    os.replace(summary, _aside(summary))
  metrics = os.path.join(workdir, plan_lib.METRICS)
  records, partial_tail, _ = scan_metrics(metrics)
  if partial_tail:
    tmp = metrics + ".tmp"
    with open(tmp, "w") as f:
      f.writelines(json.dumps(r) + "\n" for r in records)
    os.replace(tmp, metrics)


def worker_xla_flags(xla_flags: str) -> str:
  """``XLA_FLAGS`` for a worker process: the caller's, without forced host devices."""
  return _FORCE_DEVICES.sub("", xla_flags).strip()


def _worker_init(jax_cache_dir: str, xla_flags: Optional[str]) -> None:
  """Worker process setup: its XLA flags, quiet logs, the persistent compilation cache."""
  if xla_flags is not None:
    os.environ["XLA_FLAGS"] = xla_flags  # before JAX initializes in this process
  from absl import logging  # pylint: disable=g-import-not-at-top
  logging.set_verbosity(logging.WARNING)
  configure_jax(jax_cache_dir)


def configure_jax(jax_cache_dir: str) -> None:
  """Turns on the persistent compilation cache in ``jax_cache_dir`` ('' : leave it off)."""
  import jax  # pylint: disable=g-import-not-at-top
  if jax_cache_dir:
    jax.config.update("jax_compilation_cache_dir", jax_cache_dir)
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.1)


def train_one(config: ml_collections.ConfigDict, workdir: str) -> dict:
  """Trains one run; returns ``{'summary': ...}`` or ``{'error': message}`` (never raises)."""
  from flaxopt import training  # pylint: disable=g-import-not-at-top
  t0 = time.time()
  try:
    summary = training.train_and_evaluate(config, workdir)
    return {"summary": summary, "seconds": time.time() - t0}
  except Exception as e:  # pylint: disable=broad-except
    return {"error": f"{type(e).__name__}: {' '.join(str(e).split())[:500]}",
            "seconds": time.time() - t0}


def execute(runs: Sequence[plan_lib.Run], jobs: int = 1, jax_cache_dir: str = "",
            log: Callable[[str], None] = print,
            xla_flags: Optional[str] = None) -> list[plan_lib.Run]:
  """Trains the runs that are not done (repairing partial ones); returns them.

  Every run's workdir is checked first (``plan.check_resumable``: another config's run is a
  ConfigError before anything trains), then inspected and repaired. A run that raises is
  logged with its error and left unfinished, so the next call tries it again; the others go
  on. ``jobs > 1`` trains that many runs at a time in spawned worker processes whose
  ``XLA_FLAGS`` is ``xla_flags`` (None: inherited; see :func:`worker_xla_flags`).
  """
  for r in runs:
    plan_lib.check_resumable(r)
  todo = []
  for r in runs:
    state = inspect_member(r.workdir)
    if state.status == "done":
      continue
    if state.reason:
      log(f"{r.workdir}: {state.reason}; "
          f"{'moved aside, training again' if state.status == 'redo' else 'resuming'}.")
    repair_member(r.workdir, state)
    todo.append(r)
  # Seed-major order: a setting's first seed compiles (into the persistent cache) while the
  # other settings start, so its later seeds mostly load their programs from the cache.
  todo.sort(key=lambda r: r.seed)
  if len(runs) > len(todo):
    log(f"{len(runs) - len(todo)} of {len(runs)} runs already done (summary.json), skipped.")
  if not todo:
    return []
  errors = []

  def report(i: int, run: plan_lib.Run, result: dict) -> None:
    if "error" in result:
      errors.append((run, result["error"]))
      log(f"[{i}/{len(todo)}] {run.workdir}: ERROR {result['error']}")
      return
    s = result["summary"]
    acc = (s.get("final") or {}).get("test_accuracy")
    acc_text = f"test accuracy {acc:.4f}" if isinstance(acc, float) else "no evaluation"
    log(f"[{i}/{len(todo)}] {run.workdir}: {s['status']}, {acc_text} "
        f"({result['seconds']:.0f} s)")

  if jobs <= 1:
    configure_jax(jax_cache_dir)
    for i, run in enumerate(todo, 1):
      report(i, run, train_one(run.config, run.workdir))
  else:
    ctx = multiprocessing.get_context("spawn")
    with concurrent.futures.ProcessPoolExecutor(
        max_workers=min(jobs, len(todo)), mp_context=ctx, initializer=_worker_init,
        initargs=(jax_cache_dir, xla_flags)) as pool:
      futures = {pool.submit(train_one, r.config, r.workdir): r for r in todo}
      for i, future in enumerate(concurrent.futures.as_completed(futures), 1):
        try:
          result = future.result()
        except Exception as e:  # pylint: disable=broad-except  (a worker died)
          result = {"error": f"worker process failed: {type(e).__name__}: {e}"}
        report(i, futures[future], result)
  if errors:
    log(f"{len(errors)} run(s) failed; they have no summary.json and run again next time.")
  return todo
