"""``python -m experiments.train`` end to end in subprocesses (one CPU device each): outputs,
resume after SIGKILL with identical results, and a 2-process gloo run of a conv model that
agrees with one process. Plus the CLI's one-line errors for bad configs (in-process)."""

import json
import os
import signal
import socket
import subprocess
import sys

import numpy as np
import pytest

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
# The tiny config with a small conv model (conv all-reduces hang on forced in-process CPU
# devices, tests/conftest.py): 60 steps, evaluations at 20/40/60, checkpoints at 30/60.
TINY_CNN = ["--config=configs/tiny.py", "--config.model.name=cnn", "--config.model.channels=4"]
TIMEOUT = 100  # seconds per subprocess


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory):
  return str(tmp_path_factory.mktemp("jax_cache"))  # shared: later processes skip compiles


def _env(extra=None):
  env = dict(os.environ)
  env.pop("XLA_FLAGS", None)  # one CPU device per process (conftest forces 4 in-process)
  path = [REPO] + ([env["PYTHONPATH"]] if env.get("PYTHONPATH") else [])
  env.update(JAX_PLATFORMS="cpu", PYTHONPATH=os.pathsep.join(path), **(extra or {}))
  return env


def _start(workdir, cache, *flags, extra_env=None):
  cmd = [sys.executable, "-m", "experiments.train", f"--workdir={workdir}",
         f"--jax_cache_dir={cache}", *TINY_CNN, *flags]
  return subprocess.Popen(cmd, cwd=REPO, env=_env(extra_env), stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, text=True)


def _run(workdir, cache, *flags, extra_env=None):
  proc = _start(workdir, cache, *flags, extra_env=extra_env)
  try:
    out, err = proc.communicate(timeout=TIMEOUT)
  except subprocess.TimeoutExpired:
    proc.kill()
    raise
  return proc.returncode, out + err


def _read(workdir, name):
  with open(os.path.join(workdir, name)) as f:
    return json.load(f) if name.endswith(".json") else [json.loads(l) for l in f]


def _metrics_only(records):
  return [{k: v for k, v in r.items() if k not in ("wall_time", "steps_per_sec")}
          for r in records]


@pytest.fixture(scope="module")
def reference(tmp_path_factory, cache_dir):
  """An uninterrupted single-process run of the tiny conv config."""
  workdir = str(tmp_path_factory.mktemp("reference"))
  rc, log = _run(workdir, cache_dir)
  assert rc == 0, log[-3000:]
  return workdir, log


@pytest.mark.timeout(150)
def test_cli_end_to_end_writes_every_output(reference):
  workdir, log = reference
  assert "step 10/60 (17%)  loss" in log and "steps/s  ETA" in log
  summary = _read(workdir, "summary.json")
  assert summary["status"] == "completed" and summary["step"] == 60
  records = _read(workdir, "metrics.jsonl")
  assert [r["step"] for r in records] == [20, 40, 60]
  for key in ("train_loss", "test_loss", "test_accuracy", "learning_rate", "wall_time",
              "steps_per_sec"):
    assert all(np.isfinite(r[key]) for r in records), key
  assert summary["final"] == records[-1]
  assert summary["compile_time"] > 0 and summary["wall_time"] > 0
  assert _read(workdir, "config.json")["model"]["name"] == "cnn"
  assert os.listdir(os.path.join(workdir, "tensorboard"))[0].startswith("events.out.tfevents")
  assert os.path.getsize(os.path.join(workdir, "curves.png")) > 1000
  assert sorted(os.listdir(os.path.join(workdir, "checkpoints"))) == ["30", "60"]


@pytest.mark.timeout(300)
def test_resume_after_sigkill_gives_identical_results(reference, tmp_path, cache_dir):
  ref_dir, _ = reference
  workdir = str(tmp_path)
  # Killed (SIGKILL, no cleanup) after step 40: past the step-30 checkpoint and the step-40
  # evaluation, which the resumed run must drop and recompute.
  rc, log = _run(workdir, cache_dir, "--fault=kill@step=40")
  assert rc == -signal.SIGKILL, log[-3000:]
  assert [r["step"] for r in _read(workdir, "metrics.jsonl")] == [20, 40]
  assert not os.path.exists(os.path.join(workdir, "summary.json"))
  rc, log = _run(workdir, cache_dir)
  assert rc == 0, log[-3000:]
  assert "Resumed from the checkpoint at step 30" in log
  assert _metrics_only(_read(workdir, "metrics.jsonl")) == _metrics_only(
      _read(ref_dir, "metrics.jsonl"))  # bitwise-equal floats, data order included
  assert _read(workdir, "summary.json")["status"] == "completed"


def _free_port():
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


@pytest.mark.timeout(200)
def test_two_processes_over_gloo_agree_with_one(reference, tmp_path, cache_dir):
  ref_dir, _ = reference
  workdir = str(tmp_path)
  port = _free_port()
  procs = [_start(workdir, cache_dir, f"--coordinator_address=127.0.0.1:{port}",
                  "--num_processes=2", f"--process_id={i}") for i in range(2)]
  logs = []
  try:
    for proc in procs:
      out, err = proc.communicate(timeout=TIMEOUT)
      logs.append(out + err)
  finally:
    for proc in procs:
      if proc.poll() is None:
        proc.kill()
  assert [p.returncode for p in procs] == [0, 0], logs[0][-2000:] + logs[1][-2000:]
  summary = _read(workdir, "summary.json")
  assert summary["num_processes"] == 2 and summary["num_devices"] == 2
  got, want = _read(workdir, "metrics.jsonl"), _read(ref_dir, "metrics.jsonl")
  assert [r["step"] for r in got] == [20, 40, 60]
  for key in ("train_loss", "test_loss", "test_accuracy"):
    np.testing.assert_allclose([r[key] for r in got], [r[key] for r in want], rtol=1e-5,
                               err_msg=key)


BAD_FLAGS = [
    ("--config.batch_size=0", "batch_size=0: must be >= 1"),
    ("--config.optimizer.name=adamw2", "optimizer.name='adamw2': Unknown optimizer 'adamw2'"),
    ("--config.dataset.name=mnist2d", "dataset.name='mnist2d': must be one of"),
    ("--config.optimizer.learning_rate=-0.1", "optimizer.learning_rate=-0.1: must be > 0"),
    ("--config.optimizer.b3=0.5", "optimizer.b3=0.5: not an argument of optimizer 'adam'. "
                                  "Did you mean 'b2'? Valid: b1, b2,"),
    ("--config.batchsize=5", "batchsize=5: unknown field. Did you mean 'batch_size'?"),
    ("--config.model.widht=5", "model.widht=5: unknown field. Did you mean 'width'? Valid "
                               "fields of section 'model': activation, channels,"),
]


@pytest.mark.parametrize("flag,message", BAD_FLAGS)
def test_cli_bad_config_is_one_line_and_exit_code_2(flag, message, tmp_path, capsys,
                                                    monkeypatch):
  from absl import flags  # pylint: disable=g-import-not-at-top
  from experiments import train  # pylint: disable=g-import-not-at-top
  argv = ["train", f"--config={os.path.join(REPO, 'configs', 'tiny.py')}",
          f"--workdir={tmp_path}", "--jax_cache_dir=", flag]
  monkeypatch.setattr(sys, "argv", argv)  # config_flags reads overrides from sys.argv
  flags.FLAGS.unparse_flags()
  flags.FLAGS(argv)
  with pytest.raises(SystemExit) as e:
    train.main(["train"])
  assert e.value.code == train.USER_ERROR_EXIT_CODE
  err = capsys.readouterr().err.strip().splitlines()
  assert len(err) == 1 and err[0].startswith("error: ") and message in err[0], err
