"""Pooling as pure functions over ``lax.reduce_window``, channels-last ``(N, *spatial, C)``.

``window`` and ``strides`` are tuples over the spatial axes (an int is used for
every spatial axis); ``strides=None`` means ``strides = window`` (non-overlapping
windows, as in flax but unlike ``flax.linen.max_pool`` whose default stride is 1).
``padding`` is ``"VALID"`` (no padding) or ``"SAME"`` (output size
``ceil(n / stride)``, zero/neutral padding split as in ``lax.padtype_to_pads``).
Max and average pooling are ``lax.reduce_window``; the pooling ops that need the
whole window (stochastic, LP, gated) read it as a ``(..., C, K)`` patch array
built from ``K = prod(window)`` strided slices.

A window larger than the (padded) input raises ValueError naming both shapes.
"""

from __future__ import annotations

import itertools
from typing import Optional, Sequence, Union

import jax
from jax import lax
import jax.numpy as jnp
import numpy as np

from flaxopt.functional.normalization import _static  # pylint: disable=protected-access

Array = jax.Array
Window = Union[int, Sequence[int]]

__all__ = [
    "max_pool",
    "avg_pool",
    "stochastic_pool",
    "lp_pool",
    "mixed_pool",
    "gated_pool",
]

_PADDINGS = ("SAME", "VALID")


def _as_tuple(name: str, value: Window, num_spatial: int) -> tuple[int, ...]:
  values = (value,) * num_spatial if isinstance(value, (int, np.integer)) else tuple(value)
  if len(values) != num_spatial or not all(
      isinstance(v, (int, np.integer)) and not isinstance(v, bool) and v > 0 for v in values):
    raise ValueError(f"{name} must be {num_spatial} positive ints (one per spatial axis), "
                     f"got {value!r}.")
  return tuple(int(v) for v in values)


def _geometry(x: Array, window: Window, strides: Optional[Window], padding: str):
  """Validated (window, strides, spatial pads) for ``x`` of shape (N, *spatial, C)."""
  if x.ndim < 3:
    raise ValueError(f"pooling needs channels-last input (N, *spatial, C), got shape {x.shape}.")
  num_spatial = x.ndim - 2
  window = _as_tuple("window", window, num_spatial)
  strides = window if strides is None else _as_tuple("strides", strides, num_spatial)
  if not isinstance(padding, str) or padding.upper() not in _PADDINGS:
    raise ValueError(f"padding must be one of {_PADDINGS}, got {padding!r}.")
  spatial = x.shape[1:-1]
  pads = tuple(lax.padtype_to_pads(spatial, window, strides, padding.upper()))
  padded = tuple(n + lo + hi for n, (lo, hi) in zip(spatial, pads))
  if any(w > p for w, p in zip(window, padded)):
    raise ValueError(f"window {window} is larger than the {padding.upper()}-padded input "
                     f"(input shape {tuple(x.shape)}, padded spatial shape {padded}).")
  return window, strides, pads


def _reduce(x: Array, init: float, op, window, strides, pads) -> Array:
  # A concrete numpy init value lets lax pick the differentiable max/sum reducers.
  return lax.reduce_window(x, np.asarray(init, x.dtype), op, (1, *window, 1), (1, *strides, 1),
                           ((0, 0), *pads, (0, 0)))


def _float(x: Array) -> Array:
  """At least float32 for accumulations (bfloat16 sums lose digits)."""
  return x.astype(jnp.promote_types(x.dtype, jnp.float32))


def _patches(x: Array, window, strides, pads, pad_value: float = 0.0):
  """Every window of ``x`` on a new last axis.

  Returns ``(patches, valid)``: ``patches`` has shape ``(N, *out, C, K)`` with
  ``K = prod(window)`` (row-major over the window offsets), ``valid`` has shape
  ``(1, *out, 1, K)`` and is False where the window covers padding.
  """
  spatial = x.shape[1:-1]
  out = tuple((n + lo + hi - w) // s + 1 for n, (lo, hi), w, s in zip(spatial, pads, window,
                                                                       strides))
  full_pads = ((0, 0, 0), *((lo, hi, 0) for lo, hi in pads), (0, 0, 0))
  xp = lax.pad(x, jnp.asarray(pad_value, x.dtype), full_pads)
  ones = lax.pad(jnp.ones((1, *spatial, 1), bool), jnp.asarray(False), full_pads)

  def slices(a):
    pieces = []
    for offset in itertools.product(*(range(w) for w in window)):
      start = (0, *offset, 0)
      limit = (a.shape[0], *(o + (m - 1) * s + 1 for o, m, s in zip(offset, out, strides)),
               a.shape[-1])
      pieces.append(lax.slice(a, start, limit, (1, *strides, 1)))
    return jnp.stack(pieces, axis=-1)

  return slices(xp), slices(ones)


def max_pool(x: Array, window: Window, strides: Optional[Window] = None,
             padding: str = "VALID") -> Array:
  """Max pooling: ``y = max_{i in window} x_i`` (padding never wins: it is -inf).

  Standard since Zhou & Chellappa 1988 / Ranzato et al. 2007. ``strides=None``
  means strides = window (PyTorch's MaxPool default too; flax.linen.max_pool
  defaults to stride 1).
  """
  window, strides, pads = _geometry(x, window, strides, padding)
  return _reduce(x, -jnp.inf, lax.max, window, strides, pads)


def avg_pool(x: Array, window: Window, strides: Optional[Window] = None,
             padding: str = "VALID", count_include_pad: bool = True) -> Array:
  """Average pooling: ``y = sum_{i in window} x_i / n``.

  ``n = prod(window)`` when ``count_include_pad`` (SAME padding counts its
  zeros, PyTorch's and flax's default), else the number of real (non-padding)
  elements in each window. Sums are accumulated in float32 for bfloat16 input.
  LeCun et al. 1989/1998 (subsampling layers).
  """
  window, strides, pads = _geometry(x, window, strides, padding)
  sums = _reduce(_float(x), 0.0, lax.add, window, strides, pads)
  if count_include_pad:
    counts = float(np.prod(window))
  else:
    ones = jnp.ones((1, *x.shape[1:-1], 1), sums.dtype)
    counts = _reduce(ones, 0.0, lax.add, window, strides, pads)
  return (sums / counts).astype(x.dtype)


def stochastic_pool(x: Array, window: Window, strides: Optional[Window] = None,
                    padding: str = "VALID", *, key: Optional[Array] = None,
                    deterministic: bool = False) -> Array:
  """Stochastic pooling: sample one activation per window with probability ``a_i / sum_j a_j``.

  ``p_i = max(a_i, 0) / sum_j max(a_j, 0)`` over the window's real elements.
  Training (``deterministic=False``) returns ``a_k`` with ``k ~ Categorical(p)``
  drawn with ``key`` (inverse CDF: one uniform per window); test time
  (``deterministic=True``) returns the
  probability-weighted average ``sum_i p_i a_i``, which is the expectation of the
  training output.

  Zeiler & Fergus, "Stochastic Pooling for Regularization of Deep Convolutional
  Neural Networks", ICLR 2013. The paper assumes non-negative inputs (after
  ReLU); here negative activations get probability 0 and a window with no
  positive activation (e.g. all zeros) samples uniformly over its real elements
  (its test-time output is then the window mean), so nothing divides by zero.
  ``padding="SAME"`` padding gets probability 0. Not in PyTorch.

  Raises:
    ValueError: ``deterministic=False`` without a ``key``.
  """
  window, strides, pads = _geometry(x, window, strides, padding)
  if not deterministic and key is None:
    raise ValueError("stochastic_pool needs a PRNG key when deterministic=False (got key=None).")
  patches, valid = _patches(x, window, strides, pads)
  values = _float(patches)
  weights = jnp.where(valid, jnp.maximum(values, 0), 0)
  total = jnp.sum(weights, axis=-1, keepdims=True)
  uniform = valid / jnp.sum(valid, axis=-1, keepdims=True)
  probs = jnp.where(total > 0, weights / jnp.where(total > 0, total, 1), uniform)
  if deterministic:
    return jnp.sum(probs * values, axis=-1).astype(x.dtype)
  # Inverse CDF, one uniform per window: the first k with cdf_k > u * cdf_K. Zero-probability
  # entries never satisfy it first (their cdf equals the one before them).
  cdf = jnp.cumsum(lax.stop_gradient(probs), axis=-1)
  u = jax.random.uniform(key, cdf.shape[:-1] + (1,), cdf.dtype)
  index = jnp.minimum(jnp.sum(cdf <= u * cdf[..., -1:], axis=-1), cdf.shape[-1] - 1)
  return jnp.take_along_axis(patches, index[..., None], axis=-1)[..., 0]


def lp_pool(x: Array, p: Union[float, Array], window: Window, strides: Optional[Window] = None,
            padding: str = "VALID") -> Array:
  """LP (learned-norm) pooling: ``y = (mean_{i in window} |x_i|^p)^(1/p)``, ``p >= 1``.

  ``p = 1`` is average pooling of ``|x|``, ``p -> inf`` tends to max pooling of
  ``|x|``, ``p = 2`` is the root-mean-square. ``p`` is a scalar or per-channel
  ``(C,)`` array (it may be traced, e.g. learned). Computed as
  ``m * (mean (|x_i| / m)^p)^(1/p)`` with ``m`` the window's max ``|x_i|``, so
  large ``p`` does not overflow; an all-zero window gives 0 with finite
  gradients. The mean runs over the window's real (non-padding) elements.

  Gulcehre, Cho, Pascanu & Bengio, "Learned-Norm Pooling for Deep Feedforward
  and Recurrent Neural Networks", ECML 2014 (the mean, as in the paper).
  PyTorch's LPPool uses the *sum*: ``torch = ours * K^(1/p)`` for a full window
  of ``K`` elements, and does not take ``|x|``.

  Raises:
    ValueError: a concrete ``p < 1``.
  """
  static_p = _static(p)
  if static_p is not None and not np.all(static_p >= 1):
    raise ValueError(f"lp_pool needs p >= 1, got p={p!r}.")
  window, strides, pads = _geometry(x, window, strides, padding)
  patches, valid = _patches(x, window, strides, pads)
  mags = jnp.abs(_float(patches))
  peak = jnp.max(mags, axis=-1, keepdims=True)
  positive = peak > 0
  ratio = mags / jnp.where(positive, peak, 1)
  p = jnp.asarray(p, mags.dtype)
  powered = jnp.where(valid, ratio ** p[..., None], 0)
  mean = jnp.sum(powered, axis=-1, keepdims=True) / jnp.sum(valid, axis=-1, keepdims=True)
  norm = peak * jnp.where(positive, mean, 1) ** (1 / p[..., None])
  return jnp.where(positive, norm, 0)[..., 0].astype(x.dtype)


def _check_unit_interval(name: str, value) -> None:
  static = _static(value)
  if static is not None and not np.all((static >= 0) & (static <= 1)):
    raise ValueError(f"{name} must lie in [0, 1], got {value!r}.")


def mixed_pool(x: Array, alpha: Union[float, Array], window: Window,
               strides: Optional[Window] = None, padding: str = "VALID") -> Array:
  """Mixed max-average pooling: ``y = alpha * max_pool(x) + (1 - alpha) * avg_pool(x)``.

  ``alpha`` in ``[0, 1]``, a scalar or per-channel ``(C,)`` array (may be
  learned). The average counts only real elements (``count_include_pad=False``),
  so SAME padding affects neither term.

  Lee, Gallagher & Tu, "Generalizing Pooling Functions in Convolutional Neural
  Networks: Mixed, Gated, and Tree", AISTATS 2016. Not in PyTorch.

  Raises:
    ValueError: a concrete ``alpha`` outside ``[0, 1]``.
  """
  _check_unit_interval("alpha", alpha)
  maxed = _float(max_pool(x, window, strides, padding))
  averaged = _float(avg_pool(x, window, strides, padding, count_include_pad=False))
  alpha = jnp.asarray(alpha, maxed.dtype)
  return (alpha * maxed + (1 - alpha) * averaged).astype(x.dtype)


def gated_pool(x: Array, gate: Array, window: Window, strides: Optional[Window] = None,
               padding: str = "VALID") -> Array:
  """Gated max-average pooling: ``y = s max(x_R) + (1 - s) mean(x_R)``, ``s = sigmoid(w^T x_R)``.

  ``x_R`` is the window (region) as a vector of ``K = prod(window)`` values
  (row-major over the window offsets), ``gate`` is ``w`` of shape ``(K,)``
  (one gating mask per layer) or ``(C, K)`` (per layer and channel). The gate
  responds to the window's content; padding contributes 0 to ``w . x_R`` and is
  ignored by the max and the mean.

  Lee, Gallagher & Tu, "Generalizing Pooling Functions in Convolutional Neural
  Networks: Mixed, Gated, and Tree", AISTATS 2016. Not in PyTorch.

  Raises:
    ValueError: ``gate.shape[-1] != prod(window)``.
  """
  window, strides, pads = _geometry(x, window, strides, padding)
  size = int(np.prod(window))
  if jnp.ndim(gate) not in (1, 2) or jnp.shape(gate)[-1] != size:
    raise ValueError(f"gate must have shape ({size},) or (C, {size}) for window {window}, "
                     f"got {jnp.shape(gate)}.")
  patches, valid = _patches(x, window, strides, pads)
  values = _float(patches)
  gate_value = jax.nn.sigmoid(jnp.sum(values * jnp.asarray(gate, values.dtype), axis=-1))
  maxed = jnp.max(jnp.where(valid, values, -jnp.inf), axis=-1)
  averaged = jnp.sum(values, axis=-1) / jnp.sum(valid, axis=-1)
  return (gate_value * maxed + (1 - gate_value) * averaged).astype(x.dtype)
