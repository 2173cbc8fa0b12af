"""Reading a study's results and reporting them: leaderboard rows, Markdown / CSV, plots.

Everything here reads the members' files (``summary.json``, ``metrics.jsonl``), so a report
does not care how or when a run was trained. Files are written atomically (a temporary file,
then a rename): an interrupted report leaves the previous file whole, never half a CSV.
"""

from __future__ import annotations

import csv
import io
import math
import os
from typing import Any, Mapping, Optional, Sequence

import ml_collections
import numpy as np

from flaxopt.sweep import execute as execute_lib
from flaxopt.sweep import plan as plan_lib
from flaxopt.sweep.spec import Setting

__all__ = ["count_params", "first_reaching", "leaderboard_csv", "leaderboard_markdown",
           "plot_curves", "plot_lr", "read_metrics", "read_summary", "select_learning_rate",
           "setting_row", "sort_key", "write_text"]


def read_summary(workdir: str) -> Optional[dict]:
  """A member's summary.json, or None when it is missing or not valid JSON."""
  value, _ = execute_lib.load_json(os.path.join(workdir, plan_lib.SUMMARY))
  return value if isinstance(value, dict) else None


def read_metrics(workdir: str) -> list[dict]:
  """A member's metrics.jsonl records (a partial last line is left out)."""
  return execute_lib.scan_metrics(os.path.join(workdir, plan_lib.METRICS))[0]


def write_text(path: str, text: str) -> None:
  """Writes ``text`` to ``path`` atomically (``path.tmp``, then a rename)."""
  tmp = path + ".tmp"
  with open(tmp, "w") as f:
    f.write(text)
  os.replace(tmp, path)


def _num(value: Any) -> float:
  """JSON metric -> float ('nan'/'inf' strings and None -> nan)."""
  try:
    return float(value)
  except (TypeError, ValueError):
    return float("nan")


def final_metric(summary: Optional[dict], metric: str) -> float:
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
  acc_mean, acc_std = _mean_std([final_metric(summaries[i], "test_accuracy") for i in ok])
  hits = [first_reaching(histories[i], target) for i in ok]
  reached = [h for h in hits if h]
  row = dict(setting.labels)
  row.update(
      test_accuracy=acc_mean, test_accuracy_std=acc_std,
      # Test accuracy at each run's best *validation* evaluation (NaN without a validation split).
      best_test_accuracy=_mean_std([_num((summaries[i].get("best") or {}).get("test_accuracy"))
                                    for i in ok])[0],
      steps_to_target=_mean_std([float(h["step"]) for h in reached])[0],
      seconds_to_target=_mean_std([_num(h.get("wall_time")) for h in reached])[0],
      reached=len(reached),
      train_loss=_mean_std([final_metric(summaries[i], "train_loss") for i in ok])[0],
      test_loss=_mean_std([final_metric(summaries[i], "test_loss") for i in ok])[0],
      diverged=sum(1 for s in summaries if s and s.get("status") == "diverged"),
      runs=sum(1 for s in summaries if s),
      seeds=len(summaries),
  )
  return row


# ---------------------------------------------------------------------------------------
# Leaderboard files.
# ---------------------------------------------------------------------------------------
def _savefig(fig, path: str) -> None:
  """Saves a PNG atomically (``path.tmp``, then a rename)."""
  fig.savefig(path + ".tmp", dpi=90, format="png")
  os.replace(path + ".tmp", path)


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


def sort_key(row: dict) -> tuple:
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
  _savefig(fig, path)
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
  _savefig(fig, path)
  plt.close(fig)


class _quiet_nan_warnings:  # pylint: disable=invalid-name
  def __enter__(self):
    import warnings  # pylint: disable=g-import-not-at-top
    self._ctx = warnings.catch_warnings()
    self._ctx.__enter__()
    warnings.simplefilter("ignore", RuntimeWarning)

  def __exit__(self, *exc):
    return self._ctx.__exit__(*exc)




_INPUT_SPECS: dict[str, tuple[tuple[int, ...], int]] = {}


def _input_spec(name: str, data_dir: Optional[str]) -> tuple[tuple[int, ...], int]:
  """(example shape, number of classes) of a dataset, loaded once per process."""
  if name not in _INPUT_SPECS:
    from flaxopt.data import datasets  # pylint: disable=g-import-not-at-top
    ds = datasets.load(name, data_dir=data_dir, num_train=1)
    _INPUT_SPECS[name] = (tuple(ds.x_train.shape[1:]), ds.num_classes)
  return _INPUT_SPECS[name]


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
