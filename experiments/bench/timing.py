"""Timing: interleaved rounds, medians, ratios; runners; subprocesses with peak RSS.

Every comparison runs its candidates in one process, interleaved: each round runs every
candidate for the same number of calls (the order rotated per round), and we report the
median over rounds of the per-call time and of the per-round *ratio* to the baseline. The
machine is shared and noisy; ratios of interleaved medians are what the README quotes, never
single times. ``os.getloadavg()`` is recorded before and after every section.
"""

from __future__ import annotations

import os
import statistics
import subprocess
import tempfile
import time
from typing import Any, Callable, Mapping, Optional, Sequence

import jax

Runner = Callable[[int], None]  # run(n): n calls, returns when the work is done.
REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _calibrate(run: Runner, round_s: float) -> int:
  """Calls per round so one candidate's round lasts about ``round_s`` seconds (>= 1)."""
  n = 1
  while True:
    t = time.perf_counter()
    run(n)
    dt = time.perf_counter() - t
    if dt >= round_s / 4 or n >= 1 << 16:
      return max(1, int(round(n * round_s / max(dt, 1e-9))))
    n *= 4


def interleaved(runners: Mapping[str, Runner], *, rounds: int, round_s: float,
                baseline: Optional[str] = None, number: Optional[int] = None) -> dict:
  """Times ``runners`` side by side; returns per-call medians and ratios to ``baseline``.

  Every runner is warmed up (compiled) and calibrated first; then each of ``rounds`` rounds
  calls every runner ``number`` times (the slowest runner's calibration), in an order rotated
  by one each round. Result: ``{'number', 'rounds', 'seconds': {name: [per-call s per
  round]}, 'median_s': {name: s}, 'ratio': {name: median over rounds of t_name / t_base}}``,
  plus ``median_cpu_s`` / ``cpu_ratio``, the same for process CPU time (all threads): on a
  loaded machine CPU time measures the work done, little affected by waiting for a core.
  """
  names = list(runners)
  baseline = baseline or names[0]
  for run in runners.values():
    run(1)  # compile / warm caches
  if number is None:
    number = min(_calibrate(run, round_s) for run in runners.values())
  seconds: dict[str, list[float]] = {k: [] for k in names}
  cpu: dict[str, list[float]] = {k: [] for k in names}
  for r in range(rounds):
    order = names[r % len(names):] + names[:r % len(names)]
    for name in order:
      t, c = time.perf_counter(), time.process_time()
      runners[name](number)
      cpu[name].append((time.process_time() - c) / number)
      seconds[name].append((time.perf_counter() - t) / number)

  def ratios(times):
    return {k: statistics.median(a / max(b, 1e-12) for a, b in zip(times[k], times[baseline]))
            for k in names}

  return {"number": number, "rounds": rounds, "baseline": baseline,
          "median_s": {k: statistics.median(v) for k, v in seconds.items()},
          "ratio": ratios(seconds), "seconds": seconds,
          "median_cpu_s": {k: statistics.median(v) for k, v in cpu.items()},
          "cpu_ratio": ratios(cpu)}



def block(tree: Any) -> None:
  jax.block_until_ready(tree)


def jax_runner(fn: Callable[..., Any], *args: Any) -> Runner:
  """``run(n)``: calls the (jitted) ``fn(*args)`` n times and blocks on the last result."""
  def run(n: int) -> None:
    out = None
    for _ in range(n):
      out = fn(*args)
    block(out)
  return run


def stateful_runner(step: Callable[..., Any], carry: tuple, *const: Any) -> Runner:
  """``run(n)``: ``carry = step(*carry, *const)`` n times (carry donated), then blocks."""
  holder = [carry]

  def run(n: int) -> None:
    c = holder[0]
    for _ in range(n):
      c = step(*c, *const)
    block(c)
    holder[0] = c
  return run


def load() -> dict:
  """This machine's load averages (1, 5, 15 min) and CPU count, for the record."""
  return {"loadavg": [round(x, 2) for x in os.getloadavg()],
          "cpus": len(os.sched_getaffinity(0))}


def run_subprocess(cmd: Sequence[str], *, env: Optional[Mapping[str, str]] = None,
                   timeout: Optional[float] = None, cwd: str = REPO) -> dict:
  """Runs ``cmd``; returns wall time, exit code, peak RSS (``wait4``), and output tail."""
  t = time.perf_counter()
  with tempfile.TemporaryFile() as log:
    proc = subprocess.Popen(cmd, cwd=cwd, env=dict(env or os.environ), stdout=log,
                            stderr=subprocess.STDOUT)
    deadline = None if timeout is None else t + timeout
    status, usage = 0, None
    while True:
      pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
      if pid:
        break
      if deadline is not None and time.perf_counter() > deadline:
        proc.kill()
        _, status, usage = os.wait4(proc.pid, 0)
        break
      time.sleep(0.02)
    wall = time.perf_counter() - t
    proc.returncode = os.waitstatus_to_exitcode(status)
    log.seek(0)
    tail = log.read().decode(errors="replace")[-3000:]
  timed_out = deadline is not None and wall > timeout
  return {"wall_s": wall, "returncode": proc.returncode, "timed_out": timed_out,
          "maxrss_bytes": usage.ru_maxrss * 1024, "user_s": usage.ru_utime,
          "sys_s": usage.ru_stime, "output_tail": tail}

