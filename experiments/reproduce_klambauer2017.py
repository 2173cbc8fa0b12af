r"""Reproduces Klambauer, Unterthiner, Mayr & Hochreiter 2017, "Self-normalizing neural
networks", Theorem 1 / Fig. 1 (the (0, 1) fixed point of SELU networks).

With SELU (lambda ~ 1.0507, alpha ~ 1.6733) and LeCun-normal weights
(``Var[w] = 1 / n``, our ``F.lecun_normal()``), the map from the mean and variance of one
layer's activations to the next has a stable, attracting fixed point at (0, 1): on
standardized input, mean ~ 0 and variance ~ 1 hold through arbitrarily many layers.
With ReLU and the same init the variance halves at every layer (it drifts to 0).

Ours: a 100-hidden-layer MLP (width 512; 128 with ``--fast``) at initialization on a batch
of standardized Gaussian inputs; the mean and variance of each layer's activations.

  python -m experiments.reproduce_klambauer2017 [--fast] \
      [--out_dir=DIR | --publish]

Exits non-zero when the finding is not reproduced.
"""

from __future__ import annotations

from typing import Any, Optional

import jax
import numpy as np

from experiments import common
from experiments import signal_propagation as sp
import flaxopt.functional as F

DEPTH = 100
ACTIVATIONS = {"selu": F.selu, "relu": F.relu, "tanh": F.tanh}
# fast -> (width, batch)
SIZES = {False: (512, 1000), True: (128, 128)}
# The paper's Theorem 1 domain for (mean, variance) is [-0.1, 0.1] x [0.8, 1.5].
MEAN_TOL, VAR_RANGE = 0.1, (0.8, 1.5)


def run(fast: bool = False, plot_path: Optional[str] = None, seed: int = 0) -> dict[str, Any]:
  """Runs the reproduction; returns the measured numbers and ``reproduced``."""
  width, batch = SIZES[fast]
  key_x, key_w = jax.random.split(jax.random.key(seed))
  x = jax.random.normal(key_x, (batch, width))
  x = (x - x.mean(0)) / x.std(0)
  params = sp.init_deep_mlp(key_w, width, width, DEPTH, 10, F.lecun_normal())
  result: dict[str, Any] = {}
  curves = {}
  for name, activation in ACTIVATIONS.items():
    stats = sp.layer_stats(activation(sp.forward(params, x, activation)), percentiles=())
    means = np.array([s["mean"] for s in stats])
    variances = np.array([s["var"] for s in stats])
    curves[name] = (means, variances)
    result[f"{name}/final_mean"] = float(means[-1])
    result[f"{name}/final_var"] = float(variances[-1])
    result[f"{name}/max_abs_mean"] = float(np.abs(means).max())
    result[f"{name}/var_range"] = (float(variances.min()), float(variances.max()))
  result["reproduced"] = bool(
      result["selu/max_abs_mean"] < MEAN_TOL
      and VAR_RANGE[0] <= result["selu/var_range"][0]
      and result["selu/var_range"][1] <= VAR_RANGE[1]
      and result["relu/final_var"] < 1e-10)
  if plot_path:
    fig, (ax_mean, ax_var) = common.new_figure(2)
    layers = np.arange(1, DEPTH + 1)
    for name, (means, variances) in curves.items():
      ax_mean.plot(layers, means, label=name)
      ax_var.semilogy(layers, variances, label=name)
    ax_mean.set(title="LeCun-normal MLP: mean of activations", xlabel="layer", ylim=(-0.5, 1))
    ax_var.set(title="variance of activations", xlabel="layer")
    ax_mean.legend()
    ax_var.legend()
    common.save_figure(fig, plot_path)
  return result


def report(result: dict[str, Any]) -> str:
  rows = [
      ("selu: mean, layer 100 (max |mean|)", "0 (within [-0.1, 0.1])",
       f"{result['selu/final_mean']:+.4f} ({result['selu/max_abs_mean']:.4f})"),
      ("selu: variance, layer 100 (range)", "1 (within [0.8, 1.5])",
       f"{result['selu/final_var']:.4f} ({result['selu/var_range'][0]:.3f}"
       f"..{result['selu/var_range'][1]:.3f})"),
      ("relu: variance, layer 100", "drifts to 0 (x 1/2 per layer)",
       f"{result['relu/final_var']:.3g}"),
      ("tanh: variance, layer 100", "drifts to 0 (slowly)", f"{result['tanh/final_var']:.3g}"),
  ]
  return common.format_comparison(f"Klambauer et al. 2017: {DEPTH}-layer LeCun-normal MLP",
                              rows, result["reproduced"])


if __name__ == "__main__":
  common.reproduction_main(run, report, "klambauer2017")
