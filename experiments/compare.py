r"""Sweeps config axes x seeds (x a learning-rate grid) and writes a leaderboard and plots.

::

  python -m experiments.compare --config=configs/studies/optimizers.py --workdir=runs/opt \
      --jobs=2 --report_dir=docs/studies --image_dir=docs/images

  # Any training config works as the base; axes, variants and seeds come from flags:
  python -m experiments.compare --config=configs/default.py --workdir=runs/x \
      --axes=optimizer.name=adam,nadam,sgd --axes=model.activation=relu,selu --seeds=0,1

A study config (``configs/studies/*.py``) is a ConfigDict with ``base`` (a training config)
and the study fields of ``default_study_fields()``: ``axes`` (``'field=v1,v2,...'``; values
split on ``'|'`` instead when the string holds one, so values may contain commas),
``variants`` (``'label: field=value; field=value'``, for settings that change different
fields), ``seeds``, ``lr_grid`` (``'1e-4:1e-1:7'`` log-spaced or ``'1e-3,1e-2'``),
``tune_seeds``, ``validation_size``, ``target_accuracy``. A plain training config (no
``base``) is taken as the base of a study with no axes. Every field can be overridden:
``--config.base.num_train_steps=2000``, ``--config.seeds=0,1,2``.

The settings are the product of the variants and the axes. For each setting and seed a run
trains in ``<workdir>/<setting>/seed_<s>`` (``flaxopt.training.train_and_evaluate``).
With an ``lr_grid`` the learning rate is first tuned DeepOBS-style (Schneider et al., 2019,
"DeepOBS: a deep learning optimizer benchmark suite"): every grid value trains on
``tune_seeds`` seeds with ``validation_size`` training examples held out
(``<setting>/tune/lr_<lr>/seed_<s>``); the value with the best mean final validation accuracy
(diverged runs excluded) is then trained on the full training split for every seed and
evaluated on the test split.

Resumable: a run whose ``summary.json`` exists (with the same ``config.json``) is not run
again, and an interrupted run resumes from its checkpoint. ``--jobs=N`` runs N independent
runs at a time in separate processes (one CPU device each; ``--jobs=1`` trains in this
process). Outputs in ``--report_dir`` (default the workdir): ``<name>.md`` and ``<name>.csv``
(mean ± std test accuracy over seeds, steps and seconds to ``target_accuracy``, final losses,
number of diverged runs) and in ``--image_dir``: ``compare_<name>_curves.png`` (test accuracy
and train loss against steps, mean over seeds with a min-max band) and, with an lr grid,
``compare_<name>_lr.png`` (validation accuracy against the learning rate).
"""

from __future__ import annotations

import concurrent.futures
import copy
import csv
import dataclasses
import io
import itertools
import json
import math
import multiprocessing
import os
import re
import sys
import types
import time
from typing import Any, Iterable, Mapping, Optional, Sequence

import ml_collections
import numpy as np
from absl import app
from absl import flags
from absl import logging
from ml_collections import config_flags

from flaxopt.training.config import apply_overrides  # pylint: disable=unused-import
from flaxopt.training.config import EXTENSIBLE_SECTIONS  # pylint: disable=unused-import

_REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

SUMMARY = "summary.json"
# Forces several host devices; stripped in worker processes (one CPU device per run).
_FORCE_DEVICES = re.compile(r"--xla_force_host_platform_device_count=\d+")


# ---------------------------------------------------------------------------------------
# Study fields and their string syntax.
# ---------------------------------------------------------------------------------------
def default_study_fields() -> ml_collections.ConfigDict:
  """Every study field with its default (a study config sets ``base`` plus some of these)."""
  s = ml_collections.ConfigDict()
  s.name = ""  # leaderboard / image name; '' -> the workdir's basename
  s.title = ""  # one line above the leaderboard
  s.axes = ()  # 'field=v1,v2,...' (or 'field=v1|v2' when values hold commas)
  s.variants = ()  # 'label: field=value; field=value' ('label:' alone: the base config)
  s.seeds = "0,1"  # comma-separated ints, or 'a:b' for range(a, b)
  s.lr_grid = ""  # '' none; 'lo:hi:n' log-spaced (inclusive); or 'v1,v2,...'
  s.tune_seeds = 1  # seeds (the first ones) each lr of the grid is tuned on
  s.validation_size = 1000  # training examples held out while tuning the lr
  s.target_accuracy = 0.9  # for steps / seconds to target
  return s


def parse_value(text: str) -> Any:
  """A command-line value: 'true'/'false' -> bool, ints, floats, else the string itself."""
  text = text.strip()
  lowered = text.lower()
  if lowered in ("true", "false"):
    return lowered == "true"
  for kind in (int, float):
    try:
      return kind(text)
    except ValueError:
      pass
  return text


def parse_axis(spec: str) -> tuple[str, list[Any]]:
  """``'field=v1,v2'`` -> ``(field, [v1, v2])``; values split on '|' if the spec holds one."""
  field, sep, values = spec.partition("=")
  field = field.strip()
  if not sep or not field or not values.strip():
    raise ValueError(f"Axis {spec!r} must look like 'field=value1,value2,...'.")
  parts = values.split("|") if "|" in values else values.split(",")
  parsed = [parse_value(p) for p in parts]
  if len(set(map(repr, parsed))) != len(parsed):
    raise ValueError(f"Axis {spec!r} repeats a value.")
  return field, parsed


def parse_variant(spec: str) -> tuple[str, list[tuple[str, Any]]]:
  """``'label: a.b=1; c=x,y'`` -> ``('label', [('a.b', 1), ('c', 'x,y')])``."""
  label, sep, rest = spec.partition(":")
  label = label.strip()
  if not sep or not label or "=" in label:
    raise ValueError(f"Variant {spec!r} must look like 'label: field=value; field=value'.")
  assignments = []
  for item in filter(str.strip, rest.split(";")):
    field, eq, value = item.partition("=")
    if not eq or not field.strip():
      raise ValueError(f"Variant {spec!r}: {item.strip()!r} is not 'field=value'.")
    assignments.append((field.strip(), parse_value(value)))
  return label, assignments


def parse_seeds(spec: Any) -> list[int]:
  """``'0,1,2'``, ``'0:3'`` (range), an int (that many seeds from 0) or a sequence of ints."""
  if isinstance(spec, int) and not isinstance(spec, bool):
    seeds = list(range(spec))
  elif isinstance(spec, str) and ":" in spec:
    lo, hi = (int(v) for v in spec.split(":"))
    seeds = list(range(lo, hi))
  elif isinstance(spec, str):
    seeds = [int(v) for v in spec.split(",") if v.strip()]
  else:
    seeds = [int(v) for v in spec]
  if not seeds or len(set(seeds)) != len(seeds):
    raise ValueError(f"seeds={spec!r} must name at least one seed, none twice.")
  return seeds


def parse_lr_grid(spec: Any) -> list[float]:
  """``'1e-4:1e-1:4'`` -> ``[1e-4, 1e-3, 1e-2, 1e-1]`` (log-spaced); ``'1e-3,1e-2'``; ``''``."""
  if isinstance(spec, (list, tuple)):
    grid = [float(v) for v in spec]
  elif not str(spec).strip():
    return []
  elif ":" in str(spec):
    lo, hi, num = str(spec).split(":")
    if float(lo) <= 0 or float(hi) <= float(lo) or int(num) < 2:
      raise ValueError(f"lr_grid={spec!r} needs 0 < lo < hi and at least 2 points.")
    grid = np.geomspace(float(lo), float(hi), int(num)).tolist()
  else:
    grid = [float(v) for v in str(spec).split(",") if v.strip()]
  if not grid or any(not v > 0 for v in grid):
    raise ValueError(f"lr_grid={spec!r} must hold positive learning rates.")
  return [float(f"{v:.4g}") for v in grid]


# ---------------------------------------------------------------------------------------
# Settings: the product of variants and axes, each a list of config overrides.
# ---------------------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class Setting:
  """One point of the sweep: its label per axis and the overrides that make it."""

  labels: tuple[tuple[str, str], ...]  # (axis name, value as text), in axis order
  overrides: tuple[tuple[str, Any], ...]  # (field, value) applied to the base config

  @property
  def key(self) -> str:
    """'variant,field=value,...' ('base' for the base config alone)."""
    parts = [v if k == "variant" else f"{k}={v}" for k, v in self.labels]
    return ",".join(parts) or "base"

  @property
  def dirname(self) -> str:
    """``key`` with characters other than letters, digits and ``._=,+-`` replaced by '_'."""
    return re.sub(r"[^\w.=,+-]+", "_", self.key).strip("_") or "_"


def make_settings(axes: Sequence[str], variants: Sequence[str]) -> list[Setting]:
  """The product of ``variants`` (first) and ``axes``, in the order given."""
  dims = []
  if variants:
    parsed = [parse_variant(v) for v in variants]
    labels = [label for label, _ in parsed]
    if len(set(labels)) != len(labels):
      raise ValueError(f"Variant labels repeat: {labels}.")
    dims.append([((("variant", label),), tuple(assign)) for label, assign in parsed])
  fields_seen = set()
  for spec in axes:
    field, values = parse_axis(spec)
    if field in fields_seen:
      raise ValueError(f"Axis field {field!r} given twice.")
    fields_seen.add(field)
    dims.append([(((field, _text(v)),), ((field, v),)) for v in values])
  settings = []
  for combo in itertools.product(*dims):
    labels = tuple(l for labs, _ in combo for l in labs)
    overrides = tuple(o for _, ovs in combo for o in ovs)
    settings.append(Setting(labels, overrides))
  dirnames = [s.dirname for s in settings]
  if len(set(dirnames)) != len(dirnames):
    raise ValueError(f"Settings map to the same directory name: {dirnames}.")
  return settings


def _text(value: Any) -> str:
  return "''" if value == "" else str(value)


# ---------------------------------------------------------------------------------------
# Runs: what to train where.
# ---------------------------------------------------------------------------------------
@dataclasses.dataclass
class Run:
  """One training run: its workdir and resolved config."""

  setting: Setting
  seed: int
  workdir: str
  config: ml_collections.ConfigDict
  lr: Optional[float] = None  # the grid value of a tuning run

  @property
  def done(self) -> bool:
    return os.path.exists(os.path.join(self.workdir, SUMMARY))


def _config_json(config: ml_collections.ConfigDict) -> Any:
  from flaxopt.training import metrics  # pylint: disable=g-import-not-at-top
  return json.loads(json.dumps(metrics.to_jsonable(config.to_dict()), sort_keys=True))


def check_resumable(run: Run) -> None:
  """Raises ValueError if ``run.workdir`` holds a run of a different config."""
  path = os.path.join(run.workdir, "config.json")
  if not os.path.exists(path):
    return
  with open(path) as f:
    stored = json.load(f)
  wanted = _config_json(run.config)
  diff = sorted(_diff_fields(stored, wanted))
  if diff:
    raise ValueError(f"{run.workdir} holds a run of another config (fields {diff} differ); "
                     "use another --workdir or delete it.")


def _diff_fields(a: Any, b: Any, prefix: str = "") -> Iterable[str]:
  if isinstance(a, dict) and isinstance(b, dict):
    for k in set(a) | set(b):
      yield from _diff_fields(a.get(k), b.get(k), f"{prefix}{k}.")
  elif a != b:
    yield prefix.rstrip(".")


def _run_config(base, setting: Setting, seed: int, lr: Optional[float] = None,
                validation_size: Optional[int] = None) -> ml_collections.ConfigDict:
  overrides = list(setting.overrides) + [("seed", seed)]
  if lr is not None:
    overrides.append(("optimizer.learning_rate", lr))
  if validation_size is not None:
    overrides.append(("dataset.validation_size", validation_size))
  return apply_overrides(base, overrides)


def _lr_dir(lr: float) -> str:
  return f"lr_{lr:.4g}"


# ---------------------------------------------------------------------------------------
# Executing runs: in this process, or in a pool of worker processes.
# ---------------------------------------------------------------------------------------
def _worker_init(jax_cache_dir: str) -> None:
  """Worker process setup: one CPU device, quiet logs, the persistent compilation cache."""
  flags_env = os.environ.get("XLA_FLAGS", "")
  os.environ["XLA_FLAGS"] = _FORCE_DEVICES.sub("", flags_env).strip()
  if not flags.FLAGS.is_parsed():
    flags.FLAGS.mark_as_parsed()
  logging.set_verbosity(logging.WARNING)
  _configure_jax(jax_cache_dir)


def _configure_jax(jax_cache_dir: str) -> None:
  import jax  # pylint: disable=g-import-not-at-top
  if jax_cache_dir:
    jax.config.update("jax_compilation_cache_dir", jax_cache_dir)
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.1)


def _train_one(config: ml_collections.ConfigDict, workdir: str) -> dict:
  """Trains one run; returns ``{'summary': ...}`` or ``{'error': message}`` (never raises)."""
  from flaxopt.training import loop  # pylint: disable=g-import-not-at-top
  t0 = time.time()
  try:
    summary = loop.train_and_evaluate(config, workdir)
    return {"summary": summary, "seconds": time.time() - t0}
  except Exception as e:  # pylint: disable=broad-except
    return {"error": f"{type(e).__name__}: {' '.join(str(e).split())[:500]}",
            "seconds": time.time() - t0}


def execute(runs: Sequence[Run], jobs: int = 1, jax_cache_dir: str = "",
            log=print) -> list[Run]:
  """Trains the runs that are not done; returns them (failed ones too).

  Every run's workdir is checked first (``check_resumable``). A run that raises is logged
  with its error and left without summary.json, so the next call tries it again; the others
  go on.
  """
  for r in runs:
    check_resumable(r)
  # Seed-major order: a setting's first seed compiles (into the persistent cache) while the
  # other settings start, so its later seeds mostly load their programs from the cache.
  todo = sorted((r for r in runs if not r.done), key=lambda r: r.seed)
  if len(runs) > len(todo):
    log(f"{len(runs) - len(todo)} of {len(runs)} runs already done (summary.json), skipped.")
  if not todo:
    return []
  errors = []

  def report(i: int, run: Run, result: dict) -> None:
    where = run.workdir
    if "error" in result:
      errors.append((run, result["error"]))
      log(f"[{i}/{len(todo)}] {where}: ERROR {result['error']}")
      return
    s = result["summary"]
    acc = ((s.get("final") or {}).get("test_accuracy"))
    acc_text = f"test accuracy {acc:.4f}" if isinstance(acc, float) else "no evaluation"
    log(f"[{i}/{len(todo)}] {where}: {s['status']}, {acc_text} ({result['seconds']:.0f} s)")

  if jobs <= 1:
    _configure_jax(jax_cache_dir)
    for i, run in enumerate(todo, 1):
      report(i, run, _train_one(run.config, run.workdir))
  else:
    ctx = multiprocessing.get_context("spawn")
    with concurrent.futures.ProcessPoolExecutor(
        max_workers=min(jobs, len(todo)), mp_context=ctx, initializer=_worker_init,
        initargs=(jax_cache_dir,)) as pool:
      futures = {pool.submit(_train_one, r.config, r.workdir): r for r in todo}
      for i, future in enumerate(concurrent.futures.as_completed(futures), 1):
        report(i, futures[future], future.result())
  if errors:
    log(f"{len(errors)} run(s) failed; they have no summary.json and run again next time.")
  return todo


# ---------------------------------------------------------------------------------------
# Reading results.
# ---------------------------------------------------------------------------------------
def _read_json(path: str) -> Optional[dict]:
  if not os.path.exists(path):
    return None
  with open(path) as f:
    return json.load(f)


def _read_metrics(workdir: str) -> list[dict]:
  path = os.path.join(workdir, "metrics.jsonl")
  if not os.path.exists(path):
    return []
  with open(path) as f:
    return [json.loads(line) for line in f if line.strip()]


def _num(value: Any) -> float:
  """JSON metric -> float ('nan'/'inf' strings and None -> nan)."""
  try:
    return float(value)
  except (TypeError, ValueError):
    return float("nan")


def _final(summary: Optional[dict], metric: str) -> float:
  return _num(((summary or {}).get("final") or {}).get(metric))


def select_learning_rate(scores: Mapping[float, Sequence[float]]) -> Optional[float]:
  """The lr with the highest mean score; diverged runs (nan) exclude their lr; ties -> smaller.

  ``scores``: lr -> final validation accuracies of its tuning seeds. None if every lr diverged.
  """
  best, best_score = None, -math.inf
  for lr in sorted(scores):
    values = list(scores[lr])
    if not values or any(not math.isfinite(v) for v in values):
      continue
    score = float(np.mean(values))
    if score > best_score:
      best, best_score = lr, score
  return best


def first_reaching(records: Sequence[Mapping[str, Any]], target: float,
                   metric: str = "test_accuracy") -> Optional[dict]:
  """The first evaluation record whose ``metric`` is at least ``target`` (None if none)."""
  for r in records:
    if _num(r.get(metric)) >= target:
      return dict(r)
  return None


def _mean_std(values: Sequence[float]) -> tuple[float, float]:
  v = np.asarray([x for x in values if math.isfinite(x)], np.float64)
  if not len(v):
    return float("nan"), float("nan")
  return float(v.mean()), float(v.std(ddof=1)) if len(v) > 1 else 0.0


def setting_row(setting: Setting, summaries: Sequence[Optional[dict]],
                histories: Sequence[Sequence[dict]], target: float) -> dict:
  """Leaderboard row of one setting from its runs' summary.json and metrics.jsonl.

  Test accuracy, steps and seconds to target, losses: mean (and std) over the seeds whose
  run completed (or stopped early); diverged runs are only counted. Seconds are the run's
  wall time (setup and compilation included) at the first evaluation reaching the target.
  """
  ok = [i for i, s in enumerate(summaries) if s and s.get("status") != "diverged"]
  acc_mean, acc_std = _mean_std([_final(summaries[i], "test_accuracy") for i in ok])
  hits = [first_reaching(histories[i], target) for i in ok]
  reached = [h for h in hits if h]
  row = dict(setting.labels)
  row.update(
      test_accuracy=acc_mean, test_accuracy_std=acc_std,
      best_test_accuracy=_mean_std([_num((summaries[i].get("best") or {}).get("test_accuracy"))
                                    for i in ok])[0],
      steps_to_target=_mean_std([float(h["step"]) for h in reached])[0],
      seconds_to_target=_mean_std([_num(h.get("wall_time")) for h in reached])[0],
      reached=len(reached),
      train_loss=_mean_std([_final(summaries[i], "train_loss") for i in ok])[0],
      test_loss=_mean_std([_final(summaries[i], "test_loss") for i in ok])[0],
      diverged=sum(1 for s in summaries if s and s.get("status") == "diverged"),
      runs=sum(1 for s in summaries if s),
      seeds=len(summaries),
  )
  return row


# ---------------------------------------------------------------------------------------
# Leaderboard files.
# ---------------------------------------------------------------------------------------
def _fmt(value: Any, spec: str = ".4f") -> str:
  if isinstance(value, float):
    return "–" if not math.isfinite(value) else format(value, spec)
  return str(value)


def leaderboard_csv(rows: Sequence[dict]) -> str:
  """CSV text of the rows (all fields; nan as empty)."""
  out = io.StringIO()
  fields = list(rows[0]) if rows else []
  writer = csv.DictWriter(out, fieldnames=fields, lineterminator="\n")
  writer.writeheader()
  for row in rows:
    writer.writerow({k: ("" if isinstance(v, float) and not math.isfinite(v) else v)
                     for k, v in row.items()})
  return out.getvalue()


def leaderboard_markdown(rows: Sequence[dict], axis_names: Sequence[str], target: float,
                         title: str = "") -> str:
  """Markdown table, best mean test accuracy first."""
  head = ["#", *axis_names, "lr", "params", "test acc (mean ± std)", f"steps to {target:g}",
          f"s to {target:g}", "final train loss", "final test loss", "diverged"]
  lines = [f"{title}\n" if title else "", "| " + " | ".join(head) + " |",
           "|" + "---|" * len(head)]
  for rank, r in enumerate(rows, 1):
    acc = "–" if not math.isfinite(r["test_accuracy"]) else \
        f"{100 * r['test_accuracy']:.2f} ± {100 * r['test_accuracy_std']:.2f}"
    reached = "" if r["reached"] in (r["runs"] - r["diverged"], 0) else \
        f" ({r['reached']}/{r['runs'] - r['diverged']})"
    cells = [str(rank), *[str(r[a]) for a in axis_names], _fmt(r["lr"], ".3g"),
             _fmt(r["params"]), acc, _fmt(r["steps_to_target"], ".0f") + reached,
             _fmt(r["seconds_to_target"], ".1f"), _fmt(r["train_loss"]), _fmt(r["test_loss"]),
             f"{r['diverged']}/{r['seeds']}"]
    lines.append("| " + " | ".join(cells) + " |")
  return "\n".join(lines).lstrip("\n") + "\n"


def _sort_key(row: dict) -> tuple:
  acc = row["test_accuracy"]
  return (-(acc if math.isfinite(acc) else -1.0), row["test_loss"] if
          math.isfinite(row["test_loss"]) else math.inf)


# ---------------------------------------------------------------------------------------
# Plots.
# ---------------------------------------------------------------------------------------
def _panels(settings: Sequence[Setting]) -> dict[str, list[Setting]]:
  """Groups settings by every label but the first (one panel each), keeping order."""
  panels: dict[str, list[Setting]] = {}
  for s in settings:
    title = ", ".join(f"{k}={v}" if k != "variant" else v for k, v in s.labels[1:])
    panels.setdefault(title, []).append(s)
  return panels


def _line_label(s: Setting) -> str:
  if not s.labels:
    return "base"
  k, v = s.labels[0]
  return v if k == "variant" else f"{k.split('.')[-1]}={v}"


def _color_cycle(ax, num_lines: int) -> None:
  """Distinct colors for more than 10 lines (matplotlib's default cycle repeats after 10)."""
  if num_lines > 10:
    import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
    ax.set_prop_cycle(color=plt.get_cmap("tab20")(np.arange(num_lines) % 20))


def plot_curves(settings: Sequence[Setting], histories: Mapping[str, Sequence[Sequence[dict]]],
                path: str, title: str = "") -> None:
  """Test accuracy and train loss against steps: mean over seeds, min-max band."""
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
  panels = _panels(settings)
  fig, axes = plt.subplots(2, len(panels), figsize=(max(6.5, 5 * len(panels)), 7),
                           squeeze=False)
  for col, (panel, members) in enumerate(panels.items()):
    for ax in axes[:, col]:
      _color_cycle(ax, len(members))
    for s in members:
      runs = [h for h in histories[s.key] if h]
      if not runs:
        continue
      steps = sorted({r["step"] for h in runs for r in h})
      for row, metric in enumerate(("test_accuracy", "train_loss")):
        table = np.full((len(runs), len(steps)), np.nan)
        for i, h in enumerate(runs):
          for r in h:
            table[i, steps.index(r["step"])] = _num(r.get(metric))
        with np.errstate(all="ignore"), _quiet_nan_warnings():
          mean = np.nanmean(table, 0)
          lo, hi = np.nanmin(table, 0), np.nanmax(table, 0)
        ax = axes[row, col]
        (line,) = ax.plot(steps, mean, label=_line_label(s))
        ax.fill_between(steps, lo, hi, color=line.get_color(), alpha=0.2)
    axes[0, col].set_title(panel or title, fontsize=9)
    axes[0, col].set_ylabel("test accuracy")
    axes[1, col].set_ylabel("train loss")
    axes[1, col].set_yscale("log")
    axes[1, col].set_xlabel("step")
    axes[0, col].legend(fontsize=7, loc="lower right", ncol=2 if len(members) > 8 else 1)
  if title and panels and list(panels)[0]:
    fig.suptitle(title, fontsize=10)
  fig.tight_layout()
  fig.savefig(path, dpi=90)
  plt.close(fig)


def plot_lr(settings: Sequence[Setting], tuning: Mapping[str, Mapping[float, Sequence[float]]],
            path: str, title: str = "") -> None:
  """Mean final validation accuracy against the learning rate; x marks a diverged lr."""
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
  panels = _panels(settings)
  fig, axes = plt.subplots(1, len(panels), figsize=(max(6.5, 5 * len(panels)), 3.8),
                           squeeze=False)
  for col, (panel, members) in enumerate(panels.items()):
    ax = axes[0, col]
    _color_cycle(ax, len(members))
    for s in members:
      lrs = sorted(tuning[s.key])
      means = [float(np.mean(tuning[s.key][lr])) if tuning[s.key][lr] else np.nan
               for lr in lrs]
      (line,) = ax.plot(lrs, means, "o-", label=_line_label(s))
      bad = [lr for lr, m in zip(lrs, means) if not math.isfinite(m)]
      ax.plot(bad, [0.0] * len(bad), "x", color=line.get_color())
    ax.set_xscale("log")
    ax.set_xlabel("learning rate")
    ax.set_ylabel("validation accuracy")
    ax.set_title(panel or title, fontsize=9)
    ax.legend(fontsize=7, ncol=2 if len(members) > 8 else 1)
  fig.tight_layout()
  fig.savefig(path, dpi=90)
  plt.close(fig)


class _quiet_nan_warnings:  # pylint: disable=invalid-name
  def __enter__(self):
    import warnings  # pylint: disable=g-import-not-at-top
    self._ctx = warnings.catch_warnings()
    self._ctx.__enter__()
    warnings.simplefilter("ignore", RuntimeWarning)

  def __exit__(self, *exc):
    return self._ctx.__exit__(*exc)


# ---------------------------------------------------------------------------------------
# The study.
# ---------------------------------------------------------------------------------------
def as_study(config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
  """A study ConfigDict: ``config`` if it has ``base``, else a study of ``config`` alone.

  Missing study fields take the defaults of ``default_study_fields()``; unknown ones raise.
  """
  study = default_study_fields()
  if "base" in config:
    unknown = sorted(set(config) - set(study) - {"base"})
    if unknown:
      raise ValueError(f"Unknown study field(s) {unknown}; valid: base, {', '.join(study)}")
    for key in config:
      if key != "base":
        study[key] = config[key]
    study.base = copy.deepcopy(config.base)
  else:
    study.base = copy.deepcopy(config)
  return study


def count_params(config: ml_collections.ConfigDict) -> Optional[int]:
  """Number of parameters of ``config``'s model (``jax.eval_shape``, nothing computed)."""
  import jax  # pylint: disable=g-import-not-at-top
  from flaxopt.nn import models  # pylint: disable=g-import-not-at-top
  try:
    shape, num_classes = _input_spec(config.dataset.name, config.dataset.get("data_dir") or None)
    model = models.build_model(config.model, num_classes)
    variables = jax.eval_shape(
        lambda: model.init({"params": jax.random.PRNGKey(0), "dropout": jax.random.PRNGKey(1),
                            "rrelu": jax.random.PRNGKey(2), "pool": jax.random.PRNGKey(3)},
                           np.zeros((2, *shape), np.float32), train=False))
    return int(sum(np.prod(x.shape) for x in jax.tree.leaves(variables["params"])))
  except Exception:  # pylint: disable=broad-except
    return None


_INPUT_SPECS: dict[str, tuple[tuple[int, ...], int]] = {}


def _input_spec(name: str, data_dir: Optional[str]) -> tuple[tuple[int, ...], int]:
  """(example shape, number of classes) of a dataset, loaded once per process."""
  if name not in _INPUT_SPECS:
    from flaxopt.data import datasets  # pylint: disable=g-import-not-at-top
    ds = datasets.load(name, data_dir=data_dir, num_train=1)
    _INPUT_SPECS[name] = (tuple(ds.x_train.shape[1:]), ds.num_classes)
  return _INPUT_SPECS[name]


def _validate(config: ml_collections.ConfigDict) -> None:
  """The loop's checks plus building the optimizer and the augmentation pipeline (kwargs)."""
  import flaxopt.functional as F  # pylint: disable=g-import-not-at-top
  from flaxopt.training import loop  # pylint: disable=g-import-not-at-top
  loop.validate_config(config)
  loop.make_optimizer(config.optimizer, loop.make_schedule(config.optimizer,
                                                           config.num_train_steps))
  F.augment_pipeline_from_config(config.augment)


@dataclasses.dataclass
class StudyResult:
  """What ``run_study`` did and found."""

  rows: list[dict]  # leaderboard rows, best first
  trained: list[Run]  # runs trained by this call (the others were already done)
  chosen_lr: dict[str, Optional[float]]  # setting key -> tuned lr (empty without a grid)
  files: list[str]  # leaderboard and image files written


def plan_tuning_runs(study: ml_collections.ConfigDict, workdir: str) -> list[Run]:
  """Learning-rate tuning runs: every setting x grid lr x tuning seed, with a validation split.

  In ``<workdir>/<setting>/tune/lr_<lr>/seed_<s>``; ``dataset.validation_size`` is the
  study's. Empty without an ``lr_grid``.
  """
  study = as_study(study)
  seeds = parse_seeds(study.seeds)[:max(1, int(study.tune_seeds))]
  return [Run(s, seed, os.path.join(workdir, s.dirname, "tune", _lr_dir(lr), f"seed_{seed}"),
              _run_config(study.base, s, seed, lr, int(study.validation_size)), lr)
          for s in make_settings(list(study.axes), list(study.variants))
          for lr in parse_lr_grid(study.lr_grid) for seed in seeds]


def plan_final_runs(study: ml_collections.ConfigDict, workdir: str,
                    chosen_lr: Optional[Mapping[str, Optional[float]]] = None) -> list[Run]:
  """Final runs: every setting x seed in ``<workdir>/<setting>/seed_<s>``.

  With ``chosen_lr`` (setting key -> tuned lr) each setting trains at its lr; settings whose
  lr is None (tuning incomplete or every lr diverged) get no runs.
  """
  study = as_study(study)
  runs = []
  for s in make_settings(list(study.axes), list(study.variants)):
    lr = None if chosen_lr is None else chosen_lr.get(s.key)
    if chosen_lr is not None and lr is None:
      continue
    runs += [Run(s, seed, os.path.join(workdir, s.dirname, f"seed_{seed}"),
                 _run_config(study.base, s, seed, lr)) for seed in parse_seeds(study.seeds)]
  return runs


def run_study(study: ml_collections.ConfigDict, workdir: str, *, jobs: int = 1,
              report_dir: Optional[str] = None, image_dir: Optional[str] = None,
              name: Optional[str] = None, jax_cache_dir: str = "", log=print,
              report_only: bool = False, dry_run: bool = False) -> Optional[StudyResult]:
  """Runs (or resumes) the study in ``workdir``; writes the leaderboard and plots.

  ``report_only``: train nothing, report the runs present. ``dry_run``: validate every
  setting's config and list the settings, then return None.

  Raises ValueError for a study that cannot run (bad axes, unknown fields, a config the
  training loop rejects) before anything trains.
  """
  study = as_study(study)
  base = study.base
  settings = make_settings(list(study.axes), list(study.variants))
  seeds = parse_seeds(study.seeds)
  grid = parse_lr_grid(study.lr_grid)
  tune_seeds = seeds[:max(1, int(study.tune_seeds))]
  name = name or study.name or os.path.basename(os.path.normpath(workdir))
  target = float(study.target_accuracy)
  for s in settings:  # Every config must be valid before anything trains.
    try:
      _validate(_run_config(base, s, seeds[0], grid[0] if grid else None,
                            int(study.validation_size) if grid else None))
    except ValueError as e:
      raise ValueError(f"Setting {s.key!r}: {e}") from e
  if dry_run:
    tune = f" (+ {len(grid)} lrs x {len(tune_seeds)} seeds of tuning each)" if grid else ""
    log(f"{len(settings)} settings x {len(seeds)} seeds{tune}; all configs valid:")
    for s in settings:
      log(f"  {s.dirname}: {dict(s.overrides)}")
    return None
  trained: list[Run] = []

  # Phase 1: learning-rate tuning on a validation split.
  chosen: dict[str, Optional[float]] = {}
  tuning: dict[str, dict[float, list[float]]] = {}
  if grid:
    tune_runs = plan_tuning_runs(study, workdir)
    if not report_only:
      log(f"Tuning the learning rate: {len(settings)} settings x {len(grid)} lrs x "
          f"{len(tune_seeds)} seeds.")
      trained += execute(tune_runs, jobs, jax_cache_dir, log)
    for r in tune_runs:
      summary = _read_json(os.path.join(r.workdir, SUMMARY))
      score = _final(summary, "val_accuracy") if summary and \
          summary.get("status") != "diverged" else float("nan")
      if summary:
        tuning.setdefault(r.setting.key, {}).setdefault(r.lr, []).append(score)
    for s in settings:
      complete = len(tuning.get(s.key, {})) == len(grid) and all(
          len(v) == len(tune_seeds) for v in tuning[s.key].values())
      chosen[s.key] = select_learning_rate(tuning[s.key]) if complete else None
      if complete and chosen[s.key] is None:
        log(f"{s.key}: every learning rate of the grid diverged; no final runs.")

  # Phase 2: the final runs, every seed, evaluated on the test split.
  final_runs = plan_final_runs(study, workdir, chosen if grid else None)
  if not report_only:
    log(f"Final runs: {len(settings)} settings x {len(seeds)} seeds.")
    trained += execute(final_runs, jobs, jax_cache_dir, log)

  # Report.
  rows, histories = [], {}
  axis_names = [k for k, _ in settings[0].labels] if settings else []
  for s in settings:
    runs = [r for r in final_runs if r.setting == s]
    summaries = [_read_json(os.path.join(r.workdir, SUMMARY)) for r in runs]
    histories[s.key] = [_read_metrics(r.workdir) if sm else [] for r, sm in zip(runs, summaries)]
    if not runs:  # every learning rate diverged while tuning
      summaries, histories[s.key] = [None] * len(seeds), [[] for _ in seeds]
    row = setting_row(s, summaries, histories[s.key], target)
    config = _run_config(base, s, seeds[0], chosen.get(s.key))
    row["lr"] = float(config.optimizer.learning_rate)
    row["params"] = count_params(config)
    row["setting"] = s.key
    rows.append(row)
  rows.sort(key=_sort_key)
  report_dir = report_dir or workdir
  image_dir = image_dir or report_dir
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
  with open(files[0], "w") as f:
    f.write(leaderboard_markdown(rows, axis_names, target, f"**{title}**") + "\n" + note + "\n")
  with open(files[1], "w") as f:
    f.write(leaderboard_csv(rows))
  if any(any(h) for h in histories.values()):
    files.append(os.path.join(image_dir, f"compare_{name}_curves.png"))
    plot_curves(settings, histories, files[-1], title)
  if grid and tuning:
    files.append(os.path.join(image_dir, f"compare_{name}_lr.png"))
    plot_lr([s for s in settings if s.key in tuning], tuning, files[-1], title)
  return StudyResult(rows=rows, trained=trained, chosen_lr=chosen, files=files)


# ---------------------------------------------------------------------------------------
# Command line.
# ---------------------------------------------------------------------------------------
_F = types.SimpleNamespace()  # the flag holders, set by _define_flags()


def _define_flags() -> None:
  """Defines the command-line flags; called only when this module runs as a script.

  Importing ``experiments.compare`` (tests do) defines no flags, so it can share a process
  with ``experiments.train``, which defines ``--config`` and ``--workdir`` too.
  """
  _F.config = config_flags.DEFINE_config_file(
      "config", os.path.join(_REPO, "configs", "default.py"),
      "A study config (configs/studies/*.py) or a training config; override fields with "
      "--config.<field>=<value>.", lock_config=True)
  _F.workdir = flags.DEFINE_string("workdir", None, "Root of the runs: <workdir>/<setting>/seed_<s>.")
  _F.axes = flags.DEFINE_multi_string("axes", None,
                                    "'field=v1,v2,...' (repeatable); replaces the study's axes.")
  _F.variants = flags.DEFINE_multi_string(
      "variants", None, "'label: field=value; field=value' (repeatable); replaces the study's.")
  _F.seeds = flags.DEFINE_string("seeds", None, "'0,1,2' or 'a:b'; replaces the study's seeds.")
  _F.lr_grid = flags.DEFINE_string("lr_grid", None, "'lo:hi:n' (log-spaced) or 'v1,v2'; '' none.")
  _F.jobs = flags.DEFINE_integer("jobs", 1, "Runs at a time, each in its own process (1: in this "
                               "process).")
  _F.name = flags.DEFINE_string("name", None, "Leaderboard / image name (default: the study's name "
                              "or the workdir's basename).")
  _F.report_dir = flags.DEFINE_string("report_dir", None, "Where <name>.md/.csv go (default workdir).")
  _F.image_dir = flags.DEFINE_string("image_dir", None, "Where the plots go (default report_dir).")
  _F.report_only = flags.DEFINE_bool("report_only", False, "Train nothing; report the runs present.")
  _F.dry_run = flags.DEFINE_bool("dry_run", False, "List the settings and runs, train nothing.")
  _F.jax_cache = flags.DEFINE_string(
      "jax_cache_dir", os.path.expanduser("~/.cache/flaxopt/jax_compilation_cache"),
      "Persistent XLA compilation cache ('' disables).")
  flags.mark_flags_as_required(["workdir"])


def _study_from_flags() -> ml_collections.ConfigDict:
  study = as_study(_F.config.value)
  for flag, field in ((_F.axes, "axes"), (_F.variants, "variants")):
    if flag.value is not None:
      study[field] = tuple(flag.value)
  for flag, field in ((_F.seeds, "seeds"), (_F.lr_grid, "lr_grid")):
    if flag.value is not None:
      study[field] = flag.value
  return study


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {' '.join(argv[1:])}")
  if not flags.FLAGS["verbosity"].present:
    logging.set_verbosity(logging.WARNING)
  try:
    study = _study_from_flags()
    result = run_study(study, _F.workdir.value, jobs=_F.jobs.value, report_dir=_F.report_dir.value,
                       image_dir=_F.image_dir.value, name=_F.name.value,
                       jax_cache_dir=_F.jax_cache.value, report_only=_F.report_only.value,
                       dry_run=_F.dry_run.value)
  except ValueError as e:
    print(f"error: {' '.join(str(e).split())}", file=sys.stderr)
    sys.exit(2)
  if result is None:
    return
  with open(result.files[0]) as f:
    print(f.read())
  print("Wrote " + ", ".join(result.files))


if __name__ == "__main__":
  _define_flags()
  app.run(main)
