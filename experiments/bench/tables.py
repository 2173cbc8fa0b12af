"""Markdown tables of benchmark sections, from the results JSON alone (no JAX import), so the
report (``bench/report.py``) and the README builder (``docs/build_readme.py``) print the same
table from the same file."""

from __future__ import annotations

from typing import Any, Callable, Mapping


def stacked(section: Mapping[str, Any]) -> str:
  """Member-steps/s of stacks of K members and their gain over one solo run."""
  lines = ["| MNIST-1D model, batch | candidate | member-steps/s | gain over solo |",
           "|---|---|---:|---:|"]
  for key, row in section.items():
    for name, sps in row["member_steps_per_sec"].items():
      lines.append(f"| {key} | {name} | {sps:.0f} | {row['gain_over_solo'][name]:.2f}x |")
  return "\n".join(lines)


def stacked_study(section: Mapping[str, Any]) -> str:
  """Wall time of a 16-run study, ``--max_members=16`` against ``--max_members=1``."""
  lines = ["| 16-run study | --max_members=16 s | --max_members=1 s | speedup |",
           "|---|---:|---:|---:|"]
  for model, row in section.items():
    med = row["median_s"]
    lines.append(f"| {model}, {row['steps']} steps each | {med['max_members_16']:.1f} | "
                 f"{med['max_members_1']:.1f} | {row['speedup']:.2f}x |")
  return "\n".join(lines)


TABLES: Mapping[str, Callable[[Mapping[str, Any]], str]] = {
    "stacked": stacked, "stacked_study": stacked_study}
