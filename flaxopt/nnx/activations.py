"""Activation modules (Flax NNX): twins of ``flaxopt.nn.activations`` over the same functions.

The math lives in ``flaxopt.functional.activations``. Differences from the linen modules,
all forced by NNX's eager parameters: ``PReLU`` (and ``Activation('prelu')``) take
``num_features`` at construction (unless ``shared``), and random modules default to
training mode (``deterministic=False``, NNX's convention; ``model.eval()`` or
``nnx.view(model, deterministic=True)`` switches). Keys come from the ``'rrelu'`` stream of
the ``nnx.Rngs`` given at construction, or from ``rngs=`` at call time.
"""

from __future__ import annotations

from typing import Any, Mapping, Optional

import jax
import jax.numpy as jnp
from flax import nnx

from flaxopt.functional import activations as act
from flaxopt.nnx import _rng

Array = jax.Array

__all__ = ["Activation", "PReLU", "RReLU", "Swish", "Maxout"]


class PReLU(nnx.Module):
  """Parametric ReLU (He et al. 2015): ``y = x if x >= 0 else a * x``, ``a`` learned.

  One slope per channel (``num_features``) or one shared (``shared=True``), starting at
  ``slope_init = 0.25`` (the paper's and PyTorch's). Parameter ``slope``, as the linen twin.
  """

  def __init__(self, num_features: Optional[int] = None, *, slope_init: float = 0.25,
               shared: bool = False, param_dtype: Any = jnp.float32,
               rngs: Optional[nnx.Rngs] = None):
    del rngs  # constant init.
    if not shared and num_features is None:
      raise ValueError("PReLU needs num_features (one slope per channel) unless shared=True.")
    shape = () if shared else (num_features,)
    self.slope = nnx.Param(jnp.full(shape, slope_init, param_dtype))

  def __call__(self, x: Array) -> Array:
    return act.prelu(x, self.slope[...])


class RReLU(nnx.Module):
  """Randomized leaky ReLU (Xu et al. 2015), slopes drawn from the ``'rrelu'`` stream.

  ``deterministic=False`` (NNX's training default) draws one slope per element from
  ``U(lower, upper)``; ``deterministic=True`` uses ``(lower + upper) / 2``. The linen twin
  defaults to ``deterministic=True``. See ``flaxopt.functional.rrelu``.
  """

  def __init__(self, *, lower: float = 1.0 / 8.0, upper: float = 1.0 / 3.0,
               deterministic: bool = False, rng_collection: str = "rrelu",
               rngs: Optional[nnx.Rngs] = None):
    self.lower, self.upper = lower, upper
    self.deterministic = deterministic
    self.rng_collection = rng_collection
    self.rngs = _rng.fork_stream(rngs, rng_collection)

  def set_view(self, deterministic: Optional[bool] = None):
    """``nnx.view(model, deterministic=...)`` support."""
    if deterministic is not None:
      self.deterministic = deterministic

  def __call__(self, x: Array, *, deterministic: Optional[bool] = None,
               rngs: _rng.KeySource = None) -> Array:
    deterministic = _rng.first(deterministic, self.deterministic, "deterministic", "RReLU")
    key = None if deterministic else _rng.draw_key("RReLU", self.rng_collection, rngs,
                                                    self.rngs)
    return act.rrelu(x, key, lower=self.lower, upper=self.upper, deterministic=deterministic)


class Swish(nnx.Module):
  """Swish with a learned scalar ``beta``: ``y = x * sigmoid(beta * x)``.

  Ramachandran, Zoph & Le 2017; ``beta`` starts at ``beta_init = 1.0`` (silu).
  """

  def __init__(self, *, beta_init: float = 1.0, param_dtype: Any = jnp.float32,
               rngs: Optional[nnx.Rngs] = None):
    del rngs
    self.beta = nnx.Param(jnp.asarray(beta_init, param_dtype))

  def __call__(self, x: Array) -> Array:
    return act.swish(x, self.beta[...])


class Maxout(nnx.Module):
  """Maxout over groups of ``num_pieces`` consecutive features (Goodfellow et al. 2013)."""

  def __init__(self, num_pieces: int, axis: int = -1, *, rngs: Optional[nnx.Rngs] = None):
    del rngs
    self.num_pieces, self.axis = num_pieces, axis

  def __call__(self, x: Array) -> Array:
    return act.maxout(x, self.num_pieces, axis=self.axis)


# Activation names whose module form owns a parameter or an rng stream.
REGISTRY: dict[str, type[nnx.Module]] = {"prelu": PReLU, "rrelu": RReLU}
_MODULE_KWARGS = {"prelu": ("slope_init", "shared", "param_dtype"),
                  "rrelu": ("lower", "upper")}


class Activation(nnx.Module):
  """Any registry activation by name: ``Activation("leaky_relu", {"negative_slope": 0.2})``.

  As ``flaxopt.nn.Activation``: ``kwargs`` are the hyperparameters of
  ``flaxopt.functional.activations.REGISTRY[activation]``, except ``"prelu"`` (a learned
  ``PReLU`` child named ``prelu``; needs ``num_features`` unless ``shared``) and ``"rrelu"``
  (an ``RReLU`` child named ``rrelu``, drawing from the ``'rrelu'`` stream when not
  deterministic). Unknown names or hyperparameters raise ValueError at construction.
  """

  def __init__(self, activation: str, kwargs: Optional[Mapping[str, Any]] = None, *,
               num_features: Optional[int] = None, deterministic: bool = False,
               rngs: Optional[nnx.Rngs] = None):
    kwargs = dict(kwargs or {})
    if activation not in act.REGISTRY:
      raise ValueError(f"Unknown activation {activation!r}; valid activation names: "
                       f"{', '.join(sorted(act.REGISTRY))}")
    self.activation = activation
    if activation in REGISTRY:
      unknown = sorted(set(kwargs) - set(_MODULE_KWARGS[activation]))
      if unknown:
        raise ValueError(
            f"Unknown hyperparameter(s) {unknown} for activation {activation!r}; valid "
            f"hyperparameters: {', '.join(_MODULE_KWARGS[activation])}")
      if activation == "prelu":
        self.prelu = PReLU(num_features, **kwargs)
      else:
        self.rrelu = RReLU(**kwargs, deterministic=deterministic, rngs=rngs)
      self.fn = None
    else:
      self.fn = act.REGISTRY[activation](**kwargs)

  def __call__(self, x: Array, *, deterministic: Optional[bool] = None,
               rngs: _rng.KeySource = None) -> Array:
    if self.activation == "prelu":
      return self.prelu(x)
    if self.activation == "rrelu":
      return self.rrelu(x, deterministic=deterministic, rngs=rngs)
    return self.fn(x)
