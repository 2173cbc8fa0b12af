"""Normalization as pure functions, channels-last (features on the last axis).

Every normalizer here is ``y = (x - mean) / sqrt(var + eps) * scale + bias`` with
the statistics taken over different axes; they share one statistics helper
(:func:`moments`) and one normalize helper (``_normalize``):

* statistics are computed in at least float32 (bfloat16 inputs are promoted,
  float64 stays float64) and the output is cast back to the input dtype;
* the variance is the *biased* (population) variance from a corrected two-pass
  algorithm (Chan, Golub & LeVeque 1983): ``mean((x - m0)**2) - mean(x - m0)**2``
  around a first-pass mean ``m0``, never ``E[x**2] - E[x]**2``, so an input with
  mean 1e4 and std 1 normalizes correctly in float32;
* ``eps`` is added to the variance inside the square root and must be > 0, so a
  constant input gives zeros (not NaN) and finite gradients.
"""

from __future__ import annotations

from typing import Optional, Sequence

import jax
from jax import lax
import jax.numpy as jnp
import numpy as np

Array = jax.Array

__all__ = [
    "moments",
    "batch_norm",
    "layer_norm",
    "instance_norm",
    "group_norm",
    "weight_norm",
]


def _static(value) -> Optional[np.ndarray]:
  """``value`` as a numpy array when known at trace time, else None (a tracer)."""
  try:
    return np.asarray(value)
  except (jax.errors.TracerArrayConversionError, jax.errors.ConcretizationTypeError,
          TypeError):
    return None


def _check_eps(eps) -> None:
  static = _static(eps)
  if static is not None and not np.all(static > 0):
    raise ValueError(f"eps must be > 0 (it keeps constant inputs finite), got {eps!r}.")


def _stats_dtype(dtype) -> jnp.dtype:
  """At least float32: bfloat16/float16 statistics are computed in float32."""
  return jnp.promote_types(dtype, jnp.float32)


def _canonical_axes(ndim: int, axes: Sequence[int] | int) -> tuple[int, ...]:
  axes = (axes,) if isinstance(axes, int) else tuple(axes)
  for a in axes:
    if not -ndim <= a < ndim:
      raise ValueError(f"axis {a} is out of range for an input with {ndim} dimensions.")
  return tuple(sorted({a % ndim for a in axes}))


def moments(x: Array, axes: Sequence[int] | int, *, where: Optional[Array] = None,
            axis_name: Optional[str] = None, keepdims: bool = False,
            return_count: bool = False):
  """Mean and biased variance of ``x`` over ``axes`` (the statistics helper of every norm).

  Corrected two-pass algorithm, with sums and counts (not means) reduced across
  devices::

    n   = psum(sum(where))                      (the number of valid elements)
    m0  = psum(sum(x * where)) / n
    d   = (x - m0) * where
    m   = m0 + psum(sum(d)) / n
    var = max(psum(sum(d**2)) / n - (psum(sum(d)) / n)**2, 0)

  With ``axis_name`` (inside ``jax.pmap`` / ``shard_map``) the statistics are
  those of the concatenation of every device's valid elements: per-device sums
  and counts are ``lax.psum``-ed, so devices holding different numbers of valid
  rows (``where``) are weighted by their counts, not by a mean of means.

  Args:
    x: input array.
    axes: axes to reduce.
    where: optional boolean mask broadcastable to ``x``; False entries are ignored.
    axis_name: optional mapped axis name to reduce across devices as well.
    keepdims: keep the reduced axes as size-1 dimensions.
    return_count: also return ``n``.

  Returns:
    ``(mean, var)`` or ``(mean, var, count)`` in ``promote_types(x.dtype, float32)``.
  """
  dtype = _stats_dtype(x.dtype)
  axes = _canonical_axes(x.ndim, axes)
  x = x.astype(dtype)
  if where is None:
    mask = None
    count = jnp.asarray(float(np.prod([x.shape[a] for a in axes])), dtype)
    count = jnp.broadcast_to(count, [1 if a in axes else s for a, s in enumerate(x.shape)])
  else:
    mask = jnp.broadcast_to(jnp.asarray(where, bool), x.shape)
    count = jnp.sum(mask, axes, keepdims=True, dtype=dtype)

  def total(*arrays):
    sums = [jnp.sum(a, axes, keepdims=True) for a in arrays]
    if axis_name is not None:
      sums = lax.psum(sums, axis_name)
    return sums

  def masked(a):
    return a if mask is None else jnp.where(mask, a, 0)

  s1, count = total(masked(x), count)
  safe_count = jnp.maximum(count, 1)
  m0 = s1 / safe_count
  d = masked(x - m0)
  sd, sd2 = total(d, d * d)
  mean_d = sd / safe_count
  mean = m0 + mean_d
  var = jnp.maximum(sd2 / safe_count - mean_d * mean_d, 0)
  if not keepdims:
    mean, var, count = (jnp.squeeze(a, axes) for a in (mean, var, count))
  return (mean, var, count) if return_count else (mean, var)


def _normalize(x: Array, mean: Array, var: Array, scale: Optional[Array],
               bias: Optional[Array], eps: float) -> Array:
  """``(x - mean) * rsqrt(var + eps) * scale + bias`` in float32+, cast to x.dtype."""
  _check_eps(eps)
  dtype = _stats_dtype(x.dtype)
  mul = lax.rsqrt(jnp.asarray(var, dtype) + jnp.asarray(eps, dtype))
  if scale is not None:
    mul = mul * jnp.asarray(scale, dtype)
  y = (x.astype(dtype) - jnp.asarray(mean, dtype)) * mul
  if bias is not None:
    y = y + jnp.asarray(bias, dtype)
  return y.astype(x.dtype)


def batch_norm(x: Array, scale: Optional[Array] = None, bias: Optional[Array] = None, *,
               mean: Optional[Array] = None, var: Optional[Array] = None,
               eps: float = 1e-5) -> Array:
  """Batch normalization: per-feature statistics over every axis but the last.

  ``y = (x - mean) / sqrt(var + eps) * scale + bias``, with ``mean``/``var`` the
  batch statistics (biased variance) over all axes but the last when both are
  None, else the given (e.g. running) statistics of shape ``(C,)``.

  Ioffe & Szegedy, "Batch Normalization: Accelerating Deep Network Training by
  Reducing Internal Covariate Shift", ICML 2015. ``eps=1e-5`` as in PyTorch
  (flax.linen.BatchNorm also uses 1e-5).
  """
  if (mean is None) != (var is None):
    raise ValueError("batch_norm needs both mean and var, or neither "
                     f"(got mean={'None' if mean is None else 'array'}, "
                     f"var={'None' if var is None else 'array'}).")
  if x.ndim < 1:
    raise ValueError(f"batch_norm needs at least 1 dimension, got shape {x.shape}.")
  if mean is None:
    mean, var = moments(x, tuple(range(x.ndim - 1)))
  return _normalize(x, mean, var, scale, bias, eps)


def layer_norm(x: Array, scale: Optional[Array] = None, bias: Optional[Array] = None, *,
               eps: float = 1e-5) -> Array:
  """Layer normalization: statistics over the last (feature) axis of each example.

  ``y = (x - mean_C(x)) / sqrt(var_C(x) + eps) * scale + bias``.

  Ba, Kiros & Hinton, "Layer Normalization", 2016. ``eps=1e-5`` as PyTorch
  (flax.linen.LayerNorm defaults to 1e-6).
  """
  if x.ndim < 1:
    raise ValueError(f"layer_norm needs at least 1 dimension, got shape {x.shape}.")
  mean, var = moments(x, -1, keepdims=True)
  return _normalize(x, mean, var, scale, bias, eps)


def instance_norm(x: Array, scale: Optional[Array] = None, bias: Optional[Array] = None, *,
                  eps: float = 1e-5) -> Array:
  """Instance normalization: statistics over the spatial axes, per example and channel.

  For ``x`` of shape ``(N, *spatial, C)``:
  ``y = (x - mean_spatial(x)) / sqrt(var_spatial(x) + eps) * scale + bias``.

  Ulyanov, Vedaldi & Lempitsky, "Instance Normalization: The Missing Ingredient
  for Fast Stylization", 2016. Unlike PyTorch's InstanceNorm (affine=False by
  default), scale/bias are applied whenever given.
  """
  if x.ndim < 3:
    raise ValueError("instance_norm needs (N, *spatial, C) with at least one spatial axis, "
                     f"got shape {x.shape}.")
  mean, var = moments(x, tuple(range(1, x.ndim - 1)), keepdims=True)
  return _normalize(x, mean, var, scale, bias, eps)


def group_norm(x: Array, num_groups: int, scale: Optional[Array] = None,
               bias: Optional[Array] = None, *, eps: float = 1e-5) -> Array:
  """Group normalization: statistics per example and group of ``C // num_groups`` channels.

  For ``x`` of shape ``(N, *spatial, C)``, channels are reshaped to
  ``(G, C // G)`` and the statistics taken over ``(*spatial, C // G)``;
  then ``y = (x - mean) / sqrt(var + eps) * scale + bias`` with per-channel
  ``scale``/``bias``. ``G = 1`` is layer norm over ``(*spatial, C)``,
  ``G = C`` is instance norm.

  Wu & He, "Group Normalization", ECCV 2018. ``eps=1e-5`` as PyTorch
  (flax.linen.GroupNorm defaults to 1e-6).
  """
  if x.ndim < 2:
    raise ValueError(f"group_norm needs (N, ..., C), got shape {x.shape}.")
  channels = x.shape[-1]
  if isinstance(num_groups, bool) or not isinstance(num_groups, (int, np.integer)) \
      or num_groups < 1:
    raise ValueError(f"num_groups must be a positive int, got {num_groups!r}.")
  if channels % num_groups:
    raise ValueError(f"num_groups={num_groups} does not divide the {channels} channels.")
  grouped = x.reshape(*x.shape[:-1], num_groups, channels // num_groups)
  mean, var = moments(grouped, tuple(range(1, grouped.ndim - 2)) + (grouped.ndim - 1,),
                      keepdims=True)
  group_shape = (num_groups, channels // num_groups)
  scale = None if scale is None else jnp.reshape(scale, group_shape)
  bias = None if bias is None else jnp.reshape(bias, group_shape)
  return _normalize(grouped, mean, var, scale, bias, eps).reshape(x.shape)


def weight_norm(v: Array, g: Array) -> Array:
  """Weight normalization: ``w = g * v / ||v||``, the norm over all axes but the last.

  ``v`` is a Dense kernel ``(in, out)`` or a conv kernel ``(*window, in, out)``;
  ``g`` has shape ``(out,)``. A zero column of ``v`` gives a zero column of
  ``w`` with finite gradients (instead of 0/0).

  Salimans & Kingma, "Weight Normalization: A Simple Reparameterization to
  Accelerate Training of Deep Neural Networks", NeurIPS 2016. Same as
  ``torch.nn.utils.weight_norm(..., dim=-1)`` for this kernel layout.
  """
  if v.ndim < 1:
    raise ValueError(f"weight_norm needs v with at least 1 dimension, got shape {v.shape}.")
  dtype = _stats_dtype(v.dtype)
  v32 = v.astype(dtype)
  sq = jnp.sum(v32 * v32, axis=tuple(range(v.ndim - 1)))
  positive = sq > 0
  inv_norm = jnp.where(positive, lax.rsqrt(jnp.where(positive, sq, 1)), 0)
  return (v32 * (jnp.asarray(g, dtype) * inv_norm)).astype(v.dtype)
