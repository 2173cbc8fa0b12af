"""docs/build_readme.py: the README is generated, includes result files, and --check fails when
it is stale."""

import pathlib
import shutil
import subprocess
import sys

import pytest

REPO = pathlib.Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "docs"))
import build_readme  # pylint: disable=g-import-not-at-top,wrong-import-position


@pytest.fixture
def tree(tmp_path):
  """A copy of the repository's README sources and the files they include."""
  for sub in ("docs/readme", "docs/studies", "docs/results", "docs/benchmarks"):
    if (REPO / sub).exists():
      shutil.copytree(REPO / sub, tmp_path / sub)
  (tmp_path / "README.md").write_text(build_readme.build(tmp_path))
  return tmp_path


def test_committed_readme_is_current():
  assert build_readme.stale(REPO) == []


def test_check_names_a_stale_readme(tree):
  assert build_readme.stale(tree) == []
  section = tree / "docs" / "readme" / "_tail.md"
  section.write_text(section.read_text() + "\nOne more line.\n")
  assert build_readme.stale(tree) == ["README.md"]


def test_include_and_results_directives(tree):
  (tree / "docs" / "results").mkdir(exist_ok=True)
  (tree / "docs" / "results" / "x.json").write_text('{"report": "a | b\\n1 | 2"}')
  (tree / "docs" / "studies" / "t.md").write_text("| k |\n|---|\n| 7 |\n")
  section = tree / "docs" / "readme" / "_tail.md"
  section.write_text(section.read_text() +
                     "\n{{include:../studies/t.md}}\n\n{{results:../results/x.json}}\n")
  text = build_readme.build(tree)
  assert "| k |\n|---|\n| 7 |" in text and "```\na | b\n1 | 2\n```" in text
  (tree / "docs" / "studies" / "t.md").unlink()
  with pytest.raises(FileNotFoundError, match="t.md"):
    build_readme.build(tree)


def test_check_exit_status():
  proc = subprocess.run([sys.executable, str(REPO / "docs" / "build_readme.py"), "--check"],
                        capture_output=True, text=True, timeout=60)
  assert proc.returncode == 0, proc.stderr


def test_scaling_table_from_a_benchmark_file():
  rows = [{"parallel": "jit", "devices": 1, "steps_per_sec": 846.7, "timed_out": False},
          {"parallel": "jit", "devices": 2, "timed_out": True},
          {"parallel": "pmap", "devices": 1, "steps_per_sec": 1044.7, "timed_out": False}]
  assert build_readme.BENCH_TABLES["scaling"]({"rows": rows}).splitlines() == [
      "| parallel | 1 device | 2 devices |", "|---|---:|---:|",
      "| jit (mesh + NamedSharding) | 847 | timed out |", "| pmap | 1045 | n/a |"]
