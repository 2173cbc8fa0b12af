"""The child network of the activation search (experiments/search_activations.py): MNIST-1D
and a 40-100-100-10 MLP in plain jnp whose activation is a ``lax.switch`` over the search
space's ops, trained for many candidates and seeds at once (vmapped ``lax.scan``)."""

from __future__ import annotations

import functools
from typing import Optional, Sequence

import jax
import jax.numpy as jnp
import numpy as np
import optax

from flaxopt import data as fdata
from flaxopt.functional import activation_search as S

Array = jax.Array
Params = list[tuple[Array, Array]]
CANDIDATE_BUCKET = 8


# ---------------------------------------------------------------------------------------
# Data and the child network (plain jnp: the activation is a switch over the space's ops).
# ---------------------------------------------------------------------------------------
def load_data(validation_size: int = 500, data_dir: Optional[str] = None) -> dict[str, Array]:
  """MNIST-1D as flat float32 arrays: train (minus a validation split), val, test."""
  ds = fdata.load("mnist1d", data_dir=data_dir, validation_size=validation_size)
  flat = lambda x: jnp.asarray(x.reshape(x.shape[0], -1), jnp.float32)
  return {"x_train": flat(ds.x_train), "y_train": jnp.asarray(ds.y_train),
          "x_val": flat(ds.x_val), "y_val": jnp.asarray(ds.y_val),
          "x_test": flat(ds.x_test), "y_test": jnp.asarray(ds.y_test)}


def init_mlp(key: Array, sizes: Sequence[int]) -> Params:
  """LeCun-normal weights (Var = 1 / fan_in), zero biases, for ``sizes = (in, ..., out)``."""
  keys = jax.random.split(key, len(sizes) - 1)
  return [(jax.random.normal(k, (m, n)) / np.sqrt(m), jnp.zeros((n,)))
          for k, m, n in zip(keys, sizes[:-1], sizes[1:])]


def mlp_logits(params: Params, x: Array, index: Array, unary: Sequence[str],
               binary: Sequence[str]) -> Array:
  """The MLP with candidate ``index = (i1, i2, ib)`` as every hidden activation."""
  for w, b in params[:-1]:
    x = S.apply_core_unit(x @ w + b, index, unary, binary)
  w, b = params[-1]
  return x @ w + b


def _loss(params, x, y, index, unary, binary):
  logits = mlp_logits(params, x, index, unary, binary)
  return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()


def _accuracy(params, x, y, index, unary, binary):
  return jnp.mean(jnp.argmax(mlp_logits(params, x, index, unary, binary), -1) == y)


@functools.partial(jax.jit, static_argnames=("unary", "binary", "learning_rate"))
def _train_all(params: Params, indices: Array, batches: Array, data: dict[str, Array], *,
               unary: tuple[str, ...], binary: tuple[str, ...],
               learning_rate: float) -> dict[str, Array]:
  """Trains every (seed, candidate) model; ``params``: per seed, ``batches``: (S, T, B)."""
  tx = optax.adam(learning_rate)

  def train_one(p, index, batch_ids):

    def step(carry, ids):
      p, opt_state = carry
      loss, grads = jax.value_and_grad(_loss)(p, data["x_train"][ids], data["y_train"][ids],
                                              index, unary, binary)
      updates, opt_state = tx.update(grads, opt_state, p)
      return (optax.apply_updates(p, updates), opt_state), loss

    (p, _), losses = jax.lax.scan(step, (p, tx.init(p)), batch_ids)
    tail = max(1, losses.shape[0] // 10)
    return {
        "train_loss": losses[-tail:].mean(),
        "val_acc": _accuracy(p, data["x_val"], data["y_val"], index, unary, binary),
        "test_acc": _accuracy(p, data["x_test"], data["y_test"], index, unary, binary),
    }

  over_candidates = jax.vmap(train_one, in_axes=(None, 0, None))
  return jax.vmap(over_candidates, in_axes=(0, None, 0))(params, indices, batches)


def train_candidates(candidates: Sequence[S.Candidate], data: dict[str, Array], *,
                     unary: Sequence[str], binary: Sequence[str], steps: int,
                     seeds: Sequence[int], batch_size: int = 100, learning_rate: float = 3e-3,
                     hidden: Sequence[int] = (100, 100)) -> dict[str, np.ndarray]:
  """Trains each candidate with each seed (same init and batch order per seed for all).

  Returns numpy arrays of shape ``(len(seeds), len(candidates))``: ``train_loss`` (mean of the
  last 10% of steps), ``val_acc``, ``test_acc``; a diverged model has a non-finite loss.
  """
  if steps < 1 or not seeds or not candidates:
    raise ValueError(f"need steps >= 1, seeds and candidates; got steps={steps}, "
                     f"seeds={seeds}, {len(candidates)} candidates")
  unary, binary = tuple(unary), tuple(binary)
  indices = [(unary.index(c.unary1), unary.index(c.unary2), binary.index(c.binary))
             for c in candidates]
  # Pad the candidate axis to a multiple of CANDIDATE_BUCKET (repeating the first candidate,
  # results dropped) so that searches of similar size reuse one compiled program.
  padded = -(-len(indices) // CANDIDATE_BUCKET) * CANDIDATE_BUCKET
  indices = jnp.asarray(indices + indices[:1] * (padded - len(indices)), jnp.int32)
  n, d = data["x_train"].shape
  sizes = (d, *hidden, 10)
  params = [init_mlp(jax.random.key(s), sizes) for s in seeds]
  params = jax.tree.map(lambda *a: jnp.stack(a), *params)
  batches = []
  for s in seeds:
    rng = np.random.default_rng(s)
    epochs = -(-steps * batch_size // n)
    order = np.concatenate([rng.permutation(n) for _ in range(epochs)])
    batches.append(order[:steps * batch_size].reshape(steps, batch_size))
  out = _train_all(params, indices, jnp.asarray(np.stack(batches), jnp.int32), data,
                   unary=unary, binary=binary, learning_rate=learning_rate)
  return {k: np.asarray(v, np.float64)[:, :len(candidates)] for k, v in out.items()}
