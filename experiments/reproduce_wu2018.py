r"""Reproduces Wu & He 2018, "Group Normalization", Fig. 1 / Table 3 (batch-size sensitivity).

Paper (ResNet-50, ImageNet): BatchNorm's error grows as the batch per worker shrinks (from
23.6% at 32 images to 34.7% at 2, +11.1 points) while GroupNorm stays at 24.0-24.2%
(24.1% at both 32 and 2).
The cause: with few examples the batch statistics are noisy estimates, and the running
averages used at test time no longer match what the network saw while training.

Ours: the MNIST-1D CNN (3 conv layers of 25 channels) with ``model.norm=batch`` vs
``model.norm=group`` (5 groups of 5 channels), batch 32 vs batch 2, Adam lr 2e-3 for all
four runs. Equal epochs (not equal steps): every run sees each of the 4000 training examples
the same number of times, as in the paper, so batch 2 makes 16x more (noisier) updates.
Reproduced when BatchNorm loses at least ``MIN_GAP`` more accuracy going from batch 32 to
batch 2 than GroupNorm does.

  python -m experiments.reproduce_wu2018 [--fast] [--out_dir=DIR | --publish]

Exits non-zero when the finding is not reproduced.
"""

from __future__ import annotations

from typing import Any, Mapping, Optional

from experiments import common

NORMS = ("batch", "group")
BATCHES = (32, 2)  # the paper's largest and smallest batch per worker
LEARNING_RATE = 2e-3
MIN_GAP = 0.03  # BN's drop minus GN's drop (accuracy, batch 32 -> 2)
# fast -> (epochs, evaluations per run, seeds, model overrides)
SIZES = {
    False: (30, 6, (0,), {}),
    True: (1, 1, (0,), {"model.channels": 5, "dataset.num_train": 400}),
}
NUM_TRAIN = 4000  # MNIST-1D's training split


def steps_for(epochs: int, batch: int, num_train: int) -> int:
  """Steps of ``epochs`` passes over ``num_train`` examples at ``batch`` (equal epochs)."""
  return max(epochs * num_train // batch, 1)


def run(fast: bool = False, plot_path: Optional[str] = None, seed: int = 0) -> dict[str, Any]:
  """Trains BN / GN at batch 32 / 2 for equal epochs; returns accuracies and ``reproduced``."""
  epochs, evals, seeds, model = SIZES[fast]
  seeds = tuple(seed + s for s in seeds)
  num_train = int(model.get("dataset.num_train", NUM_TRAIN))
  runs = {}
  for norm in NORMS:
    for batch in BATCHES:
      steps = steps_for(epochs, batch, num_train)
      runs[f"{norm}/batch{batch}"] = ("configs.default", {
          **model, "model.norm": norm, "batch_size": batch, "num_train_steps": steps,
          "eval_every": max(steps // evals, 1), "log_every": max(steps // evals, 1),
          "optimizer.learning_rate": LEARNING_RATE})
  grid = common.train_grid(runs, seeds)
  result: dict[str, Any] = {"epochs": epochs, "seeds": list(seeds)}
  for name, results in grid.items():
    result[f"{name}/test_accuracy"] = common.mean_accuracy(results)
  big, small = BATCHES
  for norm in NORMS:
    result[f"{norm}/drop"] = (result[f"{norm}/batch{big}/test_accuracy"]
                              - result[f"{norm}/batch{small}/test_accuracy"])
  result["gap"] = result["batch/drop"] - result["group/drop"]
  result["reproduced"] = bool(result["gap"] >= MIN_GAP)
  if plot_path:
    fig, (ax_bar, ax_curve) = common.new_figure(2)
    for i, norm in enumerate(NORMS):
      accs = [result[f"{norm}/batch{b}/test_accuracy"] for b in BATCHES]
      ax_bar.bar([j + 0.38 * i for j in range(len(BATCHES))], accs, width=0.38,
                 label=f"{norm} norm")
    ax_bar.set_xticks([j + 0.19 for j in range(len(BATCHES))],
                      [f"batch {b}" for b in BATCHES])
    ax_bar.set(title=f"MNIST-1D CNN, {epochs} epochs each", ylabel="test accuracy",
               ylim=(0.5, 1.0))
    ax_bar.legend()
    common.plot_curves(ax_curve, grid, "test accuracy during training")
    ax_curve.set_xscale("log")
    common.save_figure(fig, plot_path)
  return result


def report(result: Mapping[str, Any]) -> str:
  big, small = BATCHES
  rows = [(f"{norm} norm: accuracy batch {big} -> {small}", paper,
           f"{result[f'{norm}/batch{big}/test_accuracy']:.3f} -> "
           f"{result[f'{norm}/batch{small}/test_accuracy']:.3f} "
           f"(change {-100 * result[f'{norm}/drop']:+.1f} points)")
          for norm, paper in (("batch", "76.4% -> 65.3% (-11.1)"),
                              ("group", "75.9% -> 75.9% (0.0)"))]
  rows.append(("BN drop - GN drop", f">= {100 * MIN_GAP:.0f} points (paper 11.1)",
               f"{100 * result['gap']:.1f} points"))
  return common.format_comparison(
      f"Wu & He 2018: BatchNorm vs GroupNorm at small batch, equal epochs "
      f"({result['epochs']})", rows, result["reproduced"])


if __name__ == "__main__":
  common.reproduction_main(run, report, "wu2018")
