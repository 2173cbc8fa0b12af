r"""Reproduces Glorot & Bengio 2010, "Understanding the difficulty of training deep feedforward
neural networks", Sec. 4.2.2 and Fig. 7 (back-propagated gradients with tanh).

With the "standard" init ``W ~ U(-1/sqrt(n), 1/sqrt(n))`` (``n Var[W] = 1/3``) the variance of
the back-propagated gradients ``dCost/ds_l`` shrinks by about 1/3 per layer going down
towards the input; the "normalized" init ``W ~ U(+-sqrt(6 / (n_in + n_out)))``
(``n Var[W] = 1`` for square layers, our ``F.xavier_uniform()``) keeps it roughly constant.

Ours: a 5-hidden-layer tanh MLP (width 1000 as in the paper; 128 with ``--fast``) at
initialization on a batch of MNIST-1D (the paper used Shapeset-3x2), softmax cross-entropy.
We report ``Var[dCost/ds_1] / Var[dCost/ds_5]`` (first over last hidden layer), plus the
activation standard deviations and tanh saturation (|tanh| >= 0.97) per layer.

  python -m experiments.reproduce_glorot2010 [--fast] [--out_dir=DIR | --publish]

Exits non-zero when the finding is not reproduced.
"""

from __future__ import annotations

from typing import Any, Optional

import jax
import jax.numpy as jnp
import numpy as np

from experiments import common
from experiments import signal_propagation as sp
import flaxopt.functional as F

DEPTH = 5
INITS = {"standard": F.standard_uniform, "normalized": F.xavier_uniform}
# fast -> (training examples of MNIST-1D (None: all 4000), width, batch)
SIZES = {False: (None, 1000, 2000), True: (800, 128, 800)}
SATURATION = 0.97


def run(fast: bool = False, plot_path: Optional[str] = None, seed: int = 0) -> dict[str, Any]:
  """Runs the reproduction; returns the measured numbers and ``reproduced``."""
  num_train, width, batch = SIZES[fast]
  data = common.load_mnist1d(num_train)
  x, y = jnp.asarray(data["x"][:batch]), jnp.asarray(data["y"][:batch])
  result: dict[str, Any] = {}
  curves = {}
  for name, init in INITS.items():
    params = sp.init_deep_mlp(jax.random.key(seed), x.shape[1], width, DEPTH, 10, init())
    out = sp.forward_and_backward(params, x, y, F.tanh)
    grads = sp.layer_stats(out["grad"], percentiles=())
    acts = sp.layer_stats(out["activation"], saturation=SATURATION, percentiles=())
    grad_var = np.array([g["var"] for g in grads])
    result[f"{name}/grad_var_ratio"] = float(grad_var[0] / grad_var[-1])
    result[f"{name}/per_layer_factor"] = float(
        (grad_var[0] / grad_var[-1]) ** (1.0 / (DEPTH - 1)))
    result[f"{name}/activation_std"] = [a["std"] for a in acts]
    result[f"{name}/saturation"] = [a["saturation_fraction"] for a in acts]
    curves[name] = grad_var
  result["reproduced"] = bool(
      result["standard/grad_var_ratio"] < 0.1
      and 0.25 < result["normalized/grad_var_ratio"] < 4.0
      and result["standard/grad_var_ratio"] < 0.1 * result["normalized/grad_var_ratio"])
  if plot_path:
    fig, (ax_grad, ax_act) = common.new_figure(2)
    layers = np.arange(1, DEPTH + 1)
    for name, grad_var in curves.items():
      ax_grad.semilogy(layers, grad_var, "o-", label=name)
      ax_act.plot(layers, result[f"{name}/activation_std"], "o-", label=name)
    ax_grad.set(title="tanh MLP at init: Var[dCost/ds_l]", xlabel="layer l (1 = next to input)")
    ax_act.set(title="tanh MLP at init: std of activations", xlabel="layer l")
    for ax in (ax_grad, ax_act):
      ax.set_xticks(layers)
      ax.legend()
    common.save_figure(fig, plot_path)
  return result


def report(result: dict[str, Any]) -> str:
  rows = [
      ("standard: Var[g_1]/Var[g_5]", "shrinks towards the input (~(1/3)^4 = 0.012)",
       f"{result['standard/grad_var_ratio']:.4f} "
       f"(factor {result['standard/per_layer_factor']:.3f}/layer)"),
      ("normalized: Var[g_1]/Var[g_5]", "roughly constant (~1)",
       f"{result['normalized/grad_var_ratio']:.4f} "
       f"(factor {result['normalized/per_layer_factor']:.3f}/layer)"),
      ("standard: activation std l=1..5", "shrinks with depth",
       " ".join(f"{v:.3f}" for v in result["standard/activation_std"])),
      ("normalized: activation std l=1..5", "kept",
       " ".join(f"{v:.3f}" for v in result["normalized/activation_std"])),
  ]
  return common.format_comparison(f"Glorot & Bengio 2010: {DEPTH}-layer tanh MLP, back-propagated "
                              "gradient variance", rows, result["reproduced"])


if __name__ == "__main__":
  common.reproduction_main(run, report, "glorot2010")
