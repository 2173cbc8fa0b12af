"""What the experiment scripts share: the reproduction command line, MNIST-1D, training a
config, plots and the paper-vs-ours table.

Every ``reproduce_*`` script is a thin main: ``common.reproduction_main(run, report, name)``.
Its flags are defined here, once, at module level (so tests may import several scripts):

* ``--fast``: test-sized run (seconds instead of minutes);
* ``--out_dir``: where the plot ``repro_<name>.png`` and the numbers ``<name>.json`` go
  (default ``runs/<name>``);
* ``--publish``: write them to ``docs/images/`` and ``docs/results/`` instead, the files the
  README quotes. Without it a script never rewrites a committed image or result.
"""

from __future__ import annotations

import importlib
import json
import math
import os
import tempfile
from typing import Any, Callable, Mapping, Optional, Sequence

from absl import flags
import ml_collections
import numpy as np

from flaxopt.training.config import apply_overrides

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RESULTS_DIR = os.path.join(REPO, "docs", "results")
IMAGES_DIR = os.path.join(REPO, "docs", "images")

FAST = flags.DEFINE_bool("fast", False, "Test-sized run (seconds instead of minutes).")
OUT_DIR = flags.DEFINE_string("out_dir", None, "Where the plot and the JSON numbers go "
                              "(default runs/<script>).")
PUBLISH = flags.DEFINE_bool("publish", False, "Write the plot to docs/images and the numbers to "
                            "docs/results (the files the README quotes).")


# ---------------------------------------------------------------------------------------
# Data and training.
# ---------------------------------------------------------------------------------------
def load_mnist1d(num_train: Optional[int] = None) -> dict[str, np.ndarray]:
  """MNIST-1D (Greydanus 2020) from ``flaxopt.data`` as flat float32 arrays.

  ``{'x': (N, 40), 'y': (N,) int32, 'x_test', 'y_test'}``; ``num_train``: the first that many
  training examples (``flaxopt.data.load``'s fixed subset; None: all 4000).
  """
  from flaxopt import data  # pylint: disable=g-import-not-at-top
  ds = data.load("mnist1d", num_train=num_train)
  return {"x": ds.x_train.reshape(len(ds.x_train), -1), "y": ds.y_train,
          "x_test": ds.x_test.reshape(len(ds.x_test), -1), "y_test": ds.y_test}


def make_config(base: str = "configs.default",
                overrides: Optional[Mapping[str, Any]] = None) -> ml_collections.ConfigDict:
  """``get_config()`` of the module ``base`` with dotted ``overrides`` applied.

  Checkpoints only at the end (``checkpoint_every=0``). An unknown field raises
  ``flaxopt.training.config.ConfigError`` naming it.
  """
  config = importlib.import_module(base).get_config()
  config.checkpoint_every = 0
  return apply_overrides(config, dict(overrides or {}).items())


def train(config: ml_collections.ConfigDict) -> dict[str, Any]:
  """One ``train_and_evaluate`` in a temporary workdir: final test accuracy, loss, curve."""
  from flaxopt.training import train_and_evaluate  # pylint: disable=g-import-not-at-top
  from flaxopt.training import metrics  # pylint: disable=g-import-not-at-top
  with tempfile.TemporaryDirectory() as workdir:
    summary = train_and_evaluate(config, workdir)
    history = metrics.read_jsonl(f"{workdir}/metrics.jsonl")
  final = summary["final"]
  return {"test_accuracy": float(final["test_accuracy"]),
          "train_loss": float(final["train_loss"]),
          "status": summary["status"],
          "curve": [(r["step"], r["test_accuracy"]) for r in history]}


def train_grid(runs: Mapping[str, tuple[str, Mapping[str, Any]]], seeds: Sequence[int],
               shared: Optional[Mapping[str, Any]] = None) -> dict[str, list[dict]]:
  """``{name: [train(make_config(base, {**shared, **overrides, seed})) for seed]}``."""
  return {name: [train(make_config(base, {**(shared or {}), **overrides, "seed": seed}))
                 for seed in seeds]
          for name, (base, overrides) in runs.items()}


def mean_accuracy(results: Sequence[Mapping[str, Any]]) -> float:
  return float(np.mean([r["test_accuracy"] for r in results]))


# ---------------------------------------------------------------------------------------
# Plots and tables.
# ---------------------------------------------------------------------------------------
def new_figure(ncols: int, *, width: float = 5.0, height: float = 3.6):
  """A matplotlib (Agg) figure with ``ncols`` axes side by side."""
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
  fig, axes = plt.subplots(1, ncols, figsize=(width * ncols, height), squeeze=False)
  return fig, list(axes[0])


def save_figure(fig: Any, path: str) -> None:
  """Saves ``fig`` to ``path`` (creating its folder) and closes it."""
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  fig.tight_layout()
  fig.savefig(path, dpi=110)
  plt.close(fig)


def plot_curves(ax: Any, grid: Mapping[str, Sequence[Mapping[str, Any]]], title: str) -> None:
  """Test accuracy over steps, one line per run (seed 0) of ``grid``."""
  for name, results in grid.items():
    steps, acc = zip(*results[0]["curve"])
    ax.plot(steps, acc, "o-", ms=3, label=f"{name} ({mean_accuracy(results):.3f})")
  ax.set(title=title, xlabel="step", ylabel="test accuracy")
  ax.legend(fontsize=8)


def format_comparison(title: str, rows: Sequence[tuple[str, str, str]], reproduced: bool) -> str:
  """A plain-text table ``quantity | paper | ours`` and a REPRODUCED / NOT REPRODUCED line."""
  header = ("quantity", "paper", "ours")
  widths = [max(len(str(r[i])) for r in (header, *rows)) for i in range(3)]
  lines = [title, " | ".join(h.ljust(w) for h, w in zip(header, widths)),
           "-+-".join("-" * w for w in widths)]
  lines += [" | ".join(str(c).ljust(w) for c, w in zip(r, widths)) for r in rows]
  lines.append("REPRODUCED" if reproduced else "NOT REPRODUCED")
  return "\n".join(lines)


# ---------------------------------------------------------------------------------------
# Results files and the reproduction main.
# ---------------------------------------------------------------------------------------
def jsonable(value: Any) -> Any:
  """Numbers, strings, lists and dicts as strict JSON (numpy scalars -> Python; nan -> 'nan')."""
  if isinstance(value, Mapping):
    return {str(k): jsonable(v) for k, v in value.items()}
  if isinstance(value, (list, tuple)):
    return [jsonable(v) for v in value]
  if isinstance(value, np.ndarray):
    return jsonable(value.tolist())
  if isinstance(value, np.generic):
    value = value.item()
  if isinstance(value, float) and not math.isfinite(value):
    return str(value)
  return value


def write_results(path: str, script: str, result: Mapping[str, Any],
                  text: str = "") -> None:
  """Writes ``{'script', 'result', 'report'}`` to ``path`` (atomically; folders created)."""
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  tmp = path + ".tmp"
  with open(tmp, "w") as f:
    json.dump({"script": script, "result": jsonable(result), "report": text}, f, indent=1,
              sort_keys=True)
    f.write("\n")
  os.replace(tmp, path)


def output_paths(name: str, out_dir: Optional[str], publish: bool) -> tuple[str, str]:
  """(plot path, results path) of reproduction ``name``: the workdir, or docs/ to publish."""
  if publish:
    return (os.path.join(IMAGES_DIR, f"repro_{name}.png"),
            os.path.join(RESULTS_DIR, f"repro_{name}.json"))
  out_dir = out_dir or os.path.join("runs", f"repro_{name}")
  return os.path.join(out_dir, f"repro_{name}.png"), os.path.join(out_dir, f"repro_{name}.json")


def reproduction_main(run: Callable[..., dict[str, Any]],
                      report: Callable[[dict[str, Any]], str], name: str) -> None:
  """The ``__main__`` of a reproduce_* script: run, print, write plot and JSON, exit status.

  Exits 0 when ``run(...)['reproduced']``, else 1.
  """
  from absl import app  # pylint: disable=g-import-not-at-top

  def main(argv):
    if len(argv) > 1:
      raise app.UsageError(f"Unexpected arguments: {' '.join(argv[1:])}")
    plot_path, results_path = output_paths(name, OUT_DIR.value, PUBLISH.value)
    result = run(fast=FAST.value, plot_path=plot_path)
    text = report(result)
    print(text)
    write_results(results_path, f"experiments/reproduce_{name}.py", result, text)
    print(f"Wrote {plot_path}, {results_path}")
    raise SystemExit(0 if result["reproduced"] else 1)

  app.run(main)
