"""Stacked runs against solo runs: member-steps per second, and the wall time of a study.

* ``stacked``: the loop's own programs (``loop._validated_setup``: the pipeline, the jitted
  step, a stack's vmapped step) for the MNIST-1D CNN (the main job) and MLP at batch 100.
  Candidates, interleaved in one process: one solo run (``--max_members=1``: its
  member-steps/s is its steps/s; every solo member of a sweep costs the same) and stacks of K
  members that differ in seed and learning rate (each member its own data order). Reported:
  member-steps/s = K x stack steps/s, and its ratio to the solo run.
* ``stacked_study``: ``experiments.compare`` on a 16-run study (4 learning rates x 4 seeds)
  with ``--max_members=16`` and ``--max_members=1`` at ``--jobs=1``, alternating, each in a
  fresh process with the compilation cache off (every solo run compiles its own programs, as
  on a fresh machine); medians of the wall times and their ratio.
"""

from __future__ import annotations

import os
import statistics
import sys
import tempfile
import time
from typing import Sequence

import numpy as np

from experiments.bench import options
from experiments.bench import timing

STUDY_RUNS = 16


def _configs(model: str, k: int, batch: int) -> list:
  from configs import default  # pylint: disable=g-import-not-at-top
  out = []
  for m in range(k):
    config = default.get_config()
    config.model.name = model
    config.batch_size = batch
    config.seed = m
    config.optimizer.learning_rate = float(np.geomspace(1e-3, 3e-2, max(k, 2))[m])
    out.append(config)
  return out


def stack_runner(model: str, k: int, batch: int) -> timing.Runner:
  """``run(n)``: n steps of the loop's program for K members (K = 1: the solo program)."""
  from flaxopt.training import loop  # pylint: disable=g-import-not-at-top
  setup = loop._validated_setup(_configs(model, k, batch) if k > 1  # pylint: disable=protected-access
                                else _configs(model, 1, batch)[0])
  holder = {"state": loop._init_states(setup),  # pylint: disable=protected-access
            "sums": setup.par.zeros_sums(k if k > 1 else 0), "step": 0,
            "active": setup.par.put(np.ones(k, bool)) if k > 1 else None}

  def run(n: int) -> None:
    state, sums, step = holder["state"], holder["sums"], holder["step"]
    for _ in range(n):
      state, sums = setup.train_fn(state, setup.pipe.batch(step), sums, holder["active"])
      step += 1
    timing.block(sums)
    holder.update(state=state, sums=sums, step=step)
  return run


def bench_stacked(models: Sequence[str], members: Sequence[int], batch: int,
                  opts: options.Options) -> dict:
  """Member-steps/s of stacks of K against one solo run, interleaved, per model."""
  out = {}
  for model in models:
    runners = {"solo": stack_runner(model, 1, batch)}
    for k in members:
      if k > 1:
        runners[f"stack_{k}"] = stack_runner(model, k, batch)
    res = options.compare(runners, opts, baseline="solo")
    sizes = {"solo": 1, **{f"stack_{k}": k for k in members if k > 1}}
    member_sps = {name: sizes[name] / res["median_s"][name] for name in runners}
    # Gain: median over rounds of (K t_solo / t_stack) = K / ratio.
    gain = {name: sizes[name] / res["ratio"][name] for name in runners}
    out[f"{model}_b{batch}"] = {"member_steps_per_sec": member_sps, "gain_over_solo": gain,
                                "timing": res}
    print(f"  stacked {model}_b{batch}: " + ", ".join(
        f"{n} {member_sps[n]:.0f} member-steps/s ({gain[n]:.2f}x)" for n in runners),
          flush=True)
  return out


def _study_cmd(workdir: str, model: str, max_members: int, steps: int) -> list[str]:
  lrs = ",".join(f"{lr:.4g}" for lr in np.geomspace(1e-3, 3e-2, 4))
  return [sys.executable, "-m", "experiments.compare", f"--workdir={workdir}",
          f"--axes=optimizer.learning_rate={lrs}", "--seeds=0:4", "--lr_grid=",
          f"--config.model.name={model}", f"--config.num_train_steps={steps}",
          f"--config.eval_every={steps // 4}", "--config.checkpoint_every=0",
          "--jobs=1", f"--max_members={max_members}", "--jax_cache_dir="]


def bench_stacked_study(models: Sequence[str], steps: int, repeats: int) -> dict:
  """Wall time of a 16-run study, ``--max_members=16`` vs ``1``, alternating repeats."""
  out = {}
  for model in models:
    times: dict[str, list[float]] = {"max_members_16": [], "max_members_1": []}
    for r in range(repeats):
      for label in (sorted(times) if r % 2 else sorted(times, reverse=True)):
        with tempfile.TemporaryDirectory() as tmp:
          t = time.perf_counter()
          res = timing.run_subprocess(_study_cmd(os.path.join(tmp, "study"), model,
                                                 int(label.rsplit("_", 1)[1]), steps),
                                      timeout=3600)
          if res.get("returncode", 0) != 0:
            raise RuntimeError(f"study {label} failed: {str(res)[-2000:]}")
          times[label].append(time.perf_counter() - t)
    med = {k: statistics.median(v) for k, v in times.items()}
    out[model] = {"runs": STUDY_RUNS, "steps": steps, "seconds": times, "median_s": med,
                  "speedup": med["max_members_1"] / med["max_members_16"]}
    print(f"  study {model}: " + ", ".join(f"{k} {v:.0f} s" for k, v in med.items()) +
          f" ({out[model]['speedup']:.2f}x)", flush=True)
  return out
