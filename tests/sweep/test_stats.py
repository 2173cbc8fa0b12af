"""Protocol statistics against scipy.stats and closed forms."""

import json
import math

import numpy as np
import pytest
from scipy import stats as sp_stats
from scipy.stats import qmc

from flaxopt.sweep import stats

SAMPLES = [
    [0.91, 0.92, 0.905, 0.915, 0.93],
    [1.0, 2.0],
    [3.2, 3.1, 3.4, 2.9, 3.0, 3.3, 3.15],
]


@pytest.mark.parametrize("values", SAMPLES)
@pytest.mark.parametrize("confidence", [0.95, 0.9])
def test_mean_ci_matches_scipy(values, confidence):
  got = stats.mean_ci(values, confidence)
  low, high = sp_stats.t.interval(confidence, len(values) - 1, loc=np.mean(values),
                                  scale=sp_stats.sem(values))
  np.testing.assert_allclose([got.estimate, got.low, got.high],
                             [np.mean(values), low, high], rtol=1e-12)
  assert got.df == len(values) - 1


def test_mean_ci_closed_form_two_seeds():
  """[0, 2]: mean 1, s = sqrt 2, se = 1, t_{0.975, 1} = 12.7062047361747."""
  got = stats.mean_ci([0.0, 2.0])
  np.testing.assert_allclose([got.low, got.high], [1 - 12.7062047361747, 1 + 12.7062047361747],
                             rtol=1e-12)


PAIRS = [
    ([0.91, 0.92, 0.905, 0.915, 0.93], [0.90, 0.895, 0.91, 0.9, 0.885]),
    ([1.0, 2.0, 3.0], [1.5, 1.7, 1.6, 1.65, 1.55, 1.62]),  # unequal n and variance
    ([5.0, 5.1], [4.0, 6.0, 5.0]),
]


@pytest.mark.parametrize("a, b", PAIRS)
def test_welch_interval_matches_scipy(a, b):
  got = stats.welch_interval(a, b)
  ref = sp_stats.ttest_ind(a, b, equal_var=False)
  ci = ref.confidence_interval(0.95)
  np.testing.assert_allclose([got.low, got.high], [ci.low, ci.high], rtol=1e-10)
  np.testing.assert_allclose(got.df, ref.df, rtol=1e-12)
  # Welch-Satterthwaite by hand.
  va, vb = np.var(a, ddof=1) / len(a), np.var(b, ddof=1) / len(b)
  df = (va + vb) ** 2 / (va ** 2 / (len(a) - 1) + vb ** 2 / (len(b) - 1))
  np.testing.assert_allclose(got.df, df, rtol=1e-12)
  assert got.estimate == pytest.approx(np.mean(a) - np.mean(b))


def test_welch_interval_zero_spread_is_a_point():
  got = stats.welch_interval([1.0, 1.0], [0.5, 0.5, 0.5])  # Exact in binary: spread 0.
  assert (got.low, got.high, got.df) == (0.5, 0.5, math.inf)
  assert got.excludes(0.0)


def test_is_better_needs_the_interval_to_exclude_zero():
  a, b = PAIRS[0]
  assert stats.welch_interval(a, b).low > 0
  assert stats.is_better(a, b) and not stats.is_better(b, a)
  assert stats.is_better(b, a, higher_is_better=False)  # e.g. losses: b's are lower.
  noisy = [0.80, 0.99, 0.70, 0.95]
  assert not stats.is_better(a, noisy) and not stats.is_better(noisy, a)


def test_leaderboard_orders_and_marks_ties_with_top():
  results = {"a": [0.91, 0.92, 0.905, 0.915, 0.93], "b": [0.912, 0.918, 0.90, 0.92, 0.925],
             "c": [0.80, 0.81, 0.79, 0.805, 0.795]}
  rows = stats.leaderboard(results)
  assert [r.name for r in rows] == ["a", "b", "c"]
  assert [r.tied_with_top for r in rows] == [True, True, False]
  ci = stats.mean_ci(results["b"])
  assert (rows[1].mean, rows[1].low, rows[1].high, rows[1].n) == (ci.estimate, ci.low, ci.high,
                                                                    5)
  lower = stats.leaderboard({"x": [1.0, 1.1, 0.9], "y": [3.0, 3.1, 2.9]},
                            higher_is_better=False)
  assert [(r.name, r.tied_with_top) for r in lower] == [("x", True), ("y", False)]


@pytest.mark.parametrize("call, match", [
    (lambda: stats.mean_ci([0.9]), r"mean_ci values needs at least 2 values, got \[0.9\]"),
    (lambda: stats.mean_ci([0.9, float("nan")]), r"must be finite"),
    (lambda: stats.mean_ci([1, 2], confidence=95), r"confidence=95 must be in \(0, 1\)"),
    (lambda: stats.welch_interval([1, 2], [3]), r"welch_interval b needs at least 2"),
    (lambda: stats.leaderboard({}), r"at least one setting"),
])
def test_errors_are_one_line(call, match):
  with pytest.raises(ValueError, match=match) as info:
    call()
  assert "\n" not in str(info.value)


# ---------------------------------------------------------------------------- time-to-target
RECORDS = [  # Out of order on purpose; train_time excludes evaluation, wall_time does not.
    {"step": 200, "val_accuracy": 0.90, "train_time": 20.0, "wall_time": 30.0},
    {"step": 100, "val_accuracy": 0.85, "train_time": 10.0, "wall_time": 14.0},
    {"step": 300, "val_accuracy": 0.89, "train_time": 30.0, "wall_time": 45.0},
    {"step": 400, "val_accuracy": 0.92, "train_time": 40.0, "wall_time": 60.0},
]


@pytest.mark.parametrize("target, expected", [
    (0.80, (100, 10.0)), (0.90, (200, 20.0)),  # "at or above": equality reaches.
    (0.91, (400, 40.0)), (0.95, (math.inf, math.inf))])
def test_time_to_target(target, expected):
  got = stats.time_to_target(RECORDS, target)
  assert (got.step, got.seconds) == expected
  assert got.reached == math.isfinite(expected[0])


def test_time_to_target_lower_is_better_and_time_key():
  records = [{"step": s, "val_loss": l, "wall_time": t}
             for s, l, t in ((10, 1.0, 1.0), (20, 0.5, 2.5), (30, 0.4, 4.0))]
  got = stats.time_to_target(records, 0.5, metric="val_loss", time_key="wall_time",
                             higher_is_better=False)
  assert (got.step, got.seconds) == (20, 2.5)


def test_time_to_target_missing_metric_is_one_line():
  with pytest.raises(ValueError, match=r"record at step 1 has no 'val_accuracy'"):
    stats.time_to_target([{"step": 1, "test_accuracy": 0.9}], 0.5)


def test_read_metrics_drops_truncated_last_line(tmp_path):
  path = tmp_path / "metrics.jsonl"
  path.write_text("\n".join(json.dumps(r) for r in RECORDS[:2]) + '\n{"step": 3, "val_ac')
  assert stats.read_metrics(str(path)) == RECORDS[:2]
  path.write_text('{"step": 1}\n{oops\n{"step": 2}\n')
  with pytest.raises(ValueError, match=r"metrics.jsonl:2: not a JSON record"):
    stats.read_metrics(str(path))


# ---------------------------------------------------------------------- performance profiles
COSTS = {"A": {"p1": 1.0, "p2": 4.0, "p3": math.inf, "p4": math.inf},
         "B": {"p1": 2.0, "p2": 2.0, "p3": 3.0, "p4": math.inf}}


def test_performance_ratios_by_hand():
  ratios = stats.performance_ratios(COSTS)
  np.testing.assert_array_equal(ratios["A"], [1.0, 2.0, np.inf, np.inf])
  np.testing.assert_array_equal(ratios["B"], [2.0, 1.0, 1.0, np.inf])  # p4: nobody solves it.


def test_performance_profile_by_hand():
  """rho_s(tau) = fraction of the 4 problems with ratio <= tau (Dolan & More 2002)."""
  rho = stats.performance_profile(COSTS, [1.0, 1.5, 2.0, 1e9])
  np.testing.assert_array_equal(rho["A"], [1 / 4, 1 / 4, 2 / 4, 2 / 4])
  np.testing.assert_array_equal(rho["B"], [2 / 4, 2 / 4, 3 / 4, 3 / 4])


@pytest.mark.parametrize("costs, taus, match", [
    ({"A": {"p": 0.0}}, [1.0], r"costs must be positive"),
    ({"A": {"p": 1.0}, "B": {"q": 1.0}}, [1.0], r"method 'B' has problems \['q'\]"),
    (COSTS, [0.5], r"taus must be .* >= 1"),
])
def test_performance_profile_errors(costs, taus, match):
  with pytest.raises(ValueError, match=match):
    stats.performance_profile(costs, taus)


def test_plot_performance_profile_writes_a_file(tmp_path):
  path = tmp_path / "profile.png"
  ax = stats.plot_performance_profile(COSTS, path=str(path), title="t")
  assert path.stat().st_size > 0
  assert [line.get_label() for line in ax.get_lines()] == ["A", "B"]
  np.testing.assert_array_equal(ax.get_lines()[1].get_ydata()[:2], [0.5, 0.75])  # tau = 1, 2


# ------------------------------------------------------------------------- search points
SPACE = {"learning_rate": (1e-4, 1e-1, "log"), "momentum": (0.5, 0.99, "linear")}


def test_sobol_points_are_scrambled_sobol_mapped_to_the_space():
  points = stats.sobol_points(SPACE, 16, seed=3)
  unit = qmc.Sobol(2, scramble=True, seed=3).random(16)
  lr = np.array([p["learning_rate"] for p in points])
  mom = np.array([p["momentum"] for p in points])
  np.testing.assert_allclose(np.log(lr), np.log(1e-4) + unit[:, 0] * np.log(1e3), rtol=1e-12)
  np.testing.assert_allclose(mom, 0.5 + unit[:, 1] * 0.49, rtol=1e-12)
  assert lr.min() >= 1e-4 and lr.max() <= 1e-1
  # Sobol's balance: with 16 points, each quarter of each unit axis holds exactly 4.
  np.testing.assert_array_equal(np.bincount((unit[:, 0] * 4).astype(int), minlength=4), 4)


def test_sobol_points_same_seed_same_points():
  assert stats.sobol_points(SPACE, 8, seed=0) == stats.sobol_points(SPACE, 8, seed=0)
  assert stats.sobol_points(SPACE, 8, seed=0) != stats.sobol_points(SPACE, 8, seed=1)
  assert len(stats.sobol_points(SPACE, 5, seed=0)) == 5  # Not a power of 2: still works.


@pytest.mark.parametrize("space, num, seed, match", [
    ({"lr": (0.0, 1.0, "log")}, 4, 0, r"space\['lr'\]=\(0.0, 1.0, 'log'\) needs low < high and "
                                       r"low > 0"),
    ({"lr": (1.0, 0.5, "linear")}, 4, 0, r"needs low < high"),
    ({"lr": (1e-3, 1.0, "exp")}, 4, 0, r"scale 'exp'; valid: linear, log"),
    ({"lr": (1e-3, 1.0)}, 4, 0, r"must be \(low, high, 'log' \| 'linear'\)"),
    (SPACE, 0, 0, r"num=0"),
    (SPACE, 4, -1, r"seed=-1"),
])
def test_sobol_points_errors(space, num, seed, match):
  with pytest.raises(ValueError, match=match):
    stats.sobol_points(space, num, seed)


def test_deepobs_log_grid():
  """DeepOBS: 36 learning rates log-equally spaced over [1e-5, 1e2], 5 per decade."""
  grid = stats.deepobs_log_grid()
  assert len(grid) == 36
  np.testing.assert_allclose(grid, 10.0 ** (-5 + np.arange(36) / 5), rtol=1e-12)
  np.testing.assert_allclose(grid[::5], 10.0 ** np.arange(-5, 3), rtol=1e-12)
  np.testing.assert_allclose(stats.deepobs_log_grid(1e-3, 1e-1, 3), [1e-3, 1e-2, 1e-1])
  with pytest.raises(ValueError, match=r"0 < low < high"):
    stats.deepobs_log_grid(1e-1, 1e-3)


# (per-run val_accuracy histories, expected target or an error fragment)
TARGETS = {
    "median_of_bests": ([[0.5, 0.9, 0.8], [0.7], [0.95, 0.6], [0.85], [0.1, 0.91]], 0.9),
    "even_seeds": ([[0.1], [0.2], [0.3], [0.4], [0.5], [0.6]], 0.35),
    "too_few_seeds": ([[0.5]] * 4, "at least 5 seeds"),
    "no_metric": ([[0.5]] * 4 + [[]], "has no 'val_accuracy'"),
}


@pytest.mark.parametrize("name", list(TARGETS))
def test_workload_target(name):
  histories, want = TARGETS[name]
  records = [[{"step": i, "val_accuracy": v} for i, v in enumerate(h)] for h in histories]
  if isinstance(want, str):
    with pytest.raises(ValueError, match=want):
      stats.workload_target(records)
  else:
    assert stats.workload_target(records) == pytest.approx(want)
