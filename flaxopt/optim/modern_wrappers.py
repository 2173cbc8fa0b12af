"""Wrappers around any optax transform: Lookahead (Zhang et al. 2019) and SAM (Foret et al. 2021).

Both take the inner optimizer as a ``GradientTransformation`` (with its learning rate) and
return one. The registry entries (``lookahead``, ``sam``) build the inner optimizer by
registry name: ``registry.get("optimizer", "lookahead", learning_rate=1e-3, base="adam",
sync_period=5, alpha=0.5, b1=0.9)`` (keywords the wrapper does not know go to the base).

SAM needs a second gradient, at the perturbed point. It gets it through optax's extra-args
convention: ``update(grads, state, params, *, value_fn)``, where ``value_fn(params)`` is the
loss on the current batch (what ``flaxopt.training.steps.train_step`` already passes to every
optimizer). The gradient at ``params + e`` is ``jax.grad(value_fn)``.
"""

from __future__ import annotations

from typing import Any, Callable, NamedTuple, Optional

import jax
import jax.numpy as jnp
import optax

from flaxopt.optim import modern_common as mc

__all__ = ["LookaheadState", "SamState", "lookahead", "sam"]

ScalarLike = mc.ScalarLike


# ----------------------------------------------------------------------------
# Lookahead (Zhang, Lucas, Hinton & Ba 2019).
# ----------------------------------------------------------------------------


class LookaheadState(NamedTuple):
  """Steps since the last synchronization, slow weights ``phi`` (param dtype), inner state."""
  count: jax.Array
  slow: Any
  inner_state: Any


def lookahead(inner: optax.GradientTransformation,
              sync_period: int = 5,
              alpha: ScalarLike = 0.5) -> optax.GradientTransformation:
  r"""Lookahead: ``k`` inner steps on the fast weights, then ``phi <- phi + alpha (theta - phi)``.

  The parameters the loop holds are the fast weights ``theta``. Each update applies the
  inner optimizer; on every ``k``-th update the slow weights move towards the fast ones and
  the fast weights are reset to them (the returned update is ``phi_new - theta``), so after
  a synchronization the parameters equal the slow weights. The inner state carries on
  across synchronizations (the paper's Algorithm 1, and ``pytorch-optimizer``'s
  ``Lookahead`` with ``pullback_momentum='none'``, which is matched to rtol 1e-8).
  ``optax.lookahead`` differs in interface: it keeps fast and slow weights together in a
  ``LookaheadParams`` parameter tree, whereas here the state holds the slow copy and the
  parameters are plain.

  Args:
    inner: any optax transform, learning rate included (the paper's ``A``).
    sync_period: ``k`` (int >= 1).
    alpha: slow step size in (0, 1] (``alpha = 1`` is the inner optimizer alone).

  Returns:
    An ``optax.GradientTransformationExtraArgs``; state ``LookaheadState``. Extra
    arguments go to ``inner``.

  Reference: Zhang, Lucas, Hinton & Ba, "Lookahead Optimizer: k steps forward, 1 step
  back", NeurIPS 2019, Algorithm 1.
  """
  mc.check_positive_int("sync_period", sync_period)
  mc.check_range("alpha", alpha, 0.0, 1.0, low_open=True, high_open=False)
  inner = optax.with_extra_args_support(inner)

  def init_fn(params):
    return LookaheadState(count=mc.count0(),
                          slow=mc.leaf_map(lambda p: jnp.array(p, copy=True), params),
                          inner_state=inner.init(params))

  def update_fn(updates, state, params=None, **extra_args):
    if params is None:
      raise ValueError("lookahead needs params (the fast weights).")
    inner_updates, inner_state = inner.update(updates, state.inner_state, params,
                                              **extra_args)
    count = optax.safe_int32_increment(state.count)
    sync = count >= sync_period

    def leaf(u, theta, phi):
      dt = mc.compute_dtype(theta)
      theta32, phi32 = theta.astype(dt), phi.astype(dt)
      fast = theta32 + u.astype(dt)
      new_slow = alpha * fast + (1 - alpha) * phi32
      out_u = jnp.where(sync, new_slow - theta32, u.astype(dt))
      return out_u.astype(u.dtype), jnp.where(sync, new_slow, phi32).astype(phi.dtype)

    out = mc.leaf_map(leaf, inner_updates, params, state.slow)
    new_updates, slow = mc.unzip(out, inner_updates, 2)
    return new_updates, LookaheadState(count=jnp.where(sync, 0, count).astype(jnp.int32),
                                       slow=slow, inner_state=inner_state)

  return optax.GradientTransformationExtraArgs(init_fn, update_fn)


# ----------------------------------------------------------------------------
# Sharpness-Aware Minimization (Foret, Kleiner, Mobahi & Neyshabur 2021).
# ----------------------------------------------------------------------------


class SamState(NamedTuple):
  """The inner optimizer's state."""
  inner_state: Any


def sam(inner: optax.GradientTransformation,
        rho: ScalarLike = 0.05,
        eps: ScalarLike = 1e-12,
        adaptive: bool = False) -> optax.GradientTransformation:
  r"""SAM: step the inner optimizer with ``grad L(w + e)``, ``e = rho g / (||g||_2 + eps)``.

  ``g`` is the minibatch gradient passed as ``updates`` and ``||g||_2`` its global norm over
  all leaves (the paper's ``p = 2`` solution, Eq. 2). The second gradient comes from the
  extra argument ``value_fn`` (the same minibatch's loss): ``update(grads, state, params, *,
  value_fn, **extra)``; the other extra arguments are passed to ``inner`` unchanged.
  ``adaptive=True`` is ASAM (Kwon et al. 2021): ``e = rho w^2 g / ||w g||_2`` elementwise.
  ``eps`` follows ``pytorch-optimizer``'s ``SAM`` (``rho / (||g|| + 1e-12)``; matched to
  rtol 1e-8 with a torch ``SGD``/``Adam`` base). ``optax.contrib.sam`` is a different
  interface: it alternates ascent and descent *updates* of the training loop (the extra
  gradient costs one loop step) instead of taking the extra gradient within one update.

  Args:
    inner: the base optimizer (learning rate included).
    rho: neighbourhood radius (>= 0; ``rho = 0`` is the inner optimizer).
    eps: added to the gradient norm (>= 0).
    adaptive: ASAM's parameter-scaled neighbourhood.

  Returns:
    An ``optax.GradientTransformationExtraArgs``; state ``SamState``.

  Reference: Foret, Kleiner, Mobahi & Neyshabur, "Sharpness-Aware Minimization for
  Efficiently Improving Generalization", ICLR 2021, Algorithm 1.
  """
  mc.check_nonneg("rho", rho)
  mc.check_nonneg("eps", eps)
  inner = optax.with_extra_args_support(inner)

  def init_fn(params):
    return SamState(inner_state=inner.init(params))

  def update_fn(updates, state, params=None, *, value_fn: Optional[Callable] = None,
                **extra_args):
    if params is None or value_fn is None:
      raise ValueError("sam needs params and the extra argument value_fn (the minibatch "
                       "loss): update(grads, state, params, value_fn=loss_fn).")
    scaled = updates if not adaptive else mc.leaf_map(lambda g, w: g * jnp.abs(w), updates,
                                                      params)
    norm = optax.global_norm(scaled)
    scale = rho / (norm + eps)

    def perturb(w, g):
      e = scale * g.astype(mc.compute_dtype(w))
      if adaptive:
        e = e * jnp.square(w.astype(e.dtype))
      return (w.astype(e.dtype) + e).astype(w.dtype)

    perturbed = mc.leaf_map(perturb, params, updates)
    sam_grads = jax.grad(value_fn)(perturbed)
    sam_grads = mc.leaf_map(lambda g, u: g.astype(u.dtype), sam_grads, updates)
    new_updates, inner_state = inner.update(sam_grads, state.inner_state, params,
                                            value_fn=value_fn, **extra_args)
    return new_updates, SamState(inner_state=inner_state)

  return optax.GradientTransformationExtraArgs(init_fn, update_fn)
