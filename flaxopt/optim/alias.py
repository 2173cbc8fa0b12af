"""User-facing first-order optimizers: a ``scale_by_*`` primitive, then the learning rate.

Every alias is ``optax.chain(primitive, scale_by_learning_rate(lr))`` and
is driven by ``optax.apply_updates``. ``learning_rate`` is always required (a
positive float or an optax schedule; no default can turn a step into ascent).
The update rules, conventions and their differences from PyTorch and optax are
documented on the primitives in ``flaxopt.optim.transform``.

>>> import jax.numpy as jnp, optax
>>> from flaxopt import optim
>>> tx = optim.adam(learning_rate=1e-3)
>>> params = {"w": jnp.ones(3)}
>>> state = tx.init(params)
>>> updates, state = tx.update({"w": jnp.ones(3)}, state, params)
>>> params = optax.apply_updates(params, updates)
"""

from __future__ import annotations

from typing import Callable, Optional

import jax
import jax.numpy as jnp
import optax

from flaxopt.optim import transform
from flaxopt.optim._utils import ScalarLike
from flaxopt.optim._utils import ScalarOrSchedule
from flaxopt.optim._utils import check_learning_rate

__all__ = [
    "sgd",
    "momentum",
    "nesterov",
    "adagrad",
    "adadelta",
    "rmsprop",
    "adam",
    "adamax",
    "nadam",
    "amsgrad",
    "adafactor",
    "relative_step_size",
]

def _with_learning_rate(primitive: Optional[optax.GradientTransformation],
                        learning_rate: ScalarOrSchedule) -> optax.GradientTransformation:
  """``chain(primitive, transform.scale_by_learning_rate(learning_rate))`` (descent)."""
  check_learning_rate(learning_rate)
  scale = transform.scale_by_learning_rate(learning_rate)
  return scale if primitive is None else optax.chain(primitive, scale)


def sgd(learning_rate: ScalarOrSchedule) -> optax.GradientTransformation:
  r"""Stochastic gradient descent: ``x_{t+1} = x_t - lr g_t``.

  Same as ``torch.optim.SGD(lr)`` and ``optax.sgd(lr)``.

  Reference: Robbins & Monro, "A Stochastic Approximation Method", 1951.
  """
  return _with_learning_rate(None, learning_rate)


def momentum(learning_rate: ScalarOrSchedule,
             momentum: ScalarLike = 0.9,  # pylint: disable=redefined-outer-name
             ) -> optax.GradientTransformation:
  r"""Heavy-ball momentum: ``v_t = mu v_{t-1} + g_t``, ``x_{t+1} = x_t - lr v_t``.

  Same as ``torch.optim.SGD(lr, momentum=mu)`` and ``optax.sgd(lr, momentum=mu)``.
  See ``transform.scale_by_momentum``. Reference: Polyak 1964.
  """
  return _with_learning_rate(transform.scale_by_momentum(momentum), learning_rate)


def nesterov(learning_rate: ScalarOrSchedule,
             momentum: ScalarLike = 0.9,  # pylint: disable=redefined-outer-name
             ) -> optax.GradientTransformation:
  r"""Nesterov momentum: ``v_t = mu v_{t-1} + g_t``, ``x_{t+1} = x_t - lr (g_t + mu v_t)``.

  Same as ``torch.optim.SGD(lr, momentum=mu, nesterov=True)`` and
  ``optax.sgd(lr, momentum=mu, nesterov=True)``. See
  ``transform.scale_by_nesterov``. Reference: Sutskever et al. 2013.
  """
  return _with_learning_rate(transform.scale_by_nesterov(momentum), learning_rate)


def adagrad(learning_rate: ScalarOrSchedule,
            initial_accumulator_value: ScalarLike = 0.0,
            eps: ScalarLike = 1e-10,
            eps_root: ScalarLike = 0.0) -> optax.GradientTransformation:
  r"""Adagrad: ``x_{t+1} = x_t - lr g_t / (sqrt(sum_{i<=t} g_i^2) + eps)``.

  PyTorch defaults (accumulator from 0, eps=1e-10 outside the root); optax's
  ``adagrad`` starts the accumulator at 0.1 with eps=1e-7 inside the root.
  See ``transform.scale_by_adagrad``. Reference: Duchi et al. 2011.
  """
  return _with_learning_rate(
      transform.scale_by_adagrad(initial_accumulator_value, eps, eps_root), learning_rate)


def adadelta(learning_rate: ScalarOrSchedule,
             rho: ScalarLike = 0.9,
             eps: ScalarLike = 1e-6) -> optax.GradientTransformation:
  r"""Adadelta: ``x_{t+1} = x_t - lr * sqrt(E[dx^2] + eps) / sqrt(E[g^2] + eps) * g_t``.

  ``learning_rate=1.0`` is Zeiler's rule (PyTorch's default). optax's
  ``adadelta(learning_rate=None)`` applies no sign flip and so ascends;
  here the learning rate is required and always applied as descent.
  See ``transform.scale_by_adadelta``. Reference: Zeiler 2012.
  """
  return _with_learning_rate(transform.scale_by_adadelta(rho, eps), learning_rate)


def rmsprop(learning_rate: ScalarOrSchedule,
            decay: ScalarLike = 0.99,
            eps: ScalarLike = 1e-8,
            eps_root: ScalarLike = 0.0,
            centered: bool = False,
            momentum: Optional[ScalarLike] = None,  # pylint: disable=redefined-outer-name
            bias_correction: bool = False) -> optax.GradientTransformation:
  r"""RMSprop: ``x_{t+1} = x_t - lr g_t / (sqrt(E[g^2]_t) + eps)``.

  PyTorch defaults (decay 0.99, eps outside the root); optax's ``rmsprop``
  uses decay 0.9 and eps inside the root (``eps=0, eps_root=1e-8`` here).
  See ``transform.scale_by_rmsprop``. Reference: Tieleman & Hinton 2012.
  """
  return _with_learning_rate(
      transform.scale_by_rmsprop(decay, eps, eps_root, centered, momentum, bias_correction),
      learning_rate)


def adam(learning_rate: ScalarOrSchedule,
         b1: ScalarLike = 0.9,
         b2: ScalarLike = 0.999,
         eps: ScalarLike = 1e-8,
         eps_root: ScalarLike = 0.0,
         bias_correction: bool = True) -> optax.GradientTransformation:
  r"""Adam: ``x_{t+1} = x_t - lr m_hat_t / (sqrt(v_hat_t) + eps)``.

  Same as ``torch.optim.Adam`` and ``optax.adam``. See
  ``transform.scale_by_adam``. Reference: Kingma & Ba 2015.
  """
  return _with_learning_rate(
      transform.scale_by_adam(b1, b2, eps, eps_root, bias_correction), learning_rate)


def adamax(learning_rate: ScalarOrSchedule,
           b1: ScalarLike = 0.9,
           b2: ScalarLike = 0.999,
           eps: ScalarLike = 1e-8) -> optax.GradientTransformation:
  r"""AdaMax: ``x_{t+1} = x_t - lr m_t / ((1 - b1^t) max(b2 u_{t-1}, |g_t| + eps))``.

  Same as ``torch.optim.Adamax`` and ``optax.adamax``. See
  ``transform.scale_by_adamax``. Reference: Kingma & Ba 2015, Section 7.1.
  """
  return _with_learning_rate(transform.scale_by_adamax(b1, b2, eps), learning_rate)


def nadam(learning_rate: ScalarOrSchedule,
          b1: ScalarLike = 0.9,
          b2: ScalarLike = 0.999,
          eps: ScalarLike = 1e-8,
          eps_root: ScalarLike = 0.0,
          momentum_decay: ScalarLike = 4e-3,
          constant_momentum: bool = False) -> optax.GradientTransformation:
  r"""NAdam with Dozat's momentum schedule ``mu_t = b1 (1 - 0.5 * 0.96^(t psi))``.

  Same as ``torch.optim.NAdam``; ``constant_momentum=True`` is ``optax.nadam``.
  See ``transform.scale_by_nadam``. Reference: Dozat 2016.
  """
  return _with_learning_rate(
      transform.scale_by_nadam(b1, b2, eps, eps_root, momentum_decay, constant_momentum),
      learning_rate)


def amsgrad(learning_rate: ScalarOrSchedule,
            b1: ScalarLike = 0.9,
            b2: ScalarLike = 0.999,
            eps: ScalarLike = 1e-8,
            eps_root: ScalarLike = 0.0,
            correct_before_max: bool = False) -> optax.GradientTransformation:
  r"""AMSGrad: Adam with ``v`` replaced by its running maximum.

  Default: ``torch.optim.Adam(amsgrad=True)`` (max of the raw ``v``, then
  bias correction); ``correct_before_max=True`` is ``optax.amsgrad``.
  See ``transform.scale_by_amsgrad``. Reference: Reddi et al. 2018.
  """
  return _with_learning_rate(
      transform.scale_by_amsgrad(b1, b2, eps, eps_root, correct_before_max), learning_rate)


def relative_step_size(learning_rate: ScalarOrSchedule) -> Callable[[jax.Array], jax.Array]:
  r"""Adafactor's relative step size ``rho_t = min(lr_t, 1 / sqrt(t))``, t from 1.

  The paper uses ``lr = 1e-2``; PyTorch's ``Adafactor`` uses the same form
  ``min(lr, 1/sqrt(t))``. Returns an optax schedule (count from 0).
  """
  def schedule(count: jax.Array) -> jax.Array:
    lr = learning_rate(count) if callable(learning_rate) else learning_rate
    return jnp.minimum(lr, jax.lax.rsqrt((count + 1).astype(jnp.result_type(float))))
  return schedule


def adafactor(learning_rate: ScalarOrSchedule,
              decay_rate: ScalarLike = 0.8,
              clipping_threshold: Optional[ScalarLike] = 1.0,
              beta1: Optional[ScalarLike] = None,
              eps1: ScalarLike = 1e-30,
              eps2: ScalarLike = 1e-3,
              multiply_by_parameter_scale: bool = True,
              relative_step: bool = True,
              factored: bool = True) -> optax.GradientTransformation:
  r"""Adafactor: ``x_{t+1} = x_t - rho_t max(eps2, RMS(x_t)) clip(g / sqrt(V_hat_t))``.

  ``rho_t = min(learning_rate, 1/sqrt(t))`` when ``relative_step`` (the paper's
  schedule with ``learning_rate=1e-2``), else ``learning_rate`` itself. optax's
  ``adafactor`` has no relative step (its ``learning_rate=None`` means none)
  and factors only axes >= 128. See ``transform.scale_by_adafactor``.
  Reference: Shazeer & Stern 2018.
  """
  check_learning_rate(learning_rate)
  primitive = transform.scale_by_adafactor(
      decay_rate, clipping_threshold, beta1, eps1, eps2, multiply_by_parameter_scale, factored)
  step = relative_step_size(learning_rate) if relative_step else learning_rate
  return _with_learning_rate(primitive, step)


# Registry family "optimizer": name -> constructor(learning_rate=..., **kwargs).
REGISTRY: dict[str, Callable[..., optax.GradientTransformation]] = {
    "sgd": sgd,
    "momentum": momentum,
    "nesterov": nesterov,
    "adagrad": adagrad,
    "adadelta": adadelta,
    "rmsprop": rmsprop,
    "adam": adam,
    "adamax": adamax,
    "nadam": nadam,
    "amsgrad": amsgrad,
    "adafactor": adafactor,
}
