"""Second-order methods as Optax transforms (extra-args convention).

Each method is a direction primitive ``scale_by_*`` that maps the gradient
``g`` to a preconditioned gradient ``p`` (same sign as ``g``; the descent
direction is ``-p``), and an alias that chains it with
``flaxopt.optim.scale_by_learning_rate`` (optax's rule, bfloat16 kept) and a line
search from :mod:`flaxopt.optim.linesearch`::

  opt = optim.bfgs()
  state = opt.init(params)
  value, grad = jax.value_and_grad(f)(params)
  updates, state = opt.update(grad, state, params, value=value, grad=grad,
                              value_fn=f)
  params = optax.apply_updates(params, updates)

``learning_rate`` in every alias is the *initial step scale*: the line search's
first trial is ``-learning_rate * p`` (``1.0``: the full Newton / quasi-Newton
step, the textbook choice). With ``linesearch=None`` it is a fixed step size.

Parameters may be any pytree. ``newton`` (exact), ``bfgs`` and ``lbfgs`` work on
the flattened vector (``jax.flatten_util.ravel_pytree``) internally; state
arrays are computed in at least float32 (float64 under x64) and the updates
keep each leaf's dtype.
"""

from __future__ import annotations

from typing import Any, Callable, NamedTuple, Optional

import jax
from jax.flatten_util import ravel_pytree
import jax.numpy as jnp
import optax

from flaxopt.optim import linesearch as ls
from flaxopt.optim._utils import ScalarOrSchedule
from flaxopt.optim._utils import check_in_range
from flaxopt.optim._utils import check_nonneg
from flaxopt.optim._utils import check_positive_int
from flaxopt.optim._utils import compute_dtype
from flaxopt.optim._utils import tree_axpy
from flaxopt.optim._utils import tree_vdot
from flaxopt.optim.transform import scale_by_learning_rate

__all__ = [
    "BETA_RULES",
    "BFGSState",
    "LBFGSState",
    "NewtonState",
    "NonlinearCGState",
    "bfgs",
    "conjugate_gradient",
    "lbfgs",
    "newton",
    "newton_cg",
    "scale_by_bfgs",
    "scale_by_lbfgs",
    "scale_by_newton",
    "scale_by_nonlinear_cg",
]

Array = jax.Array
_NEWTON_METHODS = ("exact", "cg", "auto")


def _flat(tree: Any) -> tuple[Array, Callable[[Array], Any], jnp.dtype]:
  """Flattens ``tree`` to a vector in the compute dtype; returns an unravel."""
  flat, unravel = ravel_pytree(tree)
  dtype = compute_dtype(flat)
  return flat.astype(dtype), lambda v: unravel(v.astype(flat.dtype)), dtype


# ----------------------------------------------------------------------------
# Newton: exact (Cholesky with added multiple of the identity) and Newton-CG.
# ----------------------------------------------------------------------------


class NewtonState(NamedTuple):
  """State of :func:`scale_by_newton`.

  Attributes:
    count: number of updates.
    shift: total diagonal shift ``lambda`` used in the last exact solve
      (``damping`` plus the Cholesky modification).
    cg_iters: CG iterations of the last Newton-CG solve.
  """
  count: Array
  shift: Array
  cg_iters: Array


def _modified_cholesky_solve(h: Array, g: Array, damping: float, min_shift: float,
                             max_tries: int) -> tuple[Array, Array]:
  r"""Solves ``(H + tau I) p = g`` with the smallest tried ``tau`` making it PD.

  Nocedal & Wright, Algorithm 3.3 (Cholesky with added multiple of the
  identity): ``tau_0 = damping`` if ``min diag(H) + damping > 0`` else
  ``-min diag + beta``; while Cholesky fails (NaN factor), ``tau <- max(2 tau,
  beta)``, at most ``max_tries`` times. Falls back to ``p = g`` (steepest
  descent) if every try fails. Returns ``(p, tau)``.
  """
  n = h.shape[0]
  eye = jnp.eye(n, dtype=h.dtype)
  h = 0.5 * (h + h.T) + damping * eye
  min_diag = jnp.min(jnp.diag(h))
  tau0 = jnp.where(min_diag > 0, 0.0, -min_diag + min_shift).astype(h.dtype)

  def factor(tau):
    chol = jnp.linalg.cholesky(h + tau * eye)
    return chol, jnp.all(jnp.isfinite(chol))

  def cond(carry):
    _, _, ok, tries = carry
    return (~ok) & (tries < max_tries)

  def body(carry):
    tau, _, _, tries = carry
    tau = jnp.maximum(2.0 * tau, min_shift).astype(h.dtype)
    chol, ok = factor(tau)
    return tau, chol, ok, tries + 1

  chol0, ok0 = factor(tau0)
  tau, chol, ok, _ = jax.lax.while_loop(cond, body, (tau0, chol0, ok0, jnp.zeros((), jnp.int32)))
  safe_chol = jnp.where(ok, chol, eye)
  p = jax.scipy.linalg.cho_solve((safe_chol, True), g)
  return jnp.where(ok, p, g), tau + damping


def _truncated_cg(hvp: Callable[[Any], Any], g: Any, max_iters: int,
                  tol: Optional[float]) -> tuple[Any, Array]:
  r"""Truncated CG for ``A p = g`` (Nocedal & Wright Algorithm 7.1; Martens 2010).

  Stops when ``||r|| <= eta ||g||`` with ``eta = tol`` or, when ``tol`` is None,
  ``eta = min(0.5, sqrt(||g||))`` (superlinear forcing sequence), after
  ``max_iters`` iterations, or at negative curvature ``d'Ad <= 0`` (then the
  current iterate is returned, or ``g`` itself on the first iteration).
  Returns ``(p, iterations)``.
  """
  gnorm = jnp.sqrt(tree_vdot(g, g))
  eta = jnp.minimum(0.5, jnp.sqrt(gnorm)) if tol is None else tol
  threshold = eta * gnorm
  zeros = jax.tree_util.tree_map(jnp.zeros_like, g)

  def cond(carry):
    _, r, _, rr, j, stop = carry
    return (~stop) & (j < max_iters) & (jnp.sqrt(rr) > threshold)

  def body(carry):
    z, r, d, rr, j, _ = carry
    ad = hvp(d)
    curv = tree_vdot(d, ad)
    negative = ~(curv > 0)
    alpha = rr / jnp.where(negative, 1.0, curv)
    z_new = tree_axpy(alpha, d, z)
    r_new = tree_axpy(-alpha, ad, r)
    rr_new = tree_vdot(r_new, r_new)
    d_new = tree_axpy(rr_new / rr, d, r_new)
    # On negative curvature keep z (or g on the first iteration) and stop.
    fallback = jax.tree_util.tree_map(lambda zi, gi: jnp.where(j == 0, gi, zi), z, g)
    pick = lambda new, old: jax.tree_util.tree_map(
        lambda a, b: jnp.where(negative, b, a), new, old)
    return (pick(z_new, fallback), pick(r_new, r), pick(d_new, d),
            jnp.where(negative, rr, rr_new), j + 1, negative)

  init = (zeros, g, g, gnorm * gnorm, jnp.zeros((), jnp.int32), jnp.asarray(False))
  z, _, _, _, iters, _ = jax.lax.while_loop(cond, body, init)
  return z, iters


def scale_by_newton(
    method: str = "auto",
    damping: float = 0.0,
    exact_max_size: int = 1000,
    cg_max_iters: int = 50,
    cg_tol: Optional[float] = None,
    min_shift: float = 1e-3,
    max_shift_tries: int = 60,
) -> optax.GradientTransformationExtraArgs:
  r"""Newton direction ``p = (H + lambda I)^{-1} g`` (descent: ``-p``).

  * ``method='exact'``: ``H = jax.hessian`` of ``value_fn`` on the flattened
    parameters, solved by Cholesky. When ``H + damping I`` is not positive
    definite, ``lambda`` is raised (Levenberg-Marquardt style) by Nocedal &
    Wright's Algorithm 3.3 (Cholesky with added multiple of the identity,
    bounded ``lax.while_loop``, doubling from ``min_shift``).
  * ``method='cg'``: Hessian-free Newton-CG (Martens 2010, "Deep learning via
    Hessian-free optimization"; N&W Algorithm 7.1): Hessian-vector products by
    forward-over-reverse ``jax.jvp(jax.grad(f))``, truncated CG on
    ``(H + damping I) p = g`` with at most ``cg_max_iters`` iterations and
    relative residual ``cg_tol`` (default: ``min(0.5, sqrt(||g||))``),
    stopped at negative curvature. Martens' adaptive damping and CG warm
    starts are not included (``damping`` is fixed).
  * ``method='auto'``: exact when the number of parameters is at most
    ``exact_max_size``, else cg (decided at trace time).

  Args:
    method: 'exact' | 'cg' | 'auto'.
    damping: fixed Levenberg-Marquardt damping ``lambda >= 0``.
    exact_max_size: size threshold for ``'auto'``.
    cg_max_iters: CG iteration cap.
    cg_tol: CG relative residual tolerance; None for the forcing sequence.
    min_shift: ``beta`` of Algorithm 3.3.
    max_shift_tries: bound on Cholesky attempts.

  Returns:
    An ``optax.GradientTransformationExtraArgs``; ``update`` needs ``params``
    and ``value_fn``.
  """
  if method not in _NEWTON_METHODS:
    raise ValueError(f"method must be one of {_NEWTON_METHODS}, got {method!r}.")
  check_nonneg("damping", damping)
  check_positive_int("cg_max_iters", cg_max_iters)
  check_positive_int("exact_max_size", exact_max_size)
  check_positive_int("max_shift_tries", max_shift_tries)
  if cg_tol is not None:
    check_in_range("cg_tol", cg_tol, 0.0, float("inf"), low_open=True)
  check_in_range("min_shift", min_shift, 0.0, float("inf"), low_open=True)

  def init_fn(params):
    dtype = compute_dtype(params)
    return NewtonState(jnp.zeros((), jnp.int32), jnp.zeros((), dtype),
                       jnp.zeros((), jnp.int32))

  def exact(updates, state, params, value_fn):
    x, unravel, dtype = _flat(params)
    g, _, _ = _flat(updates)
    h = jax.hessian(lambda v: value_fn(unravel(v)).astype(dtype))(x)
    p, shift = _modified_cholesky_solve(h, g, damping, min_shift, max_shift_tries)
    return optax.tree.cast_like(unravel(p), updates), state._replace(
        shift=shift.astype(state.shift.dtype), cg_iters=jnp.zeros((), jnp.int32))

  def hessian_free(updates, state, params, value_fn):
    dtype = state.shift.dtype
    grad_fn = jax.grad(value_fn)

    def hvp(v):
      hv = jax.jvp(grad_fn, (params,), (optax.tree.cast_like(v, params),))[1]
      return tree_axpy(jnp.asarray(damping, dtype), v, optax.tree.cast(hv, dtype))

    p, iters = _truncated_cg(hvp, optax.tree.cast(updates, dtype), cg_max_iters, cg_tol)
    return optax.tree.cast_like(p, updates), state._replace(shift=jnp.asarray(damping, dtype),
                                             cg_iters=iters)

  def update_fn(updates, state, params, *, value_fn, **extra_args):
    del extra_args
    use_exact = method == "exact" or (
        method == "auto" and optax.tree.size(params) <= exact_max_size)
    solve = exact if use_exact else hessian_free
    p, state = solve(updates, state, params, value_fn)
    return p, state._replace(count=optax.safe_increment(state.count))

  return optax.GradientTransformationExtraArgs(init_fn, update_fn)


# ----------------------------------------------------------------------------
# BFGS and L-BFGS.
# ----------------------------------------------------------------------------


def _curvature_pair(state: Any, params: Any, updates: Any, min_curvature: float):
  """(x, g, s, y, s'y, accept) for the pair formed with the previous step."""
  x, unravel, dtype = _flat(params)
  g, _, _ = _flat(updates)
  s = x - state.prev_params
  y = g - state.prev_grad
  sy = jnp.vdot(s, y)
  scale = jnp.linalg.norm(s) * jnp.linalg.norm(y)
  accept = (state.count > 0) & (sy > min_curvature * scale) & jnp.isfinite(sy)
  return x, g, s, y, sy, accept, unravel, dtype


class BFGSState(NamedTuple):
  """State of :func:`scale_by_bfgs`.

  Attributes:
    count: number of updates.
    num_updates: accepted inverse-Hessian updates (pairs with ``s'y > 0``).
    inv_hessian: the dense ``H_k`` (n x n, flattened parameters).
    prev_params: previous flattened parameters ``x_{k-1}``.
    prev_grad: previous flattened gradient ``g_{k-1}``.
  """
  count: Array
  num_updates: Array
  inv_hessian: Array
  prev_params: Array
  prev_grad: Array


def scale_by_bfgs(min_curvature: float = 1e-10) -> optax.GradientTransformationExtraArgs:
  r"""BFGS direction ``p = H_k g_k`` with the dense inverse-Hessian update.

  With ``s = x_k - x_{k-1}``, ``y = g_k - g_{k-1}``, ``rho = 1 / s'y``
  (Nocedal & Wright, Algorithm 6.1, eq. 6.17):

  .. math:: H_k = (I - \rho s y^T) H_{k-1} (I - \rho y s^T) + \rho s s^T.

  ``H_0 = I``; before the first update ``H`` is rescaled to
  ``(s'y / y'y) I`` (eq. 6.20). The update is skipped when the curvature
  condition ``s'y > min_curvature ||s|| ||y||`` fails (a strong-Wolfe line
  search guarantees it). Memory is O(n^2): for small problems.

  Args:
    min_curvature: relative threshold of the curvature test.

  Returns:
    An ``optax.GradientTransformationExtraArgs`` (extras are ignored).
  """
  check_nonneg("min_curvature", min_curvature)

  def init_fn(params):
    x, _, dtype = _flat(params)
    n = x.shape[0]
    return BFGSState(jnp.zeros((), jnp.int32), jnp.zeros((), jnp.int32),
                     jnp.eye(n, dtype=dtype), x, jnp.zeros_like(x))

  def update_fn(updates, state, params=None, **extra_args):
    del extra_args
    x, g, s, y, sy, accept, unravel, dtype = _curvature_pair(
        state, params, updates, min_curvature)
    n = x.shape[0]
    h = jnp.where(state.num_updates == 0,
                  (sy / jnp.vdot(y, y)) * jnp.eye(n, dtype=dtype), state.inv_hessian)
    rho = 1.0 / jnp.where(accept, sy, 1.0)
    hy = h @ y
    h_new = (h - rho * (jnp.outer(s, hy) + jnp.outer(hy, s))
             + (rho * rho * jnp.vdot(y, hy) + rho) * jnp.outer(s, s))
    h = jnp.where(accept, h_new, state.inv_hessian)
    p = h @ g
    new_state = BFGSState(optax.safe_increment(state.count),
                          state.num_updates + accept.astype(jnp.int32), h, x, g)
    return optax.tree.cast_like(unravel(p), updates), new_state

  return optax.GradientTransformationExtraArgs(init_fn, update_fn)


class LBFGSState(NamedTuple):
  """State of :func:`scale_by_lbfgs` (circular buffers of the last m pairs).

  Attributes:
    count: number of updates.
    head: buffer slot the next accepted pair is written to.
    s_history: (m, n) parameter differences.
    y_history: (m, n) gradient differences.
    rho_history: (m,) ``1 / s'y``; 0 marks an empty slot.
    prev_params: previous flattened parameters.
    prev_grad: previous flattened gradient.
  """
  count: Array
  head: Array
  s_history: Array
  y_history: Array
  rho_history: Array
  prev_params: Array
  prev_grad: Array


def _two_loop(g: Array, s_hist: Array, y_hist: Array, rho_hist: Array, head: Array,
              gamma: Array) -> Array:
  """Nocedal & Wright Algorithm 7.4: ``r = H_k g`` from the stored pairs."""
  m = s_hist.shape[0]

  def newest(k):  # k-th newest slot
    return (head - 1 - k) % m

  def first(k, carry):
    q, alphas = carry
    i = newest(k)
    alpha = rho_hist[i] * jnp.vdot(s_hist[i], q)
    return q - alpha * y_hist[i], alphas.at[i].set(alpha)

  q, alphas = jax.lax.fori_loop(0, m, first, (g, jnp.zeros_like(rho_hist)))

  def second(k, r):
    i = newest(m - 1 - k)
    beta = rho_hist[i] * jnp.vdot(y_hist[i], r)
    return r + (alphas[i] - beta) * s_hist[i]

  return jax.lax.fori_loop(0, m, second, gamma * q)


def scale_by_lbfgs(memory_size: int = 10,
                   min_curvature: float = 1e-10) -> optax.GradientTransformationExtraArgs:
  r"""L-BFGS direction ``p = H_k g_k`` by the two-loop recursion.

  Keeps the last ``memory_size`` pairs ``(s_i, y_i)`` in circular buffers and
  applies N&W Algorithm 7.4 with ``H_k^0 = gamma_k I``,
  ``gamma_k = s'y / y'y`` of the newest pair (eq. 7.20; ``gamma = 1`` before
  the first pair). Pairs failing ``s'y > min_curvature ||s|| ||y||`` are not
  stored. Same role as ``optax.scale_by_lbfgs`` but written from the book.

  Args:
    memory_size: number of stored pairs ``m >= 1``.
    min_curvature: relative threshold of the curvature test.

  Returns:
    An ``optax.GradientTransformationExtraArgs`` (extras are ignored).
  """
  check_positive_int("memory_size", memory_size)
  check_nonneg("min_curvature", min_curvature)
  m = memory_size

  def init_fn(params):
    x, _, dtype = _flat(params)
    n = x.shape[0]
    return LBFGSState(jnp.zeros((), jnp.int32), jnp.zeros((), jnp.int32),
                      jnp.zeros((m, n), dtype), jnp.zeros((m, n), dtype),
                      jnp.zeros((m,), dtype), x, jnp.zeros_like(x))

  def update_fn(updates, state, params=None, **extra_args):
    del extra_args
    x, g, s, y, sy, accept, unravel, _ = _curvature_pair(
        state, params, updates, min_curvature)
    h = state.head
    s_hist = jnp.where(accept, state.s_history.at[h].set(s), state.s_history)
    y_hist = jnp.where(accept, state.y_history.at[h].set(y), state.y_history)
    rho_hist = jnp.where(accept, state.rho_history.at[h].set(1.0 / jnp.where(accept, sy, 1.0)),
                         state.rho_history)
    head = jnp.where(accept, (h + 1) % m, h).astype(jnp.int32)
    last = (head - 1) % m
    y_last = y_hist[last]
    gamma = jnp.where(rho_hist[last] > 0,
                      jnp.vdot(s_hist[last], y_last) / jnp.vdot(y_last, y_last), 1.0)
    p = _two_loop(g, s_hist, y_hist, rho_hist, head, gamma.astype(g.dtype))
    new_state = LBFGSState(optax.safe_increment(state.count), head, s_hist, y_hist,
                           rho_hist, x, g)
    return optax.tree.cast_like(unravel(p), updates), new_state

  return optax.GradientTransformationExtraArgs(init_fn, update_fn)


# ----------------------------------------------------------------------------
# Nonlinear conjugate gradient.
# ----------------------------------------------------------------------------


def _beta_fr(g, g_prev, p_prev, y):
  del p_prev, y
  return tree_vdot(g, g) / tree_vdot(g_prev, g_prev)


def _beta_pr(g, g_prev, p_prev, y):
  del p_prev
  return tree_vdot(g, y) / tree_vdot(g_prev, g_prev)


def _beta_prp_plus(g, g_prev, p_prev, y):
  return jnp.maximum(_beta_pr(g, g_prev, p_prev, y), 0.0)


def _beta_hs(g, g_prev, p_prev, y):
  del g_prev
  return -tree_vdot(g, y) / tree_vdot(p_prev, y)


def _beta_dy(g, g_prev, p_prev, y):
  del g_prev
  return -tree_vdot(g, g) / tree_vdot(p_prev, y)


# name -> beta(g_k, g_{k-1}, p_{k-1}, y) with p = -d (gradient sign convention).
BETA_RULES: dict[str, Callable[..., Array]] = {
    "fr": _beta_fr,      # Fletcher & Reeves (1964)
    "pr": _beta_pr,      # Polak & Ribiere (1969), Polyak (1969)
    "prp+": _beta_prp_plus,  # Powell (1986) / Gilbert & Nocedal (1992)
    "hs": _beta_hs,      # Hestenes & Stiefel (1952)
    "dy": _beta_dy,      # Dai & Yuan (1999)
}


class NonlinearCGState(NamedTuple):
  """State of :func:`scale_by_nonlinear_cg`.

  Attributes:
    count: number of updates.
    since_restart: updates since the last restart (0: restart next).
    prev_grad: ``g_{k-1}``.
    prev_direction: ``p_{k-1}`` (gradient sign convention, ``d = -p``).
  """
  count: Array
  since_restart: Array
  prev_grad: Any
  prev_direction: Any


def scale_by_nonlinear_cg(beta: str = "prp+",
                          restart_every: Optional[int] = None
                          ) -> optax.GradientTransformationExtraArgs:
  r"""Nonlinear conjugate-gradient direction ``d_k = -g_k + beta_k d_{k-1}``.

  Returned as ``p_k = -d_k = g_k + beta_k p_{k-1}``, with ``y = g_k - g_{k-1}``
  and (Nocedal & Wright, Section 5.2)

  * ``'fr'`` Fletcher-Reeves: ``g_k'g_k / g_{k-1}'g_{k-1}``,
  * ``'pr'`` Polak-Ribiere(-Polyak): ``g_k'y / g_{k-1}'g_{k-1}``,
  * ``'prp+'``: ``max(0, beta_PR)`` (eq. 5.45; the default),
  * ``'hs'`` Hestenes-Stiefel: ``g_k'y / d_{k-1}'y``,
  * ``'dy'`` Dai-Yuan: ``g_k'g_k / d_{k-1}'y``.

  Restarts (``beta = 0``) every ``restart_every`` updates (default: the number
  of parameters n) and whenever ``d_k`` is not a descent direction
  (``g_k'd_k >= 0``) or ``beta`` is not finite. With an exact line search on a
  convex quadratic every rule reproduces linear CG.

  Args:
    beta: name of the rule (see ``BETA_RULES``).
    restart_every: restart period; None for n.

  Returns:
    An ``optax.GradientTransformationExtraArgs`` (extras are ignored).
  """
  if beta not in BETA_RULES:
    raise ValueError(f"Unknown beta {beta!r}; valid: {', '.join(BETA_RULES)}.")
  if restart_every is not None:
    check_positive_int("restart_every", restart_every)
  rule = BETA_RULES[beta]

  def init_fn(params):
    zeros = jax.tree_util.tree_map(jnp.zeros_like, params)
    return NonlinearCGState(jnp.zeros((), jnp.int32), jnp.zeros((), jnp.int32),
                            zeros, zeros)

  def update_fn(updates, state, params=None, **extra_args):
    del params, extra_args
    dtype = compute_dtype(updates)
    period = restart_every or optax.tree.size(updates)
    g = optax.tree.cast(updates, dtype)
    g_prev = optax.tree.cast(state.prev_grad, dtype)
    p_prev = optax.tree.cast(state.prev_direction, dtype)
    y = jax.tree_util.tree_map(jnp.subtract, g, g_prev)
    b = rule(g, g_prev, p_prev, y)
    restart = (state.since_restart == 0) | (state.since_restart >= period) | ~jnp.isfinite(b)
    b = jnp.where(restart, 0.0, b)
    p = tree_axpy(b, p_prev, g)
    descent = tree_vdot(g, p) > 0
    restart = restart | ~descent
    p = jax.tree_util.tree_map(lambda pi, gi: jnp.where(descent, pi, gi), p, g)
    since = jnp.where(restart, 1, state.since_restart + 1).astype(jnp.int32)
    p = optax.tree.cast_like(p, updates)
    new_state = NonlinearCGState(optax.safe_increment(state.count), since, updates, p)
    return p, new_state

  return optax.GradientTransformationExtraArgs(init_fn, update_fn)


# ----------------------------------------------------------------------------
# Aliases: direction -> scale_by_learning_rate -> line search.
# ----------------------------------------------------------------------------


def _with_linesearch(direction: optax.GradientTransformation,
                     learning_rate: ScalarOrSchedule,
                     linesearch: Optional[str],
                     linesearch_kwargs: Optional[dict[str, Any]],
                     defaults: dict[str, Any]) -> optax.GradientTransformationExtraArgs:
  parts = [direction, scale_by_learning_rate(learning_rate)]
  if linesearch is not None:
    if linesearch not in ls.LINESEARCHES:
      raise ValueError(
          f"Unknown linesearch {linesearch!r}; valid: None, {', '.join(ls.LINESEARCHES)}.")
    kwargs = {**defaults.get(linesearch, {}), **(linesearch_kwargs or {})}
    parts.append(ls.LINESEARCHES[linesearch](**kwargs))
  return optax.chain(*parts)


def newton(learning_rate: ScalarOrSchedule = 1.0,
           method: str = "auto",
           damping: float = 0.0,
           linesearch: Optional[str] = "armijo",
           linesearch_kwargs: Optional[dict[str, Any]] = None,
           **newton_kwargs: Any) -> optax.GradientTransformationExtraArgs:
  r"""Newton's method ``x <- x - a (H + lambda I)^{-1} g`` with a line search.

  ``learning_rate`` is the first trial step (1.0: the full Newton step);
  backtracking Armijo by default (``'wolfe'`` or None also accepted). See
  :func:`scale_by_newton` for ``method`` ('exact' | 'cg' | 'auto'), damping
  and the CG options (``newton_kwargs``). Nocedal & Wright, Chapters 3.3, 7.1.

  Example:
    >>> opt = newton()
    >>> # updates, state = opt.update(g, state, params, value=v, grad=g, value_fn=f)
  """
  return _with_linesearch(scale_by_newton(method=method, damping=damping, **newton_kwargs),
                          learning_rate, linesearch, linesearch_kwargs, {})


def newton_cg(learning_rate: ScalarOrSchedule = 1.0, **kwargs: Any
              ) -> optax.GradientTransformationExtraArgs:
  """Hessian-free Newton-CG (Martens 2010): :func:`newton` with ``method='cg'``."""
  return newton(learning_rate, method="cg", **kwargs)


def bfgs(learning_rate: ScalarOrSchedule = 1.0,
         linesearch: Optional[str] = "wolfe",
         linesearch_kwargs: Optional[dict[str, Any]] = None,
         min_curvature: float = 1e-10) -> optax.GradientTransformationExtraArgs:
  r"""BFGS: ``x <- x - a H_k g_k`` with a strong-Wolfe line search.

  ``learning_rate`` is the first trial step (1.0: the quasi-Newton step, as
  N&W recommend). Wolfe ``c1 = 1e-4, c2 = 0.9``. See :func:`scale_by_bfgs`.
  Nocedal & Wright, Algorithm 6.1.
  """
  return _with_linesearch(scale_by_bfgs(min_curvature), learning_rate, linesearch,
                          linesearch_kwargs, {})


def lbfgs(learning_rate: ScalarOrSchedule = 1.0,
          memory_size: int = 10,
          linesearch: Optional[str] = "wolfe",
          linesearch_kwargs: Optional[dict[str, Any]] = None,
          min_curvature: float = 1e-10) -> optax.GradientTransformationExtraArgs:
  r"""L-BFGS (two-loop recursion, ``memory_size`` pairs) with a strong-Wolfe search.

  ``learning_rate`` is the first trial step (1.0 as in N&W). Unlike
  ``optax.lbfgs`` the Wolfe search starts every iteration from step 1 (no
  step memory). See :func:`scale_by_lbfgs`. Nocedal & Wright, Algorithm 7.5.
  """
  return _with_linesearch(scale_by_lbfgs(memory_size, min_curvature), learning_rate,
                          linesearch, linesearch_kwargs, {})


def conjugate_gradient(learning_rate: ScalarOrSchedule = 1.0,
                       beta: str = "prp+",
                       restart_every: Optional[int] = None,
                       linesearch: Optional[str] = "wolfe",
                       linesearch_kwargs: Optional[dict[str, Any]] = None
                       ) -> optax.GradientTransformationExtraArgs:
  r"""Nonlinear CG ``x <- x + a d_k``, ``d_k = -g_k + beta_k d_{k-1}``.

  Strong-Wolfe search with ``c2 = 0.1`` (N&W's choice for CG),
  ``initial_guess='slope_ratio'`` (N&W eq. 3.60) and ``exact_quadratic=True``
  (the first trial is the secant minimiser from that probe, which makes the
  search exact on quadratics); ``learning_rate`` scales the very first probe. See :func:`scale_by_nonlinear_cg` for ``beta`` and
  restarts. Nocedal & Wright, Algorithm 5.4.
  """
  wolfe = {"curv_rtol": 0.1, "exact_quadratic": True, "initial_guess": "slope_ratio"}
  defaults = {"wolfe": wolfe, "strong_wolfe": wolfe}
  return _with_linesearch(scale_by_nonlinear_cg(beta, restart_every), learning_rate,
                          linesearch, linesearch_kwargs, defaults)


# Registry family "optimizer" (merged with alias.REGISTRY in optim/__init__.py).
REGISTRY: dict[str, Callable[..., optax.GradientTransformation]] = {
    "newton": newton,
    "newton_cg": newton_cg,
    "bfgs": bfgs,
    "lbfgs": lbfgs,
    "conjugate_gradient": conjugate_gradient,
}
