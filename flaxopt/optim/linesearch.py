"""Line searches as Optax transforms (extra-args convention).

A line search scales an incoming *descent update* ``u`` (already negated, e.g.
the output of ``optax.scale_by_learning_rate``) by a step ``a`` chosen along
``phi(a) = f(params + a * u)``. Both searches are jittable (``lax.while_loop``
with a bounded number of function evaluations) and compose like
``optax.scale_by_zoom_linesearch``::

  opt = optax.chain(direction, optax.scale_by_learning_rate(1.0),
                    scale_by_wolfe_linesearch())
  updates, state = opt.update(grad, state, params, value=value, grad=grad,
                              value_fn=f)

The pure 1-D searches (:func:`backtracking_armijo`, :func:`strong_wolfe`) work
on any ``phi`` and are what the transforms call.

References:
  Nocedal & Wright, Numerical Optimization, 2nd ed. (2006), Algorithms 3.1
  (backtracking), 3.5 (strong-Wolfe line search) and 3.6 (zoom), eq. 3.59
  (cubic interpolation).
"""

from __future__ import annotations

from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
import optax

from flaxopt.optim._utils import check_in_range
from flaxopt.optim._utils import check_open_unit
from flaxopt.optim._utils import check_positive_int
from flaxopt.optim._utils import compute_dtype
from flaxopt.optim._utils import is_concrete_less
from flaxopt.optim._utils import tree_axpy
from flaxopt.optim._utils import tree_vdot

__all__ = [
    "LINESEARCHES",
    "ArmijoLinesearchState",
    "WolfeLinesearchState",
    "backtracking_armijo",
    "cubic_minimizer",
    "scale_by_backtracking_linesearch",
    "scale_by_wolfe_linesearch",
    "strong_wolfe",
]

Array = jax.Array
# phi(a) -> (value, slope, aux); aux is carried (e.g. the gradient pytree).
Phi = Callable[[Array], tuple[Array, Array, Any]]


def _scale(a: Array, tree: Any) -> Any:
  return jax.tree_util.tree_map(lambda t: (a * t).astype(t.dtype), tree)


# ----------------------------------------------------------------------------
# 1-D searches on phi.
# ----------------------------------------------------------------------------


class _ArmijoCarry(NamedTuple):
  step: Array
  value: Array
  num_evals: Array
  done: Array


def backtracking_armijo(
    value_at: Callable[[Array], Array],
    value0: Array,
    slope0: Array,
    init_step: Array,
    *,
    slope_rtol: float = 1e-4,
    decrease_factor: float = 0.5,
    max_steps: int = 30,
) -> tuple[Array, Array, Array]:
  r"""Backtracking until the Armijo (sufficient decrease) condition holds.

  Tries ``a = a0, rho a0, rho^2 a0, ...`` until

  .. math:: \phi(a) \le \phi(0) + c_1 a \phi'(0),

  at most ``max_steps`` evaluations (Nocedal & Wright, Algorithm 3.1). If none
  passes, the last (smallest) trial is returned.

  Args:
    value_at: ``a -> phi(a)`` (scalar).
    value0: ``phi(0)``.
    slope0: ``phi'(0)`` (negative for a descent direction).
    init_step: first trial ``a0``.
    slope_rtol: ``c1``.
    decrease_factor: ``rho`` in (0, 1).
    max_steps: maximum number of evaluations of ``phi``.

  Returns:
    ``(step, phi(step), num_evals)``.
  """
  dtype = jnp.result_type(value0, slope0, init_step)

  def armijo(step, value):
    return jnp.isfinite(value) & (value <= value0 + slope_rtol * step * slope0)

  def body(c: _ArmijoCarry) -> _ArmijoCarry:
    step = jnp.where(c.num_evals == 0, c.step, c.step * decrease_factor).astype(dtype)
    value = value_at(step).astype(dtype)
    return _ArmijoCarry(step, value, c.num_evals + 1, armijo(step, value))

  def cond(c: _ArmijoCarry) -> Array:
    return (~c.done) & (c.num_evals < max_steps)

  init = _ArmijoCarry(jnp.asarray(init_step, dtype), jnp.asarray(jnp.inf, dtype),
                      jnp.zeros((), jnp.int32), jnp.asarray(False))
  out = jax.lax.while_loop(cond, body, init)
  return out.step, out.value, out.num_evals


def cubic_minimizer(a: Array, fa: Array, da: Array, b: Array, fb: Array,
                    db: Array) -> Array:
  r"""Minimiser of the cubic through ``(a, fa, da)`` and ``(b, fb, db)``.

  Nocedal & Wright eq. 3.59:

  .. math::
    d_1 = \phi'_a + \phi'_b - 3 \frac{\phi_a - \phi_b}{a - b}, \quad
    d_2 = \operatorname{sign}(b - a)\sqrt{d_1^2 - \phi'_a \phi'_b}, \\
    x = b - (b - a)\frac{\phi'_b + d_2 - d_1}{\phi'_b - \phi'_a + 2 d_2}.

  Exact for quadratics (and cubics). Returns NaN where the cubic has no
  minimiser; callers safeguard.
  """
  d1 = da + db - 3.0 * (fa - fb) / (a - b)
  disc = d1 * d1 - da * db
  d2 = jnp.sign(b - a) * jnp.sqrt(jnp.where(disc >= 0, disc, jnp.nan))
  return b - (b - a) * (db + d2 - d1) / (db - da + 2.0 * d2)


class _WolfeCarry(NamedTuple):
  trial: Array       # next step to evaluate
  in_zoom: Array     # bool: bracket found, zooming in [lo, hi]
  lo: Array
  f_lo: Array
  d_lo: Array
  aux_lo: Any
  hi: Array
  f_hi: Array
  d_hi: Array
  step: Array        # accepted step (valid when done)
  f_step: Array
  aux_step: Any
  num_evals: Array
  accepted: Array
  done: Array


def strong_wolfe(
    phi: Phi,
    value0: Array,
    slope0: Array,
    aux0: Any,
    init_step: Array,
    *,
    slope_rtol: float = 1e-4,
    curv_rtol: float = 0.9,
    increase_factor: float = 2.0,
    max_step: float = 1e10,
    max_steps: int = 30,
    exact_quadratic: bool = False,
) -> tuple[Array, Array, Any, Array, Array]:
  r"""Strong-Wolfe line search: bracketing + zoom with cubic interpolation.

  Finds ``a`` with

  .. math::
    \phi(a) \le \phi(0) + c_1 a \phi'(0), \qquad
    |\phi'(a)| \le c_2 |\phi'(0)|

  (Nocedal & Wright, Algorithms 3.5 and 3.6). The bracketing phase multiplies the
  trial by ``increase_factor`` (capped at ``max_step``); the zoom phase takes the
  cubic-interpolation minimiser (eq. 3.59) of the bracket ends, clipped to the
  middle 80% of the bracket (bisection when the cubic has no minimiser). Because the cubic through
  ``(0, phi(0), phi'(0))`` and ``(a, phi(a), phi'(a))`` is exact for a
  quadratic ``phi``, a zoom on a quadratic objective lands on the exact
  minimiser. With ``exact_quadratic=True`` the first trial is additionally
  replaced by the secant step ``a0 * phi'(0) / (phi'(0) - phi'(a0))`` (one
  extra evaluation), which *is* the exact line minimiser on quadratics, so the
  search is an exact line search there.

  If no point satisfies both conditions within ``max_steps`` evaluations, the
  best point found that satisfies the Armijo condition is returned (``0`` if
  there is none).

  Args:
    phi: ``a -> (phi(a), phi'(a), aux)``; ``aux`` (e.g. the gradient) is
      returned for the accepted step.
    value0: ``phi(0)``.
    slope0: ``phi'(0)``, negative.
    aux0: ``aux`` at ``a = 0`` (returned when the search fails).
    init_step: first trial step.
    slope_rtol: ``c1``.
    curv_rtol: ``c2``, ``c1 < c2 < 1``.
    increase_factor: bracketing expansion factor (> 1).
    max_step: largest step tried.
    max_steps: maximum number of evaluations of ``phi``.
    exact_quadratic: start from the secant step (see above).

  Returns:
    ``(step, phi(step), aux(step), num_evals, satisfied)``.
  """
  dtype = jnp.result_type(value0, slope0, init_step)
  value0 = jnp.asarray(value0, dtype)
  slope0 = jnp.asarray(slope0, dtype)
  cast = lambda x: jnp.asarray(x, dtype)
  num_evals0 = jnp.zeros((), jnp.int32)
  init_step = jnp.minimum(cast(init_step), max_step)

  if exact_quadratic:
    _, d_a0, _ = phi(init_step)
    secant = init_step * slope0 / (slope0 - d_a0.astype(dtype))
    ok = jnp.isfinite(secant) & (secant > 0)
    init_step = jnp.where(ok, jnp.minimum(secant, max_step), init_step)
    num_evals0 = num_evals0 + 1

  def armijo(a, fa):
    return fa <= value0 + slope_rtol * a * slope0

  def curvature(da):
    return jnp.abs(da) <= -curv_rtol * slope0

  def next_zoom_trial(lo, f_lo, d_lo, hi, f_hi, d_hi):
    x = cubic_minimizer(lo, f_lo, d_lo, hi, f_hi, d_hi)
    left, right = jnp.minimum(lo, hi), jnp.maximum(lo, hi)
    margin = 0.1 * (right - left)
    x = jnp.clip(x, left + margin, right - margin)
    return jnp.where(jnp.isfinite(x), x, 0.5 * (lo + hi))

  def body(c: _WolfeCarry) -> _WolfeCarry:
    a = c.trial
    fa, da, aux = phi(a)
    fa, da = cast(fa), cast(da)
    fa = jnp.where(jnp.isnan(fa), jnp.inf, fa)
    da = jnp.where(jnp.isfinite(fa), da, jnp.inf)
    num_evals = c.num_evals + 1
    sufficient = armijo(a, fa)
    flat = curvature(da)
    # Bracketing phase (Algorithm 3.5); lo holds the previous trial.
    worse = (~sufficient) | ((fa >= c.f_lo) & (c.lo > 0))
    # Zoom phase (Algorithm 3.6).
    zoom_hi = (~sufficient) | (fa >= c.f_lo)
    accept = jnp.where(c.in_zoom, (~zoom_hi) & flat, (~worse) & flat)
    at_cap = (~c.in_zoom) & (~worse) & (~flat) & (da < 0) & (a >= max_step)
    accept = accept | at_cap
    # New bracket.
    b_new_hi = jnp.where(c.in_zoom, zoom_hi, worse)           # a becomes hi
    b_swap = jnp.where(c.in_zoom, da * (c.hi - c.lo) >= 0, da >= 0)  # old lo -> hi
    b_lo_is_a = ~b_new_hi                                        # a becomes lo
    enter_zoom = c.in_zoom | b_new_hi | b_swap
    hi = jnp.where(b_new_hi, a, jnp.where(b_swap, c.lo, c.hi))
    f_hi = jnp.where(b_new_hi, fa, jnp.where(b_swap, c.f_lo, c.f_hi))
    d_hi = jnp.where(b_new_hi, da, jnp.where(b_swap, c.d_lo, c.d_hi))
    pick = lambda new, old: jax.tree_util.tree_map(
        lambda n, o: jnp.where(b_lo_is_a, n, o), new, old)
    lo = jnp.where(b_lo_is_a, a, c.lo)
    f_lo = jnp.where(b_lo_is_a, fa, c.f_lo)
    d_lo = jnp.where(b_lo_is_a, da, c.d_lo)
    aux_lo = pick(aux, c.aux_lo)
    expand = jnp.minimum(a * increase_factor, max_step)
    trial = jnp.where(enter_zoom, next_zoom_trial(lo, f_lo, d_lo, hi, f_hi, d_hi), expand)
    out_of_budget = num_evals >= max_steps
    # On failure fall back to the best Armijo point (lo; 0 when none).
    step = jnp.where(accept, a, lo)
    f_step = jnp.where(accept, fa, f_lo)
    aux_step = jax.tree_util.tree_map(lambda n, o: jnp.where(accept, n, o), aux, aux_lo)
    return _WolfeCarry(trial, enter_zoom, lo, f_lo, d_lo, aux_lo, hi, f_hi, d_hi,
                       step, f_step, aux_step, num_evals, accept, accept | out_of_budget)

  def cond(c: _WolfeCarry) -> Array:
    return ~c.done

  zero = cast(0.0)
  init = _WolfeCarry(
      trial=init_step, in_zoom=jnp.asarray(False), lo=zero, f_lo=value0, d_lo=slope0,
      aux_lo=aux0, hi=zero, f_hi=value0, d_hi=slope0, step=zero, f_step=value0,
      aux_step=aux0, num_evals=num_evals0, accepted=jnp.asarray(False),
      done=jnp.asarray(False))
  out = jax.lax.while_loop(cond, body, init)
  return out.step, out.f_step, out.aux_step, out.num_evals, out.accepted


# ----------------------------------------------------------------------------
# Transforms.
# ----------------------------------------------------------------------------


class ArmijoLinesearchState(NamedTuple):
  """State of :func:`scale_by_backtracking_linesearch` (pytree of arrays).

  Attributes:
    step_size: the accepted step ``a`` of the last update.
    value: ``f`` at the new parameters.
    num_evals: evaluations of ``f`` in the last update.
    total_evals: evaluations of ``f`` over all updates.
  """
  step_size: Array
  value: Array
  num_evals: Array
  total_evals: Array


class WolfeLinesearchState(NamedTuple):
  """State of :func:`scale_by_wolfe_linesearch` (pytree of arrays).

  ``value`` and ``grad`` are those at the new parameters, so
  ``optax.value_and_grad_from_state(f)`` reuses them (``value`` starts at inf).

  Attributes:
    step_size: the accepted step ``a`` of the last update.
    slope: ``<grad f, u>`` at the start of the last update (for
      ``initial_guess='slope_ratio'``).
    value: ``f`` at the new parameters.
    grad: ``grad f`` at the new parameters.
    num_evals: evaluations of ``(f, grad f)`` in the last update.
    total_evals: evaluations over all updates.
    satisfied: whether the last step satisfied the conditions.
  """
  step_size: Array
  slope: Array
  value: Array
  grad: Any
  num_evals: Array
  total_evals: Array
  satisfied: Array


def _line(params: Any, updates: Any, value_fn: Callable[..., Array]):
  return lambda a: value_fn(tree_axpy(a, updates, params))


def scale_by_backtracking_linesearch(
    max_steps: int = 30,
    slope_rtol: float = 1e-4,
    decrease_factor: float = 0.5,
    max_step: float = 1.0,
) -> optax.GradientTransformationExtraArgs:
  r"""Scales the incoming update ``u`` by a backtracking (Armijo) step.

  ``a`` is the first of ``max_step, rho max_step, rho^2 max_step, ...`` with
  ``f(w + a u) <= f(w) + c1 a <grad f(w), u>`` (Nocedal & Wright, Algorithm
  3.1); the output update is ``a u``. Put ``learning_rate`` in ``u`` (e.g.
  ``optax.scale_by_learning_rate``) to set the first trial. A non-descent ``u``
  (``<grad, u> >= 0``) gives a zero update.

  Unlike ``optax.scale_by_backtracking_linesearch`` the first trial is always
  ``max_step`` (no step-size memory) and the default ``rho`` is 0.5 (optax:
  0.8), the textbook choice.

  Args:
    max_steps: maximum evaluations of ``f`` per update.
    slope_rtol: ``c1`` in (0, 1).
    decrease_factor: ``rho`` in (0, 1).
    max_step: first trial ``a``.

  Returns:
    An ``optax.GradientTransformationExtraArgs``; ``update`` needs ``params``,
    ``value``, ``grad`` and ``value_fn``.
  """
  check_positive_int("max_steps", max_steps)
  check_open_unit("slope_rtol", slope_rtol)
  check_open_unit("decrease_factor", decrease_factor)
  check_in_range("max_step", max_step, 0.0, float("inf"), low_open=True, high_open=False)

  def init_fn(params):
    dtype = compute_dtype(params)
    return ArmijoLinesearchState(
        step_size=jnp.asarray(max_step, dtype), value=jnp.asarray(jnp.inf, dtype),
        num_evals=jnp.zeros((), jnp.int32), total_evals=jnp.zeros((), jnp.int32))

  def update_fn(updates, state, params, *, value, grad, value_fn, **extra_args):
    del extra_args
    dtype = state.step_size.dtype
    slope0 = tree_vdot(grad, updates, dtype)
    value0 = jnp.asarray(value, dtype)
    step, new_value, num_evals = backtracking_armijo(
        _line(params, updates, value_fn), value0, slope0, jnp.asarray(max_step, dtype),
        slope_rtol=jnp.asarray(slope_rtol, dtype),
        decrease_factor=jnp.asarray(decrease_factor, dtype), max_steps=max_steps)
    descent = slope0 < 0
    step = jnp.where(descent, step, jnp.zeros_like(step))
    new_value = jnp.where(descent, new_value, value0)
    new_state = ArmijoLinesearchState(step, new_value, num_evals,
                                      state.total_evals + num_evals)
    return _scale(step, updates), new_state

  return optax.GradientTransformationExtraArgs(init_fn, update_fn)


def scale_by_wolfe_linesearch(
    max_steps: int = 30,
    slope_rtol: float = 1e-4,
    curv_rtol: float = 0.9,
    increase_factor: float = 2.0,
    max_step: float = 1e10,
    exact_quadratic: bool = False,
    initial_guess: str = "one",
) -> optax.GradientTransformationExtraArgs:
  r"""Scales the incoming update ``u`` by a strong-Wolfe step (zoom).

  ``a`` satisfies ``f(w + a u) <= f(w) + c1 a <g, u>`` and
  ``|<grad f(w + a u), u>| <= c2 |<g, u>|``; see :func:`strong_wolfe`
  (Nocedal & Wright, Algorithms 3.5/3.6, cubic interpolation). With
  ``initial_guess='one'`` the first trial is ``a = 1`` on the incoming ``u``,
  so ``learning_rate`` (applied upstream) is the initial step (right for
  Newton-like directions); with ``'slope_ratio'`` it is
  ``a_{k-1} <g_{k-1}, u_{k-1}> / <g_k, u_k>`` (N&W eq. 3.60, for directions
  without a natural scale such as nonlinear CG; 1 on the first update). ``value``/``grad`` at the new point are kept in the
  state for ``optax.value_and_grad_from_state``. A non-descent ``u`` gives a
  zero update.

  Differs from ``optax.scale_by_zoom_linesearch``: the first trial is always 1
  (no ``initial_guess_strategy``), there is no approximate-Wolfe fallback, and
  ``exact_quadratic`` gives an exact line search on quadratic objectives.

  Args:
    max_steps: maximum evaluations of ``(f, grad f)`` per update.
    slope_rtol: ``c1``.
    curv_rtol: ``c2`` (0.9 for Newton/quasi-Newton, 0.1 for nonlinear CG).
    increase_factor: bracketing expansion factor.
    max_step: largest step tried.
    exact_quadratic: first trial is the secant minimiser (exact on quadratics).
    initial_guess: 'one' | 'slope_ratio'.

  Returns:
    An ``optax.GradientTransformationExtraArgs``; ``update`` needs ``params``,
    ``value``, ``grad`` and ``value_fn``.
  """
  check_positive_int("max_steps", max_steps)
  check_open_unit("slope_rtol", slope_rtol)
  check_open_unit("curv_rtol", curv_rtol)
  if not is_concrete_less(slope_rtol, curv_rtol):
    raise ValueError(f"need slope_rtol < curv_rtol, got {slope_rtol!r} >= {curv_rtol!r}.")
  check_in_range("increase_factor", increase_factor, 1.0, float("inf"), low_open=True)
  check_in_range("max_step", max_step, 0.0, float("inf"), low_open=True, high_open=False)
  if initial_guess not in _INITIAL_GUESSES:
    raise ValueError(
        f"initial_guess must be one of {_INITIAL_GUESSES}, got {initial_guess!r}.")

  def init_fn(params):
    dtype = compute_dtype(params)
    return WolfeLinesearchState(
        step_size=jnp.ones((), dtype), slope=jnp.zeros((), dtype),
        value=jnp.asarray(jnp.inf, dtype),
        grad=jax.tree_util.tree_map(jnp.zeros_like, params),
        num_evals=jnp.zeros((), jnp.int32), total_evals=jnp.zeros((), jnp.int32),
        satisfied=jnp.asarray(True))

  def update_fn(updates, state, params, *, value, grad, value_fn, **extra_args):
    del extra_args
    dtype = state.step_size.dtype
    value_and_grad = jax.value_and_grad(value_fn)
    grad = jax.tree_util.tree_map(lambda g, p: g.astype(p.dtype), grad, params)

    def phi(a):
      f, g = value_and_grad(tree_axpy(a, updates, params))
      g = jax.tree_util.tree_map(lambda gi, p: gi.astype(p.dtype), g, params)
      return f.astype(dtype), tree_vdot(g, updates, dtype), g

    slope0 = tree_vdot(grad, updates, dtype)
    value0 = jnp.asarray(value, dtype)
    descent = slope0 < 0
    init_step = jnp.ones((), dtype)
    if initial_guess == "slope_ratio":
      guess = state.step_size * state.slope / slope0
      ok_guess = jnp.isfinite(guess) & (guess > 0) & (state.total_evals > 0)
      init_step = jnp.where(ok_guess, guess, init_step)
    step, new_value, new_grad, num_evals, ok = strong_wolfe(
        phi, value0, jnp.where(descent, slope0, -1.0), grad, init_step,
        # Hyperparameters in the search's dtype: traced ones (stacked runs) may be wider.
        slope_rtol=jnp.asarray(slope_rtol, dtype), curv_rtol=jnp.asarray(curv_rtol, dtype),
        increase_factor=jnp.asarray(increase_factor, dtype),
        max_step=jnp.asarray(max_step, dtype), max_steps=max_steps,
        exact_quadratic=exact_quadratic)
    step = jnp.where(descent, step, jnp.zeros_like(step))
    new_value = jnp.where(descent, new_value, value0)
    new_grad = jax.tree_util.tree_map(lambda n, o: jnp.where(descent, n, o), new_grad, grad)
    new_state = WolfeLinesearchState(step, slope0, new_value, new_grad, num_evals,
                                     state.total_evals + num_evals, ok & descent)
    return _scale(step, updates), new_state

  return optax.GradientTransformationExtraArgs(init_fn, update_fn)


_INITIAL_GUESSES = ("one", "slope_ratio")

# Name -> constructor for the ``linesearch=`` argument of the second-order aliases.
LINESEARCHES: dict[str, Callable[..., optax.GradientTransformationExtraArgs]] = {
    "armijo": scale_by_backtracking_linesearch,
    "backtracking": scale_by_backtracking_linesearch,
    "wolfe": scale_by_wolfe_linesearch,
    "strong_wolfe": scale_by_wolfe_linesearch,
}
