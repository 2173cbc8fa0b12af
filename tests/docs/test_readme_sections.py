"""Every docs/readme section is in the README or included by a docs page, and the include
paths of the docs pages exist."""

import pathlib
import sys

REPO = pathlib.Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "docs"))
import build_readme  # pylint: disable=g-import-not-at-top,wrong-import-position


def test_no_unused_section():
  assert build_readme.unused_sections(REPO) == []


def test_guides_include_the_family_sections():
  assert {"activations_init.md", "optimizers.md", "compare.md", "benchmarks.md"} <= (
      build_readme.included_sections(REPO))


def test_an_orphan_section_is_named(tmp_path):
  for sub in ("readme", "guides"):
    (tmp_path / "docs" / sub).mkdir(parents=True)
  (tmp_path / "docs" / "readme" / "a.md").write_text("## a\n")
  (tmp_path / "docs" / "readme" / "b.md").write_text("## b\n")
  (tmp_path / "docs" / "guides" / "g.md").write_text("# g\n\n```{include} ../readme/a.md\n```\n")
  assert build_readme.unused_sections(tmp_path) == ["b.md"]
