"""Planning a study's runs: what trains where, with which resolved config.

Each run (a *member* of the study) trains in its own workdir, the same files a solo
``python -m experiments.train`` run writes: ``<workdir>/<setting>/seed_<s>`` for the final
runs and ``<workdir>/<setting>/tune/lr_<lr>/seed_<s>`` for learning-rate tuning (DeepOBS-style,
Schneider et al., 2019: every grid value on ``tune_seeds`` seeds with ``validation_size``
training examples held out).
"""

from __future__ import annotations

import dataclasses
import json
import os
from typing import Any, Iterable, Mapping, Optional

import ml_collections

from flaxopt.sweep import spec as spec_lib
from flaxopt.training.config import apply_overrides
from flaxopt.training.config import ConfigError

__all__ = ["Run", "check_resumable", "plan_final_runs", "plan_tuning_runs", "run_config"]

SUMMARY = "summary.json"
METRICS = "metrics.jsonl"
CONFIG = "config.json"


@dataclasses.dataclass
class Run:
  """One training run: its setting, seed, workdir and resolved config."""

  setting: spec_lib.Setting
  seed: int
  workdir: str
  config: ml_collections.ConfigDict
  lr: Optional[float] = None  # the grid value of a tuning run


def run_config(base: ml_collections.ConfigDict, setting: spec_lib.Setting, seed: int,
               lr: Optional[float] = None,
               validation_size: Optional[int] = None) -> ml_collections.ConfigDict:
  """``base`` with the setting's overrides, the seed, and optionally the lr and validation size."""
  overrides = list(setting.overrides) + [("seed", seed)]
  if lr is not None:
    overrides.append(("optimizer.learning_rate", lr))
  if validation_size is not None:
    overrides.append(("dataset.validation_size", validation_size))
  return apply_overrides(base, overrides)


def lr_dirname(lr: float) -> str:
  return f"lr_{lr:.4g}"


def plan_tuning_runs(study: ml_collections.ConfigDict, workdir: str) -> list[Run]:
  """Learning-rate tuning runs: every setting x grid lr x tuning seed, with a validation split.

  In ``<workdir>/<setting>/tune/lr_<lr>/seed_<s>``; ``dataset.validation_size`` is the
  study's. Empty without an ``lr_grid``.
  """
  study = spec_lib.as_study(study)
  seeds = spec_lib.parse_seeds(study.seeds)[:max(1, int(study.tune_seeds))]
  return [Run(s, seed, os.path.join(workdir, s.dirname, "tune", lr_dirname(lr), f"seed_{seed}"),
              run_config(study.base, s, seed, lr, int(study.validation_size)), lr)
          for s in spec_lib.make_settings(list(study.axes), list(study.variants))
          for lr in spec_lib.parse_lr_grid(study.lr_grid) for seed in seeds]


def plan_final_runs(study: ml_collections.ConfigDict, workdir: str,
                    chosen_lr: Optional[Mapping[str, Optional[float]]] = None) -> list[Run]:
  """Final runs: every setting x seed in ``<workdir>/<setting>/seed_<s>``.

  With ``chosen_lr`` (setting key -> tuned lr) each setting trains at its lr; settings whose
  lr is None (tuning incomplete or every lr diverged) get no runs.
  """
  study = spec_lib.as_study(study)
  runs = []
  for s in spec_lib.make_settings(list(study.axes), list(study.variants)):
    lr = None if chosen_lr is None else chosen_lr.get(s.key)
    if chosen_lr is not None and lr is None:
      continue
    runs += [Run(s, seed, os.path.join(workdir, s.dirname, f"seed_{seed}"),
                 run_config(study.base, s, seed, lr))
             for seed in spec_lib.parse_seeds(study.seeds)]
  return runs


def config_json(config: ml_collections.ConfigDict) -> Any:
  """The config as the loop writes it to config.json (JSON types, keys sorted)."""
  from flaxopt.training import metrics  # pylint: disable=g-import-not-at-top
  return json.loads(json.dumps(metrics.to_jsonable(config.to_dict()), sort_keys=True))


def check_resumable(run: Run) -> None:
  """Raises ConfigError if ``run.workdir`` holds a run of a different config.

  A config.json that is not valid JSON (a half-written file) is not a different config:
  ``execute`` repairs that member.
  """
  path = os.path.join(run.workdir, CONFIG)
  try:
    with open(path) as f:
      stored = json.load(f)
  except (OSError, ValueError):
    return
  diff = sorted(_diff_fields(stored, config_json(run.config)))
  if diff:
    raise ConfigError(f"{run.workdir} holds a run of another config (fields {diff} differ); "
                      "use another --workdir or delete it.")


def _diff_fields(a: Any, b: Any, prefix: str = "") -> Iterable[str]:
  if isinstance(a, dict) and isinstance(b, dict):
    for k in set(a) | set(b):
      yield from _diff_fields(a.get(k), b.get(k), f"{prefix}{k}.")
  elif a != b:
    yield prefix.rstrip(".")
