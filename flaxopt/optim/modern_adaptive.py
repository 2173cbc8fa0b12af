"""Post-2018 first-order optimizers: AdamW, RAdam, Lion, LAMB, LARS, ADOPT, AdEMAMix.

Each is a ``scale_by_*`` primitive (the math; a NamedTuple state) plus an alias
``optax.chain(scale_by_x(...), [add_weight_decay(...)], scale_by_learning_rate(lr))``.
``learning_rate`` is a positive float or an optax schedule. Every trajectory is matched in
float64 against its reference implementation (``tests/optim/test_modern_a.py``); where the
reference, the paper and optax disagree (weight-decay placement, bias correction, epsilon
placement), the docstring says which one we follow. Conventions of
``flaxopt.optim.modern_common`` (dtype policy, None leaves, validation) apply.

>>> import jax, jax.numpy as jnp, optax
>>> from flaxopt import optim
>>> tx = optim.adamw(learning_rate=1e-3, weight_decay=1e-2)
>>> params = {"w": jnp.ones((2, 3)), "b": jnp.zeros(3)}
>>> state = tx.init(params)
>>> updates, state = tx.update(jax.tree.map(jnp.ones_like, params), state, params)
"""

from __future__ import annotations

from typing import Any, NamedTuple, Optional

import jax
import jax.numpy as jnp
import optax

from flaxopt.optim import modern_common as mc
from flaxopt.optim import transform

__all__ = [
    "ScaleByRadamState",
    "ScaleByLionState",
    "ScaleByLambState",
    "ScaleByLarsState",
    "ScaleByAdoptState",
    "ScaleByAdemamixState",
    "scale_by_radam",
    "scale_by_lion",
    "scale_by_lamb",
    "scale_by_lars",
    "scale_by_adopt",
    "scale_by_ademamix",
    "adamw",
    "radam",
    "lion",
    "lamb",
    "lars",
    "adopt",
    "ademamix",
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


# ----------------------------------------------------------------------------
# LAMB (You et al. 2020).
# ----------------------------------------------------------------------------


class ScaleByLambState(NamedTuple):
  """Step count, first moment ``mu``, second moment ``nu`` (param dtype)."""
  count: jax.Array
  mu: Any
  nu: Any


def _norm(x: jax.Array) -> jax.Array:
  return jnp.sqrt(jnp.sum(jnp.square(x)))


def scale_by_lamb(b1: ScalarLike = 0.9,
                  b2: ScalarLike = 0.999,
                  eps: ScalarLike = 1e-6,
                  weight_decay: ScalarLike = 0.0,
                  max_weight_norm: Optional[ScalarLike] = 10.0,
                  step_bias_correction: bool = True) -> optax.GradientTransformation:
  r"""LAMB: a layer-wise trust ratio on the Adam direction with weight decay inside it.

  Per leaf ``x``: ``r_t = m_t / (sqrt(v_t) + eps) + lambda x_t`` (moments without bias
  correction), ``phi = min(||x_t||, max_weight_norm)``, trust ratio
  ``q = phi / (||r_t|| + eps)`` (``q = 1`` where ``phi = 0`` or ``||r_t|| = 0``), update
  ``q r_t / (1 - b1^t)``.

  This is ``pytorch_optimizer.Lamb(weight_decouple=False)`` (matched to rtol 1e-8): its
  default ``adam_debias=False`` divides the *step* by ``1 - b1^t`` outside the trust
  ratio, so the first-moment correction does not cancel (``step_bias_correction=False``
  drops it); its default ``weight_decouple=True`` instead shrinks ``x`` by ``1 - lr
  lambda`` before the norms, which needs the learning rate inside the primitive and is not
  offered (identical when ``weight_decay = 0``, its default). The paper's Algorithm 2 bias-
  corrects both moments and clips with a generic ``phi``. ``optax.lamb`` bias-corrects both
  moments, does not clip ``||x||`` and has no eps in the trust ratio.

  Args:
    b1, b2: moment decays in [0, 1).
    eps: added to ``sqrt(v)`` and to ``||r||`` (>= 0).
    weight_decay: ``lambda`` (>= 0), inside the trust ratio.
    max_weight_norm: clip of ``||x||`` (> 0), None for no clip.
    step_bias_correction: divide the update by ``1 - b1^t``.

  Reference: You et al., "Large Batch Optimization for Deep Learning: Training BERT in 76
  minutes", ICLR 2020, Algorithm 2.
  """
  mc.check_beta("b1", b1)
  mc.check_beta("b2", b2)
  mc.check_nonneg("eps", eps)
  mc.check_nonneg("weight_decay", weight_decay)
  if max_weight_norm is not None:
    mc.check_positive("max_weight_norm", max_weight_norm)

  def init_fn(params):
    return ScaleByLambState(count=mc.count0(), mu=mc.zeros(params), nu=mc.zeros(params))

  def update_fn(updates, state, params=None):
    if params is None:
      raise ValueError("scale_by_lamb needs params (for the trust ratio).")
    count = optax.safe_int32_increment(state.count)

    def leaf(g, m, v, x):
      dt = mc.compute_dtype(g)
      g32, x32 = g.astype(dt), x.astype(dt)
      m = mc.ema(b1, m, g32)
      v = mc.ema(b2, v, g32 * g32)
      r = m / (jnp.sqrt(v) + eps) + weight_decay * x32
      phi = _norm(x32)
      if max_weight_norm is not None:
        phi = jnp.minimum(phi, max_weight_norm)
      r_norm = _norm(r)
      ok = (phi != 0) & (r_norm != 0)
      trust = jnp.where(ok, phi / jnp.where(ok, r_norm + eps, 1), 1)
      u = trust * r
      if step_bias_correction:
        u = u / mc.bias_correction(b1, count, dt)
      return u.astype(g.dtype), m.astype(g.dtype), v.astype(g.dtype)

    out = mc.leaf_map(leaf, updates, state.mu, state.nu, params)
    u, m, v = mc.unzip(out, updates, 3)
    return u, ScaleByLambState(count=count, mu=m, nu=v)

  return optax.GradientTransformation(init_fn, update_fn)


def lamb(learning_rate: ScalarOrSchedule,
         b1: ScalarLike = 0.9,
         b2: ScalarLike = 0.999,
         eps: ScalarLike = 1e-6,
         weight_decay: ScalarLike = 0.0,
         max_weight_norm: Optional[ScalarLike] = 10.0,
         step_bias_correction: bool = True) -> optax.GradientTransformation:
  r"""LAMB: ``x_{t+1} = x_t - lr * scale_by_lamb(g_t; x_t)``.

  Defaults are ``pytorch_optimizer.Lamb``'s (eps 1e-6, ``||x||`` clipped at 10). See
  ``scale_by_lamb`` for the variant. Reference: You et al., ICLR 2020.
  """
  return _with_learning_rate(learning_rate, scale_by_lamb(
      b1, b2, eps, weight_decay, max_weight_norm, step_bias_correction))


# ----------------------------------------------------------------------------
# LARS (You, Gitman & Ginsburg 2017).
# ----------------------------------------------------------------------------


class ScaleByLarsState(NamedTuple):
  """Momentum buffer (param dtype)."""
  momentum_buffer: Any


def scale_by_lars(momentum: ScalarLike = 0.9,
                  weight_decay: ScalarLike = 0.0,
                  trust_coefficient: ScalarLike = 1e-3,
                  dampening: ScalarLike = 0.0,
                  nesterov: bool = False) -> optax.GradientTransformation:
  r"""LARS: ``b_t = mu b_{t-1} + (1 - dampening) q (g_t + lambda x_t)``, update ``b_t``.

  For leaves with ``ndim >= 2`` (kernels) the local rate is
  ``q = eta ||x|| / (||g|| + lambda ||x||)`` (``q = 1`` where ``||x|| = 0`` or the
  denominator is 0); leaves with ``ndim < 2`` (biases, norm scales) get plain momentum SGD
  with *no* weight decay and ``q = 1``. Nesterov: update ``q (g + lambda x) + mu b_t``.
  This is ``pytorch_optimizer.LARS`` (matched to rtol 1e-8) and the paper's Algorithm 1
  (momentum on the locally scaled step, before the global rate). ``optax.lars`` computes
  ``q = eta ||x|| / ||g + lambda x||``, adapts and decays every leaf unless masked, and
  applies momentum after the learning rate.

  Args:
    momentum: ``mu`` in [0, 1) (0 for no buffer effect).
    weight_decay: ``lambda`` (>= 0), on ``ndim >= 2`` leaves only.
    trust_coefficient: ``eta`` (>= 0).
    dampening: in [0, 1].
    nesterov: Nesterov momentum.

  Reference: You, Gitman & Ginsburg, "Large Batch Training of Convolutional Networks",
  2017, Algorithm 1.
  """
  mc.check_beta("momentum", momentum)
  mc.check_nonneg("weight_decay", weight_decay)
  mc.check_nonneg("trust_coefficient", trust_coefficient)
  mc.check_range("dampening", dampening, 0.0, 1.0, high_open=False)

  def init_fn(params):
    return ScaleByLarsState(momentum_buffer=mc.zeros(params))

  def update_fn(updates, state, params=None):
    if params is None:
      raise ValueError("scale_by_lars needs params (for the trust ratio).")

    def leaf(g, b, x):
      dt = mc.compute_dtype(g)
      g32, x32 = g.astype(dt), x.astype(dt)
      if x.ndim >= 2:
        x_norm, g_norm = _norm(x32), _norm(g32)
        denom = g_norm + weight_decay * x_norm
        ok = (x_norm > 0) & (denom > 0)
        q = jnp.where(ok, trust_coefficient * x_norm / jnp.where(ok, denom, 1), 1)
        g32 = (g32 + weight_decay * x32) * q
      b = momentum * b.astype(dt) + (1 - dampening) * g32
      u = g32 + momentum * b if nesterov else b
      return u.astype(g.dtype), b.astype(g.dtype)

    out = mc.leaf_map(leaf, updates, state.momentum_buffer, params)
    u, b = mc.unzip(out, updates, 2)
    return u, ScaleByLarsState(momentum_buffer=b)

  return optax.GradientTransformation(init_fn, update_fn)


def lars(learning_rate: ScalarOrSchedule,
         momentum: ScalarLike = 0.9,
         weight_decay: ScalarLike = 0.0,
         trust_coefficient: ScalarLike = 1e-3,
         dampening: ScalarLike = 0.0,
         nesterov: bool = False) -> optax.GradientTransformation:
  r"""LARS: ``x_{t+1} = x_t - lr * scale_by_lars(g_t; x_t)``.

  Defaults are ``pytorch_optimizer.LARS``'s. With ``trust_coefficient=1e-3`` the global
  learning rate is large (the paper uses 2-20 for ImageNet). See ``scale_by_lars``.
  Reference: You, Gitman & Ginsburg 2017.
  """
  return _with_learning_rate(learning_rate, scale_by_lars(
      momentum, weight_decay, trust_coefficient, dampening, nesterov))


# ----------------------------------------------------------------------------
# ADOPT (Taniguchi et al. 2024).
# ----------------------------------------------------------------------------


class ScaleByAdoptState(NamedTuple):
  """Step count, first moment ``mu`` (of normalized gradients), second moment ``nu``."""
  count: jax.Array
  mu: Any
  nu: Any


def scale_by_adopt(b1: ScalarLike = 0.9,
                   b2: ScalarLike = 0.9999,
                   eps: ScalarLike = 1e-6,
                   clip_exponent: Optional[ScalarLike] = 0.25) -> optax.GradientTransformation:
  r"""ADOPT: normalize by the *previous* second moment, then take momentum.

  Step 1 only sets ``v_1 = g_1^2`` (update 0). For ``t >= 2``:
  ``n_t = clip(g_t / max(sqrt(v_{t-1}), eps), t^{clip_exponent})``,
  ``m_t = m_{t-1} + (1 - b1)(n_t - m_{t-1})``, update ``m_t``, then
  ``v_t = b2 v_{t-1} + (1 - b2) g_t^2``. ``t`` counts from 1 (the first, skipped step),
  as ``pytorch_optimizer.ADOPT`` (matched to rtol 1e-8), whose eps is a floor on the root
  (``clamp_min``), not an addend. ``clip_exponent=None`` disables the clipping (the paper's
  Algorithm 1; the clipped form is its Algorithm 2 / the authors' code). ``optax.contrib.adopt``
  uses ``max(sqrt(v), eps)`` too but clips with ``count^{1/4}`` for a count from 0.

  Args:
    b1, b2: moment decays in [0, 1).
    eps: floor on ``sqrt(v)`` (>= 0).
    clip_exponent: the clip value is ``t^clip_exponent`` (>= 0), or None.

  Reference: Taniguchi et al., "ADOPT: Modified Adam Can Converge with Any beta_2 with the
  Optimal Rate", NeurIPS 2024.
  """
  mc.check_beta("b1", b1)
  mc.check_beta("b2", b2)
  mc.check_nonneg("eps", eps)
  if clip_exponent is not None:
    mc.check_nonneg("clip_exponent", clip_exponent)

  def init_fn(params):
    return ScaleByAdoptState(count=mc.count0(), mu=mc.zeros(params), nu=mc.zeros(params))

  def update_fn(updates, state, params=None):
    del params
    count = optax.safe_int32_increment(state.count)
    first = count == 1

    def leaf(g, m, v):
      dt = mc.compute_dtype(g)
      g32, m32, v32 = g.astype(dt), m.astype(dt), v.astype(dt)
      n = g32 / jnp.maximum(jnp.sqrt(v32), eps)
      if clip_exponent is not None:
        c = count.astype(dt) ** clip_exponent
        n = jnp.clip(n, -c, c)
      m_new = m32 + (1 - b1) * (n - m32)
      v_new = b2 * v32 + (1 - b2) * g32 * g32
      m_new = jnp.where(first, m32, m_new)
      v_new = jnp.where(first, v32 + g32 * g32, v_new)
      u = jnp.where(first, jnp.zeros_like(m_new), m_new)
      return u.astype(g.dtype), m_new.astype(g.dtype), v_new.astype(g.dtype)

    out = mc.leaf_map(leaf, updates, state.mu, state.nu)
    u, m, v = mc.unzip(out, updates, 3)
    return u, ScaleByAdoptState(count=count, mu=m, nu=v)

  return optax.GradientTransformation(init_fn, update_fn)


def adopt(learning_rate: ScalarOrSchedule,
          b1: ScalarLike = 0.9,
          b2: ScalarLike = 0.9999,
          eps: ScalarLike = 1e-6,
          clip_exponent: Optional[ScalarLike] = 0.25,
          weight_decay: ScalarLike = 0.0,
          decoupled_weight_decay: bool = False,
          mask: Optional[Any] = None) -> optax.GradientTransformation:
  r"""ADOPT: ``x_{t+1} = x_t - lr * scale_by_adopt(g_t)``.

  Weight decay as ``pytorch_optimizer.ADOPT``: by default L2 (``g + lambda x`` before the
  moments); ``decoupled_weight_decay=True`` shrinks ``x`` by ``1 - lr lambda`` every step
  (the first included). Defaults are ``pytorch_optimizer``'s. See ``scale_by_adopt``.
  Reference: Taniguchi et al., NeurIPS 2024.
  """
  decay = _decay(weight_decay, mask)
  primitive = scale_by_adopt(b1, b2, eps, clip_exponent)
  if decoupled_weight_decay:
    return _with_learning_rate(learning_rate, primitive, decay)
  return _with_learning_rate(learning_rate, decay, primitive)


# ----------------------------------------------------------------------------
# AdEMAMix (Pagliardini, Ablin & Grangier 2024).
# ----------------------------------------------------------------------------


class ScaleByAdemamixState(NamedTuple):
  """Step count, fast EMA ``m1``, slow EMA ``m2``, second moment ``nu`` (param dtype)."""
  count: jax.Array
  mu: Any
  mu_slow: Any
  nu: Any


def _ademamix_schedules(count: jax.Array, dtype, b1, b3, alpha, warmup):
  """``(alpha_t, b3_t)``: linear alpha warmup and the paper's b3 schedule (Eq. 3, 4)."""
  if warmup is None:
    return jnp.asarray(alpha, dtype), jnp.asarray(b3, dtype)
  t = count.astype(dtype)
  frac = t / warmup
  alpha_t = jnp.minimum(t * alpha / warmup, alpha)
  log_b1, log_b3 = jnp.log(jnp.asarray(b1, dtype)), jnp.log(jnp.asarray(b3, dtype))
  b3_t = jnp.minimum(jnp.exp(log_b1 * log_b3 / ((1 - frac) * log_b3 + frac * log_b1)), b3)
  return alpha_t, b3_t


def scale_by_ademamix(b1: ScalarLike = 0.9,
                      b2: ScalarLike = 0.999,
                      b3: ScalarLike = 0.9999,
                      alpha: ScalarLike = 5.0,
                      warmup_steps: Optional[int] = None,
                      eps: ScalarLike = 1e-8) -> optax.GradientTransformation:
  r"""AdEMAMix: ``(m1_hat + alpha_t m2) / (sqrt(v_t) / sqrt(1 - b2^t) + eps)``.

  ``m1`` (``b1``) and ``v`` (``b2``) are Adam's, bias-corrected; the slow EMA
  ``m2 = b3_t m2 + (1 - b3_t) g`` is not. With ``warmup_steps = T`` (the paper's
  ``T_alpha = T_beta3``), ``alpha_t = min(t alpha / T, alpha)`` and
  ``b3_t = min(exp(ln b1 ln b3 / ((1 - t/T) ln b3 + (t/T) ln b1)), b3)``; without, both are
  constant. Same as ``pytorch_optimizer.AdEMAMix`` (matched to rtol 1e-8) and
  ``optax.contrib.ademamix`` (which takes the schedules as optax schedules).

  Args:
    b1, b2, b3: decays in [0, 1).
    alpha: slow-EMA weight (>= 0).
    warmup_steps: ``T`` for the alpha and b3 schedules (int >= 1), or None.
    eps: added to the bias-corrected root (>= 0).

  Reference: Pagliardini, Ablin & Grangier, "The AdEMAMix Optimizer: Better, Faster,
  Older", 2024, Algorithm 1.
  """
  mc.check_beta("b1", b1)
  mc.check_beta("b2", b2)
  mc.check_beta("b3", b3)
  mc.check_nonneg("alpha", alpha)
  mc.check_nonneg("eps", eps)
  if warmup_steps is not None:
    mc.check_positive_int("warmup_steps", warmup_steps)
    if mc.concrete(b1) == 0.0:
      raise ValueError("b1 must be > 0 when warmup_steps is set (the b3 schedule takes "
                       "log b1), got 0.0.")

  def init_fn(params):
    return ScaleByAdemamixState(count=mc.count0(), mu=mc.zeros(params),
                                mu_slow=mc.zeros(params), nu=mc.zeros(params))

  def update_fn(updates, state, params=None):
    del params
    count = optax.safe_int32_increment(state.count)

    def leaf(g, m, m2, v):
      dt = mc.compute_dtype(g)
      g32 = g.astype(dt)
      alpha_t, b3_t = _ademamix_schedules(count, dt, b1, b3, alpha, warmup_steps)
      m = mc.ema(b1, m, g32)
      v = mc.ema(b2, v, g32 * g32)
      m2 = mc.ema(b3_t, m2, g32)
      denom = jnp.sqrt(v) / jnp.sqrt(mc.bias_correction(b2, count, dt)) + eps
      u = (m / mc.bias_correction(b1, count, dt) + alpha_t * m2) / denom
      return u.astype(g.dtype), m.astype(g.dtype), m2.astype(g.dtype), v.astype(g.dtype)

    out = mc.leaf_map(leaf, updates, state.mu, state.mu_slow, state.nu)
    u, m, m2, v = mc.unzip(out, updates, 4)
    return u, ScaleByAdemamixState(count=count, mu=m, mu_slow=m2, nu=v)

  return optax.GradientTransformation(init_fn, update_fn)


def ademamix(learning_rate: ScalarOrSchedule,
             b1: ScalarLike = 0.9,
             b2: ScalarLike = 0.999,
             b3: ScalarLike = 0.9999,
             alpha: ScalarLike = 5.0,
             warmup_steps: Optional[int] = None,
             eps: ScalarLike = 1e-8,
             weight_decay: ScalarLike = 0.0,
             decoupled_weight_decay: bool = True,
             mask: Optional[Any] = None) -> optax.GradientTransformation:
  r"""AdEMAMix: ``x_{t+1} = x_t - lr (scale_by_ademamix(g_t) + lambda x_t)``.

  Decoupled weight decay scaled by the learning rate (the paper's Algorithm 1 and
  ``optax.contrib.ademamix``) by default; ``decoupled_weight_decay=False`` is an L2 gradient
  before the moments, ``pytorch_optimizer.AdEMAMix``'s default (``weight_decouple=False``).
  With ``weight_decay=0`` (the default of both) they agree. See ``scale_by_ademamix``.
  Reference: Pagliardini, Ablin & Grangier 2024.
  """
  decay = _decay(weight_decay, mask)
  primitive = scale_by_ademamix(b1, b2, b3, alpha, warmup_steps, eps)
  if decoupled_weight_decay:
    return _with_learning_rate(learning_rate, primitive, decay)
  return _with_learning_rate(learning_rate, decay, primitive)
