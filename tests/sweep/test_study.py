"""flaxopt.sweep.study: the tuning plan, a report of written results, and a real tiny sweep
(2 settings x 2 seeds of a dense model, in-process) with its leaderboard, resumability,
repair of partial members and the worker-process path."""

import csv
import json
import math
import os

import ml_collections
import numpy as np
import pytest

from configs import tiny
from flaxopt import sweep
from flaxopt.sweep import execute
from flaxopt.sweep import report


# ---------------------------------------------------------------------------------------
# Learning-rate tuning: the planned runs and the choice, from (written) tuning results.
# ---------------------------------------------------------------------------------------
def _tiny_study(**fields) -> ml_collections.ConfigDict:
  base = tiny.get_config()
  base.dataset.num_train = 200
  base.model.width = 8
  base.num_train_steps = 10
  base.eval_every = 5
  base.log_every = 5
  base.checkpoint_every = 0
  study = {"name": "tiny", "base": base, "axes": ("model.activation=relu,tanh",),
           "seeds": "0,1", "target_accuracy": 0.15}
  return ml_collections.ConfigDict({**study, **fields})


def _read(path):
  with open(path) as f:
    return json.load(f)


def _write(path, obj):
  os.makedirs(os.path.dirname(path), exist_ok=True)
  with open(path, "w") as f:
    json.dump(obj, f)


def test_tuning_plan_uses_a_validation_split_and_final_runs_the_chosen_lr(tmp_path):
  study = _tiny_study(lr_grid="1e-3,3e-2", tune_seeds=1, validation_size=100)
  tune = sweep.plan_tuning_runs(study, str(tmp_path))
  assert [(r.setting.key, r.lr, r.seed) for r in tune] == [
      (f"model.activation={a}", lr, 0) for a in ("relu", "tanh") for lr in (1e-3, 3e-2)]
  for r in tune:
    assert r.workdir == str(tmp_path / r.setting.key / "tune" / f"lr_{r.lr:.4g}" / "seed_0")
    assert (r.config.dataset.validation_size, r.config.optimizer.learning_rate) == (100, r.lr)
  chosen = {"model.activation=relu": 3e-2, "model.activation=tanh": None}
  final = sweep.plan_final_runs(study, str(tmp_path), chosen)
  assert [(r.setting.key, r.seed) for r in final] == [("model.activation=relu", 0),
                                                      ("model.activation=relu", 1)]
  assert all(r.config.optimizer.learning_rate == 3e-2 and r.config.dataset.validation_size == 0
             for r in final)
  assert sweep.plan_tuning_runs(_tiny_study(), str(tmp_path)) == []


def test_report_only_picks_the_best_validated_lr_and_plots_it(tmp_path):
  study = _tiny_study(lr_grid="1e-3,1e-2,1e-1", validation_size=100)
  val = {"relu": {1e-3: 0.5, 1e-2: 0.7, 1e-1: "nan"}, "tanh": {1e-3: 0.6, 1e-2: 0.4, 1e-1: 0.9}}
  status = {0.1: "diverged"}
  for r in sweep.plan_tuning_runs(study, str(tmp_path)):
    act = r.setting.key.split("=")[1]
    _write(os.path.join(r.workdir, "summary.json"),
           {"status": status.get(r.lr, "completed") if act == "relu" else "completed",
            "final": {"step": 10, "val_accuracy": val[act][r.lr]}})
  result = sweep.run_study(study, str(tmp_path), report_only=True, log=lambda *_: None)
  assert result.trained == []
  assert result.chosen_lr == {"model.activation=relu": 1e-2, "model.activation=tanh": 1e-1}
  assert os.path.basename(result.files[-1]) == "compare_tiny_lr.png"
  with open(result.files[1]) as f:
    rows = {r["model.activation"]: r for r in csv.DictReader(f)}
  assert (rows["relu"]["lr"], rows["tanh"]["lr"]) == ("0.01", "0.1")
  assert rows["relu"]["runs"] == "0"  # final runs not trained (report only)


# ---------------------------------------------------------------------------------------
# A real sweep: 2 activations x 2 seeds of a tiny dense model (in-process: 4 forced devices).
# ---------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def trained_sweep(tmp_path_factory):
  workdir = str(tmp_path_factory.mktemp("sweep"))
  result = sweep.run_study(_tiny_study(), workdir, jobs=1, log=lambda *_: None)
  return workdir, result


@pytest.mark.slow
@pytest.mark.timeout(400)
def test_sweep_runs_every_setting_and_seed_in_its_workdir(trained_sweep):
  workdir, result = trained_sweep
  assert sorted(r.workdir for r in result.trained) == sorted(
      os.path.join(workdir, f"model.activation={a}", f"seed_{s}")
      for a in ("relu", "tanh") for s in (0, 1))
  for r in result.trained:
    config = _read(os.path.join(r.workdir, "config.json"))
    assert (config["seed"], config["model"]["activation"]) == (r.seed, r.setting.labels[0][1])
    summary = _read(os.path.join(r.workdir, "summary.json"))
    assert summary["status"] == "completed" and summary["num_devices"] == 4


@pytest.mark.slow
@pytest.mark.timeout(400)
def test_leaderboard_matches_the_runs(trained_sweep):
  workdir, result = trained_sweep
  md, csv_path, curves = result.files
  assert os.path.basename(curves) == "compare_tiny_curves.png" and os.path.getsize(curves) > 0
  with open(csv_path) as f:
    rows = list(csv.DictReader(f))
  assert sorted(r["model.activation"] for r in rows) == ["relu", "tanh"]
  means = [float(r["test_accuracy"]) for r in rows]
  assert means == sorted(means, reverse=True)  # best first
  with open(md) as f:
    table = f.read()
  for row in rows:
    runs = [os.path.join(workdir, row["setting"], f"seed_{s}") for s in (0, 1)]
    accs = [_read(os.path.join(w, "summary.json"))["final"]["test_accuracy"] for w in runs]
    np.testing.assert_allclose(float(row["test_accuracy"]), np.mean(accs), rtol=1e-6)
    np.testing.assert_allclose(float(row["test_accuracy_std"]), np.std(accs, ddof=1),
                               rtol=1e-6, atol=1e-9)
    hits = [report.first_reaching(report.read_metrics(w), 0.15) for w in runs]
    steps = [h["step"] for h in hits if h]
    if steps:
      np.testing.assert_allclose(float(row["steps_to_target"]), np.mean(steps))
    assert int(row["reached"]) == len(steps)
    assert float(row["lr"]) == 1e-2
    assert int(row["params"]) == 40 * 8 + 8 + 8 * 10 + 10  # Dense 40->8, head 8->10
    assert (row["diverged"], row["runs"]) == ("0", "2")
    assert f"{100 * np.mean(accs):.2f} ± {100 * np.std(accs, ddof=1):.2f}" in table


def _final(workdir):
  """The final evaluation record less its timings (a redone run takes other seconds)."""
  final = _read(os.path.join(workdir, "summary.json"))["final"]
  return {k: v for k, v in final.items() if "time" not in k and "per_sec" not in k}


@pytest.mark.slow
@pytest.mark.timeout(400)
def test_restart_repairs_partial_members_and_redoes_no_completed_run(trained_sweep):
  """Files as an interruption leaves them: each partial member is repaired, the rest skipped."""
  workdir, first = trained_sweep
  member = {(a, s): os.path.join(workdir, f"model.activation={a}", f"seed_{s}")
            for a in ("relu", "tanh") for s in (0, 1)}
  finals = {k: _final(w) for k, w in member.items()}
  csv_path = first.files[1]
  with open(csv_path) as f:
    csv_text = f.read()
  untouched = os.path.join(member["tanh", 1], "summary.json")
  mtime = os.path.getmtime(untouched)
  # A summary.json without metrics: trained again from scratch, the old files kept aside.
  os.remove(os.path.join(member["relu", 0], "metrics.jsonl"))
  # A half-written summary.json: resumed from the final checkpoint.
  path = os.path.join(member["relu", 1], "summary.json")
  with open(path) as f:
    text = f.read()
  with open(path, "w") as f:
    f.write(text[:len(text) // 2])
  # Killed while appending an evaluation, before the summary: resumed, the partial line dropped.
  os.remove(os.path.join(member["tanh", 0], "summary.json"))
  with open(os.path.join(member["tanh", 0], "metrics.jsonl"), "a") as f:
    f.write('{"step": 10, "train_lo')
  # A half-written leaderboard CSV.
  with open(csv_path, "w") as f:
    f.write(csv_text[:len(csv_text) // 3])
  logs = []
  again = sweep.run_study(_tiny_study(), workdir, jobs=1, log=logs.append)
  assert sorted(r.workdir for r in again.trained) == sorted(
      member[k] for k in (("relu", 0), ("relu", 1), ("tanh", 0)))
  assert any("without metrics" in line and "moved aside" in line for line in logs), logs
  assert os.path.isdir(member["relu", 0] + ".partial")
  assert os.path.exists(path + ".partial")
  assert {k: _final(w) for k, w in member.items()} == finals  # same seed, same result
  for w in member.values():
    steps = [r["step"] for r in report.read_metrics(w)]
    assert steps == sorted(set(steps)) and steps[-1] == 10  # each evaluation once
  assert os.path.getmtime(untouched) == mtime
  assert [r["test_accuracy"] for r in again.rows] == [r["test_accuracy"] for r in first.rows]
  with open(csv_path) as f:
    rows = list(csv.DictReader(f))
  assert [r["setting"] for r in rows] == [r["setting"] for r in first.rows]
  assert sweep.run_study(_tiny_study(), workdir, jobs=1, log=lambda *_: None).trained == []


@pytest.mark.slow
@pytest.mark.timeout(400)
def test_resume_skips_finished_runs_and_reruns_missing_ones_in_a_worker(trained_sweep, tmp_path):
  workdir, first = trained_sweep
  summaries = [os.path.join(r.workdir, "summary.json") for r in first.trained]
  mtimes = [os.path.getmtime(p) for p in summaries]
  again = sweep.run_study(_tiny_study(), workdir, jobs=1, log=lambda *_: None)
  nan_as_text = lambda v: "nan" if isinstance(v, float) and math.isnan(v) else v
  timeless = lambda rows: [{k: nan_as_text(v) for k, v in r.items() if k != "seconds_to_target"}
                           for r in rows]  # another test redoes a run (other wall times)
  assert again.trained == [] and timeless(again.rows) == timeless(first.rows)
  assert [os.path.getmtime(p) for p in summaries] == mtimes
  # A run that lost its summary is run again, here in a worker process (the --jobs path, one
  # CPU device): the loop resumes from the final checkpoint, so the results are unchanged.
  lost = os.path.join(workdir, "model.activation=tanh", "seed_1")
  before = _final(lost)
  os.remove(os.path.join(lost, "summary.json"))
  third = sweep.run_study(_tiny_study(), workdir, jobs=2, log=lambda *_: None,
                          jax_cache_dir=str(tmp_path / "jax_cache"),
                          xla_flags=execute.worker_xla_flags(os.environ.get("XLA_FLAGS", "")))
  assert [r.workdir for r in third.trained] == [lost]
  assert _final(lost) == before
  assert _read(os.path.join(lost, "summary.json"))["num_devices"] == 1
  # A finished run of another config in the same workdir is an error, not a skip.
  changed = _tiny_study()
  changed.base.num_train_steps = 12
  with pytest.raises(ValueError, match="num_train_steps"):
    sweep.run_study(changed, workdir, jobs=1, log=lambda *_: None)


def test_bad_study_fails_before_training(tmp_path):
  study = _tiny_study(axes=("model.activation=relu,no_such_activation",))
  with pytest.raises(ValueError, match="no_such_activation"):
    sweep.run_study(study, str(tmp_path), log=lambda *_: None)
  assert os.listdir(tmp_path) == []
