"""flaxopt.sweep.execute: what a member's files say about it, and how a partial one is repaired.

Files are written by hand here as an interruption would leave them (the real sweep that
repairs them is in test_study.py)."""

import json
import os

import pytest

from flaxopt.sweep import execute

RECORDS = [{"step": 5, "test_accuracy": 0.5}, {"step": 10, "test_accuracy": 0.6}]
SUMMARY = {"status": "completed", "step": 10, "final": RECORDS[-1]}


def _metrics(records, tail=""):
  return "".join(json.dumps(r) + "\n" for r in records) + tail


# name -> (files: name -> text (None: absent), expected status, words in the reason)
CASES = {
    "empty": ({}, "new", ""),
    "finished": ({"summary.json": json.dumps(SUMMARY), "metrics.jsonl": _metrics(RECORDS)},
                 "done", ""),
    "early_stopped_at_best": (
        {"summary.json": json.dumps({**SUMMARY, "status": "early_stopped",
                                     "final": RECORDS[0]}),
         "metrics.jsonl": _metrics(RECORDS)}, "done", ""),
    "diverged_before_evaluating": (
        {"summary.json": json.dumps({"status": "diverged", "step": 3, "final": None})},
        "done", ""),
    "summary_without_metrics": ({"summary.json": json.dumps(SUMMARY)}, "redo",
                                "without metrics"),
    "metrics_short_of_final": ({"summary.json": json.dumps(SUMMARY),
                                "metrics.jsonl": _metrics(RECORDS[:1])}, "redo",
                               "does not match"),
    "metrics_line_broken_inside": (
        {"summary.json": json.dumps(SUMMARY),
         "metrics.jsonl": '{"step": 5, "te\n' + _metrics(RECORDS[1:])}, "redo", "not a JSON"),
    "half_written_summary": ({"summary.json": json.dumps(SUMMARY)[:20],
                              "metrics.jsonl": _metrics(RECORDS)}, "resume", "not valid JSON"),
    "preempted": ({"summary.json": json.dumps({**SUMMARY, "status": "preempted"}),
                   "metrics.jsonl": _metrics(RECORDS[:1])}, "resume", "preempted"),
    "killed_while_appending": ({"metrics.jsonl": _metrics(RECORDS[:1], '{"step": 10, "t')},
                               "resume", "partial line"),
    "killed_mid_run": ({"metrics.jsonl": _metrics(RECORDS[:1]), "checkpoints/5/x": "x"},
                       "resume", ""),
    "checkpoints_without_metrics": ({"checkpoints/5/x": "x"}, "redo", "without metrics"),
    "half_written_config": ({"config.json": '{"seed": ', "metrics.jsonl": _metrics(RECORDS)},
                            "redo", "config.json"),
}


def _write_files(workdir, files):
  for name, text in files.items():
    path = os.path.join(workdir, name)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as f:
      f.write(text)


@pytest.mark.parametrize("name", list(CASES))
def test_inspect_member(tmp_path, name):
  files, status, reason = CASES[name]
  workdir = str(tmp_path / "seed_0")
  os.makedirs(workdir)
  _write_files(workdir, files)
  state = execute.inspect_member(workdir)
  assert state.status == status, state
  assert reason in state.reason


def test_repair_resume_moves_the_summary_aside_and_drops_a_partial_line(tmp_path):
  workdir = str(tmp_path)
  _write_files(workdir, {"summary.json": "{", "metrics.jsonl": _metrics(RECORDS, '{"st')})
  open(os.path.join(workdir, "summary.json.partial"), "w").close()  # an older repair
  state = execute.inspect_member(workdir)
  execute.repair_member(workdir, state)
  assert sorted(os.listdir(workdir)) == ["metrics.jsonl", "summary.json.partial",
                                         "summary.json.partial.1"]
  with open(os.path.join(workdir, "summary.json.partial.1")) as f:
    assert f.read() == "{"
  with open(os.path.join(workdir, "metrics.jsonl")) as f:
    assert f.read() == _metrics(RECORDS)
  assert execute.inspect_member(workdir).status == "resume"


def test_repair_redo_moves_the_member_aside(tmp_path):
  workdir = str(tmp_path / "seed_0")
  _write_files(workdir, {"summary.json": json.dumps(SUMMARY)})
  execute.repair_member(workdir, execute.inspect_member(workdir))
  assert not os.path.exists(workdir)
  assert os.listdir(str(tmp_path / "seed_0.partial")) == ["summary.json"]
  assert execute.inspect_member(workdir).status == "new"


@pytest.mark.parametrize("flags, expected", [
    ("", ""),
    ("--xla_force_host_platform_device_count=4", ""),
    ("--xla_cpu_use_thunk_runtime=false --xla_force_host_platform_device_count=8",
     "--xla_cpu_use_thunk_runtime=false"),
])
def test_worker_xla_flags_drop_forced_devices(flags, expected):
  assert execute.worker_xla_flags(flags) == expected
