"""The train state: everything a step reads and writes, as one pytree of arrays."""

from __future__ import annotations

from typing import Any

import flax
import jax
import jax.numpy as jnp
import optax

__all__ = ["TrainState", "create_train_state"]


@flax.struct.dataclass
class TrainState:
  """Parameters, optimizer state, BatchNorm statistics, the run's base rng key and the step.

  Pure data (no functions), so it is a pytree that jit/pmap donate and orbax saves as is.
  ``rng`` stays fixed for the run: step ``k`` derives its keys as ``fold_in(rng, k)``, so the
  randomness of a step depends on ``(seed, k)`` only and a resumed run replays it exactly.
  """
  params: Any
  opt_state: Any
  batch_stats: Any
  rng: jax.Array
  step: jax.Array


def create_train_state(variables: Any, tx: optax.GradientTransformation,
                       rng: jax.Array) -> TrainState:
  """Builds step 0 from ``model.init`` variables (``params`` and optional ``batch_stats``)."""
  params = variables["params"]
  return TrainState(
      params=params,
      opt_state=tx.init(params),
      batch_stats=variables.get("batch_stats", {}),
      rng=rng,
      step=jnp.zeros((), jnp.int32),
  )
