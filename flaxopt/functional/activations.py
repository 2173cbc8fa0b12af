"""Activation functions as pure ``jnp`` functions.

Every function keeps the input dtype (float32, bfloat16, float64; integer inputs
are promoted to the default float), works under ``jit``/``vmap``/``grad`` and is
written so that neither the value nor the gradient overflows for |x| up to 1e4
in float32 and bfloat16: exponentials are only ever taken of non-positive
numbers (``expm1(min(x, 0))``, ``exp(-|x|)``), so the branch that ``jnp.where``
discards cannot produce ``inf * 0 = NaN`` in the backward pass.

``REGISTRY`` maps each name to a constructor ``(**hyperparameters) -> fn`` with
the hyperparameters bound, e.g. ``REGISTRY["leaky_relu"](negative_slope=0.2)``.
"""

from __future__ import annotations

import functools
import math
import operator
from typing import Any, Callable, Optional

import jax
from jax import lax
import jax.numpy as jnp

Array = jax.Array
ArrayLike = jax.typing.ArrayLike

__all__ = [
    "sigmoid",
    "tanh",
    "hard_sigmoid",
    "hard_tanh",
    "relu",
    "relu6",
    "leaky_relu",
    "prelu",
    "rrelu",
    "elu",
    "selu",
    "celu",
    "gelu",
    "silu",
    "swish",
    "mish",
    "softplus",
    "softsign",
    "hard_swish",
    "maxout",
]

# Klambauer et al. 2017, eq. (14): the fixed point (mean 0, variance 1) constants.
_SELU_ALPHA = 1.6732632423543772848170429916717
_SELU_SCALE = 1.0507009873554804934193349852946
_SQRT_HALF = math.sqrt(0.5)
_SQRT_2_OVER_PI = math.sqrt(2.0 / math.pi)


def _float(x: ArrayLike) -> Array:
  """``x`` as an array of a floating dtype (kept if already inexact)."""
  x = jnp.asarray(x)
  return x.astype(jnp.result_type(x, float))


def _like(value: ArrayLike, x: Array) -> Array:
  """A hyperparameter/parameter cast to ``x``'s dtype (keeps the output dtype)."""
  return jnp.asarray(value).astype(x.dtype)


def _neg_expm1(x: Array, alpha: Any = 1.0) -> Array:
  """``alpha * (exp(x / alpha) - 1)`` evaluated on ``min(x, 0)`` only (no overflow)."""
  return alpha * jnp.expm1(jnp.minimum(x, 0.0) / alpha)


def sigmoid(x: ArrayLike) -> Array:
  """Logistic sigmoid.

  ``sigmoid(x) = 1 / (1 + exp(-x))``, via the XLA ``logistic`` op, which is
  exact in both tails. Classic logistic unit (e.g. Rumelhart, Hinton & Williams
  1986, "Learning representations by back-propagating errors").
  """
  return lax.logistic(_float(x))


def tanh(x: ArrayLike) -> Array:
  """Hyperbolic tangent.

  ``tanh(x) = (exp(x) - exp(-x)) / (exp(x) + exp(-x)) = 2 sigmoid(2x) - 1``;
  zero-centred alternative to the sigmoid (LeCun et al. 1998, "Efficient
  BackProp").
  """
  return jnp.tanh(_float(x))


def hard_sigmoid(x: ArrayLike) -> Array:
  """Piecewise-linear sigmoid, PyTorch / jax.nn convention.

  ``hard_sigmoid(x) = relu6(x + 3) / 6 = clip(x / 6 + 1/2, 0, 1)`` (slope 1/6,
  matches ``torch.nn.Hardsigmoid``, ``jax.nn.hard_sigmoid`` and MobileNetV3,
  Howard et al. 2019, "Searching for MobileNetV3").

  Warning: Courbariaux et al. 2015 ("BinaryConnect") define
  ``clip((x + 1) / 2, 0, 1)`` (slope 1/2) and Keras < 3 uses ``clip(0.2 x + 0.5,
  0, 1)``; this function is neither.
  """
  x = _float(x)
  return relu6(x + 3.0) / 6.0


def hard_tanh(x: ArrayLike) -> Array:
  """Piecewise-linear tanh.

  ``hard_tanh(x) = clip(x, -1, 1)`` (Collobert 2004, "Large Scale Machine
  Learning", PhD thesis; same as ``torch.nn.Hardtanh`` and ``jax.nn.hard_tanh``).
  """
  x = _float(x)
  return jnp.where(x > 1.0, 1.0, jnp.where(x < -1.0, -1.0, x)).astype(x.dtype)


def relu(x: ArrayLike) -> Array:
  """Rectified linear unit.

  ``relu(x) = max(x, 0)``, with derivative 0 at x = 0 (Nair & Hinton 2010,
  "Rectified Linear Units Improve Restricted Boltzmann Machines"; Glorot, Bordes
  & Bengio 2011, "Deep Sparse Rectifier Neural Networks").
  """
  x = _float(x)
  return jnp.where(x > 0.0, x, 0.0).astype(x.dtype)


def relu6(x: ArrayLike) -> Array:
  """ReLU capped at 6.

  ``relu6(x) = min(max(x, 0), 6)`` (Krizhevsky 2010, "Convolutional Deep Belief
  Networks on CIFAR-10"); derivative 0 at both kinks.
  """
  x = _float(x)
  return jnp.where(x > 0.0, jnp.where(x < 6.0, x, 6.0), 0.0).astype(x.dtype)


def leaky_relu(x: ArrayLike, negative_slope: float = 0.01) -> Array:
  """Leaky ReLU.

  ``leaky_relu(x) = x if x >= 0 else negative_slope * x`` (Maas, Hannun & Ng
  2013, "Rectifier Nonlinearities Improve Neural Network Acoustic Models").
  Default slope 0.01 as in the paper, PyTorch and jax.nn.
  """
  x = _float(x)
  return jnp.where(x >= 0.0, x, _like(negative_slope, x) * x)


def prelu(x: ArrayLike, slope: ArrayLike) -> Array:
  """Parametric ReLU with a given (usually learned) slope.

  ``prelu(x) = x if x >= 0 else slope * x``; ``slope`` broadcasts against ``x``
  (a scalar, or one value per channel on the last axis) and is cast to ``x``'s
  dtype. He et al. 2015, "Delving Deep into Rectifiers" (they initialise the
  slope at 0.25; see ``flaxopt.nn.PReLU``).
  """
  x = _float(x)
  return jnp.where(x >= 0.0, x, _like(slope, x) * x)


def rrelu(
    x: ArrayLike,
    key: Optional[Array] = None,
    lower: float = 1.0 / 8.0,
    upper: float = 1.0 / 3.0,
    deterministic: bool = True,
) -> Array:
  """Randomized leaky ReLU.

  ``rrelu(x) = x if x >= 0 else a * x``, where in training (``deterministic=False``)
  each element draws its own ``a ~ U(lower, upper)`` from ``key``, and at test
  time (``deterministic=True``) ``a = (lower + upper) / 2``. Xu, Wang, Chen & Li
  2015, "Empirical Evaluation of Rectified Activations in Convolutional
  Network". Defaults 1/8 and 1/3 as in PyTorch: the slope itself is uniform.
  The paper instead draws a divisor ``a ~ U(3, 8)`` (``y = x / a``) and divides
  by ``(3 + 8) / 2`` at test time, i.e. a test-time slope of 2/11 ~= 0.18
  instead of this function's (1/8 + 1/3) / 2 ~= 0.23.

  Raises:
    ValueError: if ``lower > upper`` or ``deterministic=False`` without ``key``.
  """
  x = _float(x)
  if not lower <= upper:
    raise ValueError(f"rrelu needs lower <= upper, got lower={lower}, upper={upper}")
  if deterministic:
    slope = _like((lower + upper) / 2.0, x)
  else:
    if key is None:
      raise ValueError("rrelu with deterministic=False needs a PRNG key; got key=None")
    slope = jax.random.uniform(key, x.shape, x.dtype, minval=lower, maxval=upper)
  return jnp.where(x >= 0.0, x, slope * x)


def elu(x: ArrayLike, alpha: float = 1.0) -> Array:
  """Exponential linear unit.

  ``elu(x) = x if x > 0 else alpha * (exp(x) - 1)`` (Clevert, Unterthiner &
  Hochreiter 2016, "Fast and Accurate Deep Network Learning by Exponential
  Linear Units (ELUs)"). ``expm1`` is evaluated on ``min(x, 0)`` so large
  positive inputs give finite gradients.
  """
  x = _float(x)
  return jnp.where(x > 0.0, x, _neg_expm1(x) * _like(alpha, x))


def selu(x: ArrayLike) -> Array:
  """Scaled exponential linear unit.

  ``selu(x) = scale * (x if x > 0 else alpha * (exp(x) - 1))`` with
  ``alpha = 1.6732632...`` and ``scale = 1.0507009...`` (Klambauer et al. 2017,
  "Self-Normalizing Neural Networks"; meant for ``lecun_normal`` weights).
  """
  x = _float(x)
  return _SELU_SCALE * jnp.where(x > 0.0, x, _SELU_ALPHA * _neg_expm1(x))


def celu(x: ArrayLike, alpha: float = 1.0) -> Array:
  """Continuously differentiable exponential linear unit.

  ``celu(x) = max(0, x) + min(0, alpha * (exp(x / alpha) - 1))`` (Barron 2017,
  "Continuously Differentiable Exponential Linear Units"). Same as PyTorch and
  jax.nn.

  Raises:
    ValueError: if ``alpha`` is a concrete 0 (the formula divides by alpha).
  """
  x = _float(x)
  if isinstance(alpha, (int, float)) and alpha == 0:
    raise ValueError(f"celu needs alpha != 0, got alpha={alpha}")
  return jnp.where(x > 0.0, x, _neg_expm1(x, _like(alpha, x)))


def gelu(x: ArrayLike, approximate: bool = False) -> Array:
  """Gaussian error linear unit.

  Exact (default): ``gelu(x) = x * Phi(x) = x/2 * erfc(-x / sqrt(2))``;
  ``approximate=True``: ``x/2 * (1 + tanh(sqrt(2/pi) * (x + 0.044715 x^3)))``.
  Hendrycks & Gimpel 2016, "Gaussian Error Linear Units (GELUs)".

  Warning: the default is the exact erf form, as in PyTorch; ``jax.nn.gelu`` and
  ``flax.linen.gelu`` default to ``approximate=True``.
  """
  x = _float(x)
  if approximate:
    inner = _SQRT_2_OVER_PI * (x + 0.044715 * (x * x * x))
    return 0.5 * x * (1.0 + jnp.tanh(inner))
  return 0.5 * x * lax.erfc(-_SQRT_HALF * x)


def silu(x: ArrayLike) -> Array:
  """Sigmoid-weighted linear unit (swish with beta = 1).

  ``silu(x) = x * sigmoid(x)`` (Elfwing, Uchibe & Doya 2018, "Sigmoid-Weighted
  Linear Units for Neural Network Function Approximation in Reinforcement
  Learning"; Hendrycks & Gimpel 2016).
  """
  x = _float(x)
  return x * lax.logistic(x)


def swish(x: ArrayLike, beta: ArrayLike = 1.0) -> Array:
  """Swish with a (possibly learned) beta.

  ``swish(x) = x * sigmoid(beta * x)`` (Ramachandran, Zoph & Le 2017,
  "Searching for Activation Functions"). ``beta = 1`` is ``silu``; learnable
  beta lives in ``flaxopt.nn.Swish``. Note ``jax.nn.swish`` is silu (no beta).
  """
  x = _float(x)
  return x * lax.logistic(_like(beta, x) * x)


def softplus(x: ArrayLike) -> Array:
  """Softplus, a smooth ReLU.

  ``softplus(x) = log(1 + exp(x))``, computed as ``max(x, 0) + log1p(exp(-|x|))``
  (Dugas et al. 2001, "Incorporating Second-Order Functional Knowledge for
  Better Option Pricing"). No beta/threshold parameters (PyTorch has them; its
  defaults beta=1, threshold=20 give the same values up to rounding).
  """
  x = _float(x)
  return jnp.maximum(x, 0.0) + jnp.log1p(jnp.exp(-jnp.abs(x)))


def mish(x: ArrayLike) -> Array:
  """Mish.

  ``mish(x) = x * tanh(softplus(x))`` (Misra 2019, "Mish: A Self Regularized
  Non-Monotonic Activation Function"); uses the overflow-free ``softplus``.
  """
  x = _float(x)
  return x * jnp.tanh(softplus(x))


def softsign(x: ArrayLike) -> Array:
  """Softsign.

  ``softsign(x) = x / (1 + |x|)`` (Bergstra et al. 2009, "Quadratic Polynomials
  Learn Better Image Features"; studied by Glorot & Bengio 2010).
  """
  x = _float(x)
  return x / (1.0 + jnp.abs(x))


def hard_swish(x: ArrayLike) -> Array:
  """Hard swish (piecewise-quadratic silu).

  ``hard_swish(x) = x * relu6(x + 3) / 6`` (Howard et al. 2019, "Searching for
  MobileNetV3"); same as ``torch.nn.Hardswish`` and ``jax.nn.hard_swish``.
  """
  x = _float(x)
  return x * hard_sigmoid(x)


def maxout(x: ArrayLike, num_pieces: int, axis: int = -1) -> Array:
  """Maxout over groups of ``num_pieces`` consecutive features.

  For an axis of size ``d = units * num_pieces``:
  ``maxout(x)[..., i] = max_{j < num_pieces} x[..., i * num_pieces + j]``, so the
  axis shrinks to ``d // num_pieces`` (Goodfellow et al. 2013, "Maxout
  Networks"). Feed it a layer with ``units * num_pieces`` outputs. Note the
  argument is the number of pieces k per unit, not the number of units (as in
  ``tf.contrib.layers.maxout``'s ``num_units``); groups are contiguous in both.

  Raises:
    ValueError: if ``num_pieces`` is not a positive integer or does not divide
      the size of ``axis``.
  """
  x = _float(x)
  try:
    num_pieces = operator.index(num_pieces)
  except TypeError:
    raise ValueError(
        f"maxout needs an integer num_pieces, got num_pieces={num_pieces!r}") from None
  if num_pieces <= 0:
    raise ValueError(f"maxout needs num_pieces >= 1, got num_pieces={num_pieces}")
  if not -x.ndim <= axis < x.ndim:
    raise ValueError(f"maxout axis={axis} is out of range for shape {x.shape}")
  axis = axis % x.ndim
  size = x.shape[axis]
  if size % num_pieces:
    raise ValueError(
        f"maxout: axis {axis} has size {size}, which num_pieces={num_pieces} "
        "does not divide")
  grouped = x.reshape(x.shape[:axis] + (size // num_pieces, num_pieces) + x.shape[axis + 1:])
  return jnp.max(grouped, axis=axis + 1)


# --------------------------------------------------------------------------------
# Registry: name -> constructor(**hyperparameters) -> Callable[[Array], Array].


def _constructor(
    name: str, fn: Callable[..., Array], **defaults: Any
) -> Callable[..., Callable[[Array], Array]]:
  """A constructor binding the hyperparameters ``defaults`` (the only ones allowed)."""

  def make(**kwargs: Any) -> Callable[[Array], Array]:
    unknown = sorted(set(kwargs) - set(defaults))
    if unknown:
      valid = ", ".join(sorted(defaults)) or "none"
      raise ValueError(
          f"Unknown hyperparameter(s) {unknown} for activation {name!r}; "
          f"valid hyperparameters: {valid}")
    return functools.partial(fn, **{**defaults, **kwargs})

  make.__name__ = name
  make.__doc__ = f"Returns ``{fn.__name__}`` with hyperparameters {sorted(defaults)} bound."
  return make


REGISTRY: dict[str, Callable[..., Callable[[Array], Array]]] = {
    "sigmoid": _constructor("sigmoid", sigmoid),
    "tanh": _constructor("tanh", tanh),
    "hard_sigmoid": _constructor("hard_sigmoid", hard_sigmoid),
    "hard_tanh": _constructor("hard_tanh", hard_tanh),
    "relu": _constructor("relu", relu),
    "relu6": _constructor("relu6", relu6),
    "leaky_relu": _constructor("leaky_relu", leaky_relu, negative_slope=0.01),
    # A fixed slope; the learnable one is flaxopt.nn.PReLU / Activation("prelu").
    "prelu": _constructor("prelu", prelu, slope=0.25),
    # The deterministic (test-time, mean-slope) form; the random one needs a key
    # per call, see flaxopt.nn.RReLU / Activation("rrelu").
    "rrelu": _constructor("rrelu", rrelu, lower=1.0 / 8.0, upper=1.0 / 3.0),
    "elu": _constructor("elu", elu, alpha=1.0),
    "selu": _constructor("selu", selu),
    "celu": _constructor("celu", celu, alpha=1.0),
    "gelu": _constructor("gelu", gelu, approximate=False),
    "silu": _constructor("silu", silu),
    "swish": _constructor("swish", swish, beta=1.0),
    "mish": _constructor("mish", mish),
    "softplus": _constructor("softplus", softplus),
    "softsign": _constructor("softsign", softsign),
    "hard_swish": _constructor("hard_swish", hard_swish),
    "maxout": _constructor("maxout", maxout, num_pieces=2, axis=-1),
}
