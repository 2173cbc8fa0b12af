r"""Reproduces Reddi, Kale & Kumar 2018, "On the convergence of Adam and beyond", Theorem 1.

Online convex problem on F = [-1, 1] (projection = clipping), with C = 3:

  f_t(x) = C x  if t mod 3 == 1,  else  -x,        t = 1, 2, ...

Over each period of 3 steps the losses sum to x, so the best fixed point is x* = -1.
Theorem 1: Adam with beta1 = 0, beta2 = 1 / (1 + C^2) = 0.1 and alpha_t = alpha / sqrt(t),
alpha < sqrt(1 - beta2) (here alpha = 0.5), drifts to x = +1, the *worst* point, with
average regret R_T / T -> 2/3 (not 0). AMSGrad (Adam with v replaced by its running
maximum), same hyper-parameters, converges to x* = -1 (R_T / T -> 0).

Both optimizers are ``flaxopt.optim.adam`` / ``flaxopt.optim.amsgrad`` (bias-corrected, as
in practice; the theorem's uncorrected Adam behaves the same here) with the optax schedule
``0.5 / sqrt(t)``. ``--fast`` runs 3,000 steps; the default 30,000 steps adds the paper's
Section 5 synthetic problem (f_t = 1010 x every 101st step, else -10 x; beta1 = 0.9,
beta2 = 0.99, alpha = 0.5, 300,000 steps).

  python -m experiments.reproduce_reddi2018 [--fast] [--out_dir=DIR | --publish]

Exits non-zero when the finding is not reproduced.
"""

from __future__ import annotations

from typing import Any, Optional

import jax
import jax.numpy as jnp
import numpy as np
import optax

from experiments import common
from flaxopt import optim


# name -> (period, large gradient, small gradient, b1, b2, alpha, steps (full run))
PROBLEMS: dict[str, tuple[int, float, float, float, float, float, int]] = {
    "theorem1": (3, 3.0, -1.0, 0.0, 0.1, 0.5, 30_000),
    "section5": (101, 1010.0, -10.0, 0.9, 0.99, 0.5, 300_000),
}
OPTIMIZERS = {"adam": optim.adam, "amsgrad": optim.amsgrad}


def worst_point_regret(problem: str) -> float:
  """R_T / T in the limit for iterates stuck at x = +1: 2 (large + (period - 1) small) / period."""
  period, large, small = PROBLEMS[problem][:3]
  return 2.0 * (large + (period - 1) * small) / period


def run_online(optimizer: str, problem: str, steps: int) -> dict[str, np.ndarray]:
  """Projected online optimization of the problem; returns the iterates x_t and R_t / t."""
  period, large, small, b1, b2, alpha, _ = PROBLEMS[problem]
  schedule = lambda count: alpha * jax.lax.rsqrt(count + 1.0)  # alpha / sqrt(t), t = count + 1.
  tx = OPTIMIZERS[optimizer](learning_rate=schedule, b1=b1, b2=b2)
  optimum = -1.0

  def loss(x, t):
    return jnp.where(t % period == 1, large, small) * x

  def step(carry, t):
    x, state = carry
    value, grad = jax.value_and_grad(loss)(x, t)
    updates, state = tx.update(grad, state, x)
    x_next = jnp.clip(optax.apply_updates(x, updates), -1.0, 1.0)
    return (x_next, state), (x, value - loss(optimum, t))

  x0 = jnp.zeros((), jnp.float32)
  _, (xs, regret_terms) = jax.jit(lambda: jax.lax.scan(
      step, (x0, tx.init(x0)), jnp.arange(1, steps + 1)))()
  t = np.arange(1, steps + 1)
  return {"x": np.asarray(xs), "avg_regret": np.cumsum(np.asarray(regret_terms, np.float64)) / t}


def run(fast: bool = False, plot_path: Optional[str] = None) -> dict[str, Any]:
  """Runs the reproduction; returns the measured numbers and ``reproduced``."""
  problems = ["theorem1"] if fast else list(PROBLEMS)
  result: dict[str, Any] = {}
  curves = {}
  for problem in problems:
    steps = 3_000 if fast else PROBLEMS[problem][-1]
    tail = steps // 10
    for name in OPTIMIZERS:
      out = run_online(name, problem, steps)
      curves[problem, name] = out
      result[f"{problem}/{name}/final_x"] = float(out["x"][-tail:].mean())
      result[f"{problem}/{name}/avg_regret"] = float(out["avg_regret"][-1])
  checks = []
  for problem in problems:
    checks += [result[f"{problem}/adam/final_x"] > 0.9,
               result[f"{problem}/amsgrad/final_x"] < -0.9,
               result[f"{problem}/adam/avg_regret"] > 0.75 * worst_point_regret(problem),
               result[f"{problem}/amsgrad/avg_regret"] < 0.5 * result[f"{problem}/adam/avg_regret"]]
  result["reproduced"] = bool(all(checks))
  if plot_path:
    fig, axes = common.new_figure(2 * len(problems), width=4.0)
    for i, problem in enumerate(problems):
      for name in OPTIMIZERS:
        out = curves[problem, name]
        axes[2 * i].plot(out["x"], label=name, lw=0.8)
        axes[2 * i + 1].plot(out["avg_regret"], label=name)
      axes[2 * i].set(title=f"{problem}: iterate x_t", xlabel="t", xscale="log",
                      ylim=(-1.05, 1.05))
      axes[2 * i + 1].axhline(worst_point_regret(problem), color="gray", ls=":")
      axes[2 * i + 1].set(title=f"{problem}: average regret R_t/t", xlabel="t", xscale="log",
                          ylim=(0.0, 4.0 * worst_point_regret(problem)))
      axes[2 * i].legend(loc="center right")
      axes[2 * i + 1].legend(loc="upper right")
    common.save_figure(fig, plot_path)
  return result


def report(result: dict[str, Any]) -> str:
  rows = []
  for key, value in result.items():
    if key == "reproduced":
      continue
    problem, name, quantity = key.split("/")
    paper = {("adam", "final_x"): "+1 (worst point)", ("amsgrad", "final_x"): "-1 (optimum)",
             ("adam", "avg_regret"): f"-> {worst_point_regret(problem):.4f} (> 0)",
             ("amsgrad", "avg_regret"): "-> 0"}[name, quantity]
    rows.append((f"{problem} {name} {quantity}", paper, f"{value:+.4f}"))
  return common.format_comparison("Reddi et al. 2018: Adam vs AMSGrad on the online problem",
                              rows, result["reproduced"])


if __name__ == "__main__":
  common.reproduction_main(run, report, "reddi2018")
