"""The benchmark's options (one frozen record, built from flags by experiments/benchmark.py).

Every measurement takes its settings from an :class:`Options` passed down; nothing under
``experiments/bench`` reads flags. Also here: the timing entry point that applies the options
(:func:`compare`) and where the optional PyTorch reference comes from.
"""

from __future__ import annotations

import dataclasses
import os
from typing import Mapping, Optional

import jax

from experiments.bench import timing

__all__ = ["Options", "compare", "torch_device", "torch_module", "torch_thread_variants",
           "with_threads"]


@dataclasses.dataclass(frozen=True)
class Options:
  """What to measure and how long; the defaults are the committed runs' settings."""

  quick: bool = False  # smaller sizes and fewer rounds (a first look / GPU)
  rounds: int = 7  # interleaved rounds per comparison
  round_s: float = 0.25  # target seconds per candidate per round
  ops_rounds: int = 5  # interleaved rounds per op comparison (at most ``rounds``)
  opt_sizes: tuple[int, ...] = (10**6, 10**7)  # parameter counts, optimizers
  optimizers: tuple[str, ...] = ()  # optimizer names (() : every first-order one)
  torch_adam_sizes: tuple[int, ...] = (10**7, 5 * 10**7)  # flaxopt Adam vs PyTorch Adam
  ops_elements: int = 2**20  # elements per op input
  train_models: tuple[str, ...] = ("cnn", "mlp")
  train_batches: tuple[int, ...] = (100, 512)
  e2e_repeats: int = 2  # runs of each end-to-end job
  e2e_steps: int = 6000  # training steps of both end-to-end jobs
  e2e_eval_every: int = 1000  # test-set evaluations, the same on both sides
  e2e_args: tuple[str, ...] = ()  # extra --config.x=y flags for experiments.train
  e2e_torch_threads: int = 1  # PyTorch threads of the end-to-end script (0: every core)
  scaling_devices: tuple[int, ...] = (1, 2, 4)  # forced CPU devices
  scaling_steps: int = 300  # timed steps per scaling worker
  scaling_timeout: int = 120  # seconds before a scaling worker is killed
  stacked_members: tuple[int, ...] = (1, 4, 16, 64)  # stack sizes K, stacked
  stacked_models: tuple[str, ...] = ("mlp", "cnn")  # MNIST-1D models, stacked + stacked_study
  stacked_study_steps: int = 1000  # training steps of each of a study's 16 runs
  stacked_study_repeats: int = 2  # alternating repeats of each study command
  torch: bool = True  # run the PyTorch comparisons (if torch imports)
  torch_1thread: bool = True  # also time PyTorch with 1 thread (see torch_thread_variants)

  def __post_init__(self):
    for field in ("rounds", "ops_rounds", "e2e_repeats", "e2e_steps", "e2e_eval_every",
                  "scaling_steps", "scaling_timeout", "stacked_study_steps",
                  "stacked_study_repeats"):
      if getattr(self, field) < 1:
        raise ValueError(f"{field}={getattr(self, field)}: must be at least 1")
    if not self.round_s > 0:
      raise ValueError(f"round_s={self.round_s}: must be positive")

  @property
  def timing_rounds(self) -> int:
    return max(3, self.rounds // 2) if self.quick else self.rounds

  @property
  def timing_round_s(self) -> float:
    return self.round_s / 2 if self.quick else self.round_s


def compare(runners: Mapping[str, timing.Runner], opts: Options,
            baseline: Optional[str] = None, **kw) -> dict:
  """``timing.interleaved`` with the options' rounds and round length (``kw`` overrides)."""
  return timing.interleaved(runners, rounds=kw.pop("rounds", opts.timing_rounds),
                            round_s=kw.pop("round_s", opts.timing_round_s), baseline=baseline,
                            **kw)


def torch_module(opts: Options):
  """``experiments.bench.torch_ref`` or None (torch missing or ``opts.torch`` off)."""
  if not opts.torch:
    return None
  try:
    from experiments.bench import torch_ref  # pylint: disable=g-import-not-at-top
  except ImportError:
    return None
  return torch_ref


def torch_device() -> str:
  return "cuda" if jax.default_backend() == "gpu" else "cpu"


def torch_thread_variants(opts: Options) -> list[tuple[str, int]]:
  """PyTorch thread counts to time: the cores available ('' label), and 1 thread.

  On a loaded machine PyTorch's OpenMP regions wait for descheduled threads, so one thread
  can be many times faster than two; we report both and compare against the faster.
  """
  cores = len(os.sched_getaffinity(0))
  variants = [("", cores)]
  if cores > 1 and opts.torch_1thread and torch_device() == "cpu":
    variants.append(("_1thread", 1))
  return variants


def with_threads(bt, threads: int, run: timing.Runner) -> timing.Runner:
  def wrapped(n: int) -> None:
    bt.num_threads(threads)
    run(n)
  return wrapped
