r"""Reproduces Srivastava et al. 2014 (Dropout) and Wan et al. 2013 (DropConnect): both
regularize an overfitting MLP.

Papers: Srivastava, Hinton, Krizhevsky, Sutskever & Salakhutdinov 2014, "Dropout: A Simple
Way to Prevent Neural Networks from Overfitting" (MNIST, Table 2: 1.60% test error for a
standard net vs 1.25-1.35% for dropout nets); Wan, Zeiler, Zhang, LeCun & Fergus
2013, "Regularization of Neural Networks using DropConnect" (MNIST 2-layer 800-unit ReLU
net, Table 3: 1.62% no-drop vs 1.28% dropout vs 1.20% DropConnect).

Ours: the MNIST-1D MLP made wider (2 hidden layers of 512 ReLU units) and trained past
zero training loss (Adam lr 1e-3, batch 100, 6000 steps: the overfitting regime), with
``model.dropout=0.5`` (after each hidden layer and on the classifier input) and
``model.dropconnect=0.5`` (every Dense layer's weights) vs neither. Reproduced when both
beat no regularization by at least ``MIN_GAP`` test accuracy.

  python -m experiments.reproduce_srivastava2014 [--fast] \
      [--out_dir=DIR | --publish]

Exits non-zero when the finding is not reproduced.
"""

from __future__ import annotations

from typing import Any, Mapping, Optional

from experiments import common

RATE = 0.5
VARIANTS = {"none": {}, "dropout": {"model.dropout": RATE},
            "dropconnect": {"model.dropconnect": RATE}}
MIN_GAP = 0.01
# fast -> (overrides for every run, seeds)
SIZES = {
    False: ({"model.width": 512, "optimizer.learning_rate": 1e-3, "num_train_steps": 6000,
             "eval_every": 500, "log_every": 500}, (0,)),
    True: ({"model.width": 64, "optimizer.learning_rate": 1e-3, "num_train_steps": 100,
            "eval_every": 100, "log_every": 100, "dataset.num_train": 400}, (0,)),
}
# variant -> MNIST test error in Wan et al. 2013, Table 3 (800-unit 2-layer ReLU net)
PAPER_ERROR = {"none": 0.0162, "dropout": 0.0128, "dropconnect": 0.0120}


def run(fast: bool = False, plot_path: Optional[str] = None, seed: int = 0) -> dict[str, Any]:
  """Trains the wide MLP without / with dropout / with DropConnect; returns accuracies."""
  shared, seeds = SIZES[fast]
  seeds = tuple(seed + s for s in seeds)
  grid = common.train_grid({k: ("configs.mlp", v) for k, v in VARIANTS.items()}, seeds, shared)
  result: dict[str, Any] = {"seeds": list(seeds), "width": shared["model.width"],
                            "steps": shared["num_train_steps"]}
  for name, results in grid.items():
    result[f"{name}/test_accuracy"] = common.mean_accuracy(results)
    result[f"{name}/train_loss"] = float(sum(r["train_loss"] for r in results) / len(results))
  for name in ("dropout", "dropconnect"):
    result[f"{name}/gain"] = result[f"{name}/test_accuracy"] - result["none/test_accuracy"]
  result["reproduced"] = bool(min(result["dropout/gain"], result["dropconnect/gain"])
                              >= MIN_GAP)
  if plot_path:
    fig, (ax,) = common.new_figure(1, width=6.0)
    common.plot_curves(ax, grid, f"MNIST-1D MLP 2x{result['width']}, rate {RATE}")
    common.save_figure(fig, plot_path)
  return result


def report(result: Mapping[str, Any]) -> str:
  rows = [(f"{name}: test accuracy", f"{1 - PAPER_ERROR[name]:.4f} (MNIST)",
           f"{result[f'{name}/test_accuracy']:.3f} "
           f"(train loss {result[f'{name}/train_loss']:.3g})") for name in VARIANTS]
  rows += [(f"{name} - none", f"{PAPER_ERROR['none'] - PAPER_ERROR[name]:+.4f}",
            f"{result[f'{name}/gain']:+.3f}") for name in ("dropout", "dropconnect")]
  return common.format_comparison(
      f"Srivastava et al. 2014 / Wan et al. 2013: dropout and DropConnect, MNIST-1D MLP "
      f"2x{result['width']}, {result['steps']} steps", rows, result["reproduced"])


if __name__ == "__main__":
  common.reproduction_main(run, report, "srivastava2014")
