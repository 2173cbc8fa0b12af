"""``python -m experiments.train`` end to end in subprocesses (one CPU device each): outputs,
resume after SIGKILL / SIGTERM with identical results, a chain of kills at random points, and a
2-process gloo run of a conv model that agrees with one process. Plus the CLI's one-line
errors for bad configs, a changed config and a held workdir (exit 2, nothing written)."""

import json
import os
import random
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
TIMEOUT = 200  # seconds per subprocess


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
  return [{k: v for k, v in r.items() if k not in ("wall_time", "train_time", "steps_per_sec")}
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
              "train_time", "steps_per_sec"):
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
                               "fields of section 'model': activation, api, channels,"),
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


# --config flags -> the start of the one error line (after 'error: '). Each fails before
# anything is compiled or written.
CLI_ERRORS = [
    (["--config.seed=-1"], "seed=-1: must be in [0, "),
    (["--config.eval_batch_size=-1"], "eval_batch_size=-1: must be >= 0"),
    (["--config.diagnostics.every=-1"], "diagnostics.every=-1: must be >= 0"),
    (["--config.early_stopping.enabled=True", "--config.early_stopping.metric=val_loss"],
     "early_stopping.metric='val_loss': needs a validation split"),
    (["--config.augment.random_translate.max_shift=-1"],
     "augment.random_translate.max_shift=-1: must be >= 0"),
    (["--config.max_to_keep=0"], "max_to_keep=0: must be >= 1"),
    (["--config.optimizer.warmup_steps=-10"], "optimizer.warmup_steps=-10: must be >= 0"),
]


@pytest.mark.parametrize("flags_,message", CLI_ERRORS, ids=[" ".join(f) for f, _ in CLI_ERRORS])
def test_cli_config_error_is_one_line_exit_2_and_writes_nothing(flags_, message, tmp_path,
                                                                capsys, monkeypatch):
  """In process, as test_cli_bad_config_is_one_line_and_exit_code_2 (main() is what the
  process runs; a subprocess per case only added a JAX import each, ~5 s on 2 cores)."""
  from absl import flags  # pylint: disable=g-import-not-at-top
  from experiments import train  # pylint: disable=g-import-not-at-top
  workdir = str(tmp_path / "run")
  argv = ["train", f"--config={os.path.join(REPO, 'configs', 'tiny.py')}",
          f"--workdir={workdir}", "--jax_cache_dir=", *flags_]
  monkeypatch.setattr(sys, "argv", argv)  # config_flags reads overrides from sys.argv
  flags.FLAGS.unparse_flags()
  flags.FLAGS(argv)
  with pytest.raises(SystemExit) as e:
    train.main(["train"])
  assert e.value.code == train.USER_ERROR_EXIT_CODE == 2
  err = capsys.readouterr().err
  errors = [l for l in err.splitlines() if l.startswith("error: ")]
  assert len(errors) == 1 and errors[0].startswith("error: " + message), errors
  assert "Traceback" not in err
  assert not os.path.exists(workdir)


def test_cli_adds_optimizer_kwargs_from_the_command_line(tmp_path, cache_dir):
  """--config.optimizer.b1 is not in the config: accepted, passed to adam and validated."""
  rc, log = _run(str(tmp_path / "run"), cache_dir, "--config.optimizer.b1=0.5",
                 "--config.optimizer.b3=1", "--config.num_train_steps=1")
  assert rc == 2 and "error: optimizer.b3=1: not an argument of optimizer 'adam'" in log, log


@pytest.mark.timeout(300)
def test_cli_held_workdir_and_changed_config_exit_2_naming_the_cause(tmp_path, cache_dir):
  from flaxopt.training import lock as lock_lib  # pylint: disable=g-import-not-at-top
  held, changed = str(tmp_path / "held"), str(tmp_path / "changed")
  os.makedirs(changed)
  from configs import tiny  # pylint: disable=g-import-not-at-top
  from flaxopt.training import config as config_lib  # pylint: disable=g-import-not-at-top
  stored = config_lib.apply_overrides(tiny.get_config(), [
      ("batch_size", 50), ("model.name", "cnn"), ("model.channels", 4)])
  with open(os.path.join(changed, "config.json"), "w") as f:
    json.dump(config_lib.complete(stored).to_dict(), f)
  with lock_lib.WorkdirLock(held):
    procs = [_start(held, cache_dir), _start(changed, cache_dir)]
    (_, err_held), (_, err_changed) = [p.communicate(timeout=TIMEOUT) for p in procs]
  assert [p.returncode for p in procs] == [2, 2]
  assert f"in use by PID {os.getpid()} on {socket.gethostname()}" in err_held, err_held
  assert "the config differs from its config.json in batch_size 50 -> 20" in err_changed
  assert os.listdir(changed) == ["config.json"]
  assert "Traceback" not in err_held + err_changed


@pytest.mark.slow
@pytest.mark.timeout(400)
def test_sigterm_exits_75_and_the_same_command_resumes_identically(reference, tmp_path,
                                                                    cache_dir):
  ref_dir, _ = reference
  workdir = str(tmp_path)
  rc, log = _run(workdir, cache_dir, "--fault=sigterm@evaluate=40")  # during an evaluation
  assert rc == 75, log[-3000:]
  assert _read(workdir, "summary.json")["status"] == "preempted"
  rc, log = _run(workdir, cache_dir)
  assert rc == 0 and "Resumed from the checkpoint at step 40" in log, log[-3000:]
  assert _metrics_only(_read(workdir, "metrics.jsonl")) == _metrics_only(
      _read(ref_dir, "metrics.jsonl"))
  assert _metrics_only([_read(workdir, "summary.json")["final"]]) == _metrics_only(
      [_read(ref_dir, "summary.json")["final"]])


def _kill_points(seed=0):
  """Four SIGKILL points at random steps, one in each phase of the checkpoint cycle (the
  tiny config checkpoints at 30 and 60, evaluates and writes metrics at 20/40/60):

  1. a step before the first checkpoint (the next run starts over, dropping what it wrote);
  2. during the step-30 checkpoint write (a timer fires while orbax writes: a partial
     checkpoint the next run must not resume from);
  3. an evaluation or a metrics write past step 30 (resume from 30, drop and recompute the
     records after it);
  4. during the step-60 checkpoint write (the final one).
  """
  rng = random.Random(seed)
  return [f"kill@step={rng.randint(1, 29)}",
          f"kill@save=30+{rng.uniform(0.0, 0.05):.3f}",
          f"kill@{rng.choice(['evaluate', 'metrics'])}={rng.randint(31, 59)}",
          f"kill@save=60+{rng.uniform(0.0, 0.05):.3f}"]


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_sigkills_at_random_points_then_resume_is_identical(reference, tmp_path, cache_dir):
  """One workdir killed in each phase of the checkpoint cycle in turn (each run resumes the
  last); the last run ends bit-identical to the uninterrupted one, each evaluation once.

  Four kills instead of the former ten: those (seed 0) killed twice before the first
  checkpoint, six times at a step, evaluation or metrics write after a checkpoint (mostly
  resuming from the same step-30 checkpoint again) and twice inside a checkpoint write. What
  the test proves (a chain of resumes of resumes through every kind of kill point ends
  bit-identical) needs one kill per phase; this chain also kills inside the step-30 write,
  which the ten did not. Each run is a subprocess (~9 s on 2 cores): six fewer runs.
  """
  ref_dir, _ = reference
  workdir = str(tmp_path)
  for point in _kill_points():
    rc, log = _run(workdir, cache_dir, f"--fault={point}")
    assert rc in (-signal.SIGKILL, 0), (point, log[-3000:])  # 0: finished before the timer
  rc, log = _run(workdir, cache_dir)
  assert rc == 0, log[-3000:]
  assert _metrics_only(_read(workdir, "metrics.jsonl")) == _metrics_only(
      _read(ref_dir, "metrics.jsonl"))
  assert _read(workdir, "summary.json")["status"] == "completed"
