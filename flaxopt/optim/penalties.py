"""L1 / L2 parameter penalties as optax gradient transformations.

Three transforms, each composable with any optimizer in ``optax.chain``:

* ``add_l2(weight)``: coupled L2, ``g <- g + weight * w`` (the gradient of
  ``weight / 2 * sum w**2``, i.e. ``weight / 2 * F.l2_penalty``).
* ``add_l1(weight)``: L1 subgradient, ``g <- g + weight * sign(w)`` (the
  subgradient of ``weight * sum |w|``, i.e. ``weight * F.l1_penalty``).
* ``l1_prox(weight, learning_rate)`` (= ``add_l1(weight, proximal=True,
  learning_rate=...)``): soft-thresholding, placed LAST in the chain; gives
  exact zeros.

Coupled vs decoupled weight decay is a matter of chain order:

* ``optax.chain(add_l2(wd), optax.adam(lr))``: coupled L2 ("Adam + L2"). The
  decay term goes through Adam's preconditioner, so weights with large
  gradient history are decayed less.
* ``optax.chain(optax.scale_by_adam(), optax.add_decayed_weights(wd),
  optax.scale(-lr))``: decoupled weight decay (AdamW, Loshchilov & Hutter,
  2019): ``w <- w - lr * (adam_direction + wd * w)``, decay not preconditioned.
  Note ``optax.adamw`` multiplies the decay by the learning rate too.

For plain SGD both orders give the same update. Masks follow ``optax.masked``:
a pytree of bools matching the params (or a prefix), or a callable
``params -> mask``; leaves where the mask is False pass their updates through
untouched (use it to exclude biases and normalization scales).
"""

from __future__ import annotations

from typing import Any, Callable, NamedTuple, Optional, Union

import jax
import jax.numpy as jnp
import optax

from flaxopt.optim._utils import ScalarLike
from flaxopt.optim._utils import ScalarOrSchedule
from flaxopt.optim._utils import check_nonneg
from flaxopt.optim._utils import tree_map_none

__all__ = ["add_l1", "add_l2", "l1_prox", "L1ProxState"]

Mask = Union[Any, Callable[[Any], Any]]


def _maybe_mask(tx: optax.GradientTransformation,
                mask: Optional[Mask]) -> optax.GradientTransformation:
  return tx if mask is None else optax.masked(tx, mask)


def add_l2(weight: ScalarLike, mask: Optional[Mask] = None) -> optax.GradientTransformation:
  """Coupled L2 regularization: add ``weight * w`` to the gradient.

  Update: ``g <- g + weight * w``, the gradient of ``weight / 2 * sum w**2``
  (Krogh & Hertz, 1992, "A simple weight decay can improve generalization").
  ``add_l2(weight)`` equals adding ``weight / 2 * F.l2_penalty(params)`` to
  the loss (``F.l2_penalty`` has no 1/2 factor).

  Place it BEFORE the optimizer for coupled L2: ``optax.chain(add_l2(1e-4),
  optax.adam(1e-3))``. Decoupled decay (AdamW) instead puts
  ``optax.add_decayed_weights(wd)`` AFTER ``scale_by_adam`` and before the
  learning-rate scaling. Equivalent to ``optax.add_decayed_weights`` when
  used in the coupled position; unlike PyTorch's ``weight_decay`` argument it
  is a separate transform.

  Args:
    weight: non-negative coefficient.
    mask: optional ``optax.masked`` mask (pytree of bools or callable); False
      leaves are left untouched.

  Returns:
    An ``optax.GradientTransformation`` (needs ``params`` in ``update``).

  Raises:
    ValueError: negative weight.

  Example:
    >>> tx = optax.chain(add_l2(1e-4), optax.sgd(0.1))
  """
  check_nonneg("weight", weight)
  return _maybe_mask(_add_penalty_gradient(weight, lambda w: w), mask)


def _add_penalty_gradient(weight: ScalarLike, direction: Callable[[Any], Any]
                          ) -> optax.GradientTransformation:
  """Stateless ``g <- g + weight * direction(w)`` (needs ``params``)."""

  def init_fn(params):
    del params
    return optax.EmptyState()

  def update_fn(updates, state, params=None):
    if params is None:
      raise ValueError(optax._src.base.NO_PARAMS_MSG)  # pylint: disable=protected-access
    new = tree_map_none(
        lambda g, w: g + jnp.asarray(weight, g.dtype) * direction(w).astype(g.dtype),
        updates, params)
    return new, state

  return optax.GradientTransformation(init_fn, update_fn)


def _add_l1_subgradient(weight: ScalarLike) -> optax.GradientTransformation:
  return _add_penalty_gradient(weight, jnp.sign)


def add_l1(weight: ScalarLike, mask: Optional[Mask] = None, proximal: bool = False,
           learning_rate: Optional[ScalarOrSchedule] = None
           ) -> optax.GradientTransformation:
  """L1 regularization, by subgradient (default) or by the proximal operator.

  ``proximal=False``: ``g <- g + weight * sign(w)`` (``sign(0) = 0``), the
  subgradient of ``weight * sum |w|`` (Tibshirani, 1996). Place it before the
  optimizer, like ``add_l2``. Weights oscillate around zero but rarely hit it.

  ``proximal=True``: returns ``l1_prox(weight, learning_rate, mask)``, the
  soft-threshold step that sets weights to exactly zero. It needs the
  ``learning_rate`` (the same float or schedule the optimizer uses) and must
  be the LAST element of the chain, after the learning-rate scaling:
  ``optax.chain(optax.sgd(lr), add_l1(w, proximal=True, learning_rate=lr))``.

  Args:
    weight: non-negative coefficient of ``sum |w|``.
    mask: optional ``optax.masked`` mask; False leaves are left untouched.
    proximal: use the proximal (soft-threshold) form.
    learning_rate: required iff ``proximal``.

  Returns:
    An ``optax.GradientTransformation``.

  Raises:
    ValueError: negative weight; ``proximal`` without ``learning_rate`` or a
      ``learning_rate`` without ``proximal``.
  """
  check_nonneg("weight", weight)
  if proximal:
    if learning_rate is None:
      raise ValueError("add_l1(proximal=True) needs learning_rate (the optimizer's "
                       "learning rate or schedule); got learning_rate=None.")
    return l1_prox(weight, learning_rate, mask=mask)
  if learning_rate is not None:
    raise ValueError(f"learning_rate={learning_rate!r} is only used with proximal=True.")
  return _maybe_mask(_add_l1_subgradient(weight), mask)


class L1ProxState(NamedTuple):
  """Step counter of ``l1_prox`` (for learning-rate schedules)."""
  count: jax.Array


def l1_prox(weight: ScalarLike, learning_rate: ScalarOrSchedule,
            mask: Optional[Mask] = None) -> optax.GradientTransformation:
  """Proximal L1 step (soft-thresholding); place it LAST in the chain.

  Given the final update ``u`` of the rest of the chain (already scaled by
  ``-learning_rate``) it returns ``prox(w + u) - w`` with

    ``prox(z) = sign(z) * max(|z| - learning_rate * weight, 0)``,

  so ``optax.apply_updates`` lands exactly on the soft-thresholded point and
  small weights become exactly 0. With SGD this is ISTA / proximal gradient
  descent on ``loss + weight * sum |w|`` (Daubechies et al., 2004; Beck &
  Teboulle, 2009): ``w <- S_{lr*weight}(w - lr * grad)``.

  Placement rules:

  * LAST: ``optax.chain(opt, l1_prox(weight, lr))`` where ``opt`` is a full
    optimizer (``optax.sgd(lr)``, ``optim.adam(lr)``, ...). Any transform after
    it would move the weights off the thresholded point.
  * ``learning_rate`` must be the optimizer's learning rate (float or the same
    optax schedule). The schedule is evaluated at this transform's own step
    count, which starts at 0 and increases by one per update, as in
    ``optax.scale_by_schedule``, so the two stay in step.
  * With adaptive optimizers (Adam, RMSProp) the threshold ``lr * weight`` is
    that of the base learning rate, not of the per-coordinate step; it still
    gives exact zeros but is a heuristic, not the prox in the preconditioned
    metric.

  Args:
    weight: non-negative coefficient of ``sum |w|``.
    learning_rate: float or optax schedule, the optimizer's learning rate.
    mask: optional ``optax.masked`` mask; False leaves are left untouched.

  Returns:
    An ``optax.GradientTransformation`` with ``L1ProxState``.

  Example:
    >>> tx = optax.chain(optax.sgd(0.1), l1_prox(1e-3, 0.1))
  """
  check_nonneg("weight", weight)
  if not callable(learning_rate):
    check_nonneg("learning_rate", learning_rate)

  def init_fn(params):
    del params
    return L1ProxState(count=jnp.zeros([], jnp.int32))

  def update_fn(updates, state, params=None):
    if params is None:
      raise ValueError(optax._src.base.NO_PARAMS_MSG)  # pylint: disable=protected-access
    lr = learning_rate(state.count) if callable(learning_rate) else learning_rate
    threshold = lr * weight

    def prox_update(u, w):
      w = w.astype(u.dtype)
      z = w + u
      shrunk = jnp.sign(z) * jnp.maximum(jnp.abs(z) - jnp.asarray(threshold, u.dtype), 0)
      return shrunk - w

    new = tree_map_none(prox_update, updates, params)
    return new, L1ProxState(count=optax.safe_increment(state.count))

  return _maybe_mask(optax.GradientTransformation(init_fn, update_fn), mask)


# Registry family ``regularizer`` (merged with the functional dropout and
# augmentation tables): 'l1' and 'l2' build these optax transforms.
REGISTRY: dict[str, Callable[..., Any]] = {"l1": add_l1, "l2": add_l2}
