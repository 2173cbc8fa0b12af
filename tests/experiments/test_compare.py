"""experiments/compare.py: the string syntax, the pure helpers (lr selection, leaderboard
rows) against numpy, and a real tiny sweep (2 settings x 2 seeds x 2 learning rates, a dense
model in-process) with its leaderboard, resumability and the worker-process path."""

import csv
import json
import os

import ml_collections
import numpy as np
import pytest

from configs import tiny
from experiments import compare


# ---------------------------------------------------------------------------------------
# String syntax.
# ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("text, expected", [
    ("adam", "adam"), ("3", 3), ("-2", -2), ("1e-3", 1e-3), ("0.5", 0.5), ("true", True),
    ("False", False), ("none", "none"), ("", ""), (" relu ", "relu"),
])
def test_parse_value(text, expected):
  value = compare.parse_value(text)
  assert value == expected and type(value) is type(expected)


@pytest.mark.parametrize("spec, field, values", [
    ("optimizer.name=adam,nadam,sgd", "optimizer.name", ["adam", "nadam", "sgd"]),
    ("batch_size=2,8", "batch_size", [2, 8]),
    ("augment.ops=|random_translate|random_translate,gaussian_noise", "augment.ops",
     ["", "random_translate", "random_translate,gaussian_noise"]),
    ("optimizer.learning_rate=1e-3", "optimizer.learning_rate", [1e-3]),
])
def test_parse_axis(spec, field, values):
  assert compare.parse_axis(spec) == (field, values)


@pytest.mark.parametrize("spec", ["optimizer.name", "=adam", "model.norm=", "seed=1,1"])
def test_parse_axis_rejects(spec):
  with pytest.raises(ValueError, match="Axis"):
    compare.parse_axis(spec)


def test_parse_variant():
  spec = "aug: augment.ops=random_translate,gaussian_noise; model.dropout=0.1"
  assert compare.parse_variant(spec) == (
      "aug", [("augment.ops", "random_translate,gaussian_noise"), ("model.dropout", 0.1)])
  assert compare.parse_variant("base:") == ("base", [])
  for bad in ("no colon", "a=b: c=d", "x: model.dropout"):
    with pytest.raises(ValueError, match="Variant"):
      compare.parse_variant(bad)


@pytest.mark.parametrize("spec, seeds", [
    ("0,1,2", [0, 1, 2]), ("3:6", [3, 4, 5]), (2, [0, 1]), ((4, 7), [4, 7]),
])
def test_parse_seeds(spec, seeds):
  assert compare.parse_seeds(spec) == seeds


@pytest.mark.parametrize("spec", ["", "1,1", 0])
def test_parse_seeds_rejects(spec):
  with pytest.raises(ValueError, match="seeds"):
    compare.parse_seeds(spec)


@pytest.mark.parametrize("spec, grid", [
    ("", []),
    ("1e-4:1e-1:4", [1e-4, 1e-3, 1e-2, 1e-1]),
    ("1e-3:1:7", [10 ** (-3 + k / 2) for k in range(7)]),
    ("3e-3,1e-2", [3e-3, 1e-2]),
])
def test_parse_lr_grid(spec, grid):
  np.testing.assert_allclose(compare.parse_lr_grid(spec), grid, rtol=1e-3)


@pytest.mark.parametrize("spec", ["1e-1:1e-3:3", "0:1:3", "1e-3:1e-1:1", "1e-3,-1"])
def test_parse_lr_grid_rejects(spec):
  with pytest.raises(ValueError, match="lr_grid"):
    compare.parse_lr_grid(spec)


def test_make_settings_is_the_product_variants_first():
  settings = compare.make_settings(["model.norm=none,batch", "batch_size=2,8"],
                                   ["plain:", "drop: model.dropout=0.1"])
  assert len(settings) == 8
  assert settings[0].key == "plain,model.norm=none,batch_size=2"
  assert settings[-1].key == "drop,model.norm=batch,batch_size=8"
  assert dict(settings[-1].overrides) == {"model.dropout": 0.1, "model.norm": "batch",
                                          "batch_size": 8}
  assert compare.make_settings([], [])[0].key == "base"
  assert compare.make_settings(["augment.ops=|random_translate"], [])[0].key == "augment.ops=''"


@pytest.mark.parametrize("axes, variants, match", [
    (["seed=1,2", "seed=3"], [], "twice"),
    ([], ["a b:", "a/b:"], "same directory"),
    ([], ["x:", "x: seed=1"], "repeat"),
])
def test_make_settings_rejects(axes, variants, match):
  with pytest.raises(ValueError, match=match):
    compare.make_settings(axes, variants)


def test_apply_overrides():
  base = tiny.get_config()
  base.lock()
  config = compare.apply_overrides(base, [
      ("model.activation", "tanh"), ("optimizer.learning_rate", 1),
      ("optimizer.momentum", 0.8), ("augment.random_translate.max_shift", 2), ("model.depth", 3)])
  assert (config.model.activation, config.optimizer.momentum, config.model.depth) == \
      ("tanh", 0.8, 3)
  assert config.optimizer.learning_rate == 1.0
  assert config.augment.random_translate.max_shift == 2
  assert base.model.activation == "relu" and "momentum" not in base.optimizer  # a copy
  with pytest.raises(ValueError, match="'model.actvation'"):
    compare.apply_overrides(base, [("model.actvation", "tanh")])
  with pytest.raises(ValueError, match="'batchsize'"):
    compare.apply_overrides(base, [("batchsize", 3)])
  with pytest.raises(ValueError, match="'batch_size'"):
    compare.apply_overrides(base, [("batch_size", "big")])


def test_as_study_fills_defaults_and_rejects_unknown_fields():
  study = compare.as_study(tiny.get_config())
  assert study.base.model.name == "mlp" and tuple(study.axes) == () and study.seeds == "0,1"
  bad = ml_collections.ConfigDict({"base": tiny.get_config(), "axis": ("seed=1",)})
  with pytest.raises(ValueError, match="axis"):
    compare.as_study(bad)


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
  assert compare.select_learning_rate(scores) == best


def test_first_reaching():
  records = [{"step": 10, "test_accuracy": 0.5}, {"step": 20, "test_accuracy": "nan"},
             {"step": 30, "test_accuracy": 0.91}, {"step": 40, "test_accuracy": 0.95}]
  assert compare.first_reaching(records, 0.9)["step"] == 30
  assert compare.first_reaching(records, 0.99) is None


def test_setting_row_against_numpy():
  accs, losses = [0.8, 0.9, 0.7], [0.3, 0.2, 0.5]
  summaries = [{"status": "completed", "final": {"test_accuracy": a, "train_loss": l,
                                                  "test_loss": 2 * l},
                "best": {"test_accuracy": a + 0.01}} for a, l in zip(accs, losses)]
  summaries.append({"status": "diverged", "final": {"test_accuracy": 0.1}})
  histories = [[{"step": 5, "test_accuracy": 0.5, "wall_time": 1.0},
                {"step": 10, "test_accuracy": a, "wall_time": 2.0 + i}]
               for i, a in enumerate(accs)] + [[]]
  setting = compare.Setting((("model.norm", "batch"),), (("model.norm", "batch"),))
  row = compare.setting_row(setting, summaries, histories, target=0.75)
  assert row["model.norm"] == "batch"
  np.testing.assert_allclose(row["test_accuracy"], np.mean(accs))
  np.testing.assert_allclose(row["test_accuracy_std"], np.std(accs, ddof=1))
  np.testing.assert_allclose(row["best_test_accuracy"], np.mean(accs) + 0.01)
  np.testing.assert_allclose([row["train_loss"], row["test_loss"]],
                             [np.mean(losses), 2 * np.mean(losses)])
  assert (row["reached"], row["steps_to_target"], row["seconds_to_target"]) == (2, 10.0, 2.5)
  assert (row["diverged"], row["runs"], row["seeds"]) == (1, 4, 4)


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
  tune = compare.plan_tuning_runs(study, str(tmp_path))
  assert [(r.setting.key, r.lr, r.seed) for r in tune] == [
      (f"model.activation={a}", lr, 0) for a in ("relu", "tanh") for lr in (1e-3, 3e-2)]
  for r in tune:
    assert r.workdir == str(tmp_path / r.setting.key / "tune" / f"lr_{r.lr:.4g}" / "seed_0")
    assert (r.config.dataset.validation_size, r.config.optimizer.learning_rate) == (100, r.lr)
  chosen = {"model.activation=relu": 3e-2, "model.activation=tanh": None}
  final = compare.plan_final_runs(study, str(tmp_path), chosen)
  assert [(r.setting.key, r.seed) for r in final] == [("model.activation=relu", 0),
                                                      ("model.activation=relu", 1)]
  assert all(r.config.optimizer.learning_rate == 3e-2 and r.config.dataset.validation_size == 0
             for r in final)
  assert compare.plan_tuning_runs(_tiny_study(), str(tmp_path)) == []


def test_report_only_picks_the_best_validated_lr_and_plots_it(tmp_path):
  study = _tiny_study(lr_grid="1e-3,1e-2,1e-1", validation_size=100)
  val = {"relu": {1e-3: 0.5, 1e-2: 0.7, 1e-1: "nan"}, "tanh": {1e-3: 0.6, 1e-2: 0.4, 1e-1: 0.9}}
  status = {0.1: "diverged"}
  for r in compare.plan_tuning_runs(study, str(tmp_path)):
    act = r.setting.key.split("=")[1]
    _write(os.path.join(r.workdir, "summary.json"),
           {"status": status.get(r.lr, "completed") if act == "relu" else "completed",
            "final": {"step": 10, "val_accuracy": val[act][r.lr]}})
  result = compare.run_study(study, str(tmp_path), report_only=True, log=lambda *_: None)
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
def sweep(tmp_path_factory):
  workdir = str(tmp_path_factory.mktemp("sweep"))
  result = compare.run_study(_tiny_study(), workdir, jobs=1, log=lambda *_: None)
  return workdir, result


@pytest.mark.timeout(150)
def test_sweep_runs_every_setting_and_seed_in_its_workdir(sweep):
  workdir, result = sweep
  assert sorted(r.workdir for r in result.trained) == sorted(
      os.path.join(workdir, f"model.activation={a}", f"seed_{s}")
      for a in ("relu", "tanh") for s in (0, 1))
  for r in result.trained:
    config = _read(os.path.join(r.workdir, "config.json"))
    assert (config["seed"], config["model"]["activation"]) == (r.seed, r.setting.labels[0][1])
    summary = _read(os.path.join(r.workdir, "summary.json"))
    assert summary["status"] == "completed" and summary["num_devices"] == 4


@pytest.mark.timeout(150)
def test_leaderboard_matches_the_runs(sweep):
  workdir, result = sweep
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
    hits = [compare.first_reaching(compare._read_metrics(w), 0.15) for w in runs]
    steps = [h["step"] for h in hits if h]
    if steps:
      np.testing.assert_allclose(float(row["steps_to_target"]), np.mean(steps))
    assert int(row["reached"]) == len(steps)
    assert float(row["lr"]) == 1e-2
    assert int(row["params"]) == 40 * 8 + 8 + 8 * 10 + 10  # Dense 40->8, head 8->10
    assert (row["diverged"], row["runs"]) == ("0", "2")
    assert f"{100 * np.mean(accs):.2f} ± {100 * np.std(accs, ddof=1):.2f}" in table


@pytest.mark.timeout(150)
def test_resume_skips_finished_runs_and_reruns_missing_ones_in_a_worker(sweep, tmp_path):
  workdir, first = sweep
  summaries = [os.path.join(r.workdir, "summary.json") for r in first.trained]
  mtimes = [os.path.getmtime(p) for p in summaries]
  again = compare.run_study(_tiny_study(), workdir, jobs=1, log=lambda *_: None)
  assert again.trained == [] and again.rows == first.rows
  assert [os.path.getmtime(p) for p in summaries] == mtimes
  # A run that lost its summary is run again, here in a worker process (the --jobs path, one
  # CPU device): the loop resumes from the final checkpoint, so the results are unchanged.
  lost = os.path.join(workdir, "model.activation=tanh", "seed_1")
  before = _read(os.path.join(lost, "summary.json"))["final"]
  os.remove(os.path.join(lost, "summary.json"))
  third = compare.run_study(_tiny_study(), workdir, jobs=2, log=lambda *_: None,
                            jax_cache_dir=str(tmp_path / "jax_cache"))
  assert [r.workdir for r in third.trained] == [lost]
  after = _read(os.path.join(lost, "summary.json"))
  assert after["final"] == before and after["num_devices"] == 1
  # A finished run of another config in the same workdir is an error, not a skip.
  changed = _tiny_study()
  changed.base.num_train_steps = 12
  with pytest.raises(ValueError, match="num_train_steps"):
    compare.run_study(changed, workdir, jobs=1, log=lambda *_: None)


def test_bad_study_fails_before_training(tmp_path):
  study = _tiny_study(axes=("model.activation=relu,no_such_activation",))
  with pytest.raises(ValueError, match="no_such_activation"):
    compare.run_study(study, str(tmp_path), log=lambda *_: None)
  assert os.listdir(tmp_path) == []
