"""The training reproductions (experiments/reproduce_{greydanus2020,wu2018,zeiler2013,
srivastava2014}.py).

Each script's bookkeeping (which runs, the verdict, the report, the plot) is tested with
``train`` replaced by a table of accuracies (in-process, no training); one real fast run of
the MNIST-1D baselines trains in a subprocess with one CPU device (conv models must not run
on the forced in-process devices, docs/design.md) and checks the cheapest robust direction.
"""

import json
import os
import subprocess
import sys

import pytest

from experiments import common
from experiments import reproduce_greydanus2020 as grey
from experiments import reproduce_srivastava2014
from experiments import reproduce_wu2018
from experiments import reproduce_zeiler2013

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _greydanus(c):
  return {"logistic": 0.32, "mlp": 0.66, "cnn": 0.93}[c.model.name]


def _wu(c):
  small = c.batch_size == 2
  return 0.90 - (0.10 if small and c.model.norm == "batch" else 0.0) - (0.01 if small else 0.0)


def _zeiler(c):
  return {"stochastic": 0.80, "max": 0.65, "avg": 0.64}[c.model.pool]


def _srivastava(c):
  return 0.66 + 0.08 * (c.model.dropout > 0) + 0.05 * (c.model.dropconnect > 0)


def _negate(table):
  """The same accuracies turned upside down: the finding must then not be reproduced."""
  return lambda c: 1.0 - table(c)


# name -> (module, accuracy table with the paper's finding)
REPRODUCTIONS = {
    "greydanus2020": (grey, _greydanus),
    "wu2018": (reproduce_wu2018, _wu),
    "zeiler2013": (reproduce_zeiler2013, _zeiler),
    "srivastava2014": (reproduce_srivastava2014, _srivastava),
}


def _fake_train(table, seen):
  def train(config):
    seen.append(config)
    acc = table(config)
    return {"test_accuracy": acc, "train_loss": 0.1, "status": "completed",
            "curve": [(config.num_train_steps // 2, acc - 0.1), (config.num_train_steps, acc)]}
  return train


@pytest.mark.parametrize("name", list(REPRODUCTIONS))
@pytest.mark.parametrize("fast", [False, True])
def test_verdict_follows_the_accuracies(name, fast, monkeypatch):
  module, table = REPRODUCTIONS[name]
  seen = []
  monkeypatch.setattr(common, "train", _fake_train(table, seen))
  result = module.run(fast=fast)
  assert result["reproduced"], module.report(result)
  assert "\nREPRODUCED" in module.report(result)
  assert all(c.checkpoint_every == 0 for c in seen)
  monkeypatch.setattr(common, "train", _fake_train(_negate(table), []))
  result = module.run(fast=fast)
  assert not result["reproduced"]
  assert "NOT REPRODUCED" in module.report(result)


def test_wu_runs_equal_epochs(monkeypatch):
  seen = []
  monkeypatch.setattr(common, "train", _fake_train(_wu, seen))
  reproduce_wu2018.run(fast=False)
  steps = {(c.model.norm, c.batch_size): c.num_train_steps for c in seen}
  assert steps == {("batch", 32): 3750, ("batch", 2): 60000, ("group", 32): 3750,
                   ("group", 2): 60000}
  assert {c.optimizer.learning_rate for c in seen} == {reproduce_wu2018.LEARNING_RATE}


def test_plot_is_written(tmp_path, monkeypatch):
  monkeypatch.setattr(common, "train", _fake_train(_wu, []))
  path = tmp_path / "sub" / "repro.png"
  reproduce_wu2018.run(fast=True, plot_path=str(path))
  assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_make_config_applies_dotted_overrides():
  config = common.make_config("configs.mlp", {"model.width": 7, "seed": 3})
  assert (config.model.name, config.model.width, config.seed) == ("mlp", 7, 3)
  assert config.checkpoint_every == 0
  with pytest.raises(ValueError, match="model.widht"):
    common.make_config("configs.mlp", {"model.widht": 7})


@pytest.mark.slow
@pytest.mark.timeout(240)
def test_fast_baselines_train_for_real(tmp_path):
  """Real training, 300 steps: the CNN is already far ahead of logistic regression."""
  env = dict(os.environ)
  env.pop("XLA_FLAGS", None)  # one CPU device (conftest forces 4 in-process)
  env.update(JAX_PLATFORMS="cpu", PYTHONPATH=REPO)
  code = ("import json; from experiments import reproduce_greydanus2020 as g; "
          f"r = g.run(fast=True, plot_path={str(tmp_path / 'g.png')!r}); "
          "print('RESULT', json.dumps(r))")
  proc = subprocess.run([sys.executable, "-c", code], cwd=REPO, env=env, capture_output=True,
                        text=True, timeout=220)
  assert proc.returncode == 0, proc.stderr[-3000:]
  line = next(l for l in proc.stdout.splitlines() if l.startswith("RESULT "))
  result = json.loads(line[len("RESULT "):])
  assert result["steps"] == 300
  assert result["cnn/test_accuracy"] > result["logistic/test_accuracy"] + 0.2
  assert 0.1 < result["logistic/test_accuracy"] < 0.5
  assert (tmp_path / "g.png").exists()
