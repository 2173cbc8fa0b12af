r"""Sets workload targets from baseline runs: the median over 5 seeds of the best validation
accuracy (``flaxopt.sweep.stats.workload_target``), and publishes the raw runs beside it.

::

  python -m experiments.compare --config=configs/workloads/mnist1d_cnn.py \
      --workdir=runs/targets/mnist1d_cnn --seeds=0:5 --lr_grid= --max_members=5
  python -m experiments.workload_targets --runs=runs/targets --publish

``--publish`` copies each run's ``config.json``, ``metrics.jsonl`` and ``summary.json`` to
``docs/studies/workloads/<workload>/seed<k>/`` and writes
``docs/studies/workloads/targets.md`` from the copies; without it, the table is printed from
``--runs``. ``configs/workloads``' table holds the targets; ``tests/test_workloads.py``
recomputes each from the committed runs.
"""

import glob
import os
import shutil
import sys

from absl import app
from absl import flags

from experiments import common

_RUNS = flags.DEFINE_string("runs", "runs/targets",
                            "<runs>/<workload>/base/seed_<k>: compare's layout.")
_PUBLISH = common.PUBLISH  # --publish: copy the runs to docs/studies/workloads, write targets.md

_REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PUBLISHED = os.path.join(_REPO, "docs", "studies", "workloads")
FILES = ("config.json", "metrics.jsonl", "summary.json")


def run_dirs(workload: str, root: str = PUBLISHED) -> list[str]:
  """``workload``'s run folders by seed: ``<root>/<workload>/seed<k>`` (published) or
  compare's ``<root>/<workload>/base/seed_<k>``."""
  found = (glob.glob(os.path.join(root, workload, "seed*"))
           or glob.glob(os.path.join(root, workload, "base", "seed_*")))
  return sorted(found, key=lambda d: int(d.replace("seed_", "seed").rsplit("seed", 1)[1]))


def table(root: str = PUBLISHED) -> str:
  """Markdown: per workload the target and each seed's best validation accuracy."""
  from flaxopt.sweep import stats  # pylint: disable=g-import-not-at-top
  lines = ["| workload | seeds | target: median best val_accuracy | best val_accuracy per seed "
           "| test_accuracy at each best |", "|---|---:|---:|---|---|"]
  for workload in sorted(d for d in os.listdir(root) if os.path.isdir(os.path.join(root, d))):
    runs = run_dirs(workload, root)
    if not runs:
      continue
    records = [stats.read_metrics(os.path.join(d, "metrics.jsonl")) for d in runs]
    bests = [max(r, key=lambda x: x["val_accuracy"]) for r in records]
    target = (f"{stats.workload_target(records):.4f}" if len(runs) >= 5
              else f"none ({len(runs)} seeds)")
    lines.append(f"| {workload} | {len(runs)} | {target} | "
                 + ", ".join(f"{b['val_accuracy']:.4f}" for b in bests) + " | "
                 + ", ".join(f"{b['test_accuracy']:.4f}" for b in bests) + " |")
  return "\n".join(lines) + "\n"


def publish(runs_root: str) -> None:
  for workload in sorted(os.listdir(runs_root)):
    for src in run_dirs(workload, runs_root):
      dest = os.path.join(PUBLISHED, workload, "seed" + src.rsplit("_", 1)[1])
      os.makedirs(dest, exist_ok=True)
      for name in FILES:
        shutil.copyfile(os.path.join(src, name), os.path.join(dest, name))


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {' '.join(argv[1:])}")
  if not os.path.isdir(_RUNS.value):
    print(f"error: runs={_RUNS.value!r}: not a directory (compare's workdirs of the "
          "baseline runs)", file=sys.stderr)
    sys.exit(2)
  if _PUBLISH.value:
    publish(_RUNS.value)
    with open(os.path.join(PUBLISHED, "targets.md"), "w") as f:
      f.write(table())
  print(table(PUBLISHED if _PUBLISH.value else _RUNS.value))


if __name__ == "__main__":
  app.run(main)
