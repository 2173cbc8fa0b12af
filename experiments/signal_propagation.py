"""Signal propagation through deep MLPs: per-layer statistics of activations and gradients.

Shared by the reproductions of Glorot & Bengio 2010, He et al. 2015 and Klambauer et al. 2017.
Small pure functions (numpy / jnp); ``layer_stats`` lives in ``flaxopt.training.diagnostics``
(the per-layer training diagnostics) and is re-exported here.

The deep MLP here is plain jnp so that 100 layers compile quickly: the equal-width hidden
layers are stacked and run with ``lax.scan``::

  s_1 = x W_in + b_in,  h_l = act(s_l),  s_{l+1} = h_l W_l + b_l,  logits = h_L W_out + b_out.

``s_l`` are the pre-activations ("signals") and ``dLoss/ds_l`` the back-propagated gradients;
both are returned per layer by ``forward_and_backward``.
"""

from __future__ import annotations

import functools
from typing import Any, Callable, Mapping, Optional, Sequence

import jax
import jax.numpy as jnp
import numpy as np
import optax

from flaxopt.training.diagnostics import layer_stats  # pylint: disable=unused-import

Array = jax.Array
Params = dict[str, Array]


def init_deep_mlp(key: Array, in_dim: int, width: int, depth: int, out_dim: int,
                  kernel_init: Callable[..., Array], *, dtype: Any = jnp.float32) -> Params:
  """``depth`` hidden layers of ``width`` units; kernels from ``kernel_init``, zero biases."""
  if depth < 1:
    raise ValueError(f"depth must be >= 1, got {depth!r}.")
  k_in, k_hidden, k_out = jax.random.split(key, 3)
  # Eagerly, layer by layer: the initializers' random draws are jitted per shape inside
  # jax.random, so every initializer and every call with the same shapes reuses them.
  hidden = [kernel_init(k, (width, width), dtype) for k in jax.random.split(k_hidden, depth - 1)]
  w_hidden = jnp.stack(hidden) if hidden else jnp.zeros((0, width, width), dtype)
  return {
      "w_in": kernel_init(k_in, (in_dim, width), dtype),
      "b_in": jnp.zeros((width,), dtype),
      "w_hidden": w_hidden,
      "b_hidden": jnp.zeros((depth - 1, width), dtype),
      "w_out": kernel_init(k_out, (width, out_dim), dtype),
      "b_out": jnp.zeros((out_dim,), dtype),
  }


@functools.partial(jax.jit, static_argnums=2)
def forward(params: Params, x: Array, activation: Callable[[Array], Array]) -> Array:
  """The stacked pre-activations ``s`` (depth, N, width) of ``deep_mlp_apply`` (jitted)."""
  return deep_mlp_apply(params, x, activation)[1]


def deep_mlp_apply(params: Params, x: Array, activation: Callable[[Array], Array],
                   perturbation: Optional[Array] = None) -> tuple[Array, Array]:
  """Logits and the stacked pre-activations ``s`` (depth, N, width).

  ``perturbation`` (same shape as ``s``) is added to each pre-activation: its gradient is
  ``dLoss/ds`` (zeros leave the output unchanged).
  """
  depth = params["w_hidden"].shape[0] + 1
  x = x.reshape(x.shape[0], -1)
  width = params["w_in"].shape[1]
  if perturbation is None:
    perturbation = jnp.zeros((depth, x.shape[0], width), x.dtype)
  s = x @ params["w_in"] + params["b_in"] + perturbation[0]

  def layer(s, inputs):
    w, b, p = inputs
    s_next = activation(s) @ w + b + p
    return s_next, s_next

  s_last, s_rest = jax.lax.scan(layer, s, (params["w_hidden"], params["b_hidden"],
                                           perturbation[1:]))
  signals = jnp.concatenate([s[None], s_rest], axis=0)
  logits = activation(s_last) @ params["w_out"] + params["b_out"]
  return logits, signals


def cross_entropy(logits: Array, labels: Array) -> Array:
  """Mean softmax cross-entropy over the batch."""
  return jnp.mean(optax.softmax_cross_entropy_with_integer_labels(logits, labels))


@functools.partial(jax.jit, static_argnums=3)
def forward_and_backward(params: Params, x: Array, y: Array,
                         activation: Callable[[Array], Array]) -> Mapping[str, Array]:
  """Per-layer pre-activations, activations and back-propagated gradients at ``params``.

  Returns a dict of stacked arrays (depth, N, width): ``signal`` (s_l), ``activation``
  (act(s_l)) and ``grad`` (dL/ds_l with L the *summed* cross-entropy, i.e. per-example
  gradients), plus ``loss`` (the mean cross-entropy).
  """
  depth = params["w_hidden"].shape[0] + 1
  zeros = jnp.zeros((depth, x.shape[0], params["w_in"].shape[1]), x.dtype)

  def loss_fn(p):
    logits, signals = deep_mlp_apply(params, x, activation, p)
    return cross_entropy(logits, y) * x.shape[0], signals

  (loss, signals), grads = jax.value_and_grad(loss_fn, has_aux=True)(zeros)
  return {"signal": signals, "activation": activation(signals), "grad": grads,
          "loss": loss / x.shape[0]}


@functools.lru_cache(maxsize=4)
def load_mnist1d(num_samples: Optional[int] = None) -> dict[str, np.ndarray]:
  """MNIST-1D (Greydanus 2020) as flat float32 arrays: x (N, 40) standardized, y int32.

  ``num_samples=None`` uses ``flaxopt.data.load('mnist1d')`` (4000 train, 1000 test) and
  falls back to generating it with the ``mnist1d`` package; a number generates that many
  examples (80/20 split) with the package, in memory (quick, for tests). Cached: do not
  modify the arrays.
  """
  if num_samples is None:
    try:
      from flaxopt import data  # pylint: disable=g-import-not-at-top
      ds = data.load("mnist1d")
      return {"x": ds.x_train.reshape(len(ds.x_train), -1), "y": ds.y_train,
              "x_test": ds.x_test.reshape(len(ds.x_test), -1), "y_test": ds.y_test}
    except (ImportError, AttributeError, OSError, ValueError):
      pass
  from mnist1d.data import get_dataset_args, make_dataset  # pylint: disable=g-import-not-at-top
  args = get_dataset_args()
  if num_samples is not None:
    args.num_samples = int(num_samples)
  raw = make_dataset(args)
  return {"x": raw["x"].astype(np.float32), "y": raw["y"].astype(np.int32),
          "x_test": raw["x_test"].astype(np.float32), "y_test": raw["y_test"].astype(np.int32)}


def format_comparison(title: str, rows: Sequence[tuple[str, str, str]], reproduced: bool) -> str:
  """A plain-text table ``quantity | paper | ours`` and a REPRODUCED / NOT REPRODUCED line."""
  header = ("quantity", "paper", "ours")
  widths = [max(len(str(r[i])) for r in (header, *rows)) for i in range(3)]
  lines = [title, " | ".join(h.ljust(w) for h, w in zip(header, widths)),
           "-+-".join("-" * w for w in widths)]
  lines += [" | ".join(str(c).ljust(w) for c, w in zip(r, widths)) for r in rows]
  lines.append("REPRODUCED" if reproduced else "NOT REPRODUCED")
  return "\n".join(lines)


def new_figure(ncols: int, *, width: float = 5.0, height: float = 3.6):
  """A matplotlib (Agg) figure with ``ncols`` axes side by side."""
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
  fig, axes = plt.subplots(1, ncols, figsize=(width * ncols, height), squeeze=False)
  return fig, list(axes[0])


def save_figure(fig: Any, path: str) -> None:
  """Saves ``fig`` to ``path`` (creating its folder) and closes it."""
  import os  # pylint: disable=g-import-not-at-top
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  fig.tight_layout()
  fig.savefig(path, dpi=110)
  plt.close(fig)


def script_main(run: Callable[..., dict[str, Any]], report: Callable[[dict[str, Any]], str],
                default_plot: str) -> None:
  """The ``__main__`` of a reproduce_* script: flags --fast and --plot, print, exit status.

  Flags are defined here, not at import, so that tests can import several scripts.
  Exits 0 when ``run(...)['reproduced']``, else 1.
  """
  from absl import app  # pylint: disable=g-import-not-at-top
  from absl import flags  # pylint: disable=g-import-not-at-top
  fast = flags.DEFINE_bool("fast", False, "Test-sized run (seconds instead of minutes).")
  plot = flags.DEFINE_string("plot", default_plot, "Where to write the PNG plot ('' for none).")

  def main(argv):
    del argv
    result = run(fast=fast.value, plot_path=plot.value or None)
    print(report(result))
    raise SystemExit(0 if result["reproduced"] else 1)

  app.run(main)
