"""The loop in-process on the tiny config (dense model, 4 forced CPU devices): validation,
the divergence guard, early stopping with the best parameters restored, schedules."""

import json
import os

import jax
import numpy as np
import optax
import pytest

from configs import tiny
from flaxopt.training import checkpoint as checkpoint_lib
from flaxopt.training import loop


def _config(**overrides):
  config = tiny.get_config()
  for key, value in overrides.items():
    node = config
    *parents, leaf = key.split(".")
    for part in parents:
      node = node[part]
    node[leaf] = value
  return config


def _read(workdir, name):
  with open(os.path.join(workdir, name)) as f:
    return json.load(f) if name.endswith(".json") else [json.loads(l) for l in f]


# field overrides -> a fragment of the one-line message (naming the bad value).
BAD_CONFIGS = [
    ({"batch_size": 0}, "batch_size=0: must be >= 1"),
    ({"num_train_steps": -5}, "num_train_steps=-5: must be >= 1"),
    ({"optimizer.learning_rate": -1e-3}, "optimizer.learning_rate=-0.001: must be > 0"),
    ({"optimizer.name": "adamm"}, "optimizer.name='adamm': Unknown optimizer 'adamm'. "
                                  "Did you mean 'adam'?"),
    ({"optimizer.schedule": "linear"}, "optimizer.schedule='linear': must be one of constant, "
                                       "cosine, warmup_cosine"),
    ({"dataset.name": "mnist2d"}, "dataset.name='mnist2d': must be one of cifar10, digits"),
    ({"model.norm": "group", "model.num_groups": 7}, "num_groups=7 does not divide the 16"),
    ({"model.activation": "relux"}, "model.activation='relux': Unknown activation 'relux'"),
    ({"parallel": "pjit"}, "parallel='pjit': must be one of jit, pmap"),
    ({"augment.ops": "mixup,blur"}, "augment.ops='mixup,blur': Unknown augment 'blur'"),
    ({"early_stopping.criterion": "never"}, "early_stopping.criterion='never': must be one of "
                                            "patience, gl, pq, up"),
]


@pytest.mark.parametrize("overrides,message", BAD_CONFIGS,
                         ids=[",".join(o) for o, _ in BAD_CONFIGS])
def test_validate_config_names_the_bad_value(overrides, message):
  with pytest.raises(ValueError) as e:
    loop.validate_config(_config(**overrides))
  assert message in str(e.value)
  assert "\n" not in str(e.value)


def test_default_configs_validate():
  from configs import default, digits, logistic, mlp  # pylint: disable=g-import-not-at-top
  for module in (default, mlp, logistic, digits, tiny):
    loop.validate_config(module.get_config())


@pytest.mark.timeout(120)
def test_batch_not_divisible_by_devices_is_a_config_error(tmp_path):
  with pytest.raises(loop.ConfigError, match="batch_size 10 is not divisible by the number "
                                             "of devices 4"):
    loop.train_and_evaluate(_config(batch_size=10), str(tmp_path))


@pytest.mark.timeout(120)
def test_divergence_stops_and_keeps_the_last_good_checkpoint(tmp_path, caplog):
  workdir = str(tmp_path)
  # 20 good steps (checkpoints at 10 and 20), then resume with a huge learning rate.
  good = _config(**{"optimizer.name": "sgd", "optimizer.learning_rate": 0.1,
                    "num_train_steps": 20, "checkpoint_every": 10, "eval_every": 10})
  assert loop.train_and_evaluate(good, workdir)["status"] == "completed"
  bad = _config(**{"optimizer.name": "sgd", "optimizer.learning_rate": 1e30,
                   "checkpoint_every": 10, "eval_every": 10})
  # A workdir refuses a different config (only num_train_steps may change); this test wants
  # the good checkpoints under an exploding learning rate, so it rewrites config.json.
  with open(os.path.join(workdir, "config.json"), "w") as f:
    json.dump(bad.to_dict(), f)
  with caplog.at_level("ERROR"):
    summary = loop.train_and_evaluate(bad, workdir)
  assert summary["status"] == "diverged"
  assert _read(workdir, "summary.json")["status"] == "diverged"
  assert "Training diverged: non-finite loss" in caplog.text
  ckpt = checkpoint_lib.Checkpointer(os.path.join(workdir, "checkpoints"))
  assert ckpt.latest_step() == 20  # the non-finite state was never saved
  restored = ckpt.manager.restore(20)
  assert all(np.isfinite(np.asarray(a)).all() for a in jax.tree.leaves(restored["state"]))
  ckpt.close()


@pytest.mark.timeout(120)
def test_early_stopping_restores_the_best_parameters(tmp_path):
  workdir = str(tmp_path)
  # 'max' of a falling train loss never improves after the first evaluation: stops at the
  # second one (patience 1) and restores the parameters of step 20.
  # Checkpoints at 10 (before any evaluation: the initial "best" copy must survive donation).
  config = _config(**{"early_stopping.enabled": True, "early_stopping.metric": "train_loss",
                      "early_stopping.mode": "max", "early_stopping.patience": 1,
                      "checkpoint_every": 10})
  summary = loop.train_and_evaluate(config, workdir)
  records = _read(workdir, "metrics.jsonl")
  assert summary["status"] == "early_stopped"
  assert [r["step"] for r in records] == [20, 40]
  assert summary["final"]["step"] == 20 and summary["final"]["restored_best"]
  # A fresh evaluation of the restored parameters reproduces the step-20 evaluation.
  np.testing.assert_allclose(summary["final"]["test_loss"], records[0]["test_loss"], rtol=1e-6)
  assert summary["final"]["test_loss"] != records[1]["test_loss"]


@pytest.mark.parametrize("name,expected", [
    ("constant", [0.1, 0.1, 0.1]),
    ("cosine", [0.1, 0.05, 0.0]),
    ("warmup_cosine", [0.0, 0.1, 0.0]),
])
def test_schedules(name, expected):
  config = _config(**{"optimizer.learning_rate": 0.1, "optimizer.schedule": name,
                      "optimizer.warmup_steps": 50})
  schedule = loop.make_schedule(config.optimizer, 100)
  got = [loop.learning_rate_at(schedule, s) for s in (0, 50, 100)]
  np.testing.assert_allclose(got, expected, atol=1e-7)


@pytest.mark.parametrize("name,reference", [
    ("cosine", lambda lr, steps, warmup: optax.cosine_decay_schedule(lr, steps)),
    ("warmup_cosine", lambda lr, steps, warmup: optax.warmup_cosine_decay_schedule(
        0.0, lr, warmup, steps)),
])
def test_schedules_match_optax(name, reference):
  lr, steps, warmup = 0.3, 100, 7
  config = _config(**{"optimizer.learning_rate": lr, "optimizer.schedule": name,
                      "optimizer.warmup_steps": warmup})
  ours = loop.make_schedule(config.optimizer, steps)
  theirs = reference(lr, steps, warmup)
  counts = np.arange(0, steps + 20)
  np.testing.assert_allclose(jax.vmap(ours)(counts), jax.vmap(theirs)(counts), rtol=1e-6,
                             atol=1e-7)


def test_optimizer_kwargs_are_passed_through():
  config = _config(**{"optimizer.name": "momentum", "optimizer.momentum": 0.5})
  tx = loop.make_optimizer(config.optimizer, 0.1)
  params = {"w": np.ones(2, np.float32)}
  state = tx.init(params)
  ref = optax.sgd(0.1, momentum=0.5)
  g = {"w": np.full(2, 2.0, np.float32)}
  for _ in range(2):
    u, state = tx.update(g, state, params)
  ref_state = ref.init(params)
  for _ in range(2):
    ref_u, ref_state = ref.update(g, ref_state, params)
  np.testing.assert_allclose(u["w"], ref_u["w"], rtol=1e-6)


@pytest.mark.multidevice
@pytest.mark.timeout(120)
def test_pmap_and_jit_loops_agree_on_four_devices(tmp_path):
  """The whole loop, data pipeline included, gives the same records under jit and pmap."""
  records = {}
  for mode in ("jit", "pmap"):
    workdir = str(tmp_path / mode)
    summary = loop.train_and_evaluate(
        _config(parallel=mode, num_train_steps=20, eval_every=10, checkpoint_every=0,
                **{"diagnostics.every": 10}), workdir)
    assert summary["status"] == "completed" and summary["num_devices"] == 4
    records[mode] = _read(workdir, "metrics.jsonl")
    records[mode + "_diag"] = _read(workdir, "diagnostics.jsonl")
  for key in ("train_loss", "test_loss", "test_accuracy"):
    np.testing.assert_allclose([r[key] for r in records["pmap"]],
                               [r[key] for r in records["jit"]], rtol=1e-5, err_msg=key)
  # Per-layer diagnostics are written in both modes, at the same steps, with the same numbers.
  assert [r["step"] for r in records["jit_diag"]] == [10, 20]
  assert [r["step"] for r in records["pmap_diag"]] == [10, 20]
  np.testing.assert_allclose(
      np.asarray(jax.tree.leaves([r for r in records["pmap_diag"]]), dtype=float),
      np.asarray(jax.tree.leaves([r for r in records["jit_diag"]]), dtype=float), rtol=1e-4, atol=1e-6)
