"""flaxopt.sweep.report: lr selection and leaderboard rows against numpy."""

import numpy as np
import pytest

from flaxopt.sweep import report
from flaxopt.sweep.spec import Setting


# ---------------------------------------------------------------------------------------
# Pure helpers.
# ---------------------------------------------------------------------------------------
NAN = float("nan")


@pytest.mark.parametrize("scores, best", [
    ({1e-3: [0.6, 0.7], 1e-2: [0.6, 0.65], 1e-1: [0.9, NAN]}, 1e-3),  # nan: lr excluded
    ({1e-3: [0.5], 1e-2: [0.5]}, 1e-3),  # tie -> the smaller lr
    ({1e-2: [0.8], 1e-3: [0.9]}, 1e-3),
    ({1e-3: [NAN], 1e-2: []}, None),
])
def test_select_learning_rate(scores, best):
  assert report.select_learning_rate(scores) == best


def test_first_reaching():
  records = [{"step": 10, "test_accuracy": 0.5}, {"step": 20, "test_accuracy": "nan"},
             {"step": 30, "test_accuracy": 0.91}, {"step": 40, "test_accuracy": 0.95}]
  assert report.first_reaching(records, 0.9)["step"] == 30
  assert report.first_reaching(records, 0.99) is None


def test_setting_row_against_numpy():
  accs, losses = [0.8, 0.9, 0.7], [0.3, 0.2, 0.5]
  summaries = [{"status": "completed", "final": {"test_accuracy": a, "train_loss": l,
                                                  "test_loss": 2 * l},
                "best": {"test_accuracy": a + 0.01}} for a, l in zip(accs, losses)]
  summaries.append({"status": "diverged", "final": {"test_accuracy": 0.1}})
  histories = [[{"step": 5, "test_accuracy": 0.5, "wall_time": 1.0},
                {"step": 10, "test_accuracy": a, "wall_time": 2.0 + i}]
               for i, a in enumerate(accs)] + [[]]
  setting = Setting((("model.norm", "batch"),), (("model.norm", "batch"),))
  row = report.setting_row(setting, summaries, histories, target=0.75)
  assert row["model.norm"] == "batch"
  np.testing.assert_allclose(row["test_accuracy"], np.mean(accs))
  np.testing.assert_allclose(row["test_accuracy_std"], np.std(accs, ddof=1))
  np.testing.assert_allclose(row["best_test_accuracy"], np.mean(accs) + 0.01)
  np.testing.assert_allclose([row["train_loss"], row["test_loss"]],
                             [np.mean(losses), 2 * np.mean(losses)])
  assert (row["reached"], row["steps_to_target"], row["seconds_to_target"]) == (2, 10.0, 2.5)
  assert (row["diverged"], row["runs"], row["seeds"]) == (1, 4, 4)


