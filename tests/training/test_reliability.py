"""Faults in-process (tiny dense config, 4 forced CPU devices): signals at exact points,
corrupt checkpoints, a full disk, a changed config, a second run on the same workdir. Each
interrupted run, resumed, must end bit-identical to an uninterrupted one, with every
evaluation step once in metrics.jsonl. The table of faults is docs/reliability.md."""

import json
import logging
import os
import shutil
import subprocess
import sys
import time

import pytest

from configs import tiny
from flaxopt.training import checkpoint as checkpoint_lib
from flaxopt.training import config as config_lib
from flaxopt.training import hooks as hooks_lib
from flaxopt.training import lock as lock_lib
from flaxopt.training import loop

# tiny: 60 steps, evaluations at 20/40/60, checkpoints at 30/60.
CONFIG = tiny.get_config()
TIMED = ("wall_time", "train_time", "steps_per_sec")


def _records(workdir):
  with open(os.path.join(workdir, "metrics.jsonl")) as f:
    return [{k: v for k, v in json.loads(l).items() if k not in TIMED} for l in f]


def _summary(workdir):
  with open(os.path.join(workdir, "summary.json")) as f:
    return json.load(f)


def _final(summary):
  return {k: v for k, v in summary["final"].items() if k not in TIMED}


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
  workdir = str(tmp_path_factory.mktemp("reference"))
  summary = loop.train_and_evaluate(CONFIG, workdir)
  assert summary["status"] == "completed"
  return workdir


def _copy(reference, tmp_path):
  workdir = str(tmp_path / "run")
  shutil.copytree(reference, workdir)
  return workdir


def _assert_same_as_reference(workdir, reference):
  assert _records(workdir) == _records(reference)  # bitwise-equal floats, steps once
  summary = _summary(workdir)
  assert summary["status"] == "completed"
  assert _final(summary) == _final(_summary(reference))


@pytest.mark.timeout(400)
@pytest.mark.parametrize("fault,saved_at", [
    ("sigterm@step=45", 45),  # mid-training, between syncs: pending metric sums are saved
    pytest.param("sigint@evaluate=40", 40, marks=pytest.mark.slow),  # during an evaluation
    pytest.param("sigterm@save=30", 30, marks=pytest.mark.slow),  # during a checkpoint save
])
def test_signal_saves_at_the_current_step_and_resume_is_identical(fault, saved_at, reference,
                                                                  tmp_path):
  workdir = str(tmp_path / "run")
  summary = loop.train_and_evaluate(CONFIG, workdir, hooks=hooks_lib.FaultInjector(fault),
                                    handle_signals=True)
  assert summary["status"] == "preempted" and summary["step"] == saved_at
  assert _summary(workdir)["status"] == "preempted"
  ckpt = checkpoint_lib.Checkpointer(os.path.join(workdir, "checkpoints"))
  assert ckpt.latest_step() == saved_at
  ckpt.close()
  loop.train_and_evaluate(CONFIG, workdir, handle_signals=True)
  _assert_same_as_reference(workdir, reference)


def _damage(checkpoint_dir, how):
  files = [os.path.join(d, f) for d, _, fs in os.walk(checkpoint_dir) for f in fs]
  assert files
  for path in files:
    if how == "truncate":
      with open(path, "r+b") as f:
        f.truncate(os.path.getsize(path) // 3)
    else:
      os.remove(path)


@pytest.mark.timeout(300)
@pytest.mark.parametrize("how", ["truncate", pytest.param("delete", marks=pytest.mark.slow)])
def test_corrupt_newest_checkpoint_is_moved_aside_and_the_older_one_used(how, reference,
                                                                         tmp_path, caplog):
  workdir = _copy(reference, tmp_path)
  _damage(os.path.join(workdir, "checkpoints", "60"), how)
  with open(os.path.join(workdir, "metrics.jsonl"), "a") as f:
    f.write('{"step": 80, "train_lo')  # a record cut short by a kill
  with caplog.at_level(logging.WARNING):
    loop.train_and_evaluate(CONFIG, workdir)
  warnings = [r.getMessage() for r in caplog.records
              if "cannot be restored" in r.getMessage()]
  assert len(warnings) == 1 and "step 60" in warnings[0] and "resuming from step 30" in \
      warnings[0], warnings
  assert "\n" not in warnings[0]
  aside = os.listdir(os.path.join(workdir, "checkpoints_corrupt"))
  assert len(aside) == 1 and aside[0].startswith("60-")  # moved, not deleted
  _assert_same_as_reference(workdir, reference)


def test_no_valid_checkpoint_is_an_error_not_a_restart(reference, tmp_path):
  workdir = _copy(reference, tmp_path)
  for step in ("30", "60"):
    _damage(os.path.join(workdir, "checkpoints", step), "truncate")
  with pytest.raises(checkpoint_lib.CheckpointError, match="no checkpoint in .* can be "
                                                           "restored") as e:
    loop.train_and_evaluate(CONFIG, workdir)
  assert "\n" not in str(e.value)
  assert not os.path.exists(os.path.join(workdir, "checkpoints_corrupt"))


@pytest.mark.timeout(400)
@pytest.mark.slow
def test_full_disk_is_one_line_and_resume_works_once_space_is_back(reference, tmp_path):
  workdir = _copy(reference, tmp_path)
  shutil.rmtree(os.path.join(workdir, "checkpoints", "60"))  # the run stopped after step 30
  for fault in ("enospc@metrics=40", "enospc@save=60"):
    with pytest.raises(checkpoint_lib.StorageError) as e:
      loop.train_and_evaluate(CONFIG, workdir, hooks=hooks_lib.FaultInjector(fault))
    message = str(e.value)
    assert "No space left on device" in message and "(step 30) is intact" in message
    assert "\n" not in message
    ckpt = checkpoint_lib.Checkpointer(os.path.join(workdir, "checkpoints"))
    assert ckpt.manager.all_steps() == [30]
    ckpt.close()
  loop.train_and_evaluate(CONFIG, workdir)  # space is back
  _assert_same_as_reference(workdir, reference)


def test_a_different_config_is_a_one_line_error_naming_the_fields(reference):
  changed = config_lib.apply_overrides(CONFIG, [("optimizer.learning_rate", 0.5),
                                                ("model.width", 8)])
  before = sorted(os.listdir(reference))
  with pytest.raises(config_lib.ConfigError) as e:
    loop.train_and_evaluate(changed, reference)
  message = str(e.value)
  assert "model.width 16 -> 8" in message and "optimizer.learning_rate 0.01 -> 0.5" in message
  assert "\n" not in message and sorted(os.listdir(reference)) == before
  more_steps = config_lib.apply_overrides(CONFIG, [("num_train_steps", 80)])
  loop._check_workdir_config(config_lib.complete(more_steps), reference)  # allowed


# ---------------------------------------------------------------------------------------
# One run per workdir.
# ---------------------------------------------------------------------------------------
def test_second_run_on_a_held_workdir_names_the_holder(tmp_path):
  with lock_lib.WorkdirLock(str(tmp_path)):
    with pytest.raises(lock_lib.WorkdirLockedError, match=f"in use by PID {os.getpid()} on "):
      loop.train_and_evaluate(CONFIG, str(tmp_path))
  with lock_lib.WorkdirLock(str(tmp_path)):  # released: free again
    pass


def test_lock_of_a_dead_process_is_taken_over_with_a_warning(tmp_path, caplog):
  import socket  # pylint: disable=g-import-not-at-top
  dead = subprocess.Popen([sys.executable, "-c", "pass"])
  dead.wait()
  with open(tmp_path / lock_lib.LOCK_FILE, "w") as f:
    f.write(f"{dead.pid} {socket.gethostname()}\n")
  with caplog.at_level(logging.WARNING):
    with lock_lib.WorkdirLock(str(tmp_path)):
      with open(tmp_path / lock_lib.LOCK_FILE) as f:
        assert f.read().split()[0] == str(os.getpid())
  assert f"left by PID {dead.pid}" in caplog.text and "no longer running" in caplog.text


# Loads training/lock.py alone (no JAX: starts in milliseconds), waits for a common start
# time, then tries the lock and holds it for a second.
_RACER = """
import importlib.util, sys, time
spec = importlib.util.spec_from_file_location("lock", sys.argv[1])
lock = importlib.util.module_from_spec(spec); spec.loader.exec_module(lock)
while time.time() < float(sys.argv[3]):
  pass
try:
  held = lock.WorkdirLock(sys.argv[2]); held._acquire(); print("ran"); sys.stdout.flush()
  time.sleep(1.0); held.release()
except lock.WorkdirLockedError:
  print("refused")
"""


@pytest.mark.timeout(60)
def test_processes_started_at_the_same_instant_exactly_one_runs(tmp_path):
  start = time.time() + 2.0
  procs = [subprocess.Popen([sys.executable, "-c", _RACER, lock_lib.__file__, str(tmp_path),
                             str(start)], stdout=subprocess.PIPE, text=True)
           for _ in range(4)]
  outcomes = sorted(p.communicate(timeout=30)[0].strip() for p in procs)
  assert outcomes == ["ran", "refused", "refused", "refused"]
