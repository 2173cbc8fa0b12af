"""Dropout and DropConnect (Flax NNX): twins of ``flaxopt.nn.regularization``, stream 'dropout'.

The math lives in ``flaxopt.functional.regularization`` (inverted masks). Keys come from
the ``'dropout'`` stream of the ``nnx.Rngs`` given at construction, or ``rngs=`` at call
time (an ``nnx.Rngs``, ``nnx.RngStream`` or a key). NNX's training default
``deterministic=False`` (the linen twins have no default).
"""

from __future__ import annotations

from typing import Any, Callable, Optional

import jax
import jax.numpy as jnp
from flax import nnx
from flax.nnx.nn import dtypes

from flaxopt.functional import regularization as R
from flaxopt.nnx import _rng

__all__ = ["Dropout", "DropConnectDense"]

Array = jax.Array
Initializer = Callable[..., Array]

_INFERENCE_RULES = ("mean", "gaussian")


class Dropout(nnx.Module):
  """Inverted dropout (Srivastava et al. 2014): ``y = m * x / (1 - rate)``, ``m ~ Bernoulli``.

  Identity when deterministic or ``rate == 0``. See ``F.dropout``.
  """

  def __init__(self, rate: float, *, deterministic: bool = False,
               rng_collection: str = "dropout", rngs: Optional[nnx.Rngs] = None):
    R._check_rate(rate)  # pylint: disable=protected-access
    self.rate, self.deterministic, self.rng_collection = rate, deterministic, rng_collection
    self.rngs = _rng.fork_stream(rngs, rng_collection)

  def set_view(self, deterministic: Optional[bool] = None):
    """``nnx.view(model, deterministic=...)`` support."""
    if deterministic is not None:
      self.deterministic = deterministic

  def __call__(self, x: Array, *, deterministic: Optional[bool] = None,
               rngs: _rng.KeySource = None) -> Array:
    deterministic = _rng.first(deterministic, self.deterministic, "deterministic", "Dropout")
    if deterministic or R._is_zero(self.rate):  # pylint: disable=protected-access
      return x
    return R.dropout(x, self.rate, _rng.draw_key("Dropout", self.rng_collection, rngs,
                                                 self.rngs))


class DropConnectDense(nnx.Module):
  """Dense layer with DropConnect on its kernel (Wan et al. 2013); see the linen twin.

  Training: ``r = a(x @ (M * W / p) + b)``, ``M ~ Bernoulli(p = 1 - rate)``, one mask per
  batch or (``per_example=True``) per example. Inference: ``'mean'`` is ``a(x @ W + b)``;
  ``'gaussian'`` averages ``a`` over ``num_samples`` moment-matched Gaussian
  pre-activations (keys from the ``'dropout'`` stream). Parameters ``kernel``
  ``(in_features, features)`` and ``bias``, initialized as flax's Dense (lecun_normal,
  zeros).
  """

  def __init__(self, in_features: int, features: int, *, rate: float = 0.5,
               per_example: bool = False, inference: str = "mean", num_samples: int = 1000,
               activation: Optional[Callable[[Array], Array]] = None, use_bias: bool = True,
               kernel_init: Initializer = nnx.initializers.lecun_normal(),
               bias_init: Initializer = nnx.initializers.zeros_init(),
               dtype: Optional[Any] = None, param_dtype: Any = jnp.float32,
               deterministic: bool = False, rng_collection: str = "dropout",
               rngs: nnx.Rngs):
    R._check_rate(rate)  # pylint: disable=protected-access
    if inference not in _INFERENCE_RULES:
      raise ValueError(f"inference must be one of {_INFERENCE_RULES}, got {inference!r}.")
    self.features, self.rate, self.per_example = features, rate, per_example
    self.inference, self.num_samples, self.activation = inference, num_samples, activation
    self.dtype, self.deterministic, self.rng_collection = dtype, deterministic, rng_collection
    self.kernel = nnx.Param(kernel_init(rngs.params(), (in_features, features), param_dtype))
    self.bias = nnx.Param(bias_init(rngs.params(), (features,), param_dtype)) if use_bias \
        else nnx.data(None)
    self.rngs = _rng.fork_stream(rngs, rng_collection)

  def set_view(self, deterministic: Optional[bool] = None):
    """``nnx.view(model, deterministic=...)`` support."""
    if deterministic is not None:
      self.deterministic = deterministic

  def __call__(self, x: Array, *, deterministic: Optional[bool] = None,
               rngs: _rng.KeySource = None) -> Array:
    deterministic = _rng.first(deterministic, self.deterministic, "deterministic",
                               "DropConnectDense")
    bias = None if self.bias is None else self.bias[...]
    x, kernel, bias = dtypes.promote_dtype((x, self.kernel[...], bias), dtype=self.dtype)
    act = self.activation if self.activation is not None else (lambda u: u)
    add_bias = (lambda u: u + bias) if bias is not None else (lambda u: u)
    zero_rate = R._is_zero(self.rate)  # pylint: disable=protected-access
    key = lambda: _rng.draw_key("DropConnectDense", self.rng_collection, rngs, self.rngs)

    if deterministic or zero_rate:
      if self.inference == "mean" or zero_rate:
        return act(add_bias(x @ kernel))
      samples = R.dropconnect_gaussian_samples(x, kernel, self.rate, key(), self.num_samples)
      return jnp.mean(act(add_bias(samples)), axis=0)

    if not self.per_example:
      return act(add_bias(x @ R.dropconnect(kernel, self.rate, key())))
    batch_shape = x.shape[:-1]
    flat = x.reshape((-1, x.shape[-1]))
    keep = 1.0 - self.rate
    masks = jax.random.bernoulli(key(), keep, (flat.shape[0],) + kernel.shape)
    weights = jnp.where(masks, kernel / jnp.asarray(keep, kernel.dtype),
                        jnp.zeros((), kernel.dtype))
    out = jnp.einsum("bi,bio->bo", flat, weights)
    return act(add_bias(out.reshape(batch_shape + (self.features,))))
