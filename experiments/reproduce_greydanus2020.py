r"""Reproduces the MNIST-1D baseline table of Greydanus 2020, "Scaling down deep learning".

Paper (its baseline results on MNIST-1D: 4000 training and 1000 test examples, Adam, batch
100, 6000 steps): logistic regression about 32% test accuracy, MLP 65-68%, CNN 92-94%.
Ours: ``flaxopt.training.train_and_evaluate`` with configs/logistic.py, configs/mlp.py and
configs/default.py (the paper's CNN) as they are, one seed each (two with the full run).

Every run is one ``train_and_evaluate`` in a temporary workdir (``experiments/common.py``).

  python -m experiments.reproduce_greydanus2020 [--fast] [--out_dir=DIR | --publish]

Exits non-zero when the finding is not reproduced.
"""

from __future__ import annotations

from typing import Any, Mapping, Optional

from experiments import common

# model -> (config module, paper's test accuracy range)
MODELS = {
    "logistic": ("configs.logistic", (0.30, 0.34)),
    "mlp": ("configs.mlp", (0.65, 0.68)),
    "cnn": ("configs.default", (0.92, 0.94)),
}
# What counts as reproduced: each model's accuracy within this much of the paper's range.
TOLERANCE = 0.03
# fast -> (overrides for every run, seeds)
SIZES = {
    False: ({}, (0, 1)),
    True: ({"num_train_steps": 300, "eval_every": 300, "log_every": 300}, (0,)),
}


def run(fast: bool = False, plot_path: Optional[str] = None, seed: int = 0) -> dict[str, Any]:
  """Trains the three models; returns mean test accuracies and ``reproduced``."""
  shared, seeds = SIZES[fast]
  seeds = tuple(seed + s for s in seeds)
  grid = common.train_grid({name: (base, {}) for name, (base, _) in MODELS.items()}, seeds, shared)
  result: dict[str, Any] = {"seeds": list(seeds),
                            "steps": int(common.make_config(overrides=shared).num_train_steps)}
  for name, results in grid.items():
    result[f"{name}/test_accuracy"] = common.mean_accuracy(results)
    result[f"{name}/per_seed"] = [r["test_accuracy"] for r in results]
  in_range = [lo - TOLERANCE <= result[f"{name}/test_accuracy"] <= hi + TOLERANCE
              for name, (_, (lo, hi)) in MODELS.items()]
  ordered = (result["logistic/test_accuracy"] < result["mlp/test_accuracy"]
             < result["cnn/test_accuracy"])
  result["ordered"] = bool(ordered)
  result["reproduced"] = bool(ordered and (fast or all(in_range)))
  if plot_path:
    fig, (ax,) = common.new_figure(1, width=6.0)
    common.plot_curves(ax, grid, "MNIST-1D: logistic / MLP / CNN (Adam 1e-2, batch 100)")
    for name, (_, (lo, hi)) in MODELS.items():
      ax.axhspan(lo, hi, alpha=0.12, color="gray")
    common.save_figure(fig, plot_path)
  return result


def report(result: Mapping[str, Any]) -> str:
  rows = [(f"{name} test accuracy", f"{lo:.2f}-{hi:.2f}",
           f"{result[f'{name}/test_accuracy']:.3f} "
           f"(seeds {', '.join(f'{a:.3f}' for a in result[f'{name}/per_seed'])})")
          for name, (_, (lo, hi)) in MODELS.items()]
  rows.append(("logistic < MLP < CNN", "yes", "yes" if result["ordered"] else "no"))
  return common.format_comparison(
      f"Greydanus 2020: MNIST-1D baselines, {result['steps']} steps", rows,
      result["reproduced"])


if __name__ == "__main__":
  common.reproduction_main(run, report, "greydanus2020")
