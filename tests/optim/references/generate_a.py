"""Records float64 reference trajectories for issue 17 part A into ``a_<optimizer>.npz``.

Runs under a separate environment with PyTorch and the reference packages (``torch``,
``lion-pytorch``, ``schedulefree``, ``pytorch-optimizer``); flaxopt does not depend on them::

    /path/to/venv-with-torch/bin/python tests/optim/references/generate_a.py

The problem is fixed: a least-squares loss ``0.5 * mean_i ||X_i W + b - Y_i||^2`` on fixed
float64 data, with a (4, 3) matrix ``W`` and a (3,) bias ``b``. Every step's gradient is
computed in NumPy from the current parameters (``grad``), so both sides see bitwise the same
gradient for the same parameters. Each file holds, per case, the parameter trajectory
``<case>__w`` (steps + 1, 4, 3) and ``<case>__b`` (steps + 1, 3) (row 0 = initial), for
schedule-free also the averaged point ``<case>__x_w``/``<case>__x_b``, the data, and a JSON
``meta`` string: reference package versions and, per case, the flaxopt registry name and
keyword arguments that must reproduce it. ``tests/optim/test_modern_a.py`` reads these files
(always) and, where torch is importable, also calls ``reference_trajectory`` live.
"""

from __future__ import annotations

import copy
import importlib.metadata
import json
import pathlib
from typing import Any, Callable

import numpy as np

HERE = pathlib.Path(__file__).resolve().parent
STEPS = 30


def problem() -> dict[str, np.ndarray]:
  """Fixed float64 data and initial parameters."""
  rng = np.random.default_rng(17)
  x = rng.normal(size=(16, 4))
  w_true = rng.normal(size=(4, 3))
  y = x @ w_true + 0.5 + 0.1 * rng.normal(size=(16, 3))
  return {"X": x, "Y": y, "w0": 0.5 * rng.normal(size=(4, 3)), "b0": rng.normal(size=3)}


def loss(w: np.ndarray, b: np.ndarray, data: dict[str, np.ndarray]) -> float:
  r = data["X"] @ w + b - data["Y"]
  return 0.5 * float(np.mean(np.sum(r * r, axis=-1)))


def grad(w: np.ndarray, b: np.ndarray, data: dict[str, np.ndarray]
         ) -> tuple[np.ndarray, np.ndarray]:
  """Gradient of ``loss``: ``(X^T R / n, sum_i R_i / n)`` with ``R = X W + b - Y``."""
  r = data["X"] @ w + b - data["Y"]
  n = data["X"].shape[0]
  return data["X"].T @ r / n, r.sum(axis=0) / n


# ----------------------------------------------------------------------------
# Cases: id -> (flaxopt registry name, flaxopt kwargs, torch factory(params) -> optimizer).
# ----------------------------------------------------------------------------


def _cases() -> dict[str, dict[str, tuple[str, dict, Callable[[list], Any]]]]:
  import torch  # pylint: disable=g-import-not-at-top
  import lion_pytorch  # pylint: disable=g-import-not-at-top
  import pytorch_optimizer as po  # pylint: disable=g-import-not-at-top
  import schedulefree  # pylint: disable=g-import-not-at-top

  def lamb_clamped(ps):
    opt = po.Lamb(ps, lr=1e-2, weight_decay=0.1, weight_decouple=False, eps=1e-3)
    opt.clamp = 0.5  # The class attribute pytorch-optimizer clips ||x|| at.
    return opt

  return {
      "adamw": {
          "default": ("adamw", dict(learning_rate=1e-2),
                      lambda ps: torch.optim.AdamW(ps, lr=1e-2)),
          "tuned": ("adamw", dict(learning_rate=3e-2, b1=0.8, b2=0.95, eps=1e-3,
                                  weight_decay=0.1),
                    lambda ps: torch.optim.AdamW(ps, lr=3e-2, betas=(0.8, 0.95), eps=1e-3,
                                                 weight_decay=0.1)),
      },
      "radam": {
          "default": ("radam", dict(learning_rate=1e-2),
                      lambda ps: torch.optim.RAdam(ps, lr=1e-2)),
          "l2": ("radam", dict(learning_rate=1e-2, b2=0.99, eps=1e-3, weight_decay=0.1),
                 lambda ps: torch.optim.RAdam(ps, lr=1e-2, betas=(0.9, 0.99), eps=1e-3,
                                              weight_decay=0.1)),
          "decoupled": ("radam", dict(learning_rate=1e-2, weight_decay=0.1,
                                      decoupled_weight_decay=True),
                        lambda ps: torch.optim.RAdam(ps, lr=1e-2, weight_decay=0.1,
                                                     decoupled_weight_decay=True)),
      },
      "lion": {
          "default": ("lion", dict(learning_rate=1e-2),
                      lambda ps: lion_pytorch.Lion(ps, lr=1e-2)),
          "decay": ("lion", dict(learning_rate=3e-3, b1=0.95, b2=0.98, weight_decay=0.5),
                    lambda ps: lion_pytorch.Lion(ps, lr=3e-3, betas=(0.95, 0.98),
                                                 weight_decay=0.5)),
      },
      "lamb": {
          "default": ("lamb", dict(learning_rate=1e-2),
                      lambda ps: po.Lamb(ps, lr=1e-2)),
          "decay": ("lamb", dict(learning_rate=1e-2, b1=0.8, b2=0.99, eps=1e-3,
                                 weight_decay=0.1),
                    lambda ps: po.Lamb(ps, lr=1e-2, betas=(0.8, 0.99), eps=1e-3,
                                       weight_decay=0.1, weight_decouple=False)),
          "clamped": ("lamb", dict(learning_rate=1e-2, eps=1e-3, weight_decay=0.1,
                                   max_weight_norm=0.5), lamb_clamped),
      },
      "lars": {
          "momentum": ("lars", dict(learning_rate=1.0, trust_coefficient=0.02,
                                    weight_decay=0.01),
                       lambda ps: po.LARS(ps, lr=1.0, trust_coefficient=0.02,
                                          weight_decay=0.01)),
          "nesterov": ("lars", dict(learning_rate=0.5, momentum=0.8, trust_coefficient=0.05,
                                    weight_decay=0.05, dampening=0.1, nesterov=True),
                       lambda ps: po.LARS(ps, lr=0.5, momentum=0.8, trust_coefficient=0.05,
                                          weight_decay=0.05, dampening=0.1, nesterov=True)),
      },
      "adopt": {
          "default": ("adopt", dict(learning_rate=1e-2),
                      lambda ps: po.ADOPT(ps, lr=1e-2)),
          "l2": ("adopt", dict(learning_rate=1e-2, b2=0.99, eps=1e-3, weight_decay=0.1),
                 lambda ps: po.ADOPT(ps, lr=1e-2, betas=(0.9, 0.99), eps=1e-3,
                                     weight_decay=0.1)),
          "decoupled_noclip": ("adopt", dict(learning_rate=1e-2, b2=0.9, clip_exponent=None,
                                             weight_decay=0.1, decoupled_weight_decay=True),
                               lambda ps: po.ADOPT(ps, lr=1e-2, betas=(0.9, 0.9),
                                                   clip_lambda=None, weight_decay=0.1,
                                                   weight_decouple=True)),
      },
      "ademamix": {
          "default": ("ademamix", dict(learning_rate=1e-2),
                      lambda ps: po.AdEMAMix(ps, lr=1e-2)),
          "warmup_decoupled": (
              "ademamix", dict(learning_rate=1e-2, b3=0.999, alpha=2.0, warmup_steps=10,
                               eps=1e-3, weight_decay=0.1),
              lambda ps: po.AdEMAMix(ps, lr=1e-2, betas=(0.9, 0.999, 0.999), alpha=2.0,
                                     t_alpha_beta3=10, eps=1e-3, weight_decay=0.1,
                                     weight_decouple=True)),
          "l2": ("ademamix", dict(learning_rate=1e-2, weight_decay=0.1,
                                  decoupled_weight_decay=False),
                 lambda ps: po.AdEMAMix(ps, lr=1e-2, weight_decay=0.1)),
      },
      "schedule_free_sgd": {
          "default": ("schedule_free_sgd", dict(learning_rate=0.1),
                      lambda ps: schedulefree.SGDScheduleFree(ps, lr=0.1)),
          "warmup_decay": ("schedule_free_sgd", dict(learning_rate=0.2, b1=0.8, weight_decay=0.01,
                                                     warmup_steps=5, r=0.5,
                                                     weight_lr_power=1.0),
                           lambda ps: schedulefree.SGDScheduleFree(
                               ps, lr=0.2, momentum=0.8, weight_decay=0.01, warmup_steps=5,
                               r=0.5, weight_lr_power=1.0)),
      },
      "schedule_free_adamw": {
          "default": ("schedule_free_adamw", dict(learning_rate=1e-2),
                      lambda ps: schedulefree.AdamWScheduleFree(ps, lr=1e-2)),
          "warmup_decay": ("schedule_free_adamw", dict(learning_rate=3e-2, b1=0.95, b2=0.99,
                                                       eps=1e-3, weight_decay=0.01,
                                                       warmup_steps=5, r=1.0),
                           lambda ps: schedulefree.AdamWScheduleFree(
                               ps, lr=3e-2, betas=(0.95, 0.99), eps=1e-3, weight_decay=0.01,
                               warmup_steps=5, r=1.0)),
      },
      "lookahead": {
          "adamw": ("lookahead", dict(learning_rate=1e-2, base="adamw"),
                    lambda ps: po.Lookahead(torch.optim.AdamW(ps, lr=1e-2))),
          "momentum": ("lookahead", dict(learning_rate=0.05, base="momentum", momentum=0.9,
                                         sync_period=3, alpha=0.8),
                       lambda ps: po.Lookahead(torch.optim.SGD(ps, lr=0.05, momentum=0.9),
                                               k=3, alpha=0.8)),
      },
      "sam": {
          "sgd": ("sam", dict(learning_rate=0.1, base="sgd", rho=0.05),
                  lambda ps: po.SAM(ps, torch.optim.SGD, rho=0.05, lr=0.1)),
          "adam_adaptive": ("sam", dict(learning_rate=1e-2, base="adam", rho=0.5,
                                        adaptive=True),
                            lambda ps: po.SAM(ps, torch.optim.Adam, rho=0.5, adaptive=True,
                                              lr=1e-2)),
      },
  }


def versions() -> dict[str, str]:
  names = ("torch", "lion-pytorch", "schedulefree", "pytorch_optimizer", "numpy")
  return {n: importlib.metadata.version(n) for n in names}


def reference_trajectory(optimizer: str, case: str, steps: int = STEPS
                         ) -> dict[str, np.ndarray]:
  """Runs the reference for ``optimizer``/``case`` in float64; returns its trajectories."""
  import torch  # pylint: disable=g-import-not-at-top
  data = problem()
  _, _, factory = _cases()[optimizer][case]
  w = torch.nn.Parameter(torch.tensor(data["w0"], dtype=torch.float64))
  b = torch.nn.Parameter(torch.tensor(data["b0"], dtype=torch.float64))
  opt = factory([w, b])
  schedule_free = optimizer.startswith("schedule_free")
  if schedule_free:
    opt.train()

  def set_grads():
    gw, gb = grad(w.detach().numpy(), b.detach().numpy(), data)
    w.grad, b.grad = torch.tensor(gw), torch.tensor(gb)
    return torch.tensor(loss(w.detach().numpy(), b.detach().numpy(), data))

  out = {"w": [data["w0"].copy()], "b": [data["b0"].copy()]}
  if schedule_free:
    out["x_w"], out["x_b"] = [data["w0"].copy()], [data["b0"].copy()]
  for _ in range(steps):
    set_grads()
    if optimizer == "sam":
      opt.step(set_grads)
    else:
      opt.step()
    out["w"].append(w.detach().numpy().copy())
    out["b"].append(b.detach().numpy().copy())
    if schedule_free:
      # Evaluate x on copies, so the training trajectory is not touched by eval()/train().
      w_copy, b_copy = copy.deepcopy(w), copy.deepcopy(b)
      opt_copy = type(opt)([w_copy, b_copy], **{k: v for k, v in opt.defaults.items()
                                                 if k in ("lr",)})
      opt_copy.load_state_dict(opt.state_dict())
      opt_copy.eval()
      out["x_w"].append(w_copy.detach().numpy().copy())
      out["x_b"].append(b_copy.detach().numpy().copy())
  return {k: np.stack(v) for k, v in out.items()}


def main() -> None:
  import torch  # pylint: disable=g-import-not-at-top
  torch.set_default_dtype(torch.float64)
  data = problem()
  vers = versions()
  for optimizer, cases in _cases().items():
    arrays: dict[str, np.ndarray] = dict(data)
    meta = {"versions": vers, "steps": STEPS, "cases": {}}
    for case, (name, kwargs, _) in cases.items():
      traj = reference_trajectory(optimizer, case)
      for key, value in traj.items():
        arrays[f"{case}__{key}"] = value
      meta["cases"][case] = {"name": name, "kwargs": kwargs}
    arrays["meta"] = np.asarray(json.dumps(meta, sort_keys=True))
    path = HERE / f"a_{optimizer}.npz"
    np.savez_compressed(path, **arrays)
    print("wrote", path.name, sorted(cases))


if __name__ == "__main__":
  main()
