r"""Reproduces He, Zhang, Ren & Sun 2015, "Delving deep into rectifiers", Sec. 2.2 and Fig. 3.

Forward signal in a ReLU network: ``E[s_{l+1}^2] = (n_l Var[w_l] / 2) E[s_l^2]``. He init
(``Var[w] = 2 / n``) keeps it constant; Xavier init (``Var[w] = 1 / n`` for square layers)
halves it at every layer, so after 30 layers it is ``2^-29`` times the first layer's.
Fig. 3: a 30-layer ReLU network trained with He init converges, with Xavier it stalls.

Ours: a 30-hidden-layer ReLU MLP (``F.he_normal()`` vs ``F.xavier_normal()``, zero biases):
the per-layer second moments of the pre-activations on MNIST-1D inputs, and training on
MNIST-1D with ``flaxopt.optim.momentum`` (heavy ball, lr 0.01, mu 0.9, batch 100).

  python -m experiments.reproduce_he2015 [--fast] [--out_dir=DIR | --publish]

Exits non-zero when the finding is not reproduced.
"""

from __future__ import annotations

import math
from typing import Any, Optional

import jax
import jax.numpy as jnp
import numpy as np
import optax

from experiments import common
from experiments import signal_propagation as sp
import flaxopt.functional as F
from flaxopt import optim

DEPTH = 30
INITS = {"he": F.he_normal, "xavier": F.xavier_normal}
# fast -> (training examples of MNIST-1D (None: all 4000), signal width, train width, steps)
SIZES = {False: (None, 256, 128, 3000), True: (800, 128, 32, 300)}
LEARNING_RATE, MOMENTUM, BATCH = 0.01, 0.9, 100


def make_train(x: jax.Array, y: jax.Array, steps: int):
  """A jitted ``train(params, key) -> (params, losses)`` of ``steps`` SGD+momentum steps."""
  tx = optim.momentum(LEARNING_RATE, momentum=MOMENTUM)

  def loss_fn(params, xb, yb):
    return sp.cross_entropy(sp.deep_mlp_apply(params, xb, F.relu)[0], yb)

  def step(carry, key):
    params, state = carry
    idx = jax.random.randint(key, (BATCH,), 0, x.shape[0])
    loss, grads = jax.value_and_grad(loss_fn)(params, x[idx], y[idx])
    updates, state = tx.update(grads, state, params)
    return (optax.apply_updates(params, updates), state), loss

  @jax.jit
  def train(params, key):
    (params, _), losses = jax.lax.scan(step, (params, tx.init(params)),
                                       jax.random.split(key, steps))
    return params, losses

  return train


def run(fast: bool = False, plot_path: Optional[str] = None, seed: int = 0) -> dict[str, Any]:
  """Runs the reproduction; returns the measured numbers and ``reproduced``."""
  num_train, signal_width, train_width, steps = SIZES[fast]
  data = common.load_mnist1d(num_train)
  x, y = jnp.asarray(data["x"]), jnp.asarray(data["y"])
  x_test, y_test = jnp.asarray(data["x_test"]), jnp.asarray(data["y_test"])
  train = make_train(x, y, steps)
  key = jax.random.key(seed)
  result: dict[str, Any] = {}
  curves = {}
  for name, init in INITS.items():
    params = sp.init_deep_mlp(key, x.shape[1], signal_width, DEPTH, 10, init())
    stats = sp.layer_stats(sp.forward(params, x[:1000], F.relu), percentiles=())
    moments = np.array([s["second_moment"] for s in stats])
    log2_ratio = float(np.log2(moments[-1] / moments[0]))
    result[f"{name}/log2_signal_ratio"] = log2_ratio
    result[f"{name}/per_layer_factor"] = float(2.0 ** (log2_ratio / (DEPTH - 1)))
    params = sp.init_deep_mlp(key, x.shape[1], train_width, DEPTH, 10, init())
    params, losses = train(params, jax.random.fold_in(key, 1))
    losses = np.asarray(losses)
    logits = sp.deep_mlp_apply(params, x_test, F.relu)[0]
    result[f"{name}/final_train_loss"] = float(losses[-max(steps // 10, 1):].mean())
    result[f"{name}/test_accuracy"] = float(jnp.mean(jnp.argmax(logits, -1) == y_test))
    curves[name] = (moments, losses)
  chance = math.log(10.0)
  result["reproduced"] = bool(
      abs(result["he/log2_signal_ratio"]) < 3.0
      and abs(result["xavier/log2_signal_ratio"] + (DEPTH - 1)) < 3.0
      and result["he/final_train_loss"] < 0.85 * chance
      and result["xavier/final_train_loss"] > 0.99 * chance)
  if plot_path:
    fig, (ax_signal, ax_loss) = common.new_figure(2)
    for name, (moments, losses) in curves.items():
      ax_signal.semilogy(np.arange(1, DEPTH + 1), moments, "o-", ms=3, label=name)
      window = max(len(losses) // 50, 1)
      ax_loss.plot(np.convolve(losses, np.ones(window) / window, mode="valid"), label=name)
    ax_signal.set(title=f"{DEPTH}-layer ReLU MLP: E[s_l^2] at init", xlabel="layer l")
    ax_loss.axhline(chance, color="gray", ls=":", label="ln 10 (chance)")
    ax_loss.set(title="MNIST-1D training loss (SGD+momentum)", xlabel="step")
    ax_signal.legend()
    ax_loss.legend()
    common.save_figure(fig, plot_path)
  return result


def report(result: dict[str, Any]) -> str:
  rows = [
      ("he: log2 E[s_30^2]/E[s_1^2]", "0 (factor 1 per layer)",
       f"{result['he/log2_signal_ratio']:+.2f} (factor {result['he/per_layer_factor']:.3f})"),
      ("xavier: log2 E[s_30^2]/E[s_1^2]", "-29 (factor 1/2 per layer)",
       f"{result['xavier/log2_signal_ratio']:+.2f} "
       f"(factor {result['xavier/per_layer_factor']:.3f})"),
      ("he: train loss (end)", "converges", f"{result['he/final_train_loss']:.3f}"),
      ("xavier: train loss (end)", "stalls (ln 10 = 2.303)",
       f"{result['xavier/final_train_loss']:.3f}"),
      ("he / xavier test accuracy", "-",
       f"{result['he/test_accuracy']:.3f} / {result['xavier/test_accuracy']:.3f}"),
  ]
  return common.format_comparison(f"He et al. 2015: {DEPTH}-layer ReLU MLP, He vs Xavier init",
                              rows, result["reproduced"])


if __name__ == "__main__":
  common.reproduction_main(run, report, "he2015")
