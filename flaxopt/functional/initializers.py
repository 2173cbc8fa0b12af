"""Weight initializers: factories returning ``init(key, shape, dtype=jnp.float32)``.

The returned functions have the ``jax.nn.initializers`` signature, so they plug
into any Flax ``kernel_init``. Kernels are laid out as Flax lays them out:
dense ``(fan_in, fan_out)``, conv ``(*window, in, out)`` with
``fan_in = prod(window) * in`` and ``fan_out = prod(window) * out`` (see ``fans``).

Warning: the ``*_normal`` initializers here draw plain (untruncated) normals with
exactly the stated standard deviation, as in the papers. ``jax.nn.initializers``
/ Flax's ``he_normal``, ``lecun_normal`` and ``glorot_normal`` draw a unit
normal truncated to [-2, 2] and rescale it by 1/0.87962566 so the variance is
right; their tails stop at ~2.27 standard deviations (3.5% of draws beyond
2 sd instead of 4.6%). The ``he_*`` gain ``sqrt(2 / (1 + a^2))`` is the paper's
and PyTorch's ``kaiming_*``; ``jax.nn.initializers.he_*`` have no slope argument.
"""

from __future__ import annotations

import math
from typing import Any, Callable, Sequence

import jax
import jax.numpy as jnp

Array = jax.Array
Shape = Sequence[int]
Initializer = Callable[..., Array]  # init(key, shape, dtype=jnp.float32) -> Array

__all__ = [
    "fans",
    "random_normal",
    "random_uniform",
    "standard_uniform",
    "xavier_normal",
    "xavier_uniform",
    "he_normal",
    "he_uniform",
    "lecun_normal",
    "orthogonal",
]

_MODES = ("fan_in", "fan_out", "fan_avg")


def fans(shape: Shape) -> tuple[int, int]:
  """``(fan_in, fan_out)`` of a dense ``(in, out)`` or conv ``(*window, in, out)`` kernel.

  ``fan_in = prod(window) * in``, ``fan_out = prod(window) * out``.

  Raises:
    ValueError: for rank-0 and rank-1 shapes (biases, scalars), whose fans are
      undefined.
  """
  shape = tuple(int(d) for d in shape)
  if len(shape) < 2:
    raise ValueError(
        f"fan_in/fan_out are undefined for shape {shape} (rank {len(shape)}); "
        "need a dense (in, out) or conv (*window, in, out) kernel shape")
  receptive_field = math.prod(shape[:-2])
  return shape[-2] * receptive_field, shape[-1] * receptive_field


def _fan(shape: Shape, mode: str) -> float:
  fan_in, fan_out = fans(shape)
  return {"fan_in": fan_in, "fan_out": fan_out, "fan_avg": (fan_in + fan_out) / 2}[mode]


def _check_mode(mode: str) -> None:
  if mode not in _MODES:
    raise ValueError(f"Unknown fan mode {mode!r}; valid modes: {', '.join(_MODES)}")


def _check_nonnegative(name: str, value: float) -> None:
  if not value >= 0:
    raise ValueError(f"{name} must be >= 0, got {name}={value}")


def _scale(numerator: float, fan: float, shape: Shape) -> float:
  """``sqrt(numerator / fan)``, with a clear error for empty kernels."""
  if fan <= 0:
    raise ValueError(f"fan is {fan} for shape {tuple(shape)}; cannot scale by 1/fan")
  return math.sqrt(numerator / fan)


def _compute_dtype(dtype: Any) -> Any:
  """Sample in float32 (float64 if asked for) and cast, so bfloat16 draws are exact."""
  return jnp.promote_types(dtype, jnp.float32)


def _normal(key: Array, shape: Shape, dtype: Any, stddev: float) -> Array:
  sample = jax.random.normal(key, tuple(shape), _compute_dtype(dtype))
  return (stddev * sample).astype(dtype)


def _uniform(key: Array, shape: Shape, dtype: Any, bound: float) -> Array:
  sample = jax.random.uniform(
      key, tuple(shape), _compute_dtype(dtype), minval=-bound, maxval=bound)
  return sample.astype(dtype)


def random_normal(stddev: float = 0.01) -> Initializer:
  """``W ~ N(0, stddev^2)``, any shape.

  The fixed-scale Gaussian of early deep nets (e.g. Krizhevsky, Sutskever &
  Hinton 2012, "ImageNet Classification with Deep Convolutional Neural
  Networks", stddev 0.01). Same default as ``jax.nn.initializers.normal``.
  """
  _check_nonnegative("stddev", stddev)

  def init(key: Array, shape: Shape, dtype: Any = jnp.float32) -> Array:
    return _normal(key, shape, dtype, stddev)

  return init


def random_uniform(scale: float = 0.05) -> Initializer:
  """``W ~ U(-scale, scale)``, any shape.

  Fixed-scale uniform (Keras' ``RandomUniform(-0.05, 0.05)`` default).
  Warning: ``jax.nn.initializers.uniform(scale)`` is ``U(0, scale)``, not symmetric.
  """
  _check_nonnegative("scale", scale)

  def init(key: Array, shape: Shape, dtype: Any = jnp.float32) -> Array:
    return _uniform(key, shape, dtype, scale)

  return init


def standard_uniform() -> Initializer:
  """``W ~ U(-1/sqrt(fan_in), 1/sqrt(fan_in))``, i.e. variance ``1 / (3 fan_in)``.

  The "commonly used heuristic" of Glorot & Bengio 2010, eq. (1) ("Understanding
  the difficulty of training deep feedforward neural networks"). It is also
  PyTorch's default ``nn.Linear``/``nn.Conv`` weight init
  (``kaiming_uniform_(a=sqrt(5))``).
  """

  def init(key: Array, shape: Shape, dtype: Any = jnp.float32) -> Array:
    fan_in, _ = fans(shape)
    return _uniform(key, shape, dtype, _scale(1.0, fan_in, shape))

  return init


def xavier_normal(gain: float = 1.0) -> Initializer:
  """``W ~ N(0, gain^2 * 2 / (fan_in + fan_out))``.

  Glorot & Bengio 2010 ("Understanding the difficulty of training deep
  feedforward neural networks"), the normal form of their eq. (16); same as
  ``torch.nn.init.xavier_normal_``. Untruncated, unlike
  ``jax.nn.initializers.glorot_normal``.
  """
  _check_nonnegative("gain", gain)

  def init(key: Array, shape: Shape, dtype: Any = jnp.float32) -> Array:
    fan_in, fan_out = fans(shape)
    return _normal(key, shape, dtype, gain * _scale(2.0, fan_in + fan_out, shape))

  return init


def xavier_uniform(gain: float = 1.0) -> Initializer:
  """``W ~ U(-b, b)``, ``b = gain * sqrt(6 / (fan_in + fan_out))``.

  Glorot & Bengio 2010, eq. (16) ("normalized initialization"); same as
  ``torch.nn.init.xavier_uniform_`` and ``jax.nn.initializers.glorot_uniform``.
  """
  _check_nonnegative("gain", gain)

  def init(key: Array, shape: Shape, dtype: Any = jnp.float32) -> Array:
    fan_in, fan_out = fans(shape)
    return _uniform(key, shape, dtype, gain * _scale(6.0, fan_in + fan_out, shape))

  return init


def _he_std(shape: Shape, negative_slope: float, mode: str) -> float:
  return _scale(2.0 / (1.0 + negative_slope**2), _fan(shape, mode), shape)


def he_normal(negative_slope: float = 0.0, mode: str = "fan_in") -> Initializer:
  """``W ~ N(0, 2 / ((1 + a^2) * fan))``, ``a = negative_slope``, ``fan`` by ``mode``.

  He, Zhang, Ren & Sun 2015, "Delving Deep into Rectifiers" (eq. (10) for ReLU,
  and the (1 + a^2) factor for PReLU/leaky ReLU with slope a). ``mode``:
  "fan_in" (forward pass, the paper's default), "fan_out" (backward pass) or
  "fan_avg". Matches ``torch.nn.init.kaiming_normal_``; untruncated, unlike
  ``jax.nn.initializers.he_normal``.

  Raises:
    ValueError: for an unknown ``mode``.
  """
  _check_mode(mode)

  def init(key: Array, shape: Shape, dtype: Any = jnp.float32) -> Array:
    return _normal(key, shape, dtype, _he_std(shape, negative_slope, mode))

  return init


def he_uniform(negative_slope: float = 0.0, mode: str = "fan_in") -> Initializer:
  """``W ~ U(-b, b)``, ``b = sqrt(6 / ((1 + a^2) * fan))`` (variance as ``he_normal``).

  He et al. 2015, "Delving Deep into Rectifiers", uniform form; matches
  ``torch.nn.init.kaiming_uniform_`` and ``jax.nn.initializers.he_uniform``
  (for a = 0).

  Raises:
    ValueError: for an unknown ``mode``.
  """
  _check_mode(mode)

  def init(key: Array, shape: Shape, dtype: Any = jnp.float32) -> Array:
    return _uniform(key, shape, dtype, math.sqrt(3.0) * _he_std(shape, negative_slope, mode))

  return init


def lecun_normal() -> Initializer:
  """``W ~ N(0, 1 / fan_in)``.

  LeCun, Bottou, Orr & Mueller 1998, "Efficient BackProp" (section 4.6); the
  init SELU networks assume (Klambauer et al. 2017). Untruncated, unlike
  ``jax.nn.initializers.lecun_normal``.
  """

  def init(key: Array, shape: Shape, dtype: Any = jnp.float32) -> Array:
    fan_in, _ = fans(shape)
    return _normal(key, shape, dtype, _scale(1.0, fan_in, shape))

  return init


def orthogonal(gain: float = 1.0) -> Initializer:
  """A (scaled) random orthogonal matrix, Haar-distributed.

  ``W = gain * Q`` with ``Q`` from the QR decomposition of a Gaussian matrix,
  sign-corrected by ``sign(diag(R))`` (Mezzadri 2007) so it is uniform over the
  orthogonal group. Saxe, McClelland & Ganguli 2014, "Exact solutions to the
  nonlinear dynamics of learning in deep linear neural networks". Conv kernels
  ``(*window, in, out)`` are orthogonal as a ``(prod(window) * in, out)``
  matrix: ``W^T W = gain^2 I`` if rows >= cols, else ``W W^T = gain^2 I``.
  (``torch.nn.init.orthogonal_`` flattens ``(out, in, *window)`` the other way
  round; ``jax.nn.initializers.orthogonal`` uses the same layout as here.)

  Raises:
    ValueError: for rank < 2 shapes.
  """
  _check_nonnegative("gain", gain)

  def init(key: Array, shape: Shape, dtype: Any = jnp.float32) -> Array:
    shape = tuple(int(d) for d in shape)
    if len(shape) < 2:
      raise ValueError(f"orthogonal needs a kernel shape of rank >= 2, got shape {shape}")
    rows, cols = math.prod(shape[:-1]), shape[-1]
    # QR needs float32/float64.
    a = jax.random.normal(key, (max(rows, cols), min(rows, cols)), _compute_dtype(dtype))
    q, r = jnp.linalg.qr(a)
    q = q * jnp.sign(jnp.diagonal(r))[None, :]
    if rows < cols:
      q = q.T
    return (gain * q).reshape(shape).astype(dtype)

  return init


REGISTRY: dict[str, Callable[..., Initializer]] = {
    "random_normal": random_normal,
    "random_uniform": random_uniform,
    "standard_uniform": standard_uniform,
    "xavier_normal": xavier_normal,
    "xavier_uniform": xavier_uniform,
    "he_normal": he_normal,
    "he_uniform": he_uniform,
    "lecun_normal": lecun_normal,
    "orthogonal": orthogonal,
}
