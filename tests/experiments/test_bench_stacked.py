"""experiments/bench/stacked.py and bench/tables.py: the stacked sections' code paths once at
tiny sizes (structure only: no test asserts on time), and their tables."""

import subprocess
import sys

from experiments.bench import options
from experiments.bench import stacked
from experiments.bench import tables
from experiments.bench import timing

FAST = options.Options(rounds=1, round_s=1e-4, torch_1thread=False)


def test_stacked_section_structure():
  res = stacked.bench_stacked(["mlp"], [1, 2], 20, FAST)
  row = res["mlp_b20"]
  assert set(row["member_steps_per_sec"]) == {"solo", "stack_2"}
  assert row["gain_over_solo"]["solo"] == 1.0
  assert all(v > 0 for v in row["member_steps_per_sec"].values())
  assert "| mlp_b20 | stack_2 |" in tables.stacked(res)


def test_study_command_is_a_valid_sixteen_run_study(tmp_path):
  cmd = stacked._study_cmd(str(tmp_path / "s"), "mlp", 16, 8) + ["--dry_run"]  # pylint: disable=protected-access
  out = subprocess.run(cmd, cwd=timing.REPO, capture_output=True, text=True, timeout=300,
                       check=False)
  assert out.returncode == 0, out.stderr[-2000:]
  assert "4 settings x 4 seeds" in out.stdout + out.stderr
  assert "--max_members=16" in cmd and "--jobs=1" in cmd and "--jax_cache_dir=" in cmd


def test_stacked_study_table():
  section = {"mlp": {"runs": 16, "steps": 1000, "median_s": {"max_members_16": 10.0,
                                                             "max_members_1": 40.0},
                     "speedup": 4.0}}
  assert "| mlp, 1000 steps each | 10.0 | 40.0 | 4.00x |" in tables.stacked_study(section)
