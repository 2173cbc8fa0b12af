"""Pooling modules (Flax NNX): twins of ``flaxopt.nn.pooling`` over ``flaxopt.functional``.

Every module takes ``window``, ``strides=None`` (= window), ``padding='VALID'`` and is
called ``m(x, deterministic=None, rngs=None)``; only ``StochasticPool`` uses them (it
samples with keys from the ``'pool'`` stream unless deterministic; NNX's training default
``deterministic=False``, where the linen twin defaults to True). Learned pooling keeps its
parameters in range by construction, as the linen twins: ``LPPool``'s ``p = 1 +
softplus(p_raw)``, ``MixedPool``'s ``alpha = sigmoid(alpha_logit)``. Per-channel
parameters need ``num_features`` at construction; ``GatedPool`` needs the window as a
tuple (or ``num_spatial_dims`` with an int window).

``REGISTRY`` (family ``pool``): ``max, avg, stochastic, lp, mixed, gated``.
"""

from __future__ import annotations

import math
from typing import Callable, Optional, Sequence, Union

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from flaxopt.functional import pooling as F
from flaxopt.nnx import _rng

Array = jax.Array
Window = Union[int, Sequence[int]]

__all__ = ["MaxPool", "AvgPool", "StochasticPool", "LPPool", "MixedPool", "GatedPool"]


def _as_static(window: Optional[Window]):
  return window if window is None or isinstance(window, int) else tuple(window)


class _Pool(nnx.Module):
  """Shared fields of every pooling module."""

  def __init__(self, window: Window, strides: Optional[Window] = None, padding: str = "VALID"):
    self.window, self.strides, self.padding = _as_static(window), _as_static(strides), padding

  def _param_shape(self, num_features: Optional[int], per_channel: bool) -> tuple[int, ...]:
    if not per_channel:
      return ()
    if num_features is None:
      raise ValueError(f"{type(self).__name__}(per_channel=True) needs num_features.")
    return (num_features,)


class MaxPool(_Pool):
  """Max pooling, ``F.max_pool``."""

  def __init__(self, window: Window, strides: Optional[Window] = None, padding: str = "VALID",
               *, rngs: Optional[nnx.Rngs] = None):
    del rngs
    super().__init__(window, strides, padding)

  def __call__(self, x: Array, deterministic: Optional[bool] = None,
               rngs: _rng.KeySource = None) -> Array:
    del deterministic, rngs
    return F.max_pool(x, self.window, self.strides, self.padding)


class AvgPool(_Pool):
  """Average pooling, ``F.avg_pool`` (``count_include_pad=True`` as PyTorch and flax)."""

  def __init__(self, window: Window, strides: Optional[Window] = None, padding: str = "VALID",
               *, count_include_pad: bool = True, rngs: Optional[nnx.Rngs] = None):
    del rngs
    super().__init__(window, strides, padding)
    self.count_include_pad = count_include_pad

  def __call__(self, x: Array, deterministic: Optional[bool] = None,
               rngs: _rng.KeySource = None) -> Array:
    del deterministic, rngs
    return F.avg_pool(x, self.window, self.strides, self.padding, self.count_include_pad)


class StochasticPool(_Pool):
  """Stochastic pooling (Zeiler & Fergus 2013), ``F.stochastic_pool``, keys from ``'pool'``.

  Training samples one activation per window; ``deterministic=True`` returns the
  probability-weighted average.
  """

  def __init__(self, window: Window, strides: Optional[Window] = None, padding: str = "VALID",
               *, deterministic: bool = False, rngs: Optional[nnx.Rngs] = None):
    super().__init__(window, strides, padding)
    self.deterministic = deterministic
    self.rngs = _rng.fork_stream(rngs, "pool")

  def set_view(self, deterministic: Optional[bool] = None):
    """``nnx.view(model, deterministic=...)`` support."""
    if deterministic is not None:
      self.deterministic = deterministic

  def __call__(self, x: Array, deterministic: Optional[bool] = None,
               rngs: _rng.KeySource = None) -> Array:
    deterministic = _rng.first(deterministic, self.deterministic, "deterministic",
                               "StochasticPool")
    key = None if deterministic else _rng.draw_key("StochasticPool", "pool", rngs, self.rngs)
    return F.stochastic_pool(x, self.window, self.strides, self.padding, key=key,
                             deterministic=deterministic)


def _inverse_softplus(y: float) -> float:
  return y + math.log(-math.expm1(-y))


class LPPool(_Pool):
  """Learned-norm pooling (Gulcehre et al. 2014), ``F.lp_pool``, ``p = 1 + softplus(p_raw)``.

  One ``p`` or one per channel (``per_channel=True`` with ``num_features``), starting at
  ``p_init > 1``. Mean over the window, not PyTorch's sum.
  """

  def __init__(self, window: Window, strides: Optional[Window] = None, padding: str = "VALID",
               *, num_features: Optional[int] = None, p_init: float = 2.0,
               per_channel: bool = False, rngs: Optional[nnx.Rngs] = None):
    del rngs
    if not p_init > 1:
      raise ValueError(f"LPPool needs p_init > 1 (p = 1 + softplus(raw)), got {p_init!r}.")
    super().__init__(window, strides, padding)
    self.p_raw = nnx.Param(jnp.full(self._param_shape(num_features, per_channel),
                                    _inverse_softplus(p_init - 1), jnp.float32))

  def __call__(self, x: Array, deterministic: Optional[bool] = None,
               rngs: _rng.KeySource = None) -> Array:
    del deterministic, rngs
    p = 1 + jax.nn.softplus(self.p_raw[...])
    return F.lp_pool(x, p, self.window, self.strides, self.padding)


class MixedPool(_Pool):
  """Mixed max-average pooling (Lee, Gallagher & Tu 2016), ``alpha = sigmoid(alpha_logit)``.

  One ``alpha`` or one per channel (``per_channel=True`` with ``num_features``), starting
  at ``alpha_init`` in (0, 1). ``F.mixed_pool``.
  """

  def __init__(self, window: Window, strides: Optional[Window] = None, padding: str = "VALID",
               *, num_features: Optional[int] = None, alpha_init: float = 0.5,
               per_channel: bool = False, rngs: Optional[nnx.Rngs] = None):
    del rngs
    if not 0 < alpha_init < 1:
      raise ValueError(f"MixedPool needs 0 < alpha_init < 1 (alpha = sigmoid(logit)), "
                       f"got {alpha_init!r}.")
    super().__init__(window, strides, padding)
    logit0 = math.log(alpha_init / (1 - alpha_init))
    self.alpha_logit = nnx.Param(jnp.full(self._param_shape(num_features, per_channel),
                                          logit0, jnp.float32))

  def __call__(self, x: Array, deterministic: Optional[bool] = None,
               rngs: _rng.KeySource = None) -> Array:
    del deterministic, rngs
    return F.mixed_pool(x, jax.nn.sigmoid(self.alpha_logit[...]), self.window, self.strides,
                        self.padding)


class GatedPool(_Pool):
  """Gated max-average pooling (Lee, Gallagher & Tu 2016), ``F.gated_pool``, learned gate.

  ``gate`` has ``prod(window)`` weights, one set per layer or per channel
  (``per_channel=True`` with ``num_features``); ``gate_init`` zeros starts at an even mix.
  An int ``window`` needs ``num_spatial_dims``.
  """

  def __init__(self, window: Window, strides: Optional[Window] = None, padding: str = "VALID",
               *, num_features: Optional[int] = None, num_spatial_dims: Optional[int] = None,
               per_channel: bool = False,
               gate_init: Callable[..., Array] = nnx.initializers.zeros, rngs: nnx.Rngs):
    super().__init__(window, strides, padding)
    if isinstance(window, int):
      if num_spatial_dims is None:
        raise ValueError(f"GatedPool with an int window={window} needs num_spatial_dims.")
      window = (window,) * num_spatial_dims
    size = int(np.prod(window))
    shape = self._param_shape(num_features, per_channel) + (size,)
    self.gate = nnx.Param(gate_init(rngs.params(), shape, jnp.float32))

  def __call__(self, x: Array, deterministic: Optional[bool] = None,
               rngs: _rng.KeySource = None) -> Array:
    del deterministic, rngs
    return F.gated_pool(x, self.gate[...], self.window, self.strides, self.padding)


REGISTRY: dict[str, Callable[..., nnx.Module]] = {
    "max": MaxPool,
    "avg": AvgPool,
    "stochastic": StochasticPool,
    "lp": LPPool,
    "mixed": MixedPool,
    "gated": GatedPool,
}
