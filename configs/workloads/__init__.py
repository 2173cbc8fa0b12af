"""Workloads: what a technique is compared on (AlgoPerf's notion; Dahl et al. 2023).

A workload is a dataset and its split (``dataset.num_train`` / ``dataset.validation_size``; the
validation set is held out of the training split, the test split only reports), a model
config, a loss, an evaluation metric on the validation split, a validation target and a step
budget. ``configs/workloads/<name>.py`` holds the training config (its ``get_config()``); this
table holds the rest and is the one source of each budget, which the config files read.

The target is the median over 5 seeds of the baseline recipe's best validation accuracy,
recorded with the runs that set it; None until those runs exist. Evaluations happen at least
every 2% of the budget (``eval_every``), so time-to-target is resolved to 2%.

>>> from configs import workloads
>>> config = workloads.get("mnist1d_cnn").get_config()  # doctest: +SKIP
"""

from __future__ import annotations

import dataclasses
import difflib
import importlib
from typing import Mapping, Optional

import ml_collections

__all__ = ["EVALS_PER_BUDGET", "WORKLOADS", "Workload", "apply", "eval_every", "get", "names"]

EVALS_PER_BUDGET = 50  # an evaluation every 2% of the step budget


@dataclasses.dataclass(frozen=True)
class Workload:
  """One row of the table: ``name -> (config module, target, budget)`` plus loss and metric.

  Attributes:
    name: the workload's name (its config file is ``configs/workloads/<name>.py``).
    module: the config module, importable (``configs.workloads.<name>``).
    budget: training steps (``num_train_steps``), sized for the wall time in ``doc``.
    target: validation-split ``metric`` to reach, or None (not yet measured).
    loss: the training loss (the loop's cross-entropy).
    metric: the metrics.jsonl key the target is stated in.
    doc: one line: data, split, model, budget.
  """

  name: str
  budget: int
  target: Optional[float] = None
  loss: str = "cross_entropy"
  metric: str = "val_accuracy"
  doc: str = ""

  @property
  def module(self) -> str:
    return f"{__name__}.{self.name}"

  def get_config(self) -> ml_collections.ConfigDict:
    """The workload's training config (``configs/workloads/<name>.py``'s ``get_config()``)."""
    return importlib.import_module(self.module).get_config()


# Budgets: MNIST-1D and digits keep their recipes' step counts (seconds to a minute here).
# Fashion-MNIST CNN: sized from the team's measurement of the 2-D CNN step on this 2-core
# machine, unloaded (~12 steps/s at batch 128, Adam; docs' speed facts): 12,000 steps is
# ~17 min of training plus 50 evaluations, for the ~20 min run; the small-data one 600 steps,
# ~1 min. Targets: the median best validation accuracy of 5 baseline seeds, trained as one
# stack (`experiments.compare --seeds=0:5 --max_members=5`) and committed with
# docs/studies/workloads/targets.md (`experiments/workload_targets.py`; tests/test_workloads.py
# recomputes each from the committed runs); None where those runs do not exist yet.
WORKLOADS: Mapping[str, Workload] = {w.name: w for w in (
    Workload("mnist1d_cnn", 6000, target=0.9160000085830688,
             doc="MNIST-1D 3,500/500/1,000, the paper's CNN, Adam 1e-2, batch 100 (main job)"),
    Workload("mnist1d_mlp", 6000, target=0.656000018119812,
             doc="MNIST-1D 3,500/500/1,000, MLP 2x100, Adam 1e-2, batch 100"),
    Workload("digits_mlp", 2000, target=0.9756097793579102,
             doc="sklearn digits 1,150/287/360, MLP 2x100, Adam 1e-2, batch 100"),
    Workload("fashion_mnist_cnn", 12000,
             doc="Fashion-MNIST 55k/5k/10k, ConvNet <100k params, Adam 1e-3 cosine, batch 128"),
    Workload("fashion_mnist_cnn_small", 600,
             doc="Fashion-MNIST 10k/5k/10k, ConvNet <100k params, Adam 1e-3 cosine, batch 128"),
    Workload("fashion_mnist_mlp", 10000,
             doc="Fashion-MNIST 55k/5k/10k, MLP 2x256, Adam 1e-3 cosine, batch 128"),
)}


def names() -> list[str]:
  """Sorted workload names."""
  return sorted(WORKLOADS)


def get(name: str) -> Workload:
  """The workload called ``name``; ValueError (one line, close-match suggestion) otherwise."""
  if name not in WORKLOADS:
    close = difflib.get_close_matches(str(name), list(WORKLOADS), n=1)
    hint = f" Did you mean {close[0]!r}?" if close else ""
    raise ValueError(f"Unknown workload {name!r}.{hint} Valid workloads: {', '.join(names())}")
  return WORKLOADS[name]


def eval_every(budget: int) -> int:
  """Steps between evaluations: ``budget // EVALS_PER_BUDGET`` (at least 1), i.e. every 2%."""
  return max(1, budget // EVALS_PER_BUDGET)


def apply(config: ml_collections.ConfigDict, name: str) -> ml_collections.ConfigDict:
  """Sets the budget-derived fields of ``config`` from workload ``name``; returns it."""
  w = get(name)
  config.num_train_steps = w.budget
  config.eval_every = eval_every(w.budget)
  config.log_every = config.eval_every
  return config
