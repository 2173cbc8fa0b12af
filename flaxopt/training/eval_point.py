"""Where a run is evaluated, and the curvature it logs there (the loop's optional extras).

* Schedule-free optimizers (Defazio et al. 2024, "The Road Less Scheduled") train at the
  point ``y`` but are meant to be evaluated at the averaged point ``x``
  (``optim.schedule_free_eval_params``). A model with BatchNorm must also have its running
  statistics recomputed at ``x`` (``optim.recompute_batch_stats``): the statistics gathered
  while training at ``y`` do not describe ``x``, the known trap of schedule-free training.
  :func:`eval_point_fn` returns that map for such an optimizer and None otherwise, so the
  loop evaluates every other optimizer at its parameters, unchanged.
* :func:`curvature_logger` returns the evaluation-time curvature metrics of
  ``config.curvature`` (``training/curvature_log.py``) on a fixed set of training batches.
"""

from __future__ import annotations

from typing import Any, Callable, Optional

import jax
import numpy as np

from flaxopt import optim

__all__ = ["eval_point_fn", "curvature_logger", "fixed_train_batches"]

# Training batches the BatchNorm statistics at the schedule-free average are recomputed on.
RECOMPUTE_BATCHES = 8


def fixed_train_batches(x: np.ndarray, y: np.ndarray, batch_size: int,
                        num_batches: int) -> list[dict[str, np.ndarray]]:
  """The first ``num_batches`` full batches of the training split (fewer if it is small)."""
  n = min(num_batches, len(x) // batch_size)
  return [{"x": x[i * batch_size:(i + 1) * batch_size],
           "y": y[i * batch_size:(i + 1) * batch_size]} for i in range(max(n, 1))]


def eval_point_fn(model: Any, opt_state: Any, batches: list[dict[str, np.ndarray]],
                  rngs: dict[str, jax.Array]) -> Optional[Callable[..., tuple[Any, Any]]]:
  """``(params, batch_stats, opt_state) -> (params, batch_stats)`` to evaluate at, or None.

  None unless ``opt_state`` holds a schedule-free state. Otherwise the map returns
  ``x = schedule_free_eval_params(params, opt_state)`` and, when the model has BatchNorm
  statistics, those statistics recomputed at ``x`` in training mode on ``batches`` (the
  equal-weight mean of per-batch statistics, as ``torch.optim.swa_utils.update_bn``).
  ``rngs`` serve the model's stochastic layers during the recomputation. Jitted.
  """
  if not optim.is_schedule_free(opt_state):
    return None
  stacked = {k: np.stack([b[k] for b in batches]) for k in ("x",)}

  def stats_fn(params, batch_stats, batch):
    _, updates = model.apply({"params": params, "batch_stats": batch_stats}, batch["x"],
                             train=True, rngs=rngs, mutable=["batch_stats"])
    return updates["batch_stats"]

  @jax.jit
  def point(params, batch_stats, opt_state):
    x = optim.schedule_free_eval_params(params, opt_state)
    if jax.tree.leaves(batch_stats):
      batch_stats = optim.recompute_batch_stats(stats_fn, x, batch_stats, stacked)
    return x, batch_stats

  return point


def curvature_logger(config: Any, model: Any, num_classes: int, batch_stats: Any,
                     batches: list[dict[str, np.ndarray]]) -> Optional[Callable[..., dict]]:
  """``(params, step, learning_rate) -> curvature metrics``, or None with curvature off.

  The loss is built once (``curvature_log.model_loss_fn``: train mode, dropout off), so the
  Lanczos and Hutchinson programs compile once per run; probes are keyed by
  ``fold_in(PRNGKey(curvature.seed), step)``.
  """
  if not int(config.curvature.every):
    return None
  from flaxopt.training import curvature_log  # pylint: disable=g-import-not-at-top
  loss_fn = curvature_log.model_loss_fn(model, num_classes, batch_stats)
  key = jax.random.PRNGKey(int(config.curvature.seed))

  def log(params, step: int, learning_rate: float) -> dict:
    return curvature_log.curvature_metrics(config, loss_fn, params, batches,
                                           jax.random.fold_in(key, step), learning_rate)

  return log
