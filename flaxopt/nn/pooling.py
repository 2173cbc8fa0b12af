"""Pooling modules (flax linen): fixed and learned pooling over ``flaxopt.functional.pooling``.

Every module has the fields ``window``, ``strides=None`` (= window) and
``padding='VALID'`` and is called ``m(x, deterministic=True)``; only
``StochasticPool`` uses ``deterministic`` (training draws from the 'pool' rng
stream). Learned pooling keeps its constrained parameters in range by
construction: ``LPPool``'s ``p = 1 + softplus(p_raw) > 1``, ``MixedPool``'s
``alpha = sigmoid(alpha_logit)`` in ``(0, 1)``.

``REGISTRY`` (family ``pool``): ``max, avg, stochastic, lp, mixed, gated`` -> the
module class; ``registry.get("pool", name, window=..., strides=..., padding=..., **kw)``.
"""

from __future__ import annotations

import math
from typing import Callable, Optional, Sequence, Union

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from flaxopt.functional import pooling as F

Array = jax.Array
Window = Union[int, Sequence[int]]

__all__ = ["MaxPool", "AvgPool", "StochasticPool", "LPPool", "MixedPool", "GatedPool"]


class _Pool(nn.Module):
  """Shared fields of every pooling module."""

  window: Window
  strides: Optional[Window] = None
  padding: str = "VALID"

  def _param_shape(self, x: Array, per_channel: bool) -> tuple[int, ...]:
    return (x.shape[-1],) if per_channel else ()


class MaxPool(_Pool):
  """Max pooling, ``F.max_pool``."""

  @nn.compact
  def __call__(self, x: Array, deterministic: bool = True) -> Array:
    del deterministic
    return F.max_pool(x, self.window, self.strides, self.padding)


class AvgPool(_Pool):
  """Average pooling, ``F.avg_pool`` (``count_include_pad=True`` as PyTorch and flax)."""

  count_include_pad: bool = True

  @nn.compact
  def __call__(self, x: Array, deterministic: bool = True) -> Array:
    del deterministic
    return F.avg_pool(x, self.window, self.strides, self.padding, self.count_include_pad)


class StochasticPool(_Pool):
  """Stochastic pooling (Zeiler & Fergus 2013), ``F.stochastic_pool``.

  ``deterministic=False`` samples one activation per window with a key from the
  'pool' rng stream; ``deterministic=True`` returns the probability-weighted
  average.
  """

  @nn.compact
  def __call__(self, x: Array, deterministic: bool = True) -> Array:
    key = None if deterministic else self.make_rng("pool")
    return F.stochastic_pool(x, self.window, self.strides, self.padding, key=key,
                             deterministic=deterministic)


def _inverse_softplus(y: float) -> float:
  return y + math.log(-math.expm1(-y))


class LPPool(_Pool):
  """Learned-norm pooling (Gulcehre et al. 2014), ``F.lp_pool`` with learned ``p``.

  ``p = 1 + softplus(p_raw)`` (so ``p > 1`` always), one scalar or one per
  channel (``per_channel=True``, the paper learns one per unit); starts at
  ``p_init``. Mean over the window, not PyTorch's sum (see ``F.lp_pool``).
  """

  p_init: float = 2.0
  per_channel: bool = False

  @nn.compact
  def __call__(self, x: Array, deterministic: bool = True) -> Array:
    del deterministic
    if not self.p_init > 1:
      raise ValueError(f"LPPool needs p_init > 1 (p = 1 + softplus(raw)), got {self.p_init!r}.")
    raw0 = _inverse_softplus(self.p_init - 1)
    p_raw = self.param("p_raw", nn.initializers.constant(raw0),
                       self._param_shape(x, self.per_channel), jnp.float32)
    p = 1 + jax.nn.softplus(p_raw)
    return F.lp_pool(x, p, self.window, self.strides, self.padding)


class MixedPool(_Pool):
  """Mixed max-average pooling (Lee, Gallagher & Tu 2016), ``F.mixed_pool`` with learned ``alpha``.

  ``alpha = sigmoid(alpha_logit)`` in ``(0, 1)``, one scalar ("one per layer")
  or one per channel (``per_channel=True``); starts at ``alpha_init``.
  """

  alpha_init: float = 0.5
  per_channel: bool = False

  @nn.compact
  def __call__(self, x: Array, deterministic: bool = True) -> Array:
    del deterministic
    if not 0 < self.alpha_init < 1:
      raise ValueError(f"MixedPool needs 0 < alpha_init < 1 (alpha = sigmoid(logit)), "
                       f"got {self.alpha_init!r}.")
    logit0 = math.log(self.alpha_init / (1 - self.alpha_init))
    alpha_logit = self.param("alpha_logit", nn.initializers.constant(logit0),
                             self._param_shape(x, self.per_channel), jnp.float32)
    return F.mixed_pool(x, jax.nn.sigmoid(alpha_logit), self.window, self.strides,
                        self.padding)


class GatedPool(_Pool):
  """Gated max-average pooling (Lee, Gallagher & Tu 2016), ``F.gated_pool`` with learned gate.

  The gate ``sigmoid(w . x_R)`` is computed from each window ``x_R`` with a
  learned ``w`` of ``prod(window)`` weights, one per layer or per channel
  (``per_channel=True``). ``gate_init`` defaults to zeros: the gate starts at
  1/2 (an even max/avg mix) and its gradient is nonzero.
  """

  per_channel: bool = False
  gate_init: Callable[..., Array] = nn.initializers.zeros

  @nn.compact
  def __call__(self, x: Array, deterministic: bool = True) -> Array:
    del deterministic
    window = (self.window,) * (x.ndim - 2) if isinstance(self.window, int) else self.window
    size = int(np.prod(window))
    shape = (x.shape[-1], size) if self.per_channel else (size,)
    gate = self.param("gate", self.gate_init, shape, jnp.float32)
    return F.gated_pool(x, gate, self.window, self.strides, self.padding)


REGISTRY: dict[str, Callable[..., nn.Module]] = {
    "max": MaxPool,
    "avg": AvgPool,
    "stochastic": StochasticPool,
    "lp": LPPool,
    "mixed": MixedPool,
    "gated": GatedPool,
}
