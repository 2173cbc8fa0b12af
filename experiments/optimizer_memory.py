r"""Measures the optimizer-state memory of every first-order optimizer.

Builds each optimizer, runs ``init`` on one ``rows x cols`` parameter matrix
(allocating the real state) and sums ``nbytes`` over the state's arrays.
Prints a Markdown table (bytes, MiB, bytes per parameter).

    python -m experiments.optimizer_memory --rows=4096 --cols=4096 --dtype=float32
"""

from __future__ import annotations

from absl import app
from absl import flags
import jax
import jax.numpy as jnp

from flaxopt.optim import alias

_ROWS = flags.DEFINE_integer("rows", 4096, "Rows of the parameter matrix.")
_COLS = flags.DEFINE_integer("cols", 4096, "Columns of the parameter matrix.")
_DTYPE = flags.DEFINE_enum("dtype", "float32", ["float32", "bfloat16"], "Parameter dtype.")

# (label, registry name, kwargs beyond learning_rate).
VARIANTS = [
    ("sgd", "sgd", {}),
    ("momentum", "momentum", {}),
    ("nesterov", "nesterov", {}),
    ("adagrad", "adagrad", {}),
    ("adadelta", "adadelta", {}),
    ("rmsprop", "rmsprop", {}),
    ("rmsprop(centered, momentum=0.9)", "rmsprop", {"centered": True, "momentum": 0.9}),
    ("adam", "adam", {}),
    ("adamax", "adamax", {}),
    ("nadam", "nadam", {}),
    ("amsgrad", "amsgrad", {}),
    ("adafactor", "adafactor", {}),
    ("adafactor(beta1=0.9)", "adafactor", {"beta1": 0.9}),
    ("adafactor(factored=False)", "adafactor", {"factored": False}),
]


def state_bytes(tx, params) -> int:
  """Total bytes of the arrays in ``tx.init(params)``."""
  state = tx.init(params)
  total = sum(x.nbytes for x in jax.tree.leaves(state))
  jax.tree.map(lambda x: x.delete(), state)
  return total


def main(argv):
  del argv
  rows, cols = _ROWS.value, _COLS.value
  params = jnp.zeros((rows, cols), _DTYPE.value)
  print(f"State of one {rows}x{cols} {_DTYPE.value} matrix ({params.nbytes:,} bytes of params)\n")
  print("| optimizer | state bytes | MiB | bytes / parameter |")
  print("|---|---:|---:|---:|")
  for label, name, kwargs in VARIANTS:
    nbytes = state_bytes(alias.REGISTRY[name](learning_rate=1e-3, **kwargs), params)
    print(f"| {label} | {nbytes:,} | {nbytes / 2**20:.3f} | {nbytes / params.size:.4f} |")


if __name__ == "__main__":
  app.run(main)
