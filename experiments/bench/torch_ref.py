r"""PyTorch reference implementations for ``experiments.benchmark`` (torch is imported only here).

``experiments/bench_torch.py`` runs ``run_recipe`` as a script.

Written as a PyTorch user would write them: eager ``nn.Module`` models, ``torch.optim.Adam``,
``zero_grad / backward / step``. Used two ways:

* in process, by ``experiments.benchmark``: ``TorchTrainer`` (one train step of the MNIST-1D
  CNN or MLP) and ``TorchAdam`` (the optimizer step alone, fused or foreach), timed side by
  side with the JAX versions;
* as a script, the main job's recipe end to end (MNIST-1D CNN, Adam lr 1e-2, batch 100, 6000
  steps, a test-set evaluation every ``--eval_every`` steps, a checkpoint every 3000; the
  benchmark passes the same intervals to both sides)::

    python -m experiments.bench_torch --data=mnist1d.npz --out=result.json

  ``--data`` is an ``.npz`` with ``x_train, y_train, x_test, y_test`` (channels-last
  ``(N, 40, 1)`` float32, int labels) that ``experiments.benchmark`` writes from
  ``flaxopt.data.load('mnist1d')``, so both sides train on the same arrays. The script does not
  import JAX, so its wall time is PyTorch's alone.

The models match ``flaxopt.nn.models`` (Greydanus 2020, "Scaling down deep learning"): the CNN is
``Conv1d(1, 25, 5, stride 2, padding 1) -> ReLU -> 2 x [Conv1d(25, 25, 3, 2, 1) -> ReLU] ->
Linear(125, 10)``, the MLP ``Linear(40, 100) -> ReLU -> Linear(100, 100) -> ReLU ->
Linear(100, 10)``. PyTorch's default init is used (flaxopt's 'standard_uniform' default
draws kernels from the same range; biases differ, which does not affect speed).
"""

from __future__ import annotations

import os
import tempfile
import time
from typing import Callable, Mapping, Optional, Sequence

import numpy as np
import torch
from torch import nn

__all__ = ["TorchAdam", "TorchTrainer", "make_model", "num_threads", "run_recipe", "synchronize"]

MODELS: Mapping[str, Callable[[int, int], nn.Module]] = {
    # name -> (input length, num_classes) -> module taking (N, C, L)
    "cnn": lambda length, classes: nn.Sequential(
        nn.Conv1d(1, 25, 5, stride=2, padding=1), nn.ReLU(),
        nn.Conv1d(25, 25, 3, stride=2, padding=1), nn.ReLU(),
        nn.Conv1d(25, 25, 3, stride=2, padding=1), nn.ReLU(),
        nn.Flatten(), nn.Linear(25 * _cnn_out_length(length), classes)),
    "mlp": lambda length, classes: nn.Sequential(
        nn.Flatten(), nn.Linear(length, 100), nn.ReLU(), nn.Linear(100, 100), nn.ReLU(),
        nn.Linear(100, classes)),
}


def _cnn_out_length(length: int) -> int:
  """Length after the CNN's three stride-2 convs (40 -> 19 -> 10 -> 5)."""
  for kernel in (5, 3, 3):
    length = (length + 2 - kernel) // 2 + 1
  return length


def num_threads(threads: Optional[int] = None) -> int:
  """Sets PyTorch's intra-op threads (default: the cores this process may use); returns it."""
  threads = threads or len(os.sched_getaffinity(0))
  torch.set_num_threads(threads)
  return threads


def synchronize(device: str) -> None:
  """Waits for queued GPU work (a no-op on CPU, where PyTorch runs synchronously)."""
  if device.startswith("cuda"):
    torch.cuda.synchronize()


def make_model(name: str, length: int = 40, num_classes: int = 10) -> nn.Module:
  """The MNIST-1D ``'cnn'`` or ``'mlp'`` (see the module docstring)."""
  if name not in MODELS:
    raise ValueError(f"Unknown model {name!r}; valid: {', '.join(MODELS)}")
  return MODELS[name](length, num_classes)


def _to_torch_x(x: np.ndarray, device: str) -> torch.Tensor:
  """Channels-last ``(N, L, C)`` numpy -> PyTorch's channels-first ``(N, C, L)``."""
  return torch.from_numpy(np.ascontiguousarray(np.moveaxis(x, -1, 1))).to(device)


class TorchTrainer:
  """Eager PyTorch training of an MNIST-1D model with Adam on device-resident data.

  ``run(n)`` takes ``n`` steps (a fresh random permutation each epoch, as a DataLoader with
  ``shuffle=True, drop_last=True`` would) and waits for them to finish.
  """

  def __init__(self, model: str, x: np.ndarray, y: np.ndarray, *, batch_size: int,
               learning_rate: float = 1e-2, seed: int = 0, device: str = "cpu"):
    torch.manual_seed(seed)
    self.device = device
    self.model = make_model(model, x.shape[1], int(y.max()) + 1).to(device)
    self.opt = torch.optim.Adam(self.model.parameters(), lr=learning_rate)
    self.x = _to_torch_x(x, device)
    self.y = torch.from_numpy(y.astype(np.int64)).to(device)
    self.batch_size = batch_size
    self.steps_per_epoch = len(y) // batch_size
    self.step = 0
    self.perm = None

  def train_step(self) -> torch.Tensor:
    i = self.step % self.steps_per_epoch
    if i == 0:
      self.perm = torch.randperm(len(self.y), device=self.device)
    idx = self.perm[i * self.batch_size:(i + 1) * self.batch_size]
    self.opt.zero_grad(set_to_none=True)
    loss = nn.functional.cross_entropy(self.model(self.x[idx]), self.y[idx])
    loss.backward()
    self.opt.step()
    self.step += 1
    return loss

  def run(self, n: int) -> None:
    for _ in range(n):
      self.train_step()
    synchronize(self.device)

  @torch.no_grad()
  def evaluate(self, x: torch.Tensor, y: torch.Tensor) -> tuple[float, float]:
    """Mean test loss and accuracy over the whole set in one batch (as the main job does)."""
    logits = self.model(x)
    loss = nn.functional.cross_entropy(logits, y).item()
    return loss, (logits.argmax(-1) == y).float().mean().item()


class TorchAdam:
  """``torch.optim.Adam`` on one ``shape`` parameter with a fixed random gradient.

  ``impl``: ``'fused'`` (``fused=True``), ``'foreach'`` (PyTorch's default multi-tensor path)
  or ``'for'`` (the single-tensor loop). ``run(n)`` takes ``n`` optimizer steps.
  """

  IMPLS = {"fused": {"fused": True}, "foreach": {"foreach": True},
           "for": {"foreach": False, "fused": False}}

  def __init__(self, shape: Sequence[int], impl: str = "fused", learning_rate: float = 1e-3,
               device: str = "cpu"):
    if impl not in self.IMPLS:
      raise ValueError(f"Unknown impl {impl!r}; valid: {', '.join(self.IMPLS)}")
    gen = torch.Generator().manual_seed(0)
    self.device = device
    self.param = nn.Parameter(torch.randn(*shape, generator=gen).to(device))
    self.param.grad = torch.randn(*shape, generator=gen).to(device)
    self.opt = torch.optim.Adam([self.param], lr=learning_rate, **self.IMPLS[impl])

  def run(self, n: int) -> None:
    for _ in range(n):
      self.opt.step()
    synchronize(self.device)

  def state_bytes(self) -> int:
    return sum(t.numel() * t.element_size() for s in self.opt.state.values()
               for t in s.values() if torch.is_tensor(t))


def run_recipe(data: Mapping[str, np.ndarray], *, model: str = "cnn", steps: int = 6000,
               batch_size: int = 100, learning_rate: float = 1e-2, eval_every: int = 1000,
               checkpoint_every: int = 3000, workdir: Optional[str] = None, seed: int = 0,
               device: str = "cpu") -> dict:
  """The main job's recipe in PyTorch; returns timings and the final test metrics."""
  t0 = time.time()
  trainer = TorchTrainer(model, data["x_train"], data["y_train"], batch_size=batch_size,
                         learning_rate=learning_rate, seed=seed, device=device)
  x_test = _to_torch_x(data["x_test"], device)
  y_test = torch.from_numpy(data["y_test"].astype(np.int64)).to(device)
  workdir = workdir or tempfile.mkdtemp(prefix="bench_torch_")
  setup_time = time.time() - t0
  history = []
  t_train = time.time()
  for step in range(1, steps + 1):
    loss = trainer.train_step()
    if step % eval_every == 0 or step == steps:
      test_loss, test_acc = trainer.evaluate(x_test, y_test)
      history.append({"step": step, "train_loss": loss.item(), "test_loss": test_loss,
                      "test_accuracy": test_acc, "wall_time": time.time() - t0})
      print(f"step {step}/{steps}: test_loss={test_loss:.4f} test_accuracy={test_acc:.4f}",
            flush=True)
    if step % checkpoint_every == 0 or step == steps:
      torch.save({"model": trainer.model.state_dict(), "opt": trainer.opt.state_dict(),
                  "step": step}, os.path.join(workdir, f"checkpoint_{step}.pt"))
  synchronize(device)
  train_time = time.time() - t_train
  return {"final": history[-1], "setup_time": setup_time, "train_time": train_time,
          "steps_per_sec": steps / train_time, "wall_time": time.time() - t0,
          "threads": torch.get_num_threads(), "torch_version": torch.__version__}
