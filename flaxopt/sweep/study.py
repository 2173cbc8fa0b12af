"""Running a study end to end: validate, tune the learning rate, train, report.

``run_study(study, workdir)`` is what ``python -m experiments.compare`` runs. With an
``lr_grid`` the learning rate is first tuned DeepOBS-style (Schneider et al., 2019, "DeepOBS:
a deep learning optimizer benchmark suite"): every grid value trains on ``tune_seeds`` seeds
with ``validation_size`` training examples held out; the value with the best mean final
validation accuracy (diverged runs excluded) then trains on the full training split for
every seed and is evaluated on the test split (the test split reports, it never selects).

Outputs in ``report_dir`` (default the workdir): ``<name>.md`` and ``<name>.csv`` (mean ± std
test accuracy over seeds, steps and seconds to ``target_accuracy``, final losses, number of
diverged runs) and in ``image_dir``: ``compare_<name>_curves.png`` and, with an lr grid,
``compare_<name>_lr.png``. Restarted after an interruption anywhere, a study redoes no
completed run and repairs partial ones (``flaxopt.sweep.execute``).
"""

from __future__ import annotations

import dataclasses
import os
from typing import Callable, Optional

import ml_collections

from flaxopt.sweep import execute as execute_lib
from flaxopt.sweep import plan as plan_lib
from flaxopt.sweep import report as report_lib
from flaxopt.sweep import spec as spec_lib
from flaxopt.training.config import ConfigError

__all__ = ["StudyResult", "run_study", "validate_run_config"]


def validate_run_config(config: ml_collections.ConfigDict) -> None:
  """The loop's checks plus building the optimizer and the augmentation pipeline (kwargs)."""
  import flaxopt.functional as F  # pylint: disable=g-import-not-at-top
  from flaxopt import training  # pylint: disable=g-import-not-at-top
  training.validate_config(config)
  training.make_optimizer(config.optimizer, training.make_schedule(config.optimizer,
                                                                   config.num_train_steps))
  F.augment_pipeline_from_config(config.augment)


@dataclasses.dataclass
class StudyResult:
  """What ``run_study`` did and found."""

  rows: list[dict]  # leaderboard rows, best first
  trained: list[plan_lib.Run]  # runs trained by this call (the others were already done)
  chosen_lr: dict[str, Optional[float]]  # setting key -> tuned lr (empty without a grid)
  files: list[str]  # leaderboard and image files written


def _tune(study, settings, grid, tune_seeds, workdir, *, execute, log):
  """Phase 1: tuning runs; returns (trained runs, setting key -> lr -> scores, chosen lr)."""
  tune_runs = plan_lib.plan_tuning_runs(study, workdir)
  trained = execute(tune_runs) if execute else []
  tuning: dict[str, dict[float, list[float]]] = {}
  for r in tune_runs:
    summary = report_lib.read_summary(r.workdir)
    if summary:
      score = report_lib.final_metric(summary, "val_accuracy") \
          if summary.get("status") != "diverged" else float("nan")
      tuning.setdefault(r.setting.key, {}).setdefault(r.lr, []).append(score)
  chosen: dict[str, Optional[float]] = {}
  for s in settings:
    complete = len(tuning.get(s.key, {})) == len(grid) and all(
        len(v) == len(tune_seeds) for v in tuning[s.key].values())
    chosen[s.key] = report_lib.select_learning_rate(tuning[s.key]) if complete else None
    if complete and chosen[s.key] is None:
      log(f"{s.key}: every learning rate of the grid diverged; no final runs.")
  return trained, tuning, chosen


def run_study(study: ml_collections.ConfigDict, workdir: str, *, jobs: int = 1,
              report_dir: Optional[str] = None, image_dir: Optional[str] = None,
              name: Optional[str] = None, jax_cache_dir: str = "",
              log: Callable[[str], None] = print, report_only: bool = False,
              dry_run: bool = False, xla_flags: Optional[str] = None,
              max_members: int = 1) -> Optional[StudyResult]:
  """Runs (or resumes) the study in ``workdir``; writes the leaderboard and plots.

  ``report_only``: train nothing, report the runs present. ``dry_run``: validate every
  setting's config and list the settings, then return None. ``jobs``, ``jax_cache_dir``,
  ``xla_flags``: see ``execute.execute``.

  Raises:
    ConfigError: for a study that cannot run (bad axes, unknown fields, a config the
      training loop rejects), before anything trains or is written.
  """
  if int(max_members) <= 0:
    raise ConfigError(f"max_members={max_members!r}: must be >= 1")
  study = spec_lib.as_study(study)
  base = study.base
  settings = spec_lib.make_settings(list(study.axes), list(study.variants))
  seeds = spec_lib.parse_seeds(study.seeds)
  grid = spec_lib.parse_lr_grid(study.lr_grid)
  tune_seeds = seeds[:max(1, int(study.tune_seeds))]
  name = name or study.name or os.path.basename(os.path.normpath(workdir))
  target = float(study.target_accuracy)
  for s in settings:  # Every config must be valid before anything trains.
    try:
      validate_run_config(plan_lib.run_config(base, s, seeds[0], grid[0] if grid else None,
                                              int(study.validation_size) if grid else None))
    except ValueError as e:
      raise ConfigError(f"Setting {s.key!r}: {' '.join(str(e).split())}") from e
  if dry_run:
    tune = f" (+ {len(grid)} lrs x {len(tune_seeds)} seeds of tuning each)" if grid else ""
    log(f"{len(settings)} settings x {len(seeds)} seeds{tune}; all configs valid:")
    for s in settings:
      log(f"  {s.dirname}: {dict(s.overrides)}")
    return None

  def execute(runs):
    return execute_lib.execute(runs, jobs, jax_cache_dir, log, xla_flags, max_members)

  run = None if report_only else execute
  trained: list[plan_lib.Run] = []
  chosen: dict[str, Optional[float]] = {}
  tuning: dict[str, dict[float, list[float]]] = {}
  if grid:
    if run:
      log(f"Tuning the learning rate: {len(settings)} settings x {len(grid)} lrs x "
          f"{len(tune_seeds)} seeds.")
    trained, tuning, chosen = _tune(study, settings, grid, tune_seeds, workdir, execute=run,
                                    log=log)
  final_runs = plan_lib.plan_final_runs(study, workdir, chosen if grid else None)
  if run:
    log(f"Final runs: {len(settings)} settings x {len(seeds)} seeds.")
    trained += run(final_runs)
  rows, histories = _rows(study, settings, seeds, final_runs, chosen, target)
  files = _write_report(study, name, rows, settings, histories, tuning, grid, tune_seeds,
                        target, report_dir or workdir, image_dir or report_dir or workdir)
  return StudyResult(rows=rows, trained=trained, chosen_lr=chosen, files=files)


def _rows(study, settings, seeds, final_runs, chosen, target):
  """Leaderboard rows (best first) and each setting's per-seed metric histories."""
  rows, histories = [], {}
  for s in settings:
    runs = [r for r in final_runs if r.setting == s]
    summaries = [report_lib.read_summary(r.workdir) for r in runs]
    histories[s.key] = [report_lib.read_metrics(r.workdir) if sm else []
                        for r, sm in zip(runs, summaries)]
    if not runs:  # every learning rate diverged while tuning
      summaries, histories[s.key] = [None] * len(seeds), [[] for _ in seeds]
    row = report_lib.setting_row(s, summaries, histories[s.key], target)
    config = plan_lib.run_config(study.base, s, seeds[0], chosen.get(s.key))
    row["lr"] = float(config.optimizer.learning_rate)
    row["params"] = report_lib.count_params(config)
    row["setting"] = s.key
    rows.append(row)
  rows.sort(key=report_lib.sort_key)
  return rows, histories


def _write_report(study, name, rows, settings, histories, tuning, grid, tune_seeds, target,
                  report_dir, image_dir) -> list[str]:
  """Writes ``<name>.md``, ``<name>.csv`` and the plots; returns their paths."""
  seeds = spec_lib.parse_seeds(study.seeds)
  os.makedirs(report_dir, exist_ok=True)
  os.makedirs(image_dir, exist_ok=True)
  files = [os.path.join(report_dir, f"{name}.md"), os.path.join(report_dir, f"{name}.csv")]
  title = study.title or name
  note = (f"Mean ± std over seeds {','.join(map(str, seeds))} of the final test accuracy; "
          f"steps / seconds to {target:g} test accuracy averaged over the seeds that reached it "
          "(seconds include setup and compilation). ")
  if grid:
    note += (f"Learning rate tuned per setting on {int(study.validation_size)} held-out "
             f"training examples over {grid} ({len(tune_seeds)} seed(s)); the chosen lr then "
             "trained on the full training split. ")
  axis_names = [k for k, _ in settings[0].labels] if settings else []
  report_lib.write_text(files[0], report_lib.leaderboard_markdown(
      rows, axis_names, target, f"**{title}**") + "\n" + note + "\n")
  report_lib.write_text(files[1], report_lib.leaderboard_csv(rows))
  if any(any(h) for h in histories.values()):
    files.append(os.path.join(image_dir, f"compare_{name}_curves.png"))
    report_lib.plot_curves(settings, histories, files[-1], title)
  if grid and tuning:
    files.append(os.path.join(image_dir, f"compare_{name}_lr.png"))
    report_lib.plot_lr([s for s in settings if s.key in tuning], tuning, files[-1], title)
  return files
