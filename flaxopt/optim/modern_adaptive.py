"""Post-2018 first-order optimizers: AdamW, RAdam, Lion, LAMB, LARS, ADOPT, AdEMAMix.

Each is a ``scale_by_*`` primitive (the math; a NamedTuple state) plus an alias
``optax.chain(scale_by_x(...), [add_weight_decay(...)], scale_by_learning_rate(lr))``.
``learning_rate`` is a positive float or an optax schedule. Every trajectory is matched in
float64 against its reference implementation (``tests/optim/test_modern_a.py``); where the
reference, the paper and optax disagree (weight-decay placement, bias correction, epsilon
placement), the docstring says which one we follow. Conventions of
``flaxopt.optim.modern_common`` (dtype policy, None leaves, validation) apply.

>>> import jax.numpy as jnp, optax
>>> from flaxopt import optim
>>> tx = optim.adamw(learning_rate=1e-3, weight_decay=1e-2)
>>> params = {"w": jnp.ones((2, 3)), "b": jnp.zeros(3)}
>>> state = tx.init(params)
>>> updates, state = tx.update(jax.tree.map(jnp.ones_like, params), state, params)
"""

from __future__ import annotations

from typing import Any, Callable, NamedTuple, Optional

import jax
import jax.numpy as jnp
import optax

from flaxopt.optim import modern_common as mc
from flaxopt.optim import transform

__all__ = [
    "ScaleByRadamState",
    "ScaleByLionState",
    "scale_by_radam",
    "scale_by_lion",
    "adamw",
    "radam",
    "lion",
]

ScalarLike = mc.ScalarLike
ScalarOrSchedule = mc.ScalarOrSchedule


def _with_learning_rate(learning_rate: ScalarOrSchedule,
                        *transforms: Optional[optax.GradientTransformation]
                        ) -> optax.GradientTransformation:
  """``chain(*transforms, scale_by_learning_rate(lr))`` (descent), None entries dropped."""
  mc.check_learning_rate(learning_rate)
  parts = [t for t in transforms if t is not None]
  return optax.chain(*parts, transform.scale_by_learning_rate(learning_rate))


def _decay(weight_decay: ScalarLike, mask: Any) -> optax.GradientTransformation:
  """``add_weight_decay`` (always present, so the state structure does not depend on it)."""
  return mc.add_weight_decay(weight_decay, mask)


# ----------------------------------------------------------------------------
# AdamW (Loshchilov & Hutter 2019).
# ----------------------------------------------------------------------------


def adamw(learning_rate: ScalarOrSchedule,
          b1: ScalarLike = 0.9,
          b2: ScalarLike = 0.999,
          eps: ScalarLike = 1e-8,
          weight_decay: ScalarLike = 1e-2,
          mask: Optional[Any] = None) -> optax.GradientTransformation:
  r"""AdamW: ``x_{t+1} = x_t - lr (m_hat / (sqrt(v_hat) + eps) + lambda x_t)``.

  ``chain(scale_by_adam(b1, b2, eps), add_weight_decay(weight_decay, mask),
  scale_by_learning_rate(lr))``: decoupled weight decay, scaled by the learning rate as in
  ``torch.optim.AdamW`` (``x *= 1 - lr lambda``, then the Adam step; matched to rtol 1e-8)
  and ``optax.adamw``. The paper's Algorithm 2 multiplies the decay by the schedule
  multiplier ``eta_t`` but not by ``alpha``; torch and optax (and we) multiply by the whole
  learning rate. Defaults are torch's (``weight_decay=1e-2``; optax's is ``1e-4``).

  Args:
    learning_rate: a positive float or an optax schedule.
    b1, b2: moment decays in [0, 1).
    eps: added to ``sqrt(v_hat)`` (>= 0; outside the root, as torch and optax).
    weight_decay: ``lambda`` (>= 0).
    mask: optional pytree of bools (or callable) selecting the leaves that decay.

  Reference: Loshchilov & Hutter, "Decoupled Weight Decay Regularization", ICLR 2019.
  """
  return _with_learning_rate(learning_rate, transform.scale_by_adam(b1, b2, eps),
                             _decay(weight_decay, mask))


# ----------------------------------------------------------------------------
# RAdam (Liu et al. 2020).
# ----------------------------------------------------------------------------


class ScaleByRadamState(NamedTuple):
  """Step count, first moment ``mu``, second moment ``nu`` (param dtype)."""
  count: jax.Array
  mu: Any
  nu: Any


def scale_by_radam(b1: ScalarLike = 0.9,
                   b2: ScalarLike = 0.999,
                   eps: ScalarLike = 1e-8,
                   threshold: ScalarLike = 5.0) -> optax.GradientTransformation:
  r"""Rectified Adam: ``r_t m_hat sqrt(1 - b2^t) / (sqrt(v_t) + eps)`` once ``rho_t > 5``.

  ``rho_inf = 2 / (1 - b2) - 1``, ``rho_t = rho_inf - 2 t b2^t / (1 - b2^t)``; while
  ``rho_t <= threshold`` the update is the bias-corrected momentum ``m_hat``, afterwards
  ``r_t = sqrt((rho_t - 4)(rho_t - 2) rho_inf / ((rho_inf - 4)(rho_inf - 2) rho_t))``.
  As ``torch.optim.RAdam`` (matched to rtol 1e-8), eps is added to ``sqrt(v_t)`` *before*
  bias correction, i.e. ``m_hat / (sqrt(v_hat) + eps / sqrt(1 - b2^t))``; ``optax.radam``
  adds eps to ``sqrt(v_hat)`` (the paper's Algorithm 2 has no eps). Threshold 5 is torch's
  and optax's (the paper's Algorithm 2 uses 4).

  Args:
    b1, b2: moment decays in [0, 1).
    eps: added to ``sqrt(v_t)`` (>= 0).
    threshold: ``rho_t`` above which the adaptive step is used (>= 4).

  Reference: Liu et al., "On the Variance of the Adaptive Learning Rate and Beyond",
  ICLR 2020, Algorithm 2.
  """
  mc.check_beta("b1", b1)
  mc.check_beta("b2", b2)
  mc.check_nonneg("eps", eps)
  mc.check_range("threshold", threshold, 4.0)

  def init_fn(params):
    return ScaleByRadamState(count=mc.count0(), mu=mc.zeros(params), nu=mc.zeros(params))

  def update_fn(updates, state, params=None):
    del params
    count = optax.safe_int32_increment(state.count)

    def leaf(g, m, v):
      dt = mc.compute_dtype(g)
      g32 = g.astype(dt)
      m = mc.ema(b1, m, g32)
      v = mc.ema(b2, v, g32 * g32)
      t = count.astype(dt)
      b2t = jnp.asarray(b2, dt) ** t
      bc2 = 1 - b2t
      m_hat = m / mc.bias_correction(b1, count, dt)
      rho_inf = 2 / (1 - jnp.asarray(b2, dt)) - 1
      rho = rho_inf - 2 * t * b2t / bc2
      rho_safe = jnp.maximum(rho, 4.0 + 1e-3)  # Keeps the unused branch finite.
      rect = jnp.sqrt((rho_safe - 4) * (rho_safe - 2) * rho_inf
                      / ((rho_inf - 4) * (rho_inf - 2) * rho_safe))
      adaptive = m_hat * rect * jnp.sqrt(bc2) / (jnp.sqrt(v) + eps)
      u = jnp.where(rho > threshold, adaptive, m_hat)
      return u.astype(g.dtype), m.astype(g.dtype), v.astype(g.dtype)

    out = mc.leaf_map(leaf, updates, state.mu, state.nu)
    u, m, v = mc.unzip(out, updates, 3)
    return u, ScaleByRadamState(count=count, mu=m, nu=v)

  return optax.GradientTransformation(init_fn, update_fn)


def radam(learning_rate: ScalarOrSchedule,
          b1: ScalarLike = 0.9,
          b2: ScalarLike = 0.999,
          eps: ScalarLike = 1e-8,
          weight_decay: ScalarLike = 0.0,
          decoupled_weight_decay: bool = False,
          mask: Optional[Any] = None) -> optax.GradientTransformation:
  r"""RAdam: ``x_{t+1} = x_t - lr * scale_by_radam(g_t)``.

  ``torch.optim.RAdam``'s weight decay: by default an L2 gradient ``g + lambda x`` *before*
  the moments; ``decoupled_weight_decay=True`` is AdamW-style ``x *= 1 - lr lambda``
  (added after ``scale_by_radam``, before the learning rate). See ``scale_by_radam``.

  Reference: Liu et al., "On the Variance of the Adaptive Learning Rate and Beyond",
  ICLR 2020.
  """
  decay = _decay(weight_decay, mask)
  primitive = scale_by_radam(b1, b2, eps)
  if decoupled_weight_decay:
    return _with_learning_rate(learning_rate, primitive, decay)
  return _with_learning_rate(learning_rate, decay, primitive)


# ----------------------------------------------------------------------------
# Lion (Chen et al. 2023).
# ----------------------------------------------------------------------------


class ScaleByLionState(NamedTuple):
  """Momentum ``m`` (param dtype)."""
  mu: Any


def scale_by_lion(b1: ScalarLike = 0.9, b2: ScalarLike = 0.99) -> optax.GradientTransformation:
  r"""Lion: update ``sign(b1 m_{t-1} + (1 - b1) g_t)``, then ``m_t = b2 m_{t-1} + (1 - b2) g_t``.

  ``sign(0) = 0``, as in ``lion-pytorch`` and ``optax.scale_by_lion``. The momentum is
  stored in the parameter dtype (optax's default ``mu_dtype`` is the same).

  Args:
    b1: interpolation weight of the update in [0, 1).
    b2: momentum decay in [0, 1).

  Reference: Chen et al., "Symbolic Discovery of Optimization Algorithms", NeurIPS 2023,
  Program 1.
  """
  mc.check_beta("b1", b1)
  mc.check_beta("b2", b2)

  def init_fn(params):
    return ScaleByLionState(mu=mc.zeros(params))

  def update_fn(updates, state, params=None):
    del params

    def leaf(g, m):
      g32 = g.astype(mc.compute_dtype(g))
      m32 = m.astype(g32.dtype)
      u = jnp.sign(b1 * m32 + (1 - b1) * g32)
      return u.astype(g.dtype), mc.ema(b2, m32, g32).astype(g.dtype)

    out = mc.leaf_map(leaf, updates, state.mu)
    u, m = mc.unzip(out, updates, 2)
    return u, ScaleByLionState(mu=m)

  return optax.GradientTransformation(init_fn, update_fn)


def lion(learning_rate: ScalarOrSchedule,
         b1: ScalarLike = 0.9,
         b2: ScalarLike = 0.99,
         weight_decay: ScalarLike = 0.0,
         mask: Optional[Any] = None) -> optax.GradientTransformation:
  r"""Lion: ``x_{t+1} = x_t - lr (sign(b1 m + (1 - b1) g) + lambda x_t)``.

  Decoupled decay scaled by the learning rate, as ``lion-pytorch``
  (``x *= 1 - lr lambda``; matched to rtol 1e-8) and ``optax.lion``. Defaults are
  ``lion-pytorch``'s (``weight_decay=0``; optax's is ``1e-3``). The paper recommends a
  learning rate 3-10x smaller and a decay 3-10x larger than AdamW's.

  Reference: Chen et al., "Symbolic Discovery of Optimization Algorithms", NeurIPS 2023.
  """
  return _with_learning_rate(learning_rate, scale_by_lion(b1, b2), _decay(weight_decay, mask))
