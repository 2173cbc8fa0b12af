"""First-order ``scale_by_*`` primitives, written from their update rules.

Each primitive is an ``optax.GradientTransformation``: a NamedTuple state plus
``init_fn``/``update_fn`` closed over the hyperparameters. A primitive only
rescales the gradient; the aliases in ``flaxopt.optim.alias`` chain it with the
(negated) learning rate. None leaves in the gradient pass through untouched.

Conventions shared by every primitive here:

* Where a paper leaves a choice open, we follow PyTorch's ``torch.optim``
  (eps outside the square root, Adagrad accumulator starting at 0, momentum as
  ``v = mu v + g``). Where optax differs, the docstring says so and, where
  users want both, a flag selects optax's form (``eps_root`` puts an epsilon
  inside the square root).
* Dtype policy: moments are stored in the parameter (gradient) dtype, as in
  PyTorch and optax; the arithmetic of one step runs in
  ``promote_types(dtype, float32)`` (so bfloat16 moments are updated in float32
  and rounded once), and updates are returned in the gradient dtype. Step
  counters are int32 scalars, incremented with ``optax.safe_int32_increment``.
* Hyperparameters are plain arguments that may be Python numbers or arrays, so
  every primitive works inside ``optax.inject_hyperparams`` and under
  ``jax.vmap`` over stacked hyperparameters. Python numbers and concrete
  arrays (every element) are validated at construction time (ValueError naming
  the argument and value); traced values cannot be and are not.
"""

from __future__ import annotations

from typing import Any, NamedTuple, Optional

import jax
import jax.numpy as jnp
import optax

from flaxopt.optim._utils import ScalarLike
from flaxopt.optim._utils import ScalarOrSchedule
from flaxopt.optim._utils import check_decay
from flaxopt.optim._utils import check_in_range
from flaxopt.optim._utils import check_nonneg
from flaxopt.optim._utils import compute_dtype
from flaxopt.optim._utils import tree_map_none
from flaxopt.optim._utils import tree_unzip

__all__ = [
    "scale_by_learning_rate",
    "ScaleByMomentumState",
    "ScaleByAdagradState",
    "ScaleByAdadeltaState",
    "ScaleByRmspropState",
    "ScaleByAdamState",
    "ScaleByNadamState",
    "ScaleByAmsgradState",
    "ScaleByAdafactorState",
    "scale_by_momentum",
    "scale_by_nesterov",
    "scale_by_adagrad",
    "scale_by_adadelta",
    "scale_by_rmsprop",
    "scale_by_adam",
    "scale_by_adamax",
    "scale_by_nadam",
    "scale_by_amsgrad",
    "scale_by_adafactor",
]

# ----------------------------------------------------------------------------
# Per-leaf helpers (argument checks, dtype rule and tree maps: ``_utils``).
# ----------------------------------------------------------------------------


def _zeros(params: Any) -> Any:
  return tree_map_none(jnp.zeros_like, params)


def _count() -> jax.Array:
  return jnp.zeros([], jnp.int32)


def _bias_correction(decay: ScalarLike, count: jax.Array, dtype) -> jax.Array:
  """``1 - decay**t`` computed in ``dtype`` as ``-expm1(t log(decay))``.

  The same number without the cancellation of ``1 - decay**t`` for ``decay`` near 1
  (e.g. ``b2 = 0.999``: a one-ulp error in ``decay**t`` was a 3e-5 relative error in
  float32), so the result no longer depends on how XLA evaluates the power.
  """
  return -jnp.expm1(count.astype(dtype) * jnp.log(jnp.asarray(decay, dtype)))


def _ema(decay: ScalarLike, moment: jax.Array, value: jax.Array) -> jax.Array:
  """``decay * moment + (1 - decay) * value`` in the compute dtype."""
  return decay * moment.astype(value.dtype) + (1 - decay) * value


def _rsqrt_eps(v: jax.Array, eps: ScalarLike, eps_root: ScalarLike) -> jax.Array:
  """``1 / (sqrt(v + eps_root) + eps)``: eps outside (PyTorch), eps_root inside (optax)."""
  return 1 / (jnp.sqrt(v + eps_root) + eps)


# ----------------------------------------------------------------------------
# The learning rate (descent direction).
# ----------------------------------------------------------------------------


def scale_by_learning_rate(learning_rate: ScalarOrSchedule) -> optax.GradientTransformation:
  r"""Descent step: ``u -> -lr_t u``, returned in the dtype of ``u``.

  Same math and state as ``optax.scale_by_learning_rate`` (a
  ``ScaleByScheduleState`` count for schedules, ``EmptyState`` for constants),
  but a learning rate that is a wider array than the update (float32 under
  ``optax.inject_hyperparams(..., hyperparam_dtype=jnp.float32)`` or from a
  schedule) does not promote bfloat16 updates to float32.

  Args:
    learning_rate: a float, a 0-d array, or an optax schedule ``count -> lr``.

  Returns:
    An ``optax.GradientTransformation``.
  """
  def scale(updates, lr):
    return tree_map_none(lambda u: (u * -lr).astype(u.dtype), updates)

  if callable(learning_rate):
    def init_fn(params):
      del params
      return optax.ScaleByScheduleState(count=_count())

    def update_fn(updates, state, params=None):
      del params
      new_state = optax.ScaleByScheduleState(optax.safe_int32_increment(state.count))
      return scale(updates, learning_rate(state.count)), new_state

    return optax.GradientTransformation(init_fn, update_fn)

  def update_constant(updates, state, params=None):
    del params
    return scale(updates, learning_rate), state

  return optax.GradientTransformation(optax.init_empty_state, update_constant)


# ----------------------------------------------------------------------------
# Momentum (Polyak 1964) and Nesterov momentum (Sutskever et al. 2013).
# ----------------------------------------------------------------------------


class ScaleByMomentumState(NamedTuple):
  """Velocity ``v`` (param dtype)."""
  velocity: Any


def _velocity_transform(momentum: ScalarLike, nesterov: bool
                        ) -> optax.GradientTransformation:
  check_decay("momentum", momentum)

  def init_fn(params):
    return ScaleByMomentumState(velocity=_zeros(params))

  def update_fn(updates, state, params=None):
    del params

    def leaf(g, v, dtype):
      g = g.astype(compute_dtype(g))
      v = momentum * v.astype(g.dtype) + g
      u = g + momentum * v if nesterov else v
      return u.astype(dtype), v.astype(dtype)

    out = tree_map_none(lambda g, v: leaf(g, v, g.dtype), updates, state.velocity)
    u, v = tree_unzip(out, updates, 2)
    return u, ScaleByMomentumState(velocity=v)

  return optax.GradientTransformation(init_fn, update_fn)


def scale_by_momentum(momentum: ScalarLike = 0.9) -> optax.GradientTransformation:
  r"""Heavy-ball momentum: ``v_t = mu v_{t-1} + g_t``, update ``v_t``.

  With the learning rate applied afterwards, ``x_{t+1} = x_t - lr v_t``: the
  form of PyTorch's ``SGD(momentum=mu, dampening=0)`` and of
  ``optax.sgd(momentum=mu)`` (``optax.trace``), which Polyak's
  ``x_{t+1} = x_t - a g_t + b (x_t - x_{t-1})`` equals for a constant step.

  Args:
    momentum: ``mu`` in [0, 1).

  Returns:
    An ``optax.GradientTransformation``; state ``ScaleByMomentumState``.

  Example:
    >>> tx = scale_by_momentum(0.9)
    >>> state = tx.init(jnp.zeros(3))

  Reference: Polyak, "Some methods of speeding up the convergence of iteration
  methods", 1964.
  """
  return _velocity_transform(momentum, nesterov=False)


def scale_by_nesterov(momentum: ScalarLike = 0.9) -> optax.GradientTransformation:
  r"""Nesterov momentum, PyTorch form: ``v_t = mu v_{t-1} + g_t``, update ``g_t + mu v_t``.

  This is the reformulation of Sutskever et al. (2013) used by PyTorch's
  ``SGD(nesterov=True)`` and ``optax.sgd(nesterov=True)``: the gradient is
  taken at the current iterate and the look-ahead is folded into the update.

  Args:
    momentum: ``mu`` in [0, 1).

  Returns:
    An ``optax.GradientTransformation``; state ``ScaleByMomentumState``.

  Reference: Sutskever, Martens, Dahl & Hinton, "On the importance of
  initialization and momentum in deep learning", ICML 2013.
  """
  return _velocity_transform(momentum, nesterov=True)


# ----------------------------------------------------------------------------
# Adagrad (Duchi, Hazan & Singer 2011).
# ----------------------------------------------------------------------------


class ScaleByAdagradState(NamedTuple):
  """Sum of squared gradients (param dtype)."""
  sum_of_squares: Any


def scale_by_adagrad(initial_accumulator_value: ScalarLike = 0.0,
                     eps: ScalarLike = 1e-10,
                     eps_root: ScalarLike = 0.0) -> optax.GradientTransformation:
  r"""Adagrad: ``s_t = s_{t-1} + g_t^2``, update ``g_t / (sqrt(s_t + eps_root) + eps)``.

  Defaults follow PyTorch's ``Adagrad`` (``s_0 = 0``, ``eps = 1e-10`` outside
  the root). optax's ``adagrad`` starts at ``s_0 = 0.1`` with ``eps = 1e-7``
  inside the root: ``scale_by_adagrad(0.1, eps=0, eps_root=1e-7)`` matches it
  (optax also returns 0 where ``s_t = 0``).

  Args:
    initial_accumulator_value: ``s_0`` (>= 0).
    eps: added to ``sqrt(s_t)`` (>= 0).
    eps_root: added to ``s_t`` inside the root (>= 0).

  Returns:
    An ``optax.GradientTransformation``; state ``ScaleByAdagradState``.

  Reference: Duchi, Hazan & Singer, "Adaptive Subgradient Methods for Online
  Learning and Stochastic Optimization", JMLR 2011.
  """
  check_nonneg("initial_accumulator_value", initial_accumulator_value)
  check_nonneg("eps", eps)
  check_nonneg("eps_root", eps_root)

  def init_fn(params):
    return ScaleByAdagradState(sum_of_squares=tree_map_none(
        lambda p: jnp.full_like(p, initial_accumulator_value), params))

  def update_fn(updates, state, params=None):
    del params

    def leaf(g, s):
      g32 = g.astype(compute_dtype(g))
      s = s.astype(g32.dtype) + g32 * g32
      return (g32 * _rsqrt_eps(s, eps, eps_root)).astype(g.dtype), s.astype(g.dtype)

    out = tree_map_none(leaf, updates, state.sum_of_squares)
    u, s = tree_unzip(out, updates, 2)
    return u, ScaleByAdagradState(sum_of_squares=s)

  return optax.GradientTransformation(init_fn, update_fn)


# ----------------------------------------------------------------------------
# Adadelta (Zeiler 2012).
# ----------------------------------------------------------------------------


class ScaleByAdadeltaState(NamedTuple):
  """Running averages of ``g^2`` and of ``delta^2`` (param dtype)."""
  square_avg: Any
  acc_delta: Any


def scale_by_adadelta(rho: ScalarLike = 0.9,
                      eps: ScalarLike = 1e-6) -> optax.GradientTransformation:
  r"""Adadelta: ``delta_t = sqrt(E[dx^2]_{t-1} + eps) / sqrt(E[g^2]_t + eps) * g_t``.

  ``E[g^2]_t = rho E[g^2]_{t-1} + (1 - rho) g_t^2`` and
  ``E[dx^2]_t = rho E[dx^2]_{t-1} + (1 - rho) delta_t^2`` (accumulated before
  any learning rate, as in PyTorch's and optax's ``Adadelta``). Zeiler's
  Algorithm 1 has no learning rate; the alias multiplies by one (PyTorch
  default 1.0), which the paper's rule is the case ``learning_rate=1``.

  Args:
    rho: decay in [0, 1).
    eps: inside both roots (> 0 to leave the first step non-zero).

  Returns:
    An ``optax.GradientTransformation``; state ``ScaleByAdadeltaState``.

  Reference: Zeiler, "ADADELTA: An Adaptive Learning Rate Method", 2012.
  """
  check_decay("rho", rho)
  check_nonneg("eps", eps)

  def init_fn(params):
    return ScaleByAdadeltaState(square_avg=_zeros(params), acc_delta=_zeros(params))

  def update_fn(updates, state, params=None):
    del params

    def leaf(g, sq, acc):
      g32 = g.astype(compute_dtype(g))
      sq = _ema(rho, sq, g32 * g32)
      delta = jnp.sqrt(acc.astype(g32.dtype) + eps) / jnp.sqrt(sq + eps) * g32
      acc = _ema(rho, acc, delta * delta)
      return delta.astype(g.dtype), sq.astype(g.dtype), acc.astype(g.dtype)

    out = tree_map_none(leaf, updates, state.square_avg, state.acc_delta)
    u, sq, acc = tree_unzip(out, updates, 3)
    return u, ScaleByAdadeltaState(square_avg=sq, acc_delta=acc)

  return optax.GradientTransformation(init_fn, update_fn)


# ----------------------------------------------------------------------------
# RMSprop (Tieleman & Hinton 2012).
# ----------------------------------------------------------------------------


class ScaleByRmspropState(NamedTuple):
  """Step count, ``E[g^2]``, ``E[g]`` (centered, else None), momentum buffer (or None)."""
  count: jax.Array
  nu: Any
  grad_avg: Any
  momentum_buffer: Any


def scale_by_rmsprop(decay: ScalarLike = 0.99,
                     eps: ScalarLike = 1e-8,
                     eps_root: ScalarLike = 0.0,
                     centered: bool = False,
                     momentum: Optional[ScalarLike] = None,
                     bias_correction: bool = False) -> optax.GradientTransformation:
  r"""RMSprop: update ``g_t / (sqrt(nu_t + eps_root) + eps)``, ``nu_t`` an EMA of ``g^2``.

  ``nu_t = a nu_{t-1} + (1 - a) g_t^2``.

  ``centered=True`` replaces ``nu_t`` by ``nu_t - m_t^2`` with
  ``m_t = a m_{t-1} + (1 - a) g_t`` (Graves 2013). With ``momentum`` the
  update is the buffer ``b_t = momentum b_{t-1} + g_t / (...)`` (PyTorch's
  form: the buffer holds learning-rate-free steps). ``bias_correction``
  divides ``nu_t`` (and ``m_t``) by ``1 - a^t``.

  Defaults follow PyTorch's ``RMSprop`` (``alpha=0.99``, eps=1e-8 outside the
  root, no momentum buffer). optax's ``rmsprop`` uses ``decay=0.9`` and puts
  eps inside the root (``eps_in_sqrt=True``): ``scale_by_rmsprop(0.9, eps=0,
  eps_root=1e-8)`` matches it; optax applies its momentum after the learning
  rate, which agrees with ours for a constant learning rate.

  Args:
    decay: ``a`` in [0, 1) (PyTorch's ``alpha``).
    eps: added to the root (>= 0).
    eps_root: added inside the root (>= 0).
    centered: subtract the squared running mean of the gradient.
    momentum: None for no buffer (PyTorch ``momentum=0``), else in [0, 1).
    bias_correction: divide the running averages by ``1 - a^t``.

  Returns:
    An ``optax.GradientTransformation``; state ``ScaleByRmspropState``.

  Reference: Tieleman & Hinton, Lecture 6.5 "rmsprop", COURSERA: Neural
  Networks for Machine Learning, 2012; Graves, "Generating Sequences With
  Recurrent Neural Networks", 2013 (centered form).
  """
  check_decay("decay", decay)
  check_nonneg("eps", eps)
  check_nonneg("eps_root", eps_root)
  if momentum is not None:
    check_decay("momentum", momentum)

  def init_fn(params):
    return ScaleByRmspropState(
        count=_count(),
        nu=_zeros(params),
        grad_avg=_zeros(params) if centered else None,
        momentum_buffer=_zeros(params) if momentum is not None else None)

  def update_fn(updates, state, params=None):
    del params
    count = optax.safe_int32_increment(state.count)
    grad_avg = state.grad_avg if centered else updates
    buf = state.momentum_buffer if momentum is not None else updates

    def leaf(g, nu, m, b):
      g32 = g.astype(compute_dtype(g))
      nu = _ema(decay, nu, g32 * g32)
      bc = _bias_correction(decay, count, g32.dtype) if bias_correction else 1
      var = nu / bc
      if centered:
        m = _ema(decay, m, g32)
        var = var - (m / bc) ** 2
      u = g32 * _rsqrt_eps(var, eps, eps_root)
      if momentum is not None:
        b = momentum * b.astype(g32.dtype) + u
        u = b
      return u.astype(g.dtype), nu.astype(g.dtype), m.astype(g.dtype), b.astype(g.dtype)

    out = tree_map_none(leaf, updates, state.nu, grad_avg, buf)
    u, nu, m, b = tree_unzip(out, updates, 4)
    return u, ScaleByRmspropState(
        count=count, nu=nu, grad_avg=m if centered else None,
        momentum_buffer=b if momentum is not None else None)

  return optax.GradientTransformation(init_fn, update_fn)


# ----------------------------------------------------------------------------
# Adam, AdaMax (Kingma & Ba 2015), AMSGrad (Reddi et al. 2018).
# ----------------------------------------------------------------------------


class ScaleByAdamState(NamedTuple):
  """Step count, first moment ``mu``, ``nu``: second moment (Adam) or ``u`` (AdaMax)."""
  count: jax.Array
  mu: Any
  nu: Any


def _check_adam_args(b1, b2, eps, eps_root=0.0) -> None:
  check_decay("b1", b1)
  check_decay("b2", b2)
  check_nonneg("eps", eps)
  check_nonneg("eps_root", eps_root)


def scale_by_adam(b1: ScalarLike = 0.9,
                  b2: ScalarLike = 0.999,
                  eps: ScalarLike = 1e-8,
                  eps_root: ScalarLike = 0.0,
                  bias_correction: bool = True) -> optax.GradientTransformation:
  r"""Adam: update ``m_hat / (sqrt(v_hat + eps_root) + eps)``.

  ``m_t = b1 m_{t-1} + (1 - b1) g_t``, ``v_t = b2 v_{t-1} + (1 - b2) g_t^2``,
  ``m_hat = m_t / (1 - b1^t)``, ``v_hat = v_t / (1 - b2^t)``
  (``bias_correction=False`` skips both divisions). Same conventions and
  defaults as PyTorch's ``Adam`` and optax's ``adam`` (eps outside the root).

  Args:
    b1: first-moment decay in [0, 1).
    b2: second-moment decay in [0, 1).
    eps: added to the root (>= 0).
    eps_root: added inside the root (>= 0).
    bias_correction: divide the moments by ``1 - b^t``.

  Returns:
    An ``optax.GradientTransformation``; state ``ScaleByAdamState``.

  Reference: Kingma & Ba, "Adam: A Method for Stochastic Optimization",
  ICLR 2015, Algorithm 1.
  """
  _check_adam_args(b1, b2, eps, eps_root)

  def init_fn(params):
    return ScaleByAdamState(count=_count(), mu=_zeros(params), nu=_zeros(params))

  def update_fn(updates, state, params=None):
    del params
    count = optax.safe_int32_increment(state.count)

    def leaf(g, m, v):
      g32 = g.astype(compute_dtype(g))
      m = _ema(b1, m, g32)
      v = _ema(b2, v, g32 * g32)
      if bias_correction:
        m_hat = m / _bias_correction(b1, count, g32.dtype)
        v_hat = v / _bias_correction(b2, count, g32.dtype)
      else:
        m_hat, v_hat = m, v
      u = m_hat * _rsqrt_eps(v_hat, eps, eps_root)
      return u.astype(g.dtype), m.astype(g.dtype), v.astype(g.dtype)

    out = tree_map_none(leaf, updates, state.mu, state.nu)
    u, m, v = tree_unzip(out, updates, 3)
    return u, ScaleByAdamState(count=count, mu=m, nu=v)

  return optax.GradientTransformation(init_fn, update_fn)


def scale_by_adamax(b1: ScalarLike = 0.9,
                    b2: ScalarLike = 0.999,
                    eps: ScalarLike = 1e-8) -> optax.GradientTransformation:
  r"""AdaMax: ``u_t = max(b2 u_{t-1}, |g_t| + eps)``, update ``m_t / ((1 - b1^t) u_t)``.

  ``m_t = b1 m_{t-1} + (1 - b1) g_t``. The paper's Algorithm 2 has no eps;
  like PyTorch's ``Adamax`` and optax's ``adamax`` we add it inside the max,
  which keeps ``u_t > 0``.

  Args:
    b1: first-moment decay in [0, 1).
    b2: infinity-norm decay in [0, 1).
    eps: added to ``|g_t|`` inside the max (>= 0).

  Returns:
    An ``optax.GradientTransformation``; state ``ScaleByAdamState`` (``nu`` is ``u``).

  Reference: Kingma & Ba, "Adam: A Method for Stochastic Optimization",
  ICLR 2015, Section 7.1.
  """
  _check_adam_args(b1, b2, eps)

  def init_fn(params):
    return ScaleByAdamState(count=_count(), mu=_zeros(params), nu=_zeros(params))

  def update_fn(updates, state, params=None):
    del params
    count = optax.safe_int32_increment(state.count)

    def leaf(g, m, u):
      g32 = g.astype(compute_dtype(g))
      m = _ema(b1, m, g32)
      u = jnp.maximum(b2 * u.astype(g32.dtype), jnp.abs(g32) + eps)
      step = m / _bias_correction(b1, count, g32.dtype) / u
      return step.astype(g.dtype), m.astype(g.dtype), u.astype(g.dtype)

    out = tree_map_none(leaf, updates, state.mu, state.nu)
    u, m, v = tree_unzip(out, updates, 3)
    return u, ScaleByAdamState(count=count, mu=m, nu=v)

  return optax.GradientTransformation(init_fn, update_fn)


class ScaleByAmsgradState(NamedTuple):
  """Step count, moments ``mu``, ``nu`` and the running maximum ``nu_max``."""
  count: jax.Array
  mu: Any
  nu: Any
  nu_max: Any


def scale_by_amsgrad(b1: ScalarLike = 0.9,
                     b2: ScalarLike = 0.999,
                     eps: ScalarLike = 1e-8,
                     eps_root: ScalarLike = 0.0,
                     correct_before_max: bool = False) -> optax.GradientTransformation:
  r"""AMSGrad: Adam with the running maximum ``vmax_t = max(vmax_{t-1}, v_t)``.

  Update ``m_hat / (sqrt(vmax_t / (1 - b2^t) + eps_root) + eps)``.

  Moments as in Adam. The default (the running max of the raw ``v_t``,
  bias-corrected after the max) is PyTorch's ``Adam(amsgrad=True)``. Reddi et
  al. use no bias correction at all; optax's ``amsgrad`` takes the max of the
  bias-corrected ``v_t / (1 - b2^t)``, selected here by
  ``correct_before_max=True``.

  Args:
    b1: first-moment decay in [0, 1).
    b2: second-moment decay in [0, 1).
    eps: added to the root (>= 0).
    eps_root: added inside the root (>= 0).
    correct_before_max: optax's form (max of bias-corrected second moments).

  Returns:
    An ``optax.GradientTransformation``; state ``ScaleByAmsgradState``.

  Reference: Reddi, Kale & Kumar, "On the Convergence of Adam and Beyond",
  ICLR 2018, Algorithm 2.
  """
  _check_adam_args(b1, b2, eps, eps_root)

  def init_fn(params):
    return ScaleByAmsgradState(
        count=_count(), mu=_zeros(params), nu=_zeros(params), nu_max=_zeros(params))

  def update_fn(updates, state, params=None):
    del params
    count = optax.safe_int32_increment(state.count)

    def leaf(g, m, v, vmax):
      g32 = g.astype(compute_dtype(g))
      m = _ema(b1, m, g32)
      v = _ema(b2, v, g32 * g32)
      bc2 = _bias_correction(b2, count, g32.dtype)
      if correct_before_max:
        vmax = jnp.maximum(vmax.astype(g32.dtype), v / bc2)
        v_hat = vmax
      else:
        vmax = jnp.maximum(vmax.astype(g32.dtype), v)
        v_hat = vmax / bc2
      m_hat = m / _bias_correction(b1, count, g32.dtype)
      u = m_hat * _rsqrt_eps(v_hat, eps, eps_root)
      return tuple(x.astype(g.dtype) for x in (u, m, v, vmax))

    out = tree_map_none(leaf, updates, state.mu, state.nu, state.nu_max)
    u, m, v, vmax = tree_unzip(out, updates, 4)
    return u, ScaleByAmsgradState(count=count, mu=m, nu=v, nu_max=vmax)

  return optax.GradientTransformation(init_fn, update_fn)


# ----------------------------------------------------------------------------
# NAdam (Dozat 2016), PyTorch's momentum schedule.
# ----------------------------------------------------------------------------


class ScaleByNadamState(NamedTuple):
  """Step count, ``prod_{i<=t} mu_i`` (float32, float64 for float64 params), moments."""
  count: jax.Array
  mu_product: jax.Array
  mu: Any
  nu: Any


def scale_by_nadam(b1: ScalarLike = 0.9,
                   b2: ScalarLike = 0.999,
                   eps: ScalarLike = 1e-8,
                   eps_root: ScalarLike = 0.0,
                   momentum_decay: ScalarLike = 4e-3,
                   constant_momentum: bool = False) -> optax.GradientTransformation:
  r"""NAdam with Dozat's momentum schedule (PyTorch's ``NAdam``).

  ``mu_t = b1 (1 - 0.5 * 0.96^(t * momentum_decay))``, ``P_t = prod_{i<=t} mu_i``,
  ``m_t = b1 m_{t-1} + (1 - b1) g_t``, ``v_t = b2 v_{t-1} + (1 - b2) g_t^2``,
  ``d_t = sqrt(v_t / (1 - b2^t) + eps_root) + eps``; update
  ``[(1 - mu_t) / (1 - P_t) g_t + mu_{t+1} / (1 - P_t mu_{t+1}) m_t] / d_t``.

  ``constant_momentum=True`` sets ``mu_t = b1`` for all t, which is optax's
  ``nadam`` (``scale_by_adam(nesterov=True)``): optax has no schedule.

  Args:
    b1: first-moment decay in [0, 1).
    b2: second-moment decay in [0, 1).
    eps: added to the root (>= 0).
    eps_root: added inside the root (>= 0).
    momentum_decay: ``psi`` of the schedule (>= 0; PyTorch default 4e-3).
    constant_momentum: use ``mu_t = b1`` (optax's form).

  Returns:
    An ``optax.GradientTransformation``; state ``ScaleByNadamState``.

  Reference: Dozat, "Incorporating Nesterov Momentum into Adam", ICLR 2016
  workshop.
  """
  _check_adam_args(b1, b2, eps, eps_root)
  check_nonneg("momentum_decay", momentum_decay)

  def init_fn(params):
    return ScaleByNadamState(
        count=_count(), mu_product=jnp.ones([], compute_dtype(params)),
        mu=_zeros(params), nu=_zeros(params))

  def update_fn(updates, state, params=None):
    del params
    count = optax.safe_int32_increment(state.count)
    sdt = state.mu_product.dtype
    t = count.astype(sdt)
    if constant_momentum:
      mu_t = mu_next = jnp.asarray(b1, sdt)
    else:
      mu_t = b1 * (1 - 0.5 * 0.96 ** (t * momentum_decay))
      mu_next = b1 * (1 - 0.5 * 0.96 ** ((t + 1) * momentum_decay))
    mu_product = (state.mu_product * mu_t).astype(sdt)
    coef_g = (1 - mu_t) / (1 - mu_product)
    coef_m = mu_next / (1 - mu_product * mu_next)

    def leaf(g, m, v):
      g32 = g.astype(compute_dtype(g))
      m = _ema(b1, m, g32)
      v = _ema(b2, v, g32 * g32)
      inv_d = _rsqrt_eps(v / _bias_correction(b2, count, g32.dtype), eps, eps_root)
      u = (coef_g.astype(g32.dtype) * g32 + coef_m.astype(g32.dtype) * m) * inv_d
      return u.astype(g.dtype), m.astype(g.dtype), v.astype(g.dtype)

    out = tree_map_none(leaf, updates, state.mu, state.nu)
    u, m, v = tree_unzip(out, updates, 3)
    return u, ScaleByNadamState(count=count, mu_product=mu_product, mu=m, nu=v)

  return optax.GradientTransformation(init_fn, update_fn)


# ----------------------------------------------------------------------------
# Adafactor (Shazeer & Stern 2018).
# ----------------------------------------------------------------------------


class ScaleByAdafactorState(NamedTuple):
  """Step count; per leaf: row/column means of ``g^2`` (factored leaves, else
  0-d placeholders), full ``v`` (unfactored leaves, else a 0-d placeholder),
  first moment ``m`` (None without ``beta1``). All in param dtype."""
  count: jax.Array
  v_row: Any
  v_col: Any
  v: Any
  m: Any


def _is_factored(x: jax.Array, factored: bool) -> bool:
  return factored and x.ndim >= 2


def _rms(x: jax.Array) -> jax.Array:
  return jnp.sqrt(jnp.mean(x * x))


def scale_by_adafactor(decay_rate: ScalarLike = 0.8,
                       clipping_threshold: Optional[ScalarLike] = 1.0,
                       beta1: Optional[ScalarLike] = None,
                       eps1: ScalarLike = 1e-30,
                       eps2: ScalarLike = 1e-3,
                       multiply_by_parameter_scale: bool = True,
                       factored: bool = True) -> optax.GradientTransformation:
  r"""Adafactor's rescaling (Shazeer & Stern 2018, Algorithms 4 and 5).

  With ``t`` the step (from 1) and ``b_t = 1 - t^(-decay_rate)``, for a leaf of
  rank >= 2 (factored over its last two axes, leading axes batched):
  ``R_t = b_t R_{t-1} + (1 - b_t) mean_j(g^2 + eps1)``,
  ``C_t = b_t C_{t-1} + (1 - b_t) mean_i(g^2 + eps1)``,
  ``V_t = R_t C_t^T / mean_i(R_t)``; else ``V_t = b_t V_{t-1} + (1 - b_t)(g^2 + eps1)``.
  Then ``U = g / sqrt(V_t)``, clipped ``U / max(1, RMS(U) / d)``
  (``d = clipping_threshold``, None to skip), times ``max(eps2, RMS(x_{t-1}))``
  when ``multiply_by_parameter_scale``, and, with ``beta1``, averaged
  ``m_t = beta1 m_{t-1} + (1 - beta1) U``.

  We store row/column *means* (the mesh-tensorflow/optax convention); the
  paper's sums give the same ``V_t``. The relative step size
  ``rho_t = min(lr, 1/sqrt(t))`` is applied by the alias through the learning
  rate. Unlike optax's ``adafactor`` we factor every leaf of rank >= 2 over
  its last two axes (optax: the two largest axes, only when both are
  >= ``min_dim_size_to_factor=128``), and the first moment averages the
  update before the learning rate (optax and mesh-tf: after it; the same for
  a constant step size). PyTorch's ``Adafactor`` has no first moment.

  Args:
    decay_rate: ``c`` in ``b_t = 1 - t^-c`` (> 0; paper 0.8).
    clipping_threshold: ``d`` (> 0) or None.
    beta1: first-moment decay in [0, 1), or None for none (paper default).
    eps1: added to ``g^2`` (>= 0; paper 1e-30).
    eps2: lower bound of the parameter scale (>= 0; paper 1e-3).
    multiply_by_parameter_scale: scale by ``max(eps2, RMS(x))`` (needs params).
    factored: factor rank >= 2 leaves.

  Returns:
    An ``optax.GradientTransformation``; state ``ScaleByAdafactorState``.
    For an ``n x m`` matrix the second-moment state is ``n + m`` numbers.

  Reference: Shazeer & Stern, "Adafactor: Adaptive Learning Rates with
  Sublinear Memory Cost", ICML 2018.
  """
  check_in_range("decay_rate", decay_rate, 0.0, float("inf"), low_open=True)
  if clipping_threshold is not None:
    check_in_range("clipping_threshold", clipping_threshold, 0.0, float("inf"),
                   low_open=True)
  if beta1 is not None:
    check_decay("beta1", beta1)
  check_nonneg("eps1", eps1)
  check_nonneg("eps2", eps2)

  def init_fn(params):
    def placeholder(p):
      return jnp.zeros([], p.dtype)

    def v_row(p):
      return jnp.zeros(p.shape[:-1], p.dtype) if _is_factored(p, factored) else placeholder(p)

    def v_col(p):
      if _is_factored(p, factored):
        return jnp.zeros(p.shape[:-2] + p.shape[-1:], p.dtype)
      return placeholder(p)

    def v(p):
      return placeholder(p) if _is_factored(p, factored) else jnp.zeros_like(p)

    return ScaleByAdafactorState(
        count=_count(), v_row=tree_map_none(v_row, params), v_col=tree_map_none(v_col, params),
        v=tree_map_none(v, params), m=_zeros(params) if beta1 is not None else None)

  def update_fn(updates, state, params=None):
    if multiply_by_parameter_scale and params is None:
      raise ValueError("scale_by_adafactor(multiply_by_parameter_scale=True) needs "
                       "params in update(updates, state, params); got params=None.")
    count = optax.safe_int32_increment(state.count)
    m_state = state.m if beta1 is not None else updates
    p_tree = params if multiply_by_parameter_scale else updates

    def leaf(g, r, c, v, m, p):
      dt = compute_dtype(g)
      g32 = g.astype(dt)
      b_t = 1 - count.astype(dt) ** (-jnp.asarray(decay_rate, dt))
      g2 = g32 * g32 + eps1
      if _is_factored(g, factored):
        r = _ema(b_t, r, jnp.mean(g2, axis=-1))
        c = _ema(b_t, c, jnp.mean(g2, axis=-2))
        v_hat = (r / jnp.mean(r, axis=-1, keepdims=True))[..., :, None] * c[..., None, :]
      else:
        v = _ema(b_t, v, g2)
        v_hat = v
      u = g32 / jnp.sqrt(v_hat)
      if clipping_threshold is not None:
        u = u / jnp.maximum(1, _rms(u) / clipping_threshold)
      if multiply_by_parameter_scale:
        u = u * jnp.maximum(eps2, _rms(p.astype(dt)))
      if beta1 is not None:
        m = _ema(beta1, m, u)
        u = m
      return tuple(x.astype(g.dtype) for x in (u, r, c, v, m))

    out = tree_map_none(leaf, updates, state.v_row, state.v_col, state.v, m_state, p_tree)
    u, r, c, v, m = tree_unzip(out, updates, 5)
    return u, ScaleByAdafactorState(
        count=count, v_row=r, v_col=c, v=v, m=m if beta1 is not None else None)

  return optax.GradientTransformation(init_fn, update_fn)

