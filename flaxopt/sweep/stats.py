"""Protocol statistics for comparing training recipes: intervals, tests, time-to-target, profiles.

Pure NumPy/SciPy over plain numbers (one value per seed, or metrics.jsonl records); nothing here
trains. The protocol they serve (DeepOBS, Schneider et al. 2019; AlgoPerf, Dahl et al. 2023):

* per setting, the mean over seeds with a Student-t 95% confidence interval (``mean_ci``);
* a setting is called better than another only when the Welch 95% interval of the difference
  of their means excludes 0 (``welch_interval``, ``is_better``); ``leaderboard`` marks the rows
  indistinguishable from the top in that sense;
* time-to-target: steps and training seconds to the first evaluation at or above the target,
  infinite when never reached (``time_to_target``);
* across problems, performance profiles (Dolan & More 2002; ``performance_profile``,
  ``plot_performance_profile``);
* hyperparameter search points: scrambled Sobol over a declared space with a declared seed
  (``sobol_points``; AlgoPerf's external tuning) and the DeepOBS learning-rate log grid
  (``deepobs_log_grid``).
"""

from __future__ import annotations

import dataclasses
import json
import math
import warnings
from typing import Any, Iterable, Mapping, Optional, Sequence

import numpy as np
from scipy import stats as sp_stats
from scipy.stats import qmc

__all__ = [
    "workload_target",
    "DEEPOBS_LR_GRID",
    "Interval",
    "LeaderboardRow",
    "TimeToTarget",
    "deepobs_log_grid",
    "is_better",
    "leaderboard",
    "mean_ci",
    "performance_profile",
    "performance_ratios",
    "plot_performance_profile",
    "read_metrics",
    "sobol_points",
    "time_to_target",
    "welch_interval",
]

SCALES = ("linear", "log")


@dataclasses.dataclass(frozen=True)
class Interval:
  """An estimate with a two-sided confidence interval ``[low, high]`` and its degrees of freedom."""

  estimate: float
  low: float
  high: float
  df: float
  confidence: float

  def excludes(self, value: float = 0.0) -> bool:
    """Whether ``value`` lies outside ``[low, high]``."""
    return value < self.low or value > self.high


def _values(name: str, values: Iterable[float], min_size: int) -> np.ndarray:
  x = np.asarray(list(values), dtype=np.float64)
  if x.ndim != 1 or len(x) < min_size:
    raise ValueError(f"{name} needs at least {min_size} values, got {x.tolist()!r}.")
  if not np.all(np.isfinite(x)):
    raise ValueError(f"{name} must be finite, got {x.tolist()!r}.")
  return x


def _check_confidence(confidence: float) -> float:
  if not 0.0 < confidence < 1.0:
    raise ValueError(f"confidence={confidence!r} must be in (0, 1).")
  return float(confidence)


def mean_ci(values: Iterable[float], confidence: float = 0.95) -> Interval:
  """Mean over seeds with a Student-t interval: ``mean +- t_{(1+c)/2, n-1} * s / sqrt(n)``.

  ``s`` is the sample standard deviation (ddof=1). Needs n >= 2 finite values (one seed has no
  interval).
  """
  confidence = _check_confidence(confidence)
  x = _values("mean_ci values", values, 2)
  n = len(x)
  mean = float(x.mean())
  half = float(sp_stats.t.ppf((1 + confidence) / 2, n - 1) * x.std(ddof=1) / math.sqrt(n))
  return Interval(mean, mean - half, mean + half, float(n - 1), confidence)


def welch_interval(a: Iterable[float], b: Iterable[float],
                   confidence: float = 0.95) -> Interval:
  """Welch's interval for ``mean(a) - mean(b)`` (unequal variances; Welch 1947).

  ``se^2 = s_a^2/n_a + s_b^2/n_b``; degrees of freedom (Welch-Satterthwaite)
  ``se^4 / ((s_a^2/n_a)^2/(n_a-1) + (s_b^2/n_b)^2/(n_b-1))``; interval
  ``diff +- t_{(1+c)/2, df} * se``. When both samples have zero spread the interval is the
  point ``[diff, diff]`` (df inf). Same interval as
  ``scipy.stats.ttest_ind(a, b, equal_var=False).confidence_interval(c)``.
  """
  confidence = _check_confidence(confidence)
  xa, xb = _values("welch_interval a", a, 2), _values("welch_interval b", b, 2)
  va, vb = xa.var(ddof=1) / len(xa), xb.var(ddof=1) / len(xb)
  diff = float(xa.mean() - xb.mean())
  se2 = va + vb
  if se2 == 0.0:
    return Interval(diff, diff, diff, math.inf, confidence)
  df = se2 ** 2 / (va ** 2 / (len(xa) - 1) + vb ** 2 / (len(xb) - 1))
  half = float(sp_stats.t.ppf((1 + confidence) / 2, df) * math.sqrt(se2))
  return Interval(diff, diff - half, diff + half, float(df), confidence)


def is_better(a: Iterable[float], b: Iterable[float], *, higher_is_better: bool = True,
              confidence: float = 0.95) -> bool:
  """Whether ``a`` beats ``b``: the Welch interval of ``mean(a) - mean(b)`` excludes 0 on a's
  side (above 0 when higher is better, below 0 otherwise)."""
  interval = welch_interval(a, b, confidence)
  return interval.low > 0 if higher_is_better else interval.high < 0


@dataclasses.dataclass(frozen=True)
class LeaderboardRow:
  """One setting: its seeds' mean and t interval, and whether it ties the top row."""

  name: str
  n: int
  mean: float
  low: float
  high: float
  tied_with_top: bool


def leaderboard(results: Mapping[str, Sequence[float]], *, higher_is_better: bool = True,
                confidence: float = 0.95) -> list[LeaderboardRow]:
  """Rows sorted best mean first; ``tied_with_top`` marks those the top does not beat.

  A row ties the top when the Welch interval of ``top - row`` includes 0 (``is_better`` is
  False), i.e. the data cannot tell them apart; the top row ties itself. Each setting needs at
  least 2 seeds.
  """
  if not results:
    raise ValueError("leaderboard needs at least one setting, got none.")
  intervals = {name: mean_ci(values, confidence) for name, values in results.items()}
  sign = -1.0 if higher_is_better else 1.0
  order = sorted(results, key=lambda name: (sign * intervals[name].estimate, name))
  top = order[0]
  rows = []
  for name in order:
    tied = name == top or not is_better(results[top], results[name],
                                        higher_is_better=higher_is_better,
                                        confidence=confidence)
    ci = intervals[name]
    rows.append(LeaderboardRow(name, len(results[name]), ci.estimate, ci.low, ci.high, tied))
  return rows


# ---------------------------------------------------------------------------- time-to-target
@dataclasses.dataclass(frozen=True)
class TimeToTarget:
  """Steps and training seconds to the first evaluation reaching the target (inf if never)."""

  step: float
  seconds: float

  @property
  def reached(self) -> bool:
    return math.isfinite(self.step)


def read_metrics(path: str) -> list[dict[str, Any]]:
  """The records of a metrics.jsonl file, one dict per line; a truncated last line is dropped
  (a run killed mid-write), a malformed line elsewhere is a one-line error naming it."""
  with open(path, encoding="utf-8") as f:
    lines = f.read().splitlines()
  records = []
  for i, line in enumerate(lines):
    if not line.strip():
      continue
    try:
      records.append(json.loads(line))
    except json.JSONDecodeError as e:
      if i == len(lines) - 1:
        break
      raise ValueError(f"{path}:{i + 1}: not a JSON record ({e.msg}).") from None
  return records


def workload_target(run_records: Sequence[Sequence[Mapping[str, Any]]],
                    metric: str = "val_accuracy", min_seeds: int = 5) -> float:
  """A workload's target: the median over seeds of each baseline run's best ``metric``.

  ``run_records``: one metrics.jsonl record list per seed. The best of a run is its highest
  ``metric`` over its evaluations (validation only: the test split never selects). AlgoPerf
  (Dahl et al. 2023) sets targets from the baseline's validation results the same way.

  Raises:
    ValueError: fewer than ``min_seeds`` runs, or a run without any ``metric`` value.
  """
  if len(run_records) < min_seeds:
    raise ValueError(f"a target needs at least {min_seeds} seeds, got {len(run_records)}")
  bests = []
  for i, records in enumerate(run_records):
    values = [float(r[metric]) for r in records if r.get(metric) is not None]
    if not values:
      raise ValueError(f"run {i} has no {metric!r} in its records")
    bests.append(max(values))
  return float(np.median(bests))


def time_to_target(records: Iterable[Mapping[str, Any]], target: float, *,
                   metric: str = "val_accuracy", time_key: str = "train_time",
                   higher_is_better: bool = True) -> TimeToTarget:
  """Steps and seconds at the first evaluation whose ``metric`` reaches ``target``.

  ``records``: metrics.jsonl records (dicts with ``step``, ``metric`` and ``time_key``), in any
  order; evaluations are taken in step order. Reaching means ``>= target`` (or ``<=`` when
  ``higher_is_better`` is False). ``time_key`` should count training seconds only (evaluation
  excluded, as AlgoPerf scores); records without ``metric`` (e.g. no validation split) are a
  one-line error. Never reached: ``TimeToTarget(inf, inf)``.
  """
  if not math.isfinite(target):
    raise ValueError(f"target={target!r} must be finite.")
  evals = sorted(records, key=lambda r: r["step"])
  for record in evals:
    if metric not in record:
      raise ValueError(f"time_to_target: record at step {record.get('step')} has no {metric!r} "
                       f"(keys: {', '.join(sorted(record))}).")
    value = record[metric]
    reached = value >= target if higher_is_better else value <= target
    if reached:
      if time_key not in record:
        raise ValueError(f"time_to_target: record at step {record['step']} has no "
                         f"{time_key!r} (keys: {', '.join(sorted(record))}).")
      return TimeToTarget(float(record["step"]), float(record[time_key]))
  return TimeToTarget(math.inf, math.inf)


# ---------------------------------------------------------------------- performance profiles
def performance_ratios(costs: Mapping[str, Mapping[str, float]]) -> dict[str, np.ndarray]:
  """``r_{p,s} = t_{p,s} / min_s t_{p,s}`` per method ``s`` over the problems ``p``.

  ``costs[method][problem]``: a positive cost (time-to-target; inf when the method never
  reached the target). Every method must list the same problems. A problem no method solves
  gives every method ratio inf. Arrays follow ``sorted(problems)``. Dolan & More 2002.
  """
  if not costs:
    raise ValueError("performance_ratios needs at least one method, got none.")
  methods = list(costs)
  problems = sorted(costs[methods[0]])
  for method in methods:
    if sorted(costs[method]) != problems:
      raise ValueError(f"method {method!r} has problems {sorted(costs[method])}, expected "
                       f"{problems}.")
  t = np.array([[float(costs[m][p]) for p in problems] for m in methods], dtype=np.float64)
  if np.any(np.isnan(t)) or np.any(t <= 0):
    raise ValueError(f"costs must be positive (inf for never reached), got {t.tolist()!r}.")
  best = t.min(axis=0)
  with np.errstate(invalid="ignore"):
    ratios = np.where(np.isfinite(best), t / best, np.inf)
  return dict(zip(methods, ratios))


def performance_profile(costs: Mapping[str, Mapping[str, float]],
                        taus: Sequence[float]) -> dict[str, np.ndarray]:
  """``rho_s(tau) = |{p : r_{p,s} <= tau}| / |P|``: the fraction of problems on which method
  ``s`` is within a factor ``tau`` of the best method (Dolan & More 2002, "Benchmarking
  optimization software with performance profiles"). ``rho_s(1)`` is the fraction it wins
  (ties count for each); ``rho_s(inf)`` the fraction it solves at all."""
  taus = np.asarray(taus, dtype=np.float64)
  if taus.ndim != 1 or np.any(np.isnan(taus)) or np.any(taus < 1):
    raise ValueError(f"taus must be a 1-D sequence of values >= 1, got {taus.tolist()!r}.")
  return {m: (r[None, :] <= taus[:, None]).mean(axis=1)
          for m, r in performance_ratios(costs).items()}


def plot_performance_profile(costs: Mapping[str, Mapping[str, float]], *,
                             max_tau: Optional[float] = None, ax: Any = None,
                             path: Optional[str] = None, title: str = "") -> Any:
  """Step plot of every method's profile over ``tau`` in ``[1, max_tau]`` (log2 axis, as Dolan
  & More); ``max_tau`` defaults to twice the largest finite ratio. Saves to ``path`` if given;
  returns the matplotlib Axes."""
  import matplotlib  # pylint: disable=g-import-not-at-top
  if ax is None:
    matplotlib.use("Agg")
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
  ratios = performance_ratios(costs)
  finite = np.concatenate([r[np.isfinite(r)] for r in ratios.values()] + [np.ones(1)])
  max_tau = float(max_tau or 2.0 * finite.max())
  taus = np.unique(np.concatenate([[1.0, max_tau], finite[finite <= max_tau]]))
  profiles = performance_profile(costs, taus)
  if ax is None:
    _, ax = plt.subplots(figsize=(5, 3.5))
  for method, rho in profiles.items():
    ax.step(taus, rho, where="post", label=method)
  ax.set_xscale("log", base=2)
  ax.set_xlim(1.0, max_tau)
  ax.set_ylim(0.0, 1.02)
  ax.set_xlabel(r"$\tau$ (cost within a factor $\tau$ of the best)")
  ax.set_ylabel(r"fraction of problems $\rho(\tau)$")
  if title:
    ax.set_title(title)
  ax.legend(loc="lower right")
  if path:
    ax.figure.tight_layout()
    ax.figure.savefig(path, dpi=120)
  return ax


# ------------------------------------------------------------------------- search points
DEEPOBS_LR_GRID = (1e-5, 1e2, 36)  # (low, high, num): DeepOBS's baselines' learning-rate grid


def deepobs_log_grid(low: float = DEEPOBS_LR_GRID[0], high: float = DEEPOBS_LR_GRID[1],
                     num: int = DEEPOBS_LR_GRID[2]) -> np.ndarray:
  """``num`` values log-equally spaced over ``[low, high]``, both ends included.

  The default is DeepOBS's learning-rate grid (Schneider et al. 2019; its baselines'
  ``np.logspace(-5, 2, 36)``: 5 values per decade). DeepOBS tunes on one seed, then reruns the
  chosen value on every seed.
  """
  if not (0 < low < high) or isinstance(num, bool) or not isinstance(num, int) or num < 2:
    raise ValueError(f"deepobs_log_grid needs 0 < low < high and num >= 2, got low={low!r}, "
                     f"high={high!r}, num={num!r}.")
  return np.logspace(math.log10(low), math.log10(high), num)


def _check_space(space: Mapping[str, Sequence[Any]]) -> list[tuple[str, float, float, str]]:
  if not space:
    raise ValueError("sobol_points needs a non-empty space, got {}.")
  dims = []
  for name, spec in space.items():
    try:
      low, high, scale = spec
    except (TypeError, ValueError):
      raise ValueError(f"space[{name!r}]={spec!r} must be (low, high, 'log' | 'linear').") \
          from None
    if scale not in SCALES:
      raise ValueError(f"space[{name!r}] scale {scale!r}; valid: {', '.join(SCALES)}.")
    if not low < high or (scale == "log" and low <= 0):
      raise ValueError(f"space[{name!r}]=({low!r}, {high!r}, {scale!r}) needs low < high"
                       f"{' and low > 0' if scale == 'log' else ''}.")
    dims.append((name, float(low), float(high), scale))
  return dims


def sobol_points(space: Mapping[str, Sequence[Any]], num: int, seed: int) -> list[dict[str, float]]:
  """``num`` scrambled-Sobol points over ``space`` (AlgoPerf's quasirandom external tuning).

  ``space[name] = (low, high, scale)``: ``linear`` maps a unit coordinate u to
  ``low + u (high - low)``, ``log`` to ``exp(log low + u (log high - log low))``. The unit
  points are ``scipy.stats.qmc.Sobol(d, scramble=True, seed=seed).random(num)`` (Owen
  scrambling); the same (space, num, seed) gives the same points. A power of 2 for ``num``
  keeps Sobol's balance properties (scipy warns otherwise; silenced here).
  """
  dims = _check_space(space)
  if isinstance(num, bool) or not isinstance(num, int) or num < 1:
    raise ValueError(f"num={num!r} must be a positive integer.")
  if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
    raise ValueError(f"seed={seed!r} must be a non-negative integer.")
  sampler = qmc.Sobol(len(dims), scramble=True, seed=seed)
  with warnings.catch_warnings():
    warnings.simplefilter("ignore", UserWarning)  # "balance properties" for num not 2^m.
    unit = sampler.random(num)
  points = []
  for u in unit:
    point = {}
    for (name, low, high, scale), ui in zip(dims, u):
      if scale == "log":
        point[name] = float(math.exp(math.log(low) + ui * (math.log(high) - math.log(low))))
      else:
        point[name] = float(low + ui * (high - low))
    points.append(point)
  return points
