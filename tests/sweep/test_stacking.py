"""The sweep's stacks (``execute.group_stacks``, ``execute.train_group``): which runs train
together, the fallbacks (out of memory: split; not traceable per member: solo), and a real
stacked study whose members match their solo runs."""

import json
import os

import ml_collections
import pytest

from configs import tiny
from flaxopt import sweep
from flaxopt import training
from flaxopt.sweep import execute
from flaxopt.sweep import plan as plan_lib
from flaxopt.training.config import ConfigError


def _base() -> ml_collections.ConfigDict:
  base = tiny.get_config()
  base.dataset.num_train = 200
  base.model.width = 8
  base.num_train_steps = 10
  base.eval_every = 5
  base.log_every = 5
  base.checkpoint_every = 0
  return base


def _run(workdir: str, seed: int = 0, **overrides) -> plan_lib.Run:
  config = _base()
  config.seed = seed
  for field, value in overrides.items():
    section, leaf = field.split("__")
    config[section][leaf] = value
  return plan_lib.Run(setting=None, seed=seed, workdir=workdir, config=config)


# (runs as (seed, overrides), max_members, expected stack sizes, a fragment of the log)
GROUPS = {
    "seeds_and_lrs_stack": ([(s, {"optimizer__learning_rate": lr}) for s in (0, 1)
                             for lr in (0.01, 0.1)], 16, [4], None),
    "capped_in_near_equal_stacks": ([(s, {}) for s in range(5)], 2, [2, 2, 1], None),
    "optimizer_names_apart": ([(0, {"optimizer__name": "adam"}), (1, {"optimizer__name": "adam"}),
                               (0, {"optimizer__name": "sgd"})], 16, [2, 1],
                              "optimizer.name differs ('adam', 'sgd')"),
    "solo": ([(s, {}) for s in range(3)], 1, [1, 1, 1], None),
}


@pytest.mark.parametrize("name", list(GROUPS))
def test_group_stacks(name, tmp_path):
  specs, max_members, sizes, message = GROUPS[name]
  runs = [_run(str(tmp_path / f"r{i}"), seed, **o) for i, (seed, o) in enumerate(specs)]
  lines = []
  stacks = execute.group_stacks(runs, max_members, lines.append)
  assert [len(s) for s in stacks] == sizes
  assert sorted(r.workdir for s in stacks for r in s) == sorted(r.workdir for r in runs)
  from flaxopt.training import members  # pylint: disable=g-import-not-at-top
  assert all(members.stack_problem([r.config for r in s]) is None for s in stacks)
  if message:
    assert any(message in line for line in lines), lines
  else:
    assert not lines


@pytest.mark.parametrize("bad", [0, -3])
def test_max_members_must_be_positive(bad, tmp_path):
  with pytest.raises(ValueError, match=f"max_members={bad}: must be >= 1"):
    execute.group_stacks([_run(str(tmp_path))], bad)
  study = ml_collections.ConfigDict({"name": "x", "base": _base(), "seeds": "0"})
  with pytest.raises(ConfigError, match=f"max_members={bad}: must be >= 1"):
    sweep.run_study(study, str(tmp_path / "study"), max_members=bad)
  assert not os.path.exists(tmp_path / "study")


def _fake_training(monkeypatch, fail):
  """train_stack / train_and_evaluate that record their calls and fail as ``fail`` says."""
  calls = []

  def stack(configs, workdirs):
    calls.append(len(configs))
    error = fail(len(configs))
    if error is not None:
      raise error
    return [{"status": "completed", "final": None} for _ in configs]

  monkeypatch.setattr(training, "train_stack", stack)
  monkeypatch.setattr(training, "train_and_evaluate", lambda c, w: stack([c], [w])[0])
  return calls


def test_a_stack_out_of_memory_is_split_in_half(monkeypatch, tmp_path):
  calls = _fake_training(monkeypatch, lambda k: RuntimeError(
      "RESOURCE_EXHAUSTED: Out of memory allocating 8GiB") if k > 2 else None)
  lines = []
  results = execute.train_group([_base()] * 8, [str(tmp_path / str(i)) for i in range(8)],
                                lines.append)
  assert calls == [8, 4, 2, 2, 4, 2, 2]
  assert [r["summary"]["status"] for r in results] == ["completed"] * 8
  assert "out of memory; training it in stacks of 4" in lines[0]


def test_a_stack_that_cannot_trace_per_member_trains_solo(monkeypatch, tmp_path):
  import jax  # pylint: disable=g-import-not-at-top
  with pytest.raises(jax.errors.TracerBoolConversionError) as info:
    jax.jit(lambda x: 1 if x > 0 else 0)(1.0)
  calls = _fake_training(monkeypatch, lambda k: info.value if k > 1 else None)
  lines = []
  results = execute.train_group([_base()] * 3, [str(tmp_path / str(i)) for i in range(3)],
                                lines.append)
  assert calls == [3, 1, 1, 1]
  assert len(results) == 3 and "not traceable per member" in lines[0]


def test_other_errors_fail_every_member_of_the_stack(monkeypatch, tmp_path):
  _fake_training(monkeypatch, lambda k: ValueError("bad"))
  results = execute.train_group([_base()] * 2, [str(tmp_path / "a"), str(tmp_path / "b")])
  assert [r["error"] for r in results] == ["ValueError: bad"] * 2


def test_a_stacked_study_matches_its_solo_runs(tmp_path):
  study = ml_collections.ConfigDict({
      "name": "stacked", "base": _base(), "seeds": "0,1", "target_accuracy": 0.15,
      "axes": ("optimizer.learning_rate=0.01,0.05", "optimizer.name=adam,momentum")})
  lines = []
  result = sweep.run_study(study, str(tmp_path / "stacked"), max_members=16, log=lines.append)
  assert any("8 runs in 2 stack(s)" in line for line in lines), lines
  assert any("optimizer.name differs" in line for line in lines), lines
  summaries = {}
  for root, _, files in os.walk(tmp_path / "stacked"):
    if "summary.json" in files:
      with open(os.path.join(root, "summary.json")) as f:
        summaries[os.path.relpath(root, tmp_path / "stacked")] = json.load(f)
  assert len(summaries) == 8 and all(s["stack"]["members"] == 4 for s in summaries.values())
  assert os.path.exists(result.files[0])
  # One member against its solo run (the loop's own tests check every stackable field).
  member = next(k for k in summaries if "momentum" in k and "0.05" in k and k.endswith("1"))
  with open(tmp_path / "stacked" / member / "config.json") as f:
    config = ml_collections.ConfigDict(json.load(f))
  solo = training.train_and_evaluate(config, str(tmp_path / "solo"))
  got = summaries[member]["final"]
  for field in ("train_loss", "test_loss"):
    assert got[field] == pytest.approx(solo["final"][field], rel=1e-4)
