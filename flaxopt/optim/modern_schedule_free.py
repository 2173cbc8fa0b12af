"""Schedule-free SGD and AdamW (Defazio et al. 2024), their evaluation point, and BatchNorm.

Schedule-free training keeps two sequences: ``z`` (the base optimizer's iterate, stepped
with the raw learning rate) and the average ``x`` of the ``z``'s; gradients are taken at the
interpolation ``y = (1 - b1) z + b1 x``. The *parameters the training loop holds are y*
(what the authors' ``schedulefree`` package keeps in ``.train()`` mode); ``x``, the point to
evaluate and to ship, is ``schedule_free_eval_params(params, opt_state)``. Models with
BatchNorm must also recompute their running statistics at ``x`` before evaluating
(``recompute_batch_stats``): the running averages collected during training belong to the
``y`` sequence, and using them at ``x`` is the known trap (the ``schedulefree`` README asks
users to run a few training batches in ``.eval()`` optimizer mode for the same reason).

Schedule-free *replaces* the learning-rate schedule: ``learning_rate`` is a constant (with
optional linear warmup, ``warmup_steps``) or a non-decreasing schedule; a schedule that
decays raises ValueError at construction.
"""

from __future__ import annotations

from typing import Any, Callable, NamedTuple, Optional

import jax
import jax.numpy as jnp
import numpy as np
import optax

from flaxopt.optim import modern_common as mc

__all__ = [
    "ScheduleFreeState",
    "ScaleByRmsBiasCorrectedState",
    "scale_by_rms_bias_corrected",
    "schedule_free",
    "schedule_free_sgd",
    "schedule_free_adamw",
    "schedule_free_eval_params",
    "is_schedule_free",
    "recompute_batch_stats",
]

ScalarLike = mc.ScalarLike
ScalarOrSchedule = mc.ScalarOrSchedule

# Counts at which a schedule is probed for decay (0 .. 10^7, dense early).
_PROBE_COUNTS = np.unique(np.concatenate([np.arange(0, 200), np.geomspace(200, 1e7, 200)
                                          .astype(np.int64)]))


def _check_not_decaying(learning_rate: ScalarOrSchedule) -> None:
  """ValueError naming ``learning_rate`` if a schedule decreases on ``_PROBE_COUNTS``."""
  if not callable(learning_rate):
    mc.check_positive("learning_rate", learning_rate)
    return
  try:
    values = np.asarray(jax.jit(jax.vmap(learning_rate))(
        jnp.asarray(_PROBE_COUNTS, jnp.int32)), np.float64)
  except Exception:  # pylint: disable=broad-except
    values = np.asarray([float(learning_rate(int(k))) for k in _PROBE_COUNTS])
  if not np.all(np.isfinite(values)) or np.any(values < 0):
    raise ValueError(f"learning_rate schedule must give finite values >= 0, got "
                     f"{values[~np.isfinite(values) | (values < 0)][0]!r}.")
  # A relative 1e-6 slack ignores float32 rounding in schedules that are flat in exact math.
  drops = np.nonzero(np.diff(values) < -1e-6 * np.abs(values[:-1]))[0]
  if drops.size:
    i = drops[0]
    raise ValueError(
        "learning_rate: schedule-free replaces the learning-rate schedule, but the given "
        f"schedule decays (lr({_PROBE_COUNTS[i]})={values[i]:.3g} > "
        f"lr({_PROBE_COUNTS[i + 1]})={values[i + 1]:.3g}); pass a constant (and "
        "warmup_steps) instead.")


class ScheduleFreeState(NamedTuple):
  """Step count, ``b1`` (for the evaluation point), ``z``, weight sum, max lr, base state."""
  count: jax.Array
  b1: jax.Array
  z: Any
  weight_sum: jax.Array
  lr_max: jax.Array
  base_state: Any


def schedule_free(direction: optax.GradientTransformation,
                  learning_rate: ScalarOrSchedule,
                  b1: ScalarLike = 0.9,
                  warmup_steps: int = 0,
                  r: ScalarLike = 0.0,
                  weight_lr_power: ScalarLike = 2.0) -> optax.GradientTransformation:
  r"""Schedule-free averaging around a step ``direction`` (params are the training point y).

  With ``d_t = direction(g_t; y_t)``, ``lr_t = lr * min(1, (t + 1) / warmup_steps)``
  (t from 0), ``lr_max = max_{s <= t} lr_s``, ``w_t = (t + 1)^r lr_max^weight_lr_power``,
  ``c_t = w_t / sum_{s <= t} w_s``::

      y_{t+1} = (1 - c_t) y_t + c_t z_t + lr_t (b1 (1 - c_t) - 1) d_t
      z_{t+1} = z_t - lr_t d_t

  which is the authors' ``.train()``-mode step (``y`` stored in the parameters, ``x``
  implicit): the paper's ``x_{t+1} = (1 - c) x_t + c z_{t+1}``, ``y = (1 - b1) z + b1 x``.
  ``x = y + (1 - 1/b1)(z - y)`` is ``schedule_free_eval_params``. ``z_0 = y_0 = x_0``.
  The learning rate lives inside the transform (it enters the averaging weights), so the
  aliases do not chain ``scale_by_learning_rate``. ``optax.contrib.schedule_free`` keeps the
  same y and z and agrees without warmup; with warmup its base step uses ``schedule(t - 1)``
  while its averaging weights use ``schedule(t)`` (``schedulefree`` uses ``lr_t`` for both).

  Args:
    direction: the step direction as a transform (``add_weight_decay`` for SGD;
      ``scale_by_rms_bias_corrected`` then ``add_weight_decay`` for AdamW). It receives
      ``params = y``.
    learning_rate: a positive float, or a non-decreasing schedule (a decaying one raises).
    b1: interpolation ``b1`` in (0, 1) (``momentum`` / ``betas[0]`` in ``schedulefree``).
    warmup_steps: linear warmup length (integer >= 0; may be an array under
      ``inject_hyperparams``).
    r: polynomial weighting power (>= 0).
    weight_lr_power: power of ``lr_max`` in the weights (>= 0).

  Reference: Defazio, Yang, Mehta, Mishchenko, Khaled & Cutkosky, "The Road Less
  Scheduled", NeurIPS 2024; the authors' ``schedulefree`` package.
  """
  mc.check_learning_rate(learning_rate)
  _check_not_decaying(learning_rate)
  mc.check_range("b1", b1, 0.0, 1.0, low_open=True)
  mc.check_int("warmup_steps", warmup_steps, 0)
  mc.check_nonneg("r", r)
  mc.check_nonneg("weight_lr_power", weight_lr_power)
  scalar = lambda v: jnp.asarray(v, jnp.result_type(float))

  def init_fn(params):
    return ScheduleFreeState(
        count=mc.count0(), b1=scalar(b1),
        z=mc.leaf_map(lambda p: jnp.array(p, copy=True), params),
        weight_sum=scalar(0.0), lr_max=scalar(-1.0), base_state=direction.init(params))

  def update_fn(updates, state, params=None):
    if params is None:
      raise ValueError("schedule_free needs params (the training point y).")
    k = state.count
    kf = k.astype(state.weight_sum.dtype)
    lr = scalar(mc.learning_rate_at(learning_rate, k)).astype(kf.dtype)
    warmup = jnp.asarray(warmup_steps, kf.dtype)
    lr = lr * jnp.where(warmup > 0, jnp.minimum(1.0, (kf + 1) / jnp.maximum(warmup, 1)), 1.0)
    lr_max = jnp.maximum(lr, state.lr_max)
    weight = (kf + 1) ** r * lr_max ** weight_lr_power
    weight_sum = state.weight_sum + weight
    ckp1 = jnp.where(weight_sum > 0, weight / jnp.where(weight_sum > 0, weight_sum, 1), 0.0)
    d, base_state = direction.update(updates, state.base_state, params)

    def leaf(d, y, z):
      dt = mc.compute_dtype(y)
      d, y32, z32 = d.astype(dt), y.astype(dt), z.astype(dt)
      c, step = ckp1.astype(dt), lr.astype(dt)
      y_new = y32 + c * (z32 - y32) + step * (b1 * (1 - c) - 1) * d
      z_new = z32 - step * d
      return (y_new - y32).astype(y.dtype), z_new.astype(z.dtype)

    out = mc.leaf_map(leaf, d, params, state.z)
    u, z = mc.unzip(out, d, 2)
    return u, ScheduleFreeState(count=optax.safe_int32_increment(k), b1=state.b1, z=z,
                                weight_sum=weight_sum, lr_max=lr_max, base_state=base_state)

  return optax.GradientTransformation(init_fn, update_fn)


class ScaleByRmsBiasCorrectedState(NamedTuple):
  """Step count and the second moment ``v`` (param dtype)."""
  count: jax.Array
  nu: Any


def scale_by_rms_bias_corrected(b2: ScalarLike = 0.999,
                                eps: ScalarLike = 1e-8) -> optax.GradientTransformation:
  r"""Adam's denominator alone: update ``g_t / (sqrt(v_t / (1 - b2^t)) + eps)``.

  ``v_t = b2 v_{t-1} + (1 - b2) g_t^2``; eps outside the root (``schedulefree``'s
  ``AdamWScheduleFree``). The step direction of schedule-free AdamW.
  """
  mc.check_beta("b2", b2)
  mc.check_nonneg("eps", eps)

  def init_fn(params):
    return ScaleByRmsBiasCorrectedState(count=mc.count0(), nu=mc.zeros(params))

  def update_fn(updates, state, params=None):
    del params
    count = optax.safe_int32_increment(state.count)

    def leaf(g, v):
      g32 = g.astype(mc.compute_dtype(g))
      v = mc.ema(b2, v, g32 * g32)
      u = g32 / (jnp.sqrt(v / mc.bias_correction(b2, count, g32.dtype)) + eps)
      return u.astype(g.dtype), v.astype(g.dtype)

    out = mc.leaf_map(leaf, updates, state.nu)
    u, v = mc.unzip(out, updates, 2)
    return u, ScaleByRmsBiasCorrectedState(count=count, nu=v)

  return optax.GradientTransformation(init_fn, update_fn)


def schedule_free_sgd(learning_rate: ScalarOrSchedule,
                      b1: ScalarLike = 0.9,
                      weight_decay: ScalarLike = 0.0,
                      warmup_steps: int = 0,
                      r: ScalarLike = 0.0,
                      weight_lr_power: ScalarLike = 2.0,
                      mask: Optional[Any] = None) -> optax.GradientTransformation:
  r"""Schedule-free SGD: ``schedule_free`` with ``d_t = g_t + lambda y_t``.

  As ``schedulefree.SGDScheduleFree(lr, momentum=b1, weight_decay, warmup_steps, r,
  weight_lr_power)`` (matched in float64 at y and at x, rtol 1e-8): the weight decay is an
  L2 gradient evaluated at y. ``schedulefree``'s default is ``lr=1.0``; there is no default
  here. See ``schedule_free`` for the update and the evaluation point.

  Reference: Defazio et al., "The Road Less Scheduled", NeurIPS 2024.
  """
  return schedule_free(mc.add_weight_decay(weight_decay, mask), learning_rate, b1,
                       warmup_steps, r, weight_lr_power)


def schedule_free_adamw(learning_rate: ScalarOrSchedule,
                        b1: ScalarLike = 0.9,
                        b2: ScalarLike = 0.999,
                        eps: ScalarLike = 1e-8,
                        weight_decay: ScalarLike = 0.0,
                        warmup_steps: int = 0,
                        r: ScalarLike = 0.0,
                        weight_lr_power: ScalarLike = 2.0,
                        mask: Optional[Any] = None) -> optax.GradientTransformation:
  r"""Schedule-free AdamW: ``d_t = g_t / (sqrt(v_t / (1 - b2^t)) + eps) + lambda y_t``.

  As ``schedulefree.AdamWScheduleFree(lr, betas=(b1, b2), eps, weight_decay,
  warmup_steps, r, weight_lr_power)`` (matched in float64 at y and at x, rtol 1e-8): no
  first moment (the averaging is the momentum), the decay is added to the normalized
  gradient at y. See ``schedule_free``.

  Reference: Defazio et al., "The Road Less Scheduled", NeurIPS 2024.
  """
  direction = optax.chain(scale_by_rms_bias_corrected(b2, eps),
                          mc.add_weight_decay(weight_decay, mask))
  return schedule_free(direction, learning_rate, b1, warmup_steps, r, weight_lr_power)


def _find_schedule_free_state(tree: Any) -> Optional[ScheduleFreeState]:
  """The first ``ScheduleFreeState`` in an optimizer state (chains, masks, injection)."""
  found = []

  def visit(node):
    if isinstance(node, ScheduleFreeState):
      found.append(node)
      return
    if isinstance(node, (tuple, list)):
      for child in node:
        visit(child)
    elif isinstance(node, dict):
      for child in node.values():
        visit(child)
    elif hasattr(node, "inner_state"):
      visit(node.inner_state)

  visit(tree)
  return found[0] if found else None


def is_schedule_free(opt_state: Any) -> bool:
  """Whether an optimizer state holds a schedule-free state (chains, masks, injection)."""
  return _find_schedule_free_state(opt_state) is not None


def schedule_free_eval_params(params: Any, opt_state: Any) -> Any:
  r"""The averaged point ``x = y + (1 - 1/b1)(z - y)`` to evaluate (``params`` are y).

  ``opt_state`` is the state of ``schedule_free_sgd``/``schedule_free_adamw`` (alone, in a
  chain, masked or under ``inject_hyperparams``). This is ``schedulefree``'s
  ``optimizer.eval()``. ValueError if the state holds no schedule-free state.
  """
  state = _find_schedule_free_state(opt_state)
  if state is None:
    raise ValueError("opt_state holds no ScheduleFreeState (not a schedule-free optimizer).")

  def leaf(y, z):
    dt = mc.compute_dtype(y)
    y32 = y.astype(dt)
    return (y32 + (1 - 1 / state.b1.astype(dt)) * (z.astype(dt) - y32)).astype(y.dtype)

  return mc.leaf_map(leaf, params, state.z)


def recompute_batch_stats(stats_fn: Callable[[Any, Any, Any], Any],
                          params: Any,
                          batch_stats: Any,
                          batches: Any) -> Any:
  r"""Running statistics recomputed at ``params``: the equal-weight mean of per-batch stats.

  ``stats_fn(params, batch_stats, batch) -> new_batch_stats`` is one training-mode forward
  pass with the ``batch_stats`` collection mutable, e.g.::

      lambda p, s, b: model.apply({"params": p, "batch_stats": s}, b["x"], train=True,
                                  mutable=["batch_stats"])[1]["batch_stats"]

  Every leaf must be updated as an EMA ``new = m * old + (1 - m) * s(batch)`` with
  ``0 <= m < 1`` (flax's and ``fnn.BatchNorm``'s rule). Two passes per batch, at ``old =
  0`` and ``old = 1``, give ``m = new_1 - new_0`` and ``s = new_0 / (1 - m)`` without
  knowing ``m``; the result is the mean of ``s`` over the batches (the leading axis of
  every leaf of ``batches``), which is what ``torch.optim.swa_utils.update_bn`` computes
  (PyTorch's cumulative ``momentum=None`` average; for per-batch variances the mean of the
  batch variances, as there). Use it at ``schedule_free_eval_params(...)`` before
  evaluating a schedule-free model with BatchNorm (and likewise for Lookahead's or SWA's
  averaged weights). Pure: no state is touched; jit it with ``stats_fn`` static.

  Args:
    stats_fn: ``(params, batch_stats, batch) -> batch_stats`` as above.
    params: the point to compute statistics at (e.g. x).
    batch_stats: a pytree with the structure of the statistics (values are ignored).
    batches: a pytree of arrays stacked along a leading batch-index axis (>= 1 batch).

  Returns:
    ``batch_stats`` with every leaf replaced by the mean per-batch statistic.
  """
  sizes = {x.shape[0] for x in jax.tree.leaves(batches)}
  if len(sizes) != 1 or 0 in sizes:
    raise ValueError(f"batches must be arrays stacked on one leading axis of size >= 1, "
                     f"got leading sizes {sorted(sizes)}.")
  num = sizes.pop()
  at = lambda value: jax.tree.map(lambda s: jnp.full_like(s, value), batch_stats)

  def per_batch(batch):
    new0 = stats_fn(params, at(0.0), batch)
    new1 = stats_fn(params, at(1.0), batch)
    return jax.tree.map(lambda a, b: a / (1 - (b - a)), new0, new1)

  def body(total, batch):
    return jax.tree.map(jnp.add, total, per_batch(batch)), None

  total, _ = jax.lax.scan(body, at(0.0), batches)
  return jax.tree.map(lambda t: t / num, total)
