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

Stacks (:func:`group_stacks`): runs whose configs differ only in seed and numeric
hyperparameters (``flaxopt.training.members``) train together as one vmapped program of at
most ``max_members`` members (``training.train_stack``); each member still trains in its own
workdir with a solo run's files. What cannot stack (another architecture, another optimizer
name, ...) trains in its own stack, and the reason is logged once per group. A stack that runs
out of memory is split in half and retried; one that cannot be traced with per-member values
(an optimizer branching on a hyperparameter's value) trains its members solo, reason logged.
``jobs > 1`` spreads the stacks over worker processes.
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

__all__ = ["FINISHED", "MemberState", "execute", "group_stacks", "inspect_member",
           "load_json", "repair_member", "scan_metrics", "train_group", "worker_xla_flags"]

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


def group_stacks(runs: Sequence[plan_lib.Run], max_members: int,
                 log: Callable[[str], None] = print) -> list[list[plan_lib.Run]]:
  """The runs in stacks of at most ``max_members``: equal ``members.stack_key``, in order.

  A stack takes runs of one key in their given order; a key with more runs than
  ``max_members`` becomes several stacks of near-equal size. Keys that differ only in the
  fields that cannot stack are logged once, naming the first such field.
  """
  if int(max_members) <= 0:
    raise ValueError(f"max_members={max_members!r}: must be >= 1")
  from flaxopt.training import members  # pylint: disable=g-import-not-at-top
  groups: dict[str, list[plan_lib.Run]] = {}
  for r in runs:
    groups.setdefault(members.stack_key(r.config), []).append(r)
  firsts = [g[0] for g in groups.values()]
  for a, b in zip(firsts, firsts[1:]):
    log(f"{b.workdir} trains apart from {a.workdir}: "
        f"{members.stack_problem([a.config, b.config])}.")
  stacks = []
  for group in groups.values():
    n = -(-len(group) // int(max_members))
    size = -(-len(group) // n)
    stacks += [group[i:i + size] for i in range(0, len(group), size)]
  return stacks


def _is_out_of_memory(error: BaseException) -> bool:
  text = f"{type(error).__name__} {error}"
  return isinstance(error, MemoryError) or "RESOURCE_EXHAUSTED" in text or \
      "Out of memory" in text


def _is_untraceable(error: BaseException) -> bool:
  import jax  # pylint: disable=g-import-not-at-top
  return isinstance(error, (jax.errors.TracerBoolConversionError,
                            jax.errors.ConcretizationTypeError,
                            jax.errors.TracerIntegerConversionError))


def _failure(error: BaseException, t0: float) -> dict:
  return {"error": f"{type(error).__name__}: {' '.join(str(error).split())[:500]}",
          "seconds": time.time() - t0}


def train_group(configs: Sequence[ml_collections.ConfigDict], workdirs: Sequence[str],
                log: Callable[[str], None] = print) -> list[dict]:
  """Trains one stack; per member ``{'summary', 'seconds'}`` or ``{'error'}`` (never raises).

  Out of memory: the stack is split in half and each half retried (down to solo runs).
  Not traceable with per-member values: the members train solo, the reason logged.
  """
  from flaxopt import training  # pylint: disable=g-import-not-at-top
  t0 = time.time()
  try:
    if len(configs) == 1:
      summaries = [training.train_and_evaluate(configs[0], workdirs[0])]
    else:
      summaries = training.train_stack(list(configs), list(workdirs))
    seconds = time.time() - t0
    return [{"summary": s, "seconds": seconds, "members": len(configs)} for s in summaries]
  except Exception as e:  # pylint: disable=broad-except
    if len(configs) > 1 and (_is_out_of_memory(e) or _is_untraceable(e)):
      why = "out of memory" if _is_out_of_memory(e) else f"not traceable per member ({e})"
      half = len(configs) // 2 if _is_out_of_memory(e) else 1
      log(f"stack of {len(configs)} ({workdirs[0]}, ...): {' '.join(why.split())[:300]}; "
          f"training it in stacks of {half}.")
      out = []
      for i in range(0, len(configs), half):
        out += train_group(configs[i:i + half], workdirs[i:i + half], log)
      return out
    return [_failure(e, t0)] * len(configs)


def train_one(config: ml_collections.ConfigDict, workdir: str) -> dict:
  """Trains one run; returns ``{'summary': ...}`` or ``{'error': message}`` (never raises)."""
  return train_group([config], [workdir])[0]


def execute(runs: Sequence[plan_lib.Run], jobs: int = 1, jax_cache_dir: str = "",
            log: Callable[[str], None] = print,
            xla_flags: Optional[str] = None, max_members: int = 1) -> list[plan_lib.Run]:
  """Trains the runs that are not done (repairing partial ones); returns them.

  Every run's workdir is checked first (``plan.check_resumable``: another config's run is a
  ConfigError before anything trains), then inspected and repaired. The runs to train are
  grouped into stacks of at most ``max_members`` (:func:`group_stacks`; 1: every run solo).
  A run that raises is logged with its error and left unfinished, so the next call tries it
  again; the others go on. ``jobs > 1`` trains that many stacks at a time in spawned worker
  processes whose ``XLA_FLAGS`` is ``xla_flags`` (None: inherited; see
  :func:`worker_xla_flags`).
  """
  if int(max_members) <= 0:
    raise ValueError(f"max_members={max_members!r}: must be >= 1")
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
  stacks = group_stacks(todo, max_members, log) if max_members > 1 else [[r] for r in todo]
  if max_members > 1:
    log(f"{len(todo)} runs in {len(stacks)} stack(s) of up to {max_members} members.")
  errors = []
  done = [0]

  def report(stack: list, results: list) -> None:
    for run, result in zip(stack, results):
      done[0] += 1
      if "error" in result:
        errors.append((run, result["error"]))
        log(f"[{done[0]}/{len(todo)}] {run.workdir}: ERROR {result['error']}")
        continue
      s = result["summary"]
      acc = (s.get("final") or {}).get("test_accuracy")
      acc_text = f"test accuracy {acc:.4f}" if isinstance(acc, float) else "no evaluation"
      stacked = f", stack of {result['members']}" if result.get("members", 1) > 1 else ""
      log(f"[{done[0]}/{len(todo)}] {run.workdir}: {s['status']}, {acc_text} "
          f"({result['seconds']:.0f} s{stacked})")

  args = lambda stack: ([r.config for r in stack], [r.workdir for r in stack])
  if jobs <= 1:
    configure_jax(jax_cache_dir)
    for stack in stacks:
      report(stack, train_group(*args(stack), log=log))
  else:
    ctx = multiprocessing.get_context("spawn")
    with concurrent.futures.ProcessPoolExecutor(
        max_workers=min(jobs, len(stacks)), mp_context=ctx, initializer=_worker_init,
        initargs=(jax_cache_dir, xla_flags)) as pool:
      futures = {pool.submit(train_group, *args(stack), log=print): stack for stack in stacks}
      for future in concurrent.futures.as_completed(futures):
        stack = futures[future]
        try:
          results = future.result()
        except Exception as e:  # pylint: disable=broad-except  (a worker died)
          results = [{"error": f"worker process failed: {type(e).__name__}: {e}"}] * len(stack)
        report(stack, results)
  if errors:
    log(f"{len(errors)} run(s) failed; they have no summary.json and run again next time.")
  return todo
