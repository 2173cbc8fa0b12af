"""Activation modules: learnable/random activations and name-addressable ``Activation``.

The math lives in ``flaxopt.functional.activations``; these modules only own the
parameters (PReLU slope, Swish beta) and rng streams (RReLU: ``'rrelu'``).

``REGISTRY`` here maps the activation names whose module form differs from the
pure function (owns a parameter or an rng stream) to their module class;
``Activation`` uses it and falls back to the functional registry for the rest.
It is not an entry of ``flaxopt.registry`` (the activation family there is the
functional table).
"""

from __future__ import annotations

import dataclasses
from typing import Any, Mapping

import flax.core
import flax.linen as nn
import jax
import jax.numpy as jnp

from flaxopt.functional import activations as act

Array = jax.Array

__all__ = ["Activation", "PReLU", "RReLU", "Swish", "Maxout"]


class PReLU(nn.Module):
  """Parametric ReLU with a learned slope (He et al. 2015, "Delving Deep into Rectifiers").

  ``y = x if x >= 0 else a * x``; ``a`` has one value per channel (last axis), or
  a single shared value when ``shared=True`` (the paper's channel-shared
  variant), initialised to ``slope_init = 0.25`` as in the paper (and PyTorch).

  Attributes:
    slope_init: initial slope.
    shared: one slope for all channels instead of one per channel.
    param_dtype: dtype of the slope parameter (output keeps ``x``'s dtype).
  """

  slope_init: float = 0.25
  shared: bool = False
  param_dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: Array) -> Array:
    shape = () if self.shared else (jnp.shape(x)[-1],)
    slope = self.param(
        "slope", nn.initializers.constant(self.slope_init), shape, self.param_dtype)
    return act.prelu(x, slope)


class RReLU(nn.Module):
  """Randomized leaky ReLU (Xu et al. 2015), slopes from the ``'rrelu'`` rng stream.

  ``deterministic=False`` draws one slope per element from ``U(lower, upper)``;
  ``deterministic=True`` (the default, for evaluation) uses ``(lower + upper) / 2``.
  See ``flaxopt.functional.rrelu``.
  """

  lower: float = 1.0 / 8.0
  upper: float = 1.0 / 3.0
  rng_collection: str = "rrelu"

  @nn.compact
  def __call__(self, x: Array, deterministic: bool = True) -> Array:
    key = None if deterministic else self.make_rng(self.rng_collection)
    return act.rrelu(x, key, lower=self.lower, upper=self.upper, deterministic=deterministic)


class Swish(nn.Module):
  """Swish with a learned scalar beta, ``y = x * sigmoid(beta * x)``.

  Ramachandran, Zoph & Le 2017, "Searching for Activation Functions"; beta starts
  at ``beta_init = 1.0`` (silu). See ``flaxopt.functional.swish``.
  """

  beta_init: float = 1.0
  param_dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: Array) -> Array:
    beta = self.param("beta", nn.initializers.constant(self.beta_init), (), self.param_dtype)
    return act.swish(x, beta)


class Maxout(nn.Module):
  """Maxout over groups of ``num_pieces`` consecutive features (Goodfellow et al. 2013).

  Shrinks ``axis`` by ``num_pieces``; put it after a layer with
  ``units * num_pieces`` outputs. See ``flaxopt.functional.maxout``.
  """

  num_pieces: int
  axis: int = -1

  def __call__(self, x: Array) -> Array:
    return act.maxout(x, self.num_pieces, axis=self.axis)


REGISTRY: dict[str, type[nn.Module]] = {"prelu": PReLU, "rrelu": RReLU}


def _module_fields(cls: type[nn.Module]) -> list[str]:
  return sorted(f.name for f in dataclasses.fields(cls) if f.name not in ("parent", "name"))


class Activation(nn.Module):
  """Any registry activation by name: ``Activation("leaky_relu", {"negative_slope": 0.2})``.

  ``kwargs`` are the hyperparameters of ``flaxopt.functional.activations.REGISTRY[
  activation]``, except for the two names with a module form: ``"prelu"`` owns a
  learnable slope (kwargs: ``PReLU`` fields ``slope_init``, ``shared``,
  ``param_dtype``) and ``"rrelu"`` draws slopes from the ``'rrelu'`` rng stream
  when ``deterministic=False`` (kwargs ``lower``, ``upper``). ``"maxout"`` divides
  the last axis by ``num_pieces`` (default 2). ``"swish"`` has a fixed beta here;
  use ``Swish`` for a learnable one.

  The name field is ``activation`` (positional first), since Flax reserves
  ``name`` for the module's own name.

  Raises:
    ValueError: for an unknown activation name or hyperparameter.
  """

  activation: str
  kwargs: Mapping[str, Any] = flax.core.FrozenDict()

  @nn.compact
  def __call__(self, x: Array, deterministic: bool = True) -> Array:
    name, kwargs = self.activation, dict(self.kwargs)
    if name not in act.REGISTRY:
      raise ValueError(
          f"Unknown activation {name!r}; valid activation names: "
          f"{', '.join(sorted(act.REGISTRY))}")
    if name in REGISTRY:
      cls = REGISTRY[name]
      unknown = sorted(set(kwargs) - set(_module_fields(cls)))
      if unknown:
        raise ValueError(
            f"Unknown hyperparameter(s) {unknown} for activation {name!r}; valid "
            f"hyperparameters: {', '.join(_module_fields(cls))}")
      module = cls(**kwargs, name=name)
      return module(x, deterministic) if cls is RReLU else module(x)
    return act.REGISTRY[name](**kwargs)(x)
