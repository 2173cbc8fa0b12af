"""End to end: the main job (``python -m experiments.train``) against the same recipe in
PyTorch (``python -m experiments.bench_torch``), as subprocesses: wall time, compile time,
steps/s (from each side's summary) and peak RSS.

Both sides do the same work: the same arrays (written once to an ``.npz``), the same number
of steps, a test-set evaluation every ``opts.e2e_eval_every`` steps and at the end, a
checkpoint every 3000 steps and at the end. flaxopt's progress line (``log_every``, a host
sync) is set to the evaluation interval too, as the PyTorch script prints only at
evaluations.
"""

from __future__ import annotations

import json
import os
import shutil
import statistics
import sys
import tempfile
from typing import Any, Mapping

import numpy as np

from experiments.bench import options
from experiments.bench.timing import load
from experiments.bench.timing import run_subprocess

__all__ = ["CHECKPOINT_EVERY", "bench_end_to_end", "flaxopt_command", "torch_command"]

CHECKPOINT_EVERY = 3000


def flaxopt_command(workdir: str, cache: str, opts: options.Options, steps: int) -> list[str]:
  """``experiments.train`` with the shared step budget, evaluation and checkpoint intervals."""
  return [sys.executable, "-m", "experiments.train", f"--workdir={workdir}",
          f"--jax_cache_dir={cache}", f"--config.num_train_steps={steps}",
          f"--config.eval_every={opts.e2e_eval_every}",
          f"--config.log_every={opts.e2e_eval_every}",
          f"--config.checkpoint_every={CHECKPOINT_EVERY}", *opts.e2e_args]


def torch_command(npz: str, out_json: str, workdir: str, opts: options.Options,
                  steps: int) -> list[str]:
  """``experiments.bench_torch`` with the same budget and intervals as ``flaxopt_command``."""
  return [sys.executable, "-m", "experiments.bench_torch", f"--data={npz}", f"--out={out_json}",
          f"--steps={steps}", f"--eval_every={opts.e2e_eval_every}",
          f"--checkpoint_every={CHECKPOINT_EVERY}", f"--workdir={workdir}",
          f"--threads={opts.e2e_torch_threads}"]


def _drop_log_if_ok(res: dict) -> None:
  if res["returncode"] == 0:
    res.pop("output_tail")


def _timed(cmd: list[str]) -> dict:
  before = load()
  res = run_subprocess(cmd)
  res["load_before"], res["load_after"] = before, load()
  return res


def bench_end_to_end(opts: options.Options, data: Mapping[str, Any]) -> dict:
  """Main job vs the PyTorch recipe, alternating; the first flaxopt run has a cold XLA cache."""
  repeats = 1 if opts.quick else opts.e2e_repeats
  steps = min(opts.e2e_steps, 1000) if opts.quick else opts.e2e_steps
  tmp = tempfile.mkdtemp(prefix="bench_e2e_")
  try:
    npz = os.path.join(tmp, "mnist1d.npz")
    np.savez(npz, **{k: data[k] for k in ("x_train", "y_train", "x_test", "y_test")})
    cache = os.path.join(tmp, "xla_cache")
    bt = options.torch_module(opts)
    runs: dict[str, list] = {"flaxopt_cold_cache": [], "flaxopt_warm_cache": [], "torch": []}
    for r in range(repeats):
      workdir = os.path.join(tmp, f"flaxopt_{r}")
      res = _timed(flaxopt_command(workdir, cache, opts, steps))
      summary_path = os.path.join(workdir, "summary.json")
      if os.path.exists(summary_path):
        with open(summary_path) as f:
          summary = json.load(f)
        res["summary"] = {k: summary.get(k) for k in (
            "status", "step", "wall_time", "setup_time", "compile_time", "train_time",
            "steps_per_sec", "final")}
      _drop_log_if_ok(res)
      runs["flaxopt_cold_cache" if r == 0 else "flaxopt_warm_cache"].append(res)
      print(f"  e2e flaxopt run {r}: {res['wall_s']:.1f} s (rc {res['returncode']})", flush=True)
      if bt is not None:
        out_json = os.path.join(tmp, f"torch_{r}.json")
        tworkdir = os.path.join(tmp, f"torch_{r}")
        os.makedirs(tworkdir)
        res = _timed(torch_command(npz, out_json, tworkdir, opts, steps))
        if os.path.exists(out_json):
          with open(out_json) as f:
            res["summary"] = json.load(f)
        _drop_log_if_ok(res)
        runs["torch"].append(res)
        print(f"  e2e torch run {r}: {res['wall_s']:.1f} s (rc {res['returncode']})",
              flush=True)
  finally:
    shutil.rmtree(tmp, ignore_errors=True)
  med = {k: statistics.median(x["wall_s"] for x in v) for k, v in runs.items() if v}
  return {"steps": steps, "eval_every": opts.e2e_eval_every, "runs": runs,
          "median_wall_s": med, "torch_threads": opts.e2e_torch_threads,
          "synthetic_data": bool(data["synthetic"])}
