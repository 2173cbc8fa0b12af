"""Stacked runs (``training/members.py``, ``loop.train_stack``): which configs stack, and
that every member of a stack follows its solo run.

* float64, one table row per stackable field, a model with BatchNorm and dropout: the
  stacked (vmapped, hyperparameters traced) step and the solo step agree to 1e-10 relative
  in the loss of each of 50 steps and in the whole state after them;
* float32 through the whole loop: each member's train loss within 1e-4 relative of its solo
  run over 200 steps, the same divergence and early-stopping verdicts, the same files;
* killed (SIGKILL) between two members' checkpoint saves and rerun: every member ends with
  the metrics of the uninterrupted stack.

The tests run under the 4-device mesh of conftest (members replicated, batch sharded).
"""

import dataclasses
import json
import os
import signal
import subprocess
import sys
from typing import Any

import jax
import numpy as np
import pytest

from configs import tiny
from flaxopt.training import loop
from flaxopt.training import members
from flaxopt.training.config import ConfigError


def _config(**overrides: Any):
  config = tiny.get_config()
  for key, value in overrides.items():
    node = config
    *parents, leaf = key.split(".")
    for part in parents:
      node = node[part]
    node[leaf] = value
  return config


def _read_jsonl(path: str) -> list[dict]:
  with open(path) as f:
    return [json.loads(line) for line in f]


# ---------------------------------------------------------------------------------------
# Which configs stack.
# ---------------------------------------------------------------------------------------
# (overrides of the second member, None or a fragment of the reason it cannot stack)
STACKING = [
    ({"seed": 3}, None),
    ({"optimizer.learning_rate": 0.3}, None),
    ({"optimizer.name": "sgd", "optimizer.momentum": 0.5}, "optimizer.name differs"),
    ({"regularizer.l2": 1e-3}, None),
    ({"model.dropout": 0.3}, "model.dropout is 0 in some members"),
    ({"model.width": 32}, "model.width differs"),
    ({"batch_size": 50}, "batch_size differs"),
    ({"optimizer.schedule": "cosine"}, "optimizer.schedule differs"),
    ({"parallel": "pmap"}, "parallel differs"),
]


@pytest.mark.parametrize("overrides,reason", STACKING, ids=[",".join(o) for o, _ in STACKING])
def test_stack_problem_names_the_field(overrides, reason):
  configs = [_config(), _config(**overrides)]
  problem = members.stack_problem(configs)
  same_key = members.stack_key(configs[0]) == members.stack_key(configs[1])
  if reason is None:
    assert problem is None and same_key
  else:
    assert reason in problem and "\n" not in problem
    assert not same_key


def test_rates_stack_when_every_member_has_the_layer():
  configs = [_config(**{"model.dropout": 0.1}), _config(**{"model.dropout": 0.4})]
  assert members.stack_problem(configs) is None
  hp = members.hyperparameters(configs)
  assert list(hp) == ["model.dropout"]
  np.testing.assert_array_equal(hp["model.dropout"], [0.1, 0.4])


@pytest.mark.parametrize("model,backend,choice,steps,want", [
    ("cnn", "cpu", "auto", 6000, "unroll"), ("convnet", "cpu", "auto", 3000, "unroll"),
    ("cnn", "cpu", "auto", 2999, "vmap"), ("mlp", "cpu", "auto", 6000, "vmap"),
    ("cnn", "gpu", "auto", 6000, "vmap"), ("mlp", "cpu", "unroll", 10, "unroll"),
    ("cnn", "cpu", "vmap", 6000, "vmap")])
def test_lowering(model, backend, choice, steps, want):
  config = _config(**{"model.name": model, "stack_lowering": choice, "num_train_steps": steps})
  assert members.lowering(config, backend) == want


def test_train_stack_rejects_an_unstackable_stack_before_work(tmp_path):
  configs = [_config(), _config(**{"model.width": 32})]
  with pytest.raises(ConfigError, match="model.width differs"):
    loop.train_stack(configs, [str(tmp_path / "a"), str(tmp_path / "b")])
  with pytest.raises(ConfigError, match="its own workdir"):
    loop.train_stack(configs[:1] * 2, [str(tmp_path / "a")] * 2)
  assert not os.listdir(tmp_path)


# ---------------------------------------------------------------------------------------
# float64: the stacked step against the solo step, one row per stackable field.
# ---------------------------------------------------------------------------------------
BN_DROPOUT = {"model.norm": "batch", "model.dropout": 0.1}
# Heavy-ball momentum as the float64 base: Adam divides the ~1e-17 rounding noise in the
# gradient of a bias that BatchNorm cancels by ~eps, which amplifies any rounding difference
# between two programs (measured: 1e-12 -> 5e-8 in 2 steps with a traced l2); Adam's own
# fields are therefore checked on the model without BatchNorm (still with dropout), and
# Adam + BatchNorm through the whole loop in float32 below.
F64_BASE = {**BN_DROPOUT, "optimizer.name": "momentum", "optimizer.momentum": 0.9,
            "optimizer.learning_rate": 0.05}
_DROP = object()  # a base field the row removes
ADAM = {"model.norm": "none", "optimizer.momentum": _DROP, "optimizer.name": "adam", "optimizer.learning_rate": 0.01,
        "optimizer.b1": 0.9, "optimizer.b2": 0.999, "optimizer.eps": 1e-8}
# name -> (base overrides, the second member's overrides); the first member is the base.
FIELDS = {
    "seed": ({}, {"seed": 7}),
    "learning_rate": ({}, {"optimizer.learning_rate": 3e-3}),
    "seed_and_learning_rate": ({}, {"seed": 2, "optimizer.learning_rate": 0.2}),
    "momentum": ({}, {"optimizer.momentum": 0.5}),
    "adam_b1_b2_eps": (ADAM, {"optimizer.b1": 0.8, "optimizer.b2": 0.99,
                              "optimizer.eps": 1e-4}),
    "adamw_weight_decay": ({**ADAM, "optimizer.name": "adamw", "optimizer.weight_decay": 1e-4},
                           {"optimizer.weight_decay": 0.1}),
    "regularizer_l1": ({}, {"regularizer.l1": 1e-3}),
    "regularizer_l2": ({}, {"regularizer.l2": 1e-2}),
    "dropout": ({}, {"model.dropout": 0.4}),
    "dropconnect": ({"model.dropconnect": 0.2}, {"model.dropconnect": 0.5}),
    "augment_noise": ({"augment.ops": "gaussian_noise"},
                      {"augment.gaussian_noise": {"stddev": 0.3}}),
    "augment_mixup": ({"augment.ops": "mixup"}, {"augment.mixup": {"alpha": 0.7}}),
    "augment_amplitude": ({"augment.ops": "amplitude_scale"},
                          {"augment.amplitude_scale": {"low": 0.5, "high": 1.5}}),
    "unrolled_seed_and_lr": ({"stack_lowering": "unroll"},
                             {"seed": 2, "optimizer.learning_rate": 0.2}),
    "warmup_cosine_lr": ({"optimizer.schedule": "warmup_cosine", "optimizer.warmup_steps": 10},
                         {"optimizer.learning_rate": 0.2}),
}


def _f64(tree):
  return jax.tree.map(lambda a: np.asarray(a, np.float64)
                      if np.issubdtype(np.asarray(a).dtype, np.floating) else np.asarray(a),
                      jax.device_get(tree))


def _rel(a, b) -> float:
  a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
  return float(np.max(np.abs(a - b)) / max(np.max(np.abs(b)), 1e-300)) if a.size else 0.0


def _trajectory(setup, steps: int):
  """Per-step losses ``(steps, K)`` and the final host state, in float64."""
  state = setup.par.put(_f64(loop._init_states(setup)))  # pylint: disable=protected-access
  active = setup.par.put(np.ones(setup.num_members, bool)) if setup.stacked else None
  losses = []
  for step in range(steps):
    sums = setup.par.put(_f64(setup.par.zeros_sums(setup.num_members if setup.stacked else 0)))
    state, sums = setup.train_fn(state, setup.pipe.batch(step), sums, active)
    losses.append(np.atleast_1d(jax.device_get(sums["loss"])))
  return np.asarray(losses), jax.device_get(state)


def _inert(path) -> bool:
  """The bias of a hidden Dense layer followed by BatchNorm: its gradient is 0 in exact
  arithmetic, and Adam turns the rounding noise (~1e-17) into steps of ~lr * noise / eps, so
  both runs hold unrelated noise of order 1e-10 there. Nothing else is excluded."""
  key = jax.tree_util.keystr(path)
  return "['dense_" in key and key.endswith("['bias']")


@pytest.mark.parametrize("name", list(FIELDS))
def test_float64_members_follow_their_solo_runs(name):
  base, second = FIELDS[name]
  merged = lambda *rows: {k: v for k, v in {k: v for r in rows for k, v in r.items()}.items()
                          if v is not _DROP}
  configs = [_config(**merged(F64_BASE, base)), _config(**merged(F64_BASE, base, second))]
  steps = 50
  with jax.enable_x64(True):
    stacked = loop._validated_setup(configs)  # pylint: disable=protected-access
    assert stacked.stacked
    got_losses, got_state = _trajectory(stacked, steps)
    assert got_losses.dtype == np.float64
    assert not np.allclose(got_losses[:, 0], got_losses[:, 1], rtol=1e-6)  # the field acts
    for k, config in enumerate(configs):
      want_losses, want_state = _trajectory(loop._validated_setup(config), steps)  # pylint: disable=protected-access
      assert np.all(np.isfinite(want_losses))
      assert _rel(got_losses[:, k], want_losses[:, 0]) < 1e-10, k
      member = members.index(got_state, k)
      params = lambda s: [a for p, a in jax.tree_util.tree_leaves_with_path(s.params)
                          if not _inert(p)]
      assert _rel(_flat(params(member)), _flat(params(want_state))) < 1e-10, (k, "params")
      for part in ("batch_stats", "opt_state"):  # relative to each part's scale
        assert _rel(_flat(getattr(member, part)), _flat(getattr(want_state, part))) < 1e-10, (
            k, part)


def _flat(tree) -> np.ndarray:
  """Every floating leaf, flattened and concatenated (rounding noise in leaves that are ~0,
  such as a bias before BatchNorm, is measured against the scale of the whole part)."""
  leaves = [np.ravel(a) for a in jax.tree.leaves(tree)
            if np.issubdtype(np.asarray(a).dtype, np.floating)]
  return np.concatenate(leaves) if leaves else np.zeros(0)


# ---------------------------------------------------------------------------------------
# float32 through the loop: train_stack against train_and_evaluate.
# ---------------------------------------------------------------------------------------
SOLO_FILES = {"config.json", "metrics.jsonl", "summary.json", "checkpoints", "curves.png",
              "tensorboard"}


def _loop_configs():
  """Momentum + BatchNorm + dropout; the third member's ``lr * l2 = 5`` makes every weight
  grow as ``|1 - lr l2|^t`` until it overflows (diverged), the first stops early."""
  common = dict(BN_DROPOUT, num_train_steps=200, eval_every=20, log_every=20,
                checkpoint_every=100, **{"dataset.validation_size": 100,
                                         "early_stopping.enabled": True,
                                         "early_stopping.patience": 2,
                                         "optimizer.name": "momentum",
                                         "optimizer.momentum": 0.9})
  return [_config(**common, seed=0, **{"optimizer.learning_rate": 0.05}),
          _config(**common, seed=1, **{"optimizer.learning_rate": 0.005}),
          _config(**common, seed=0, **{"optimizer.learning_rate": 0.05,
                                       "regularizer.l2": 100.0})]


@pytest.fixture(scope="module")
def solo_and_stack(tmp_path_factory):
  root = tmp_path_factory.mktemp("stack")
  configs = _loop_configs()
  stacked = loop.train_stack(configs, [str(root / f"m{k}") for k in range(len(configs))])
  solo = [loop.train_and_evaluate(c, str(root / f"s{k}")) for k, c in enumerate(configs)]
  return root, stacked, solo


def test_float32_members_follow_their_solo_runs_through_the_loop(solo_and_stack):
  root, stacked, solo = solo_and_stack
  verdicts = [s["status"] for s in solo]
  assert set(verdicts) == {"completed", "early_stopped", "diverged"}, verdicts
  for k, (got, want) in enumerate(zip(stacked, solo)):
    assert (got["status"], got["step"]) == (want["status"], want["step"]), k
    assert got["stack"] == {"members": 3, "index": k}
    ours = _read_jsonl(root / f"m{k}" / "metrics.jsonl")
    theirs = _read_jsonl(root / f"s{k}" / "metrics.jsonl")
    assert [r["step"] for r in ours] == [r["step"] for r in theirs]
    for a, b in zip(ours, theirs):
      assert a["train_loss"] == pytest.approx(b["train_loss"], rel=1e-4)
      assert a["val_loss"] == pytest.approx(b["val_loss"], rel=1e-4)
    if want["final"] is not None:
      assert got["final"]["test_accuracy"] == pytest.approx(want["final"]["test_accuracy"],
                                                            abs=2e-3)


def test_members_write_the_files_of_a_solo_run(solo_and_stack):
  root, _, solo = solo_and_stack
  for k, summary in enumerate(solo):
    want = set(os.listdir(root / f"s{k}"))
    assert want >= {"config.json", "summary.json"}
    assert set(os.listdir(root / f"m{k}")) == want, k
    if summary["status"] != "diverged":
      assert want >= SOLO_FILES - {"tensorboard"}


_KILL_BETWEEN_SAVES = r"""
import json, os, signal, sys
import ml_collections
from flaxopt.training import loop
from flaxopt.training.hooks import Hooks

class KillAtSecondSave(Hooks):  # SIGKILL after member 0 saved step 60, before member 1
  seen = 0
  def before_save(self, step):
    if step == 60:
      KillAtSecondSave.seen += 1
      if KillAtSecondSave.seen == 2:
        os.kill(os.getpid(), signal.SIGKILL)

configs, dirs = json.load(open(sys.argv[1]))
loop.train_stack([ml_collections.ConfigDict(c) for c in configs], dirs,
                 hooks=KillAtSecondSave())
"""


def test_kill_9_between_members_saves_resumes_to_the_same_metrics(tmp_path):
  configs = [_config(seed=s, **BN_DROPOUT, **{"optimizer.learning_rate": lr})
             for s, lr in ((0, 0.01), (1, 0.003), (2, 0.03))]
  ref = [str(tmp_path / f"ref{k}") for k in range(3)]
  want = loop.train_stack(configs, ref)
  dirs = [str(tmp_path / f"m{k}") for k in range(3)]
  spec = tmp_path / "spec.json"
  spec.write_text(json.dumps([[c.to_dict() for c in configs], dirs]))
  script = tmp_path / "kill.py"
  script.write_text(_KILL_BETWEEN_SAVES)
  root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
  proc = subprocess.run([sys.executable, str(script), str(spec)], cwd=root, timeout=600,
                        env={**os.environ, "PYTHONPATH": root}, capture_output=True, text=True,
                        check=False)
  assert proc.returncode == -signal.SIGKILL, proc.stderr[-2000:]
  assert sorted(os.listdir(os.path.join(dirs[0], "checkpoints"))) == ["30", "60"]
  assert sorted(os.listdir(os.path.join(dirs[1], "checkpoints"))) == ["30"]
  got = loop.train_stack(configs, dirs)
  rows = lambda d: [{f: r[f] for f in ("step", "train_loss", "test_loss", "test_accuracy")}
                    for r in _read_jsonl(os.path.join(d, "metrics.jsonl"))]
  for k in range(3):
    assert got[k]["status"] == want[k]["status"] == "completed"
    assert rows(dirs[k]) == rows(ref[k]), k


def test_members_log_diagnostics_and_curvature_as_their_solo_runs(tmp_path):
  extras = {"diagnostics.every": 30, "curvature.every": 20, "curvature.lanczos_iters": 5,
            "curvature.trace_samples": 2, "num_train_steps": 40}
  configs = [_config(seed=s, **extras) for s in (0, 1)]
  got = loop.train_stack(configs, [str(tmp_path / "m0"), str(tmp_path / "m1")])
  solo = loop.train_and_evaluate(configs[1], str(tmp_path / "s1"))
  assert got[1]["final"]["sharpness"] == pytest.approx(solo["final"]["sharpness"], rel=1e-3)
  assert got[0]["final"]["sharpness"] != pytest.approx(got[1]["final"]["sharpness"], rel=1e-3)
  for d in ("m0", "m1", "s1"):
    rows = _read_jsonl(tmp_path / d / "diagnostics.jsonl")
    assert [r["step"] for r in rows] == [30], d
  ours, theirs = (_read_jsonl(tmp_path / d / "diagnostics.jsonl")[0] for d in ("m1", "s1"))
  numeric = [k for k, v in theirs.items() if isinstance(v, float)]
  assert numeric and all(ours[k] == pytest.approx(theirs[k], rel=1e-3, abs=1e-6)
                         for k in numeric)


def test_solo_run_has_no_member_axis(tmp_path):
  setup = loop._validated_setup(_config())  # pylint: disable=protected-access
  state = loop._init_states(setup)  # pylint: disable=protected-access
  assert not setup.stacked and setup.hp == {}
  assert state.step.shape == ()
  assert dataclasses.is_dataclass(state)
