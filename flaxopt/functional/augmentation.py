"""Data augmentation on batches: pure jnp, explicit keys, run inside the jitted train step.

Every op has the signature ``op(key, x, y, **hyperparameters) -> (x, y)`` with
``x`` channels-last ``(N, *spatial, C)`` (1D signals ``(N, L, C)`` or images
``(N, H, W, C)``) and ``y`` one-hot (or soft) labels ``(N, K)`` float.
Label-preserving ops pass ``y`` through (it may be None); mixup and cutmix mix
it. Randomness is drawn per example in one vectorised call (no Python loop
over the batch); shapes and dtypes are kept, so the ops trace once inside a
jitted train step and cost a few elementwise passes.

``augment_pipeline([(name, kwargs), ...])`` composes registered ops in order,
each with its own split of the key; ``augment_pipeline_from_config(cfg)``
reads ``cfg['ops']`` (comma-separated names, '' for none) and ``cfg[<name>]``
kwargs from any mapping. ``augment_defaults()`` lists every op with its keyword
defaults (the one source of the ``augment.*`` config fields, which
``flaxopt.training.config`` builds).

Registry family ``augment``: each augmentation name -> ``constructor(**kwargs)``
returning ``fn(key, x, y) -> (x, y)``.
"""

from __future__ import annotations

import functools
import inspect
import numbers
from typing import Any, Callable, Mapping, Optional, Sequence, Union

import jax
import jax.numpy as jnp
from jax import lax

__all__ = [
    "random_translate",
    "random_crop",
    "horizontal_flip",
    "gaussian_noise",
    "amplitude_scale",
    "cutout",
    "mixup",
    "cutmix",
    "augment_pipeline",
    "augment_pipeline_from_config",
    "augment_defaults",
]

Array = jax.Array
AugmentFn = Callable[[Array, Array, Optional[Array]], tuple[Array, Optional[Array]]]
IntOrTuple = Union[int, Sequence[int]]


# --- argument checks ----------------------------------------------------------


def _check_batch(x: Array, op: str, ndim: Optional[int] = None) -> int:
  """Returns the number of spatial axes of ``x`` (N, *spatial, C)."""
  if x.ndim < 3 or (ndim is not None and x.ndim != ndim):
    want = f"{ndim}-D" if ndim is not None else "at least 3-D"
    raise ValueError(f"{op} needs a {want} channels-last batch (N, *spatial, C), "
                     f"got shape {x.shape}.")
  return x.ndim - 2


def _per_axis(value: IntOrTuple, nd: int, name: str) -> tuple[int, ...]:
  values = (value,) * nd if isinstance(value, numbers.Integral) else tuple(value)
  if len(values) != nd or any(
      isinstance(v, bool) or not isinstance(v, numbers.Integral) or v < 0 for v in values):
    raise ValueError(f"{name} must be a non-negative int or {nd} of them, got {value!r}.")
  return tuple(int(v) for v in values)


def _check_number(name: str, value: Any, low: float = -float("inf"),
                  high: float = float("inf"), low_open: bool = False) -> None:
  if any(isinstance(v, jax.core.Tracer) for v in (value, low, high)):
    return  # traced (stacked runs): checked as a concrete config value before tracing
  ok = not isinstance(value, bool) and isinstance(value, numbers.Real)
  if ok:
    ok = (value > low if low_open else value >= low) and value <= high
  if not ok:
    bound = f"{'(' if low_open else '['}{low}, {high}]"
    raise ValueError(f"{name} must be a number in {bound}, got {value!r}.")


def _check_labels(y: Optional[Array], x: Array, op: str) -> Array:
  if y is None or y.ndim != 2 or y.shape[0] != x.shape[0]:
    shape = None if y is None else y.shape
    raise ValueError(f"{op} needs one-hot labels y of shape (N, K) with N={x.shape[0]}, "
                     f"got {shape}.")
  return y


def _bcast(v: Array, ndim: int) -> Array:
  """(N,) -> (N, 1, ..., 1) with ``ndim`` axes."""
  return v.reshape(v.shape + (1,) * (ndim - v.ndim))


# --- label-preserving ops -----------------------------------------------------


def _shift_and_crop(key: Array, x: Array, pads: tuple[int, ...], pad_mode: str,
                    fill: float) -> Array:
  """Pads each spatial axis by ``pads`` and crops back at a random per-example offset."""
  nd = len(pads)
  pad_width = [(0, 0)] + [(p, p) for p in pads] + [(0, 0)]
  if pad_mode == "constant":
    padded = jnp.pad(x, pad_width, constant_values=jnp.asarray(fill, x.dtype))
  else:
    padded = jnp.pad(x, pad_width, mode=pad_mode)
  offsets = jax.random.randint(key, (x.shape[0], nd), 0, 2 * jnp.asarray(pads) + 1)

  def crop(xi: Array, off: Array) -> Array:
    return lax.dynamic_slice(xi, [off[i] for i in range(nd)] + [0], x.shape[1:])

  return jax.vmap(crop)(padded, offsets)


def random_translate(key: Array, x: Array, y: Optional[Array] = None, *,
                     max_shift: IntOrTuple = 4, fill: float = 0.0
                     ) -> tuple[Array, Optional[Array]]:
  """Shift each example by a random integer offset, filling with ``fill``.

  ``x'[i, j] = x[i, j - s_i]`` (``fill`` outside), ``s_i ~ U{-m, ..., m}``
  independently per example and spatial axis, ``m = max_shift`` (an int or one
  per spatial axis). 1D and 2D (any number of spatial axes). Translation
  augmentation as in LeCun et al., 1998 / Simard et al., 2003.
  """
  nd = _check_batch(x, "random_translate")
  shifts = _per_axis(max_shift, nd, "max_shift")
  _check_number("fill", fill)
  return _shift_and_crop(key, x, shifts, "constant", fill), y


_PAD_MODES = ("constant", "reflect", "edge", "symmetric", "wrap")


def random_crop(key: Array, x: Array, y: Optional[Array] = None, *,
                padding: IntOrTuple = 4, pad_mode: str = "constant"
                ) -> tuple[Array, Optional[Array]]:
  """Pad by ``padding`` then crop back to the original size at a random offset.

  Offsets ``o_i ~ U{0, ..., 2 p}`` per example and spatial axis; ``pad_mode``
  is a ``jnp.pad`` mode ('constant' zeros, as the CIFAR recipe of He et al.,
  2016; 'reflect', 'edge', ...). With zero padding this equals
  ``random_translate(max_shift=padding)``.
  """
  nd = _check_batch(x, "random_crop")
  pads = _per_axis(padding, nd, "padding")
  if pad_mode not in _PAD_MODES:
    raise ValueError(f"pad_mode must be one of {_PAD_MODES}, got {pad_mode!r}.")
  if pad_mode in ("reflect", "symmetric"):
    for p, n in zip(pads, x.shape[1:-1]):
      if p >= n:
        raise ValueError(f"padding {padding!r} too large for {pad_mode} padding of "
                         f"spatial shape {x.shape[1:-1]}.")
  return _shift_and_crop(key, x, pads, pad_mode, 0.0), y


def horizontal_flip(key: Array, x: Array, y: Optional[Array] = None, *,
                    prob: float = 0.5) -> tuple[Array, Optional[Array]]:
  """Mirror each image left-right with probability ``prob`` (images only).

  ``x'[i, h, w] = x[i, h, W - 1 - w]`` for flipped examples. Needs
  ``(N, H, W, C)``; a 1D batch raises ValueError (flipping a time series
  reverses time, which is not label-preserving in general).
  """
  if x.ndim != 4:
    raise ValueError(f"horizontal_flip needs images (N, H, W, C), got shape {x.shape}.")
  _check_number("prob", prob, 0.0, 1.0)
  flip = jax.random.bernoulli(key, prob, (x.shape[0],))
  return jnp.where(_bcast(flip, 4), x[:, :, ::-1, :], x), y


def gaussian_noise(key: Array, x: Array, y: Optional[Array] = None, *,
                   stddev: float = 0.1) -> tuple[Array, Optional[Array]]:
  """Additive Gaussian noise: ``x' = x + stddev * eps``, ``eps ~ N(0, I)``.

  Noise injection as regularizer (Bishop, 1995, "Training with noise is
  equivalent to Tikhonov regularization").
  """
  _check_batch(x, "gaussian_noise")
  _check_number("stddev", stddev, 0.0)
  noise = jax.random.normal(key, x.shape, x.dtype)
  return x + jnp.asarray(stddev, x.dtype) * noise, y


def amplitude_scale(key: Array, x: Array, y: Optional[Array] = None, *,
                    low: float = 0.8, high: float = 1.2
                    ) -> tuple[Array, Optional[Array]]:
  """Multiply each example by a random amplitude ``a_i ~ U(low, high)``.

  ``x'[i] = a_i * x[i]``; a standard augmentation for signals (e.g. Um et al.,
  2017, "Data augmentation of wearable sensor data").
  """
  _check_batch(x, "amplitude_scale")
  _check_number("low", low)
  _check_number("high", high, low)
  scale = jax.random.uniform(key, (x.shape[0],), x.dtype, low, high)
  return x * _bcast(scale, x.ndim), y


def _box_mask(lo: Sequence[Array], hi: Sequence[Array], x: Array) -> Array:
  """Boolean (N, *spatial, 1): inside [lo_d, hi_d) on every spatial axis d."""
  nd = x.ndim - 2
  mask = jnp.ones((x.shape[0],) + (1,) * (nd + 1), bool)
  for d, size in enumerate(x.shape[1:-1]):
    shape = [1] * (nd + 2)
    shape[d + 1] = size
    coord = jnp.arange(size).reshape(shape)
    mask = mask & (coord >= _bcast(lo[d], nd + 2)) & (coord < _bcast(hi[d], nd + 2))
  return mask


def cutout(key: Array, x: Array, y: Optional[Array] = None, *,
           size: IntOrTuple = 8, prob: float = 1.0, fill: float = 0.0
           ) -> tuple[Array, Optional[Array]]:
  """Cutout: set a ``size``-wide box at a random centre to ``fill``.

  Per example, centre ``c ~ U{0, ..., dim - 1}`` per spatial axis, box
  ``[c - size // 2, c - size // 2 + size)`` clipped to the image (so it may be
  partly outside, as in the paper), applied with probability ``prob``. The
  paper used ``size=16`` on 32x32 CIFAR-10 images; the default 8 suits the
  smaller inputs here.
  DeVries & Taylor, 2017, "Improved regularization of convolutional neural
  networks with cutout".
  """
  nd = _check_batch(x, "cutout")
  sizes = _per_axis(size, nd, "size")
  _check_number("prob", prob, 0.0, 1.0)
  _check_number("fill", fill)
  k_apply, *k_axes = jax.random.split(key, nd + 1)
  n = x.shape[0]
  lo, hi = [], []
  for d, dim in enumerate(x.shape[1:-1]):
    c = jax.random.randint(k_axes[d], (n,), 0, dim)
    lo.append(c - sizes[d] // 2)
    hi.append(c - sizes[d] // 2 + sizes[d])
  mask = _box_mask(lo, hi, x) & _bcast(jax.random.bernoulli(k_apply, prob, (n,)), x.ndim)
  return jnp.where(mask, jnp.asarray(fill, x.dtype), x), y


# --- label-mixing ops ---------------------------------------------------------


def _mix_weights(key: Array, alpha: float, n: int, per_example: bool) -> Array:
  lam = jax.random.beta(key, alpha, alpha, (n,) if per_example else ())
  return jnp.broadcast_to(lam, (n,))


def mixup(key: Array, x: Array, y: Optional[Array] = None, *, alpha: float = 0.2,
          per_example: bool = True) -> tuple[Array, Array]:
  """Mixup: convex combinations of example pairs and of their labels.

  ``x' = lam x + (1 - lam) x[perm]``, ``y' = lam y + (1 - lam) y[perm]``,
  ``lam ~ Beta(alpha, alpha)``, ``perm`` a random permutation of the batch.
  Zhang et al., 2018, "mixup: Beyond empirical risk minimization". The paper's
  code draws one ``lam`` per batch (``per_example=False``); the default here
  draws one per example.
  """
  _check_batch(x, "mixup")
  y = _check_labels(y, x, "mixup")
  _check_number("alpha", alpha, 0.0, low_open=True)
  k_perm, k_lam = jax.random.split(key)
  n = x.shape[0]
  perm = jax.random.permutation(k_perm, n)
  lam = _mix_weights(k_lam, alpha, n, per_example)
  lx = _bcast(lam.astype(x.dtype), x.ndim)
  ly = _bcast(lam.astype(y.dtype), 2)
  return lx * x + (1 - lx) * x[perm], ly * y + (1 - ly) * y[perm]


def cutmix(key: Array, x: Array, y: Optional[Array] = None, *, alpha: float = 1.0,
           per_example: bool = True) -> tuple[Array, Array]:
  """CutMix: paste a random box from a partner example; mix labels by area.

  ``lam ~ Beta(alpha, alpha)``; box side ``floor(dim * (1 - lam)**(1/d))`` per
  spatial axis (``sqrt`` for images), centre uniform, clipped to the image.
  ``x' = M * x[perm] + (1 - M) * x`` and ``y' = (1 - a) y + a y[perm]`` with
  ``a`` the exact pasted area fraction after clipping. Yun et al., 2019,
  "CutMix: Regularization strategy to train strong classifiers with
  localizable features". One box per example by default; the paper's code
  uses one per batch (``per_example=False`` shares ``lam``, centre varies).
  """
  nd = _check_batch(x, "cutmix")
  y = _check_labels(y, x, "cutmix")
  _check_number("alpha", alpha, 0.0, low_open=True)
  k_perm, k_lam, *k_axes = jax.random.split(key, nd + 2)
  n = x.shape[0]
  perm = jax.random.permutation(k_perm, n)
  lam = _mix_weights(k_lam, alpha, n, per_example)
  ratio = (1.0 - lam) ** (1.0 / nd)
  lo, hi = [], []
  area = jnp.ones((n,), jnp.float32)
  for d, dim in enumerate(x.shape[1:-1]):
    cut = jnp.floor(dim * ratio).astype(jnp.int32)
    c = jax.random.randint(k_axes[d], (n,), 0, dim)
    lo_d = jnp.clip(c - cut // 2, 0, dim)
    hi_d = jnp.clip(c + cut // 2, 0, dim)
    lo.append(lo_d)
    hi.append(hi_d)
    area = area * (hi_d - lo_d) / dim
  mask = _box_mask(lo, hi, x)
  a = _bcast(area.astype(y.dtype), 2)
  return jnp.where(mask, x[perm], x), (1 - a) * y + a * y[perm]


# --- registry and pipelines -----------------------------------------------------

# Registry name == function name.
_OPS: dict[str, Callable[..., tuple[Array, Optional[Array]]]] = {
    "random_translate": random_translate,
    "random_crop": random_crop,
    "horizontal_flip": horizontal_flip,
    "gaussian_noise": gaussian_noise,
    "amplitude_scale": amplitude_scale,
    "cutout": cutout,
    "mixup": mixup,
    "cutmix": cutmix,
}


def _hyperparameters(op: Callable[..., Any]) -> dict[str, Any]:
  return {p.name: p.default for p in inspect.signature(op).parameters.values()
          if p.kind is inspect.Parameter.KEYWORD_ONLY}


def _constructor(name: str) -> Callable[..., AugmentFn]:
  op = _OPS[name]
  valid = _hyperparameters(op)

  def make(**kwargs: Any) -> AugmentFn:
    unknown = set(kwargs) - set(valid)
    if unknown:
      raise ValueError(f"Unknown {name} arguments {sorted(unknown)}; valid: {sorted(valid)}.")
    return functools.partial(op, **kwargs)

  make.__doc__ = f"``{op.__name__}`` with hyperparameters bound: ``fn(key, x, y) -> (x, y)``."
  return make


# Augmentation name -> constructor(**kwargs) -> fn(key, x, y) -> (x, y).
REGISTRY: dict[str, Callable[..., AugmentFn]] = {name: _constructor(name) for name in _OPS}


def augment_pipeline(specs: Sequence[Union[str, tuple[str, Mapping[str, Any]]]]) -> AugmentFn:
  """Composes augmentation ops in order: ``fn(key, x, y) -> (x, y)``.

  Each spec is ``(name, kwargs)`` (or a bare name); op ``i`` gets the ``i``-th
  key of ``jax.random.split(key, len(specs))``. An empty list is the identity.
  Pure jnp: call it inside the jitted train step. Unknown names and arguments
  raise ValueError when the pipeline is built.

  Example:
    >>> aug = augment_pipeline([("random_crop", {"padding": 4}),
    ...                         ("horizontal_flip", {}), ("mixup", {"alpha": 0.2})])
    >>> x, y = aug(key, x, y_onehot)  # doctest: +SKIP
  """
  ops = []
  for spec in specs:
    name, kwargs = (spec, {}) if isinstance(spec, str) else spec
    if name not in REGISTRY:
      raise ValueError(f"Unknown augmentation {name!r}; valid: {', '.join(sorted(REGISTRY))}.")
    ops.append(REGISTRY[name](**dict(kwargs or {})))

  def fn(key: Array, x: Array, y: Optional[Array] = None):
    if not ops:
      return x, y
    for k, op in zip(jax.random.split(key, len(ops)), ops):
      x, y = op(k, x, y)
    return x, y

  return fn


def _as_dict(value: Any) -> dict[str, Any]:
  if value is None:
    return {}
  if hasattr(value, "to_dict"):  # ml_collections.ConfigDict
    return value.to_dict()
  return dict(value)


def augment_pipeline_from_config(cfg: Mapping[str, Any]) -> AugmentFn:
  """Pipeline from ``cfg['ops']`` (comma-separated names, '' -> identity) and ``cfg[<name>]``.

  Example: ``ops='random_crop,horizontal_flip'`` with
  ``cfg['random_crop'] = {'padding': 4}``; missing sub-dicts mean defaults.
  """
  ops = cfg.get("ops", "") or ""
  names = [n.strip() for n in str(ops).split(",") if n.strip()]
  return augment_pipeline([(n, _as_dict(cfg.get(n))) for n in names])


def augment_defaults() -> dict[str, dict[str, Any]]:
  """Every op's keyword defaults: ``{name: {kwarg: default}}`` (a fresh dict each call)."""
  return {name: _hyperparameters(op) for name, op in _OPS.items()}
