"""Learning-rate-free Adam: Prodigy and D-Adaptation Adam, matched to the authors' code.

Both estimate ``D`` (the distance from the initial point to the solution) on the fly and
step with ``d * lr`` where ``lr`` is a unit-scale multiplier (1.0, or a schedule whose peak
is 1.0). ``D`` is a global scalar over all leaves, as in the authors' PyTorch optimizers
with one parameter group.

Reference implementations (matched step for step in float64,
``tests/optim/test_modern_b.py``): ``prodigyopt`` 1.1.2 (``Prodigy``) and
``dadaptation`` 3.2 (``DAdaptAdam``). Where optax's ``contrib`` versions differ, the
docstrings say so.
"""

from __future__ import annotations

import math
from typing import Any, NamedTuple, Optional

import jax
import jax.numpy as jnp
import optax

from flaxopt.optim import _hparams as hp
from flaxopt.optim import transform

__all__ = [
    "ScaleByProdigyState",
    "ScaleByDAdaptAdamState",
    "scale_by_prodigy",
    "scale_by_dadapt_adam",
    "prodigy",
    "dadapt_adam",
]


def _check_d_args(d0, growth_rate, eps, weight_decay) -> None:
  hp.check_positive("d0", d0)
  hp.check_range("growth_rate", growth_rate, 1.0, math.inf, high_open=False)
  hp.check_positive("eps", eps)
  hp.check_nonneg("weight_decay", weight_decay)


# ----------------------------------------------------------------------------
# Prodigy (Mishchenko & Defazio 2023).
# ----------------------------------------------------------------------------


class ScaleByProdigyState(NamedTuple):
  """Moments (in units of d), the D-estimate sum ``s``, the initial point, global scalars."""
  count: jax.Array        # steps taken (drives the learning-rate schedule)
  k: jax.Array            # steps that moved (drives bias correction, as prodigyopt's ``k``)
  exp_avg: Any
  exp_avg_sq: Any
  s: Any
  p0: Any
  d: jax.Array
  d_max: jax.Array
  d_numerator: jax.Array


def scale_by_prodigy(learning_rate: hp.ScalarOrSchedule = 1.0,
                     b1: Any = 0.9,
                     b2: Any = 0.999,
                     b3: Optional[Any] = None,
                     eps: Any = 1e-8,
                     weight_decay: Any = 0.0,
                     decouple: bool = True,
                     use_bias_correction: bool = False,
                     safeguard_warmup: bool = False,
                     d0: Any = 1e-6,
                     d_coef: Any = 1.0,
                     growth_rate: Any = math.inf) -> optax.GradientTransformation:
  r"""Prodigy: Adam scaled by an on-line estimate ``d`` of the distance to the solution.

  With ``g`` the gradient (plus ``wd * x`` when ``decouple=False``), ``bc`` the optional
  bias correction ``sqrt(1 - b2^{k+1}) / (1 - b1^{k+1})`` and ``dlr = d_k lr_t bc``::

      r_k   = b3 r_{k-1} + (d_k / d0) dlr <g, x_0 - x_k>
      s_k   = b3 s_{k-1} + (d_k / d0) dlr g            (d_k instead of dlr: safeguard_warmup)
      m_k   = b1 m_{k-1} + (1 - b1) d_k g,   v_k = b2 v_{k-1} + (1 - b2) d_k^2 g^2
      d_hat = d_coef r_k / ||s_k||_1
      d_{k+1} = min(max(d_max, d_hat), d_k growth)   (max(d_k, d_hat) first while d_k = d0)
      u     = d_k bc (m_k / (sqrt(v_k) + d_{k+1} eps) + wd x_k)     (wd term: decouple=True)

  The alias multiplies ``u`` by ``-lr_t``. ``learning_rate`` is needed here too because
  ``dlr`` weights the D estimate; pass the same value (or schedule) as to the alias.
  As prodigyopt, a step whose ``||s||_1`` is 0 (zero gradients, or ``lr_t = 0``) moves
  nothing and leaves ``d`` and ``k`` unchanged.

  Matches ``prodigyopt.Prodigy`` 1.1.2 (one parameter group, ``slice_p=1``). optax's
  ``contrib.prodigy`` differs: it always bias-corrects (prodigyopt's default is off), takes
  ``d = max(d, d_hat)`` every step (the same as prodigyopt only with ``growth_rate=inf``),
  has no ``d_coef``/``growth_rate``, no coupled decay and no zero-``||s||_1`` guard.

  Args:
    learning_rate: the multiplier ``lr_t`` (float or schedule) used inside the D estimate.
    b1, b2: Adam's moment decays in [0, 1).
    b3: decay of the D-estimate sums in [0, 1); None means ``sqrt(b2)``.
    eps: added to ``sqrt(v)`` after scaling by ``d`` (> 0).
    weight_decay: decay coefficient (>= 0).
    decouple: decoupled (AdamW-style, default) or coupled (added to the gradient) decay.
    use_bias_correction: Adam's bias correction folded into ``dlr`` (off, as prodigyopt).
    safeguard_warmup: drop ``lr_t`` from the ``s`` update (for warm-up schedules).
    d0: initial estimate of D (> 0).
    d_coef: multiplier of the estimate ``d_hat`` (> 0).
    growth_rate: bound on ``d_{k+1} / d_k`` (>= 1; inf by default).

  Reference: Mishchenko & Defazio, "Prodigy: An Expeditiously Adaptive Parameter-Free
  Learner", ICML 2024 (arXiv:2306.06101), Algorithm 4 and the authors' ``prodigyopt``.
  """
  hp.check_learning_rate(learning_rate, allow_zero=True)
  hp.check_beta("b1", b1)
  hp.check_beta("b2", b2)
  if b3 is not None:
    hp.check_beta("b3", b3)
  _check_d_args(d0, growth_rate, eps, weight_decay)
  hp.check_positive("d_coef", d_coef)

  def init_fn(params):
    dt = hp.scalar_dtype(params)
    scalar = lambda v: jnp.asarray(v, dt)
    return ScaleByProdigyState(
        count=hp.count0(), k=hp.count0(),
        exp_avg=hp.tree_map(jnp.zeros_like, params),
        exp_avg_sq=hp.tree_map(jnp.zeros_like, params),
        s=hp.tree_map(jnp.zeros_like, params),
        p0=hp.tree_map(jnp.array, params),
        d=scalar(d0), d_max=scalar(d0), d_numerator=scalar(0.0))

  def update_fn(updates, state, params=None):
    if params is None:
      raise ValueError("scale_by_prodigy needs params (it measures the distance from x_0).")
    dt = state.d.dtype
    beta3 = jnp.sqrt(jnp.asarray(b2, dt)) if b3 is None else jnp.asarray(b3, dt)
    lr = jnp.asarray(hp.lr_at(learning_rate, state.count), dt)
    d = state.d
    if use_bias_correction:
      kf = (state.k + 1).astype(dt)
      bc = jnp.sqrt(1 - jnp.asarray(b2, dt) ** kf) / (1 - jnp.asarray(b1, dt) ** kf)
    else:
      bc = jnp.ones([], dt)
    dlr = d * lr * bc
    active = lr > 0
    d_ratio = d / jnp.asarray(d0, dt)

    grads = hp.tree_map(lambda g: g.astype(hp.compute_dtype(g)), updates)
    if not decouple:
      grads = hp.tree_map(lambda g, x: g + weight_decay * x.astype(g.dtype), grads, params)

    delta_num = d_ratio * dlr * hp.tree_vdot(
        grads, hp.tree_map(lambda x0, x: (x0 - x).astype(dt), state.p0, params))
    s_weight = d_ratio * (d if safeguard_warmup else dlr)

    def moments(g, m, v, s):
      m_new = b1 * m.astype(g.dtype) + d * (1 - b1) * g
      v_new = b2 * v.astype(g.dtype) + d * d * (1 - b2) * g * g
      s_new = beta3 * s.astype(g.dtype) + s_weight * g
      keep = lambda new, old: jnp.where(active, new, old.astype(new.dtype)).astype(old.dtype)
      return keep(m_new, m), keep(v_new, v), keep(s_new, s)

    m, v, s = hp.unzip(hp.tree_map(moments, grads, state.exp_avg, state.exp_avg_sq, state.s),
                       grads, 3)
    d_denom = jnp.where(active, hp.tree_sum(hp.tree_map(
        lambda x: jnp.sum(jnp.abs(x.astype(dt))), s)), 0.0)
    skip = d_denom == 0
    d_numerator = state.d_numerator * beta3 + delta_num
    d_hat = d_coef * d_numerator / jnp.where(skip, 1.0, d_denom)
    d_new = jnp.where(d == jnp.asarray(d0, dt), jnp.maximum(d, d_hat), d)
    d_max = jnp.maximum(state.d_max, d_hat)
    d_new = jnp.minimum(d_max, d_new * growth_rate)

    def step(g, m, v, x):
      cd = g.dtype
      u = m.astype(cd) / (jnp.sqrt(v.astype(cd)) + d_new.astype(cd) * eps)
      if decouple:
        u = u + weight_decay * x.astype(cd)
      u = (d * bc).astype(cd) * u
      return jnp.where(skip, jnp.zeros_like(u), u).astype(g.dtype)

    out = hp.tree_map(step, updates, m, v, params)
    new_state = ScaleByProdigyState(
        count=hp.increment(state.count),
        k=jnp.where(skip, state.k, hp.increment(state.k)),
        exp_avg=m, exp_avg_sq=v, s=s, p0=state.p0,
        d=jnp.where(skip, d, d_new),
        d_max=jnp.where(skip, state.d_max, d_max),
        d_numerator=jnp.where(skip, state.d_numerator, d_numerator))
    return out, new_state

  return optax.GradientTransformation(init_fn, update_fn)


def prodigy(learning_rate: hp.ScalarOrSchedule = 1.0,
            b1: Any = 0.9,
            b2: Any = 0.999,
            b3: Optional[Any] = None,
            eps: Any = 1e-8,
            weight_decay: Any = 0.0,
            decouple: bool = True,
            use_bias_correction: bool = False,
            safeguard_warmup: bool = False,
            d0: Any = 1e-6,
            d_coef: Any = 1.0,
            growth_rate: Any = math.inf) -> optax.GradientTransformation:
  r"""Prodigy: ``x_{k+1} = x_k - lr_t d_k bc (m_k / (sqrt(v_k) + d_{k+1} eps) + wd x_k)``.

  ``chain(scale_by_prodigy(learning_rate, ...), scale_by_learning_rate(learning_rate))``.
  ``learning_rate`` is a multiplier of the estimated step (1.0, or a schedule peaking at
  1.0, e.g. cosine decay); same defaults as ``prodigyopt.Prodigy``. See
  ``scale_by_prodigy``. Reference: Mishchenko & Defazio 2023.

  >>> import jax.numpy as jnp, optax
  >>> from flaxopt import optim
  >>> tx = optim.prodigy(1.0)
  >>> params = {"w": jnp.ones((2, 2))}
  >>> updates, state = tx.update({"w": jnp.ones((2, 2))}, tx.init(params), params)
  """
  hp.check_learning_rate(learning_rate)
  return optax.chain(scale_by_prodigy(learning_rate, b1, b2, b3, eps, weight_decay, decouple,
                                      use_bias_correction, safeguard_warmup, d0, d_coef,
                                      growth_rate),
                     transform.scale_by_learning_rate(learning_rate))


# ----------------------------------------------------------------------------
# D-Adaptation Adam (Defazio & Mishchenko 2023).
# ----------------------------------------------------------------------------


class ScaleByDAdaptAdamState(NamedTuple):
  """Moments (``exp_avg`` already carries ``d lr``), the sum ``s``, global scalars."""
  count: jax.Array
  k: jax.Array
  exp_avg: Any
  exp_avg_sq: Any
  s: Any
  d: jax.Array
  numerator_weighted: jax.Array


def scale_by_dadapt_adam(learning_rate: hp.ScalarOrSchedule = 1.0,
                         b1: Any = 0.9,
                         b2: Any = 0.999,
                         eps: Any = 1e-8,
                         weight_decay: Any = 0.0,
                         decouple: bool = False,
                         use_bias_correction: bool = False,
                         d0: Any = 1e-6,
                         growth_rate: Any = math.inf) -> optax.GradientTransformation:
  r"""D-Adaptation Adam: Adam whose step ``d lr`` enters the first moment, ``d`` estimated.

  With ``g`` the gradient (plus ``wd x`` when ``decouple=False``, the default, as
  dadaptation), ``dlr = d_k lr_t bc`` and ``sb = sqrt(b2)``::

      r_k = sb r_{k-1} + (1 - sb) dlr <g, s_{k-1} / (sqrt(v_{k-1}) + eps)>
      m_k = b1 m_{k-1} + (1 - b1) dlr g,   v_k = b2 v_{k-1} + (1 - b2) g^2
      s_k = sb s_{k-1} + (1 - sb) dlr g
      d_{k+1} = max(d_k, min(r_k / ((1 - sb) ||s_k||_1), d_k growth))
      u   = m_k / (sqrt(v_k) + eps) + dlr wd x_k        (wd term: decouple=True)

  ``u`` is the whole step: the learning rate is already inside ``m``, so the alias ends
  with ``scale_by_learning_rate(1.0)`` (a sign flip) rather than a second ``lr`` factor,
  and a schedule changes ``lr_t`` inside the momentum (as dadaptation does). Steps with
  ``||s||_1 = 0`` move nothing and keep ``d``, ``k`` and ``r``, as dadaptation.

  Matches ``dadaptation.DAdaptAdam`` 3.2 (one parameter group, ``layer_scale=1``). optax's
  ``contrib.dadapt_adamw`` differs: it always bias-corrects ``dlr``, has only decoupled
  decay, no ``growth_rate``, and no zero-``||s||_1`` guard (it divides by zero there).

  Args:
    learning_rate: the multiplier ``lr_t`` (float or schedule; 1.0 recommended).
    b1, b2: moment decays in [0, 1).
    eps: added to ``sqrt(v)`` (> 0).
    weight_decay: decay coefficient (>= 0).
    decouple: decoupled decay (AdamW style) instead of the default coupled (L2) form.
    use_bias_correction: fold ``sqrt(1 - b2^{k+1}) / (1 - b1^{k+1})`` into ``dlr``.
    d0: initial D estimate (> 0).
    growth_rate: bound on ``d_{k+1} / d_k`` (>= 1).

  Reference: Defazio & Mishchenko, "Learning-Rate-Free Learning by D-Adaptation", ICML 2023,
  Algorithm 5 (Adam) and the authors' ``dadaptation`` package.
  """
  hp.check_learning_rate(learning_rate, allow_zero=True)
  hp.check_beta("b1", b1)
  hp.check_beta("b2", b2)
  _check_d_args(d0, growth_rate, eps, weight_decay)

  def init_fn(params):
    dt = hp.scalar_dtype(params)
    zeros = lambda: hp.tree_map(jnp.zeros_like, params)
    return ScaleByDAdaptAdamState(
        count=hp.count0(), k=hp.count0(), exp_avg=zeros(), exp_avg_sq=zeros(), s=zeros(),
        d=jnp.asarray(d0, dt), numerator_weighted=jnp.zeros([], dt))

  def update_fn(updates, state, params=None):
    if params is None and _concrete_nonzero(weight_decay):
      raise ValueError("scale_by_dadapt_adam with weight_decay needs params.")
    dt = state.d.dtype
    sb = jnp.sqrt(jnp.asarray(b2, dt))
    lr = jnp.asarray(hp.lr_at(learning_rate, state.count), dt)
    d = state.d
    if use_bias_correction:
      kf = (state.k + 1).astype(dt)
      bc = jnp.sqrt(1 - jnp.asarray(b2, dt) ** kf) / (1 - jnp.asarray(b1, dt) ** kf)
    else:
      bc = jnp.ones([], dt)
    dlr = d * lr * bc
    active = lr > 0

    grads = hp.tree_map(lambda g: g.astype(hp.compute_dtype(g)), updates)
    if not decouple and params is not None:
      grads = hp.tree_map(lambda g, x: g + weight_decay * x.astype(g.dtype), grads, params)

    numerator_acum = dlr * hp.tree_vdot(grads, hp.tree_map(
        lambda s, v, g: (s.astype(g.dtype) / (jnp.sqrt(v.astype(g.dtype)) + eps)),
        state.s, state.exp_avg_sq, grads)).astype(dt)
    numerator_acum = jnp.where(active, numerator_acum, 0.0)

    def moments(g, m, v, s):
      m_new = b1 * m.astype(g.dtype) + dlr.astype(g.dtype) * (1 - b1) * g
      v_new = b2 * v.astype(g.dtype) + (1 - b2) * g * g
      s_new = sb.astype(g.dtype) * s.astype(g.dtype) + dlr.astype(g.dtype) * (1 - sb) * g
      keep = lambda new, old: jnp.where(active, new, old.astype(new.dtype)).astype(old.dtype)
      return keep(m_new, m), keep(v_new, v), keep(s_new, s)

    m, v, s = hp.unzip(hp.tree_map(moments, grads, state.exp_avg, state.exp_avg_sq, state.s),
                       grads, 3)
    sk_l1 = jnp.where(active, hp.tree_sum(hp.tree_map(
        lambda x: jnp.sum(jnp.abs(x.astype(dt))), s)), 0.0)
    skip = sk_l1 == 0
    numerator_weighted = sb * state.numerator_weighted + (1 - sb) * numerator_acum
    d_hat = numerator_weighted / ((1 - sb) * jnp.where(skip, 1.0, sk_l1))
    d_new = jnp.maximum(d, jnp.minimum(d_hat, d * growth_rate))

    def step(g, m, v, x):
      cd = g.dtype
      u = m.astype(cd) / (jnp.sqrt(v.astype(cd)) + eps)
      if decouple:
        u = u + (dlr.astype(cd) * weight_decay) * x.astype(cd)
      return jnp.where(skip, jnp.zeros_like(u), u).astype(g.dtype)

    xs = params if params is not None else updates
    out = hp.tree_map(step, updates, m, v, xs)
    new_state = ScaleByDAdaptAdamState(
        count=hp.increment(state.count),
        k=jnp.where(skip, state.k, hp.increment(state.k)),
        exp_avg=m, exp_avg_sq=v, s=s,
        d=jnp.where(skip, d, d_new),
        numerator_weighted=jnp.where(skip, state.numerator_weighted, numerator_weighted))
    return out, new_state

  return optax.GradientTransformation(init_fn, update_fn)


def _concrete_nonzero(value: Any) -> bool:
  """True unless ``value`` is a concrete zero (a tracer counts as nonzero)."""
  v = hp.concrete(value)
  return v is None or v != 0.0


def dadapt_adam(learning_rate: hp.ScalarOrSchedule = 1.0,
                b1: Any = 0.9,
                b2: Any = 0.999,
                eps: Any = 1e-8,
                weight_decay: Any = 0.0,
                decouple: bool = False,
                use_bias_correction: bool = False,
                d0: Any = 1e-6,
                growth_rate: Any = math.inf) -> optax.GradientTransformation:
  r"""D-Adaptation Adam: ``x_{k+1} = x_k - m_k / (sqrt(v_k) + eps)`` with ``m`` carrying ``d lr``.

  ``chain(scale_by_dadapt_adam(learning_rate, ...), scale_by_learning_rate(1.0))``:
  the learning rate is inside the primitive (it enters the momentum). Same defaults as
  ``dadaptation.DAdaptAdam`` (coupled decay, no bias correction). See
  ``scale_by_dadapt_adam``. Reference: Defazio & Mishchenko 2023.
  """
  hp.check_learning_rate(learning_rate)
  return optax.chain(scale_by_dadapt_adam(learning_rate, b1, b2, eps, weight_decay, decouple,
                                          use_bias_correction, d0, growth_rate),
                     transform.scale_by_learning_rate(1.0))
