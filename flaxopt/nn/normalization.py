"""Normalization modules (flax linen): own scale/bias and running statistics, call F for the math.

Every module here is called ``m(x, use_running_average=None)``; the argument is
ignored by the modules without running statistics. Parameter and collection
names follow flax.linen (``params/scale``, ``params/bias``,
``batch_stats/mean``, ``batch_stats/var``), so variables can be compared with
or moved from flax's own layers.

``REGISTRY`` (family ``norm``): ``none, batch, layer, instance, group, weight``
-> the module class; ``registry.get("norm", name, **fields)`` returns a fresh
instance. ``weight`` needs ``layer=`` (the Dense/Conv it wraps).
"""

from __future__ import annotations

from typing import Any, Callable, Optional

import flax.linen as nn
import jax
import jax.numpy as jnp

from flaxopt.functional import normalization as F

Array = jax.Array
Initializer = Callable[..., Array]

__all__ = [
    "Identity",
    "BatchNorm",
    "LayerNorm",
    "InstanceNorm",
    "GroupNorm",
    "WeightNorm",
]


class Identity(nn.Module):
  """The 'none' normalizer: ``y = x``."""

  @nn.compact
  def __call__(self, x: Array, use_running_average: Optional[bool] = None) -> Array:
    del use_running_average
    return x


class _Affine(nn.Module):
  """Shared fields and per-channel scale/bias of the statistics-based norms."""

  epsilon: float = 1e-5
  use_scale: bool = True
  use_bias: bool = True
  scale_init: Initializer = nn.initializers.ones
  bias_init: Initializer = nn.initializers.zeros
  param_dtype: Any = jnp.float32

  def _scale_bias(self, channels: int):
    scale = self.param("scale", self.scale_init, (channels,), self.param_dtype) \
        if self.use_scale else None
    bias = self.param("bias", self.bias_init, (channels,), self.param_dtype) \
        if self.use_bias else None
    return scale, bias


class BatchNorm(_Affine):
  """Batch normalization with running statistics in the ``batch_stats`` collection.

  Training (``use_running_average=False``) normalizes with the batch
  statistics (biased variance, as the paper and PyTorch do for the forward
  pass) and updates the running averages with the **flax convention**::

    running = momentum * running + (1 - momentum) * batch,   momentum = 0.99

  PyTorch writes the same rule as ``(1 - m) * running + m * batch`` with
  ``m = 0.1``: torch ``momentum=m`` is ours ``momentum=1 - m``. The running
  variance stores the biased batch variance (flax); ``unbiased_running_var=True``
  stores ``var * n / (n - 1)`` instead, as PyTorch does (``n`` = the number of
  elements each feature's statistics were taken over, across devices).
  Evaluation (``use_running_average=True``) uses the running averages. As in
  flax, ``use_running_average`` is a field or a call argument (exactly one of
  them set), and the running averages are not updated by ``init``.

  Across devices: with ``axis_name`` (inside ``jax.pmap``/``shard_map``) the
  statistics are those of the global batch, from ``psum``-ed per-device sums
  and counts (see ``F.moments``); a per-example ``mask`` (shape ``(N,)`` or
  broadcastable to ``x``) drops padded rows, so devices holding different
  numbers of real examples are weighted correctly. ``init`` reduces over the
  local batch only (as flax does), so it also runs outside the mapped axis.
  Under ``jax.jit`` with the batch sharded over a Mesh no ``axis_name`` is
  needed: the reductions are already global.

  Ioffe & Szegedy, "Batch Normalization: Accelerating Deep Network Training by
  Reducing Internal Covariate Shift", ICML 2015.
  """

  use_running_average: Optional[bool] = None
  axis_name: Optional[str] = None
  momentum: float = 0.99
  unbiased_running_var: bool = False

  @nn.compact
  def __call__(self, x: Array, use_running_average: Optional[bool] = None, *,
               mask: Optional[Array] = None) -> Array:
    if not 0.0 <= self.momentum <= 1.0:
      raise ValueError(f"momentum must lie in [0, 1], got {self.momentum!r}.")
    use_running_average = nn.merge_param(
        "use_running_average", self.use_running_average, use_running_average)
    channels = x.shape[-1]
    stats_dtype = jnp.promote_types(x.dtype, jnp.float32)
    running_mean = self.variable("batch_stats", "mean", jnp.zeros, (channels,), stats_dtype)
    running_var = self.variable("batch_stats", "var", jnp.ones, (channels,), stats_dtype)
    scale, bias = self._scale_bias(channels)
    if use_running_average:
      mean, var = running_mean.value, running_var.value
    else:
      if mask is not None and jnp.ndim(mask) == 1 and x.ndim > 1:
        mask = jnp.reshape(mask, (-1,) + (1,) * (x.ndim - 1))
      # No cross-device reduction during init (as flax): init may run outside the mapped
      # axis, and the statistics it computes are never stored.
      axis_name = None if self.is_initializing() else self.axis_name
      mean, var, count = F.moments(x, tuple(range(x.ndim - 1)), where=mask,
                                   axis_name=axis_name, return_count=True)
      if not self.is_initializing():
        stored_var = var * count / jnp.maximum(count - 1, 1) if self.unbiased_running_var \
            else var
        m = self.momentum
        running_mean.value = m * running_mean.value + (1 - m) * mean
        running_var.value = m * running_var.value + (1 - m) * stored_var
    return F.batch_norm(x, scale, bias, mean=mean, var=var, eps=self.epsilon)


class LayerNorm(_Affine):
  """Layer normalization over the last axis: ``F.layer_norm`` with learned ``scale``/``bias``.

  Ba, Kiros & Hinton, "Layer Normalization", 2016. ``epsilon=1e-5`` (PyTorch's;
  flax.linen.LayerNorm uses 1e-6).
  """

  @nn.compact
  def __call__(self, x: Array, use_running_average: Optional[bool] = None) -> Array:
    del use_running_average
    scale, bias = self._scale_bias(x.shape[-1])
    return F.layer_norm(x, scale, bias, eps=self.epsilon)


class InstanceNorm(_Affine):
  """Instance normalization over the spatial axes: ``F.instance_norm`` with learned scale/bias.

  Ulyanov, Vedaldi & Lempitsky, "Instance Normalization: The Missing Ingredient
  for Fast Stylization", 2016. Learned affine on by default (PyTorch's
  InstanceNorm2d has ``affine=False``); no running statistics (PyTorch's
  ``track_running_stats=False`` default).
  """

  @nn.compact
  def __call__(self, x: Array, use_running_average: Optional[bool] = None) -> Array:
    del use_running_average
    scale, bias = self._scale_bias(x.shape[-1])
    return F.instance_norm(x, scale, bias, eps=self.epsilon)


DEFAULT_NUM_GROUPS = 32


class GroupNorm(_Affine):
  """Group normalization: ``F.group_norm`` with learned per-channel ``scale``/``bias``.

  Give ``num_groups`` or ``group_size`` (channels per group), not both; with
  neither, ``num_groups = 32`` (Wu & He's default, also flax's). Channels not
  divisible into the groups raise ValueError naming both numbers.

  Wu & He, "Group Normalization", ECCV 2018. ``epsilon=1e-5`` (PyTorch's; flax
  uses 1e-6).
  """

  num_groups: Optional[int] = None
  group_size: Optional[int] = None

  def _groups(self, channels: int) -> int:
    if self.num_groups is not None and self.group_size is not None:
      raise ValueError("GroupNorm takes num_groups or group_size, not both "
                       f"(got num_groups={self.num_groups}, group_size={self.group_size}).")
    if self.group_size is None:
      return DEFAULT_NUM_GROUPS if self.num_groups is None else self.num_groups
    if self.group_size < 1 or channels % self.group_size:
      raise ValueError(f"group_size={self.group_size} does not divide the {channels} channels.")
    return channels // self.group_size

  @nn.compact
  def __call__(self, x: Array, use_running_average: Optional[bool] = None) -> Array:
    del use_running_average
    channels = x.shape[-1]
    num_groups = self._groups(channels)
    scale, bias = self._scale_bias(channels)
    return F.group_norm(x, num_groups, scale, bias, eps=self.epsilon)


class WeightNorm(nn.Module):
  """Weight normalization of a wrapped Dense/Conv: its kernel is ``w = g * v / ||v||``.

  Implementation: the wrapped ``layer`` is used as a template. This module owns
  the parameters ``v`` (the layer's kernel shape, initialized by the layer's own
  ``kernel_init``), ``g`` (one per output feature) and the layer's ``bias``,
  builds ``w = F.weight_norm(v, g)`` and applies an unbound copy of the layer
  with ``{'kernel': w, 'bias': bias}``. Any layer whose parameters are
  ``kernel`` (output features last) and optionally ``bias`` works
  (``nn.Dense``, ``nn.Conv``, ``nn.ConvTranspose``, ``flaxopt`` models' layers).

  Initialization: by default ``g = ||v||`` so the initial ``w`` equals the
  layer's initial kernel (as ``torch.nn.utils.weight_norm``). With
  ``data_init=True`` ``init`` uses its batch as in the paper: with
  ``t = layer(x; v / ||v||, bias=0)`` and per-feature mean ``mu`` and std
  ``sigma`` of ``t`` over the batch, ``g = init_scale / sigma`` and
  ``bias = -init_scale * mu / sigma``, so the first batch's pre-activations
  have zero mean and standard deviation ``init_scale`` (the mean part needs the
  layer's ``use_bias=True``).

  Salimans & Kingma, "Weight Normalization: A Simple Reparameterization to
  Accelerate Training of Deep Neural Networks", NeurIPS 2016.
  """

  layer: nn.Module
  data_init: bool = False
  init_scale: float = 1.0
  epsilon: float = 1e-5

  @nn.compact
  def __call__(self, x: Array, use_running_average: Optional[bool] = None) -> Array:
    del use_running_average
    layer = self.layer.clone(parent=None, name=None)

    def layer_params(key):
      params = layer.init(key, x)["params"]
      if "kernel" not in params or set(params) - {"kernel", "bias"}:
        raise ValueError("WeightNorm wraps layers whose params are 'kernel' (and 'bias'); "
                         f"{type(self.layer).__name__} has {sorted(params)}.")
      return params

    template = jax.eval_shape(layer_params, jax.random.key(0))
    has_bias = "bias" in template
    v = self.param("v", lambda key: layer_params(key)["kernel"])

    def apply(kernel, bias):
      params = {"kernel": kernel}
      if has_bias:
        params["bias"] = bias
      return layer.apply({"params": params}, x)

    def data_stats():
      unit = F.weight_norm(v, jnp.ones(v.shape[-1], v.dtype))
      zero_bias = jnp.zeros(template["bias"].shape, template["bias"].dtype) if has_bias \
          else None
      t = apply(unit, zero_bias)
      mean, var = F.moments(t, tuple(range(t.ndim - 1)))
      inv_std = jax.lax.rsqrt(var + self.epsilon)
      return mean, inv_std

    def init_g(key):
      del key
      if self.data_init:
        return (self.init_scale * data_stats()[1]).astype(v.dtype)
      return jnp.sqrt(jnp.sum(jnp.square(v), axis=tuple(range(v.ndim - 1))))

    g = self.param("g", init_g)
    bias = None
    if has_bias:
      def init_bias(key):
        if self.data_init:
          mean, inv_std = data_stats()
          return (-self.init_scale * mean * inv_std).astype(template["bias"].dtype)
        return layer_params(key)["bias"]
      bias = self.param("bias", init_bias)
    return apply(F.weight_norm(v, g), bias)


REGISTRY: dict[str, Callable[..., nn.Module]] = {
    "none": Identity,
    "batch": BatchNorm,
    "layer": LayerNorm,
    "instance": InstanceNorm,
    "group": GroupNorm,
    "weight": WeightNorm,
}
