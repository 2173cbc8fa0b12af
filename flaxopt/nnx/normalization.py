"""Normalization modules (Flax NNX): twins of ``flaxopt.nn.normalization``, same math.

Parameter and statistic names match the linen twins (``scale``, ``bias`` as
``nnx.Param``; ``mean``, ``var`` as ``nnx.BatchStat``), so ``nnx.to_pure_dict`` of a
module's state has the layout of the linen variables. Differences forced by NNX: the
feature count ``num_features`` is given at construction, and ``BatchNorm`` defaults to
training mode (``use_running_average=False``, NNX's convention; ``model.eval()`` or
``nnx.view(model, use_running_average=True)`` switches). Its statistics are stored in
``promote_types(param_dtype, float32)`` (the linen twin uses the input's dtype promoted
to float32); an update is cast to that dtype.

``REGISTRY`` (family ``norm``): ``none, batch, layer, instance, group, weight``.
"""

from __future__ import annotations

from typing import Any, Callable, Optional

import jax
import jax.numpy as jnp
from flax import nnx

from flaxopt.functional import normalization as F
from flaxopt.nnx import _rng

Array = jax.Array
Initializer = Callable[..., Array]

__all__ = ["Identity", "BatchNorm", "LayerNorm", "InstanceNorm", "GroupNorm", "WeightNorm"]

DEFAULT_NUM_GROUPS = 32


class Identity(nnx.Module):
  """The 'none' normalizer: ``y = x``."""

  def __init__(self, num_features: Optional[int] = None, *, rngs: Optional[nnx.Rngs] = None):
    del num_features, rngs

  def __call__(self, x: Array, use_running_average: Optional[bool] = None) -> Array:
    del use_running_average
    return x


class _Affine(nnx.Module):
  """Per-channel ``scale``/``bias`` (or None) shared by the statistics-based norms."""

  def __init__(self, num_features: int, *, epsilon: float = 1e-5, use_scale: bool = True,
               use_bias: bool = True, scale_init: Initializer = nnx.initializers.ones,
               bias_init: Initializer = nnx.initializers.zeros,
               param_dtype: Any = jnp.float32, rngs: nnx.Rngs):
    if isinstance(num_features, bool) or not isinstance(num_features, int) \
        or num_features < 1:
      raise ValueError(f"num_features must be a positive integer, got {num_features!r}.")
    self.num_features, self.epsilon = num_features, epsilon
    shape = (num_features,)
    self.scale = nnx.Param(scale_init(rngs.params(), shape, param_dtype)) if use_scale \
        else nnx.data(None)
    self.bias = nnx.Param(bias_init(rngs.params(), shape, param_dtype)) if use_bias \
        else nnx.data(None)

  def _scale_bias(self):
    scale = None if self.scale is None else self.scale[...]
    bias = None if self.bias is None else self.bias[...]
    return scale, bias


class BatchNorm(_Affine):
  """Batch normalization (Ioffe & Szegedy 2015), running statistics as ``nnx.BatchStat``.

  As ``flaxopt.nn.BatchNorm``: training normalizes with the batch's (biased) statistics
  and updates ``running = momentum * running + (1 - momentum) * batch`` (flax's momentum
  convention, 0.99; PyTorch's ``m`` is ``1 - momentum``), storing ``var * n / (n - 1)``
  with ``unbiased_running_var=True``. Evaluation uses the running averages. ``axis_name``
  (pmap/shard_map) takes global-batch statistics; ``mask`` drops padded rows.
  """

  def __init__(self, num_features: int, *, use_running_average: bool = False,
               axis_name: Optional[str] = None, momentum: float = 0.99,
               unbiased_running_var: bool = False, param_dtype: Any = jnp.float32,
               rngs: nnx.Rngs, **affine: Any):
    if not 0.0 <= momentum <= 1.0:
      raise ValueError(f"momentum must lie in [0, 1], got {momentum!r}.")
    super().__init__(num_features, param_dtype=param_dtype, rngs=rngs, **affine)
    self.use_running_average = use_running_average
    self.axis_name, self.momentum = axis_name, momentum
    self.unbiased_running_var = unbiased_running_var
    stats_dtype = jnp.promote_types(param_dtype, jnp.float32)
    self.mean = nnx.BatchStat(jnp.zeros((num_features,), stats_dtype))
    self.var = nnx.BatchStat(jnp.ones((num_features,), stats_dtype))

  def set_view(self, use_running_average: Optional[bool] = None):
    """``nnx.view(model, use_running_average=...)`` support."""
    if use_running_average is not None:
      self.use_running_average = use_running_average

  def __call__(self, x: Array, use_running_average: Optional[bool] = None, *,
               mask: Optional[Array] = None) -> Array:
    use_running_average = _rng.first(use_running_average, self.use_running_average,
                                     "use_running_average", "BatchNorm")
    scale, bias = self._scale_bias()
    if use_running_average:
      mean, var = self.mean[...], self.var[...]
    else:
      if mask is not None and jnp.ndim(mask) == 1 and x.ndim > 1:
        mask = jnp.reshape(mask, (-1,) + (1,) * (x.ndim - 1))
      mean, var, count = F.moments(x, tuple(range(x.ndim - 1)), where=mask,
                                   axis_name=self.axis_name, return_count=True)
      stored_var = var * count / jnp.maximum(count - 1, 1) if self.unbiased_running_var \
          else var
      m = self.momentum
      running_mean, running_var = self.mean[...], self.var[...]
      self.mean[...] = (m * running_mean + (1 - m) * mean).astype(running_mean.dtype)
      self.var[...] = (m * running_var + (1 - m) * stored_var).astype(running_var.dtype)
    return F.batch_norm(x, scale, bias, mean=mean, var=var, eps=self.epsilon)


class LayerNorm(_Affine):
  """Layer normalization over the last axis (Ba, Kiros & Hinton 2016), ``F.layer_norm``.

  ``epsilon=1e-5`` (PyTorch's; flax's LayerNorm uses 1e-6).
  """

  def __call__(self, x: Array, use_running_average: Optional[bool] = None) -> Array:
    del use_running_average
    scale, bias = self._scale_bias()
    return F.layer_norm(x, scale, bias, eps=self.epsilon)


class InstanceNorm(_Affine):
  """Instance normalization over the spatial axes (Ulyanov et al. 2016), ``F.instance_norm``.

  Learned affine on by default (PyTorch's InstanceNorm2d has ``affine=False``).
  """

  def __call__(self, x: Array, use_running_average: Optional[bool] = None) -> Array:
    del use_running_average
    scale, bias = self._scale_bias()
    return F.instance_norm(x, scale, bias, eps=self.epsilon)


class GroupNorm(_Affine):
  """Group normalization (Wu & He 2018), ``F.group_norm`` with per-channel scale/bias.

  ``num_groups`` or ``group_size`` (not both; neither: 32 groups, Wu & He's and flax's
  default). Checked against ``num_features`` at construction.
  """

  def __init__(self, num_features: int, *, num_groups: Optional[int] = None,
               group_size: Optional[int] = None, rngs: nnx.Rngs, **affine: Any):
    if num_groups is not None and group_size is not None:
      raise ValueError("GroupNorm takes num_groups or group_size, not both "
                       f"(got num_groups={num_groups}, group_size={group_size}).")
    if group_size is not None and (group_size < 1 or num_features % group_size):
      raise ValueError(f"group_size={group_size} does not divide the {num_features} channels.")
    groups = (DEFAULT_NUM_GROUPS if num_groups is None else num_groups) \
        if group_size is None else num_features // group_size
    if isinstance(groups, bool) or not isinstance(groups, int) or groups < 1 \
        or num_features % groups:
      raise ValueError(f"num_groups={groups!r} does not divide the {num_features} channels.")
    super().__init__(num_features, rngs=rngs, **affine)
    self.num_groups = groups

  def __call__(self, x: Array, use_running_average: Optional[bool] = None) -> Array:
    del use_running_average
    scale, bias = self._scale_bias()
    return F.group_norm(x, self.num_groups, scale, bias, eps=self.epsilon)


class WeightNorm(nnx.Module):
  """Weight normalization of a wrapped NNX layer: its kernel is ``w = g * v / ||v||``.

  ``layer`` is any NNX module whose parameters are ``kernel`` (output features last) and
  optionally ``bias`` (``nnx.Linear``, ``nnx.Conv``, ``DropConnectDense`` is not one: its
  kernel is masked). This module takes them over: it owns ``v`` (the layer's initial
  kernel), ``g = ||v||`` per output feature (so the initial ``w`` is the layer's kernel, as
  ``torch.nn.utils.weight_norm``) and ``bias``, and applies the layer with
  ``{'kernel': F.weight_norm(v, g), 'bias': bias}`` (the layer's graph is kept, its
  arrays dropped). Names as the linen twin (``v``, ``g``, ``bias``).

  The paper's data-dependent init is the explicit method ``data_dependent_init(x)``
  (the linen twin's ``data_init=True``): ``g = init_scale / sigma``, ``bias = -init_scale
  * mu / sigma`` from the per-feature mean ``mu`` and std ``sigma`` of ``layer(x; v/||v||,
  bias=0)``. Salimans & Kingma, NeurIPS 2016.
  """

  def __init__(self, layer: nnx.Module, *, init_scale: float = 1.0, epsilon: float = 1e-5,
               rngs: Optional[nnx.Rngs] = None):
    del rngs
    graphdef, params, rest = nnx.split(layer, nnx.Param, ...)
    params = nnx.to_pure_dict(params)
    if "kernel" not in params or set(params) - {"kernel", "bias"} or jax.tree.leaves(rest):
      raise ValueError("WeightNorm wraps layers whose only state is params 'kernel' (and "
                       f"'bias'); {type(layer).__name__} has {sorted(params)}.")
    self.layer_def = graphdef
    self.init_scale, self.epsilon = init_scale, epsilon
    v = params["kernel"]
    self.v = nnx.Param(v)
    self.g = nnx.Param(jnp.sqrt(jnp.sum(jnp.square(v), axis=tuple(range(v.ndim - 1)))))
    self.bias = nnx.Param(params["bias"]) if "bias" in params else nnx.data(None)

  def _apply(self, x: Array, kernel: Array, bias: Optional[Array]) -> Array:
    params = {"kernel": kernel} if bias is None else {"kernel": kernel, "bias": bias}
    return nnx.merge(self.layer_def, params)(x)

  def data_dependent_init(self, x: Array) -> None:
    """Sets ``g`` and ``bias`` so that ``self(x)`` has per-feature mean 0, std ``init_scale``."""
    v = self.v[...]
    unit = F.weight_norm(v, jnp.ones(v.shape[-1], v.dtype))
    zero_bias = None if self.bias is None else jnp.zeros_like(self.bias[...])
    t = self._apply(x, unit, zero_bias)
    mean, var = F.moments(t, tuple(range(t.ndim - 1)))
    inv_std = jax.lax.rsqrt(var + self.epsilon)
    self.g[...] = (self.init_scale * inv_std).astype(v.dtype)
    if self.bias is not None:
      self.bias[...] = (-self.init_scale * mean * inv_std).astype(self.bias.dtype)

  def __call__(self, x: Array, use_running_average: Optional[bool] = None) -> Array:
    del use_running_average
    bias = None if self.bias is None else self.bias[...]
    return self._apply(x, F.weight_norm(self.v[...], self.g[...]), bias)


REGISTRY: dict[str, Callable[..., nnx.Module]] = {
    "none": Identity,
    "batch": BatchNorm,
    "layer": LayerNorm,
    "instance": InstanceNorm,
    "group": GroupNorm,
    "weight": WeightNorm,
}
