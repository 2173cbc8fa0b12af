"""Models (Flax NNX): twins of ``flaxopt.nn.models`` built from the same ``model.*`` config.

``Logistic``, ``MLP``, ``CNN`` (1D or 2D by input rank) and ``ResNet`` have the layers,
names and math of their linen twins (read ``flaxopt.nn.models`` for the architecture and
the config fields). Differences forced by NNX:

* the per-example ``input_shape`` ``(*spatial, C)`` (no batch axis) is given at
  construction, since NNX creates parameters eagerly; calling with another shape is a
  ValueError;
* train/eval is module state: ``model.train()`` / ``model.eval()`` (or
  ``nnx.view(model, deterministic=..., use_running_average=...)``) instead of the
  ``train=`` argument; a new model is in training mode (NNX's convention);
* keys come from the ``'dropout'``, ``'rrelu'`` and ``'pool'`` streams of the ``nnx.Rngs``
  given at construction, or of ``rngs=`` given at call time (which takes precedence). Every
  stochastic layer draws its own key from the stream in turn, so masks have the same law
  as the linen model's but not the same bits (linen folds each module's path into the
  key).

The parameter and statistic trees (``nnx.to_pure_dict(nnx.state(model, nnx.Param))``)
have the linen models' layout and names, so ``flaxopt.nnx.load_linen_variables`` copies a
linen model's variables in and ``linen_variables`` copies them out.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Mapping, Optional, Sequence

import jax
import jax.numpy as jnp
from flax import nnx

from flaxopt import registry
from flaxopt.nn import models as linen_models
from flaxopt.nn.models import LayerConfig
from flaxopt.nnx import normalization, pooling
from flaxopt.nnx._rng import KeySource
from flaxopt.nnx.activations import Activation
from flaxopt.nnx.normalization import WeightNorm
from flaxopt.nnx.regularization import DropConnectDense, Dropout

Array = jax.Array
Shape = tuple[int, ...]

__all__ = ["Logistic", "MLP", "CNN", "ConvNet", "ResNet", "BasicBlock", "build_model", "from_linen_model"]

POOL_WINDOW = linen_models.POOL_WINDOW


# Constructors of the layers of one hidden layer (see flaxopt.nn.models' helpers).
def _dense(c: LayerConfig, in_features: int, features: int, rngs: nnx.Rngs) -> nnx.Module:
  init = registry.get("initializer", c.kernel_init)
  if c.dropconnect > 0:
    return DropConnectDense(in_features, features, rate=c.dropconnect, kernel_init=init,
                            rngs=rngs)
  layer = nnx.Linear(in_features, features, kernel_init=init, rngs=rngs)
  return WeightNorm(layer) if c.norm == "weight" else layer


def _conv(c: LayerConfig, in_features: int, features: int, kernel: int, stride: int,
          padding: int, nd: int, rngs: nnx.Rngs) -> nnx.Module:
  layer = nnx.Conv(in_features, features, (kernel,) * nd, strides=(stride,) * nd,
                   padding=padding, kernel_init=registry.get("initializer", c.kernel_init),
                   rngs=rngs)
  return WeightNorm(layer) if c.norm == "weight" else layer


_NORM_KWARGS = {"batch": lambda c: {"axis_name": c.axis_name},
                "group": lambda c: {"num_groups": c.num_groups}}


def _norm(c: LayerConfig, features: int, rngs: nnx.Rngs) -> Optional[nnx.Module]:
  if c.norm in ("none", "weight"):
    return None
  kwargs = _NORM_KWARGS.get(c.norm, lambda _: {})(c)
  return normalization.REGISTRY[c.norm](features, rngs=rngs, **kwargs)


def _act(c: LayerConfig, features: int, rngs: nnx.Rngs) -> Activation:
  kwargs = {"num_pieces": c.num_pieces} if c.activation == "maxout" else {}
  return Activation(c.activation, kwargs, num_features=features, rngs=rngs)


def _pool(c: LayerConfig, nd: int, rngs: nnx.Rngs) -> nnx.Module:
  window = (POOL_WINDOW,) * nd
  return pooling.REGISTRY[c.pool](window, strides=window, padding="SAME", rngs=rngs)


def _dropout(c: LayerConfig, rngs: nnx.Rngs) -> Optional[Dropout]:
  return Dropout(c.dropout, rngs=rngs) if c.dropout > 0 else None


# Shape arithmetic (NNX needs each layer's input size at construction).
def _conv_out(spatial: Shape, kernel: int, stride: int, padding: int) -> Shape:
  return tuple((s + 2 * padding - kernel) // stride + 1 for s in spatial)


def _pool_out(spatial: Shape) -> Shape:
  return tuple(-(-s // POOL_WINDOW) for s in spatial)  # SAME padding: ceil(s / window).


# Calls of the optional layers.
def _apply_norm(norm: Optional[nnx.Module], x: Array) -> Array:
  return x if norm is None else norm(x)


def _apply_dense(layer: nnx.Module, x: Array, rngs: KeySource) -> Array:
  return layer(x, rngs=rngs) if isinstance(layer, DropConnectDense) else layer(x)


def _apply_drop(drop: Optional[Dropout], x: Array, rngs: KeySource) -> Array:
  return x if drop is None else drop(x, rngs=rngs)


def _check_shape(input_shape: Sequence[int], min_ndim: int, owner: str) -> Shape:
  shape = tuple(input_shape) if isinstance(input_shape, (tuple, list)) else None
  if shape is None or len(shape) < min_ndim or not all(
      isinstance(s, int) and not isinstance(s, bool) and s > 0 for s in shape):
    raise ValueError(f"{owner} needs input_shape (*spatial, C) of at least {min_ndim} "
                     f"positive ints (no batch axis), got {input_shape!r}.")
  return shape


class _Model(nnx.Module):
  """Fields shared by every model: ``input_shape``, ``num_classes``, the ``LayerConfig``."""

  MIN_NDIM = 1

  def __init__(self, input_shape: Sequence[int], *, num_classes: int = 10,
               activation: str = "relu", num_pieces: int = 2,
               kernel_init: str = "standard_uniform", norm: str = "none", num_groups: int = 5,
               pool: str = "none", dropout: float = 0.0, dropconnect: float = 0.0,
               axis_name: Optional[str] = None):
    self.input_shape = _check_shape(input_shape, self.MIN_NDIM, type(self).__name__)
    self.num_classes = num_classes
    self.layers = LayerConfig(activation=activation, num_pieces=num_pieces,
                              kernel_init=kernel_init, norm=norm, num_groups=num_groups,
                              pool=pool, dropout=dropout, dropconnect=dropconnect,
                              axis_name=axis_name)

  def _check_input(self, x: Array) -> None:
    if tuple(x.shape[1:]) != self.input_shape:
      raise ValueError(f"{type(self).__name__} was built for inputs (N, "
                       f"{', '.join(map(str, self.input_shape))}), got shape {x.shape}.")


class Logistic(_Model):
  """Multinomial logistic regression ``logits = flatten(x) @ W + b`` (see the linen twin)."""

  def __init__(self, input_shape: Sequence[int], *, rngs: nnx.Rngs, **fields: Any):
    super().__init__(input_shape, **fields)
    c = self.layers
    self.drop = _dropout(c, rngs)
    self.head = _dense(c, math.prod(self.input_shape), self.num_classes, rngs)

  def __call__(self, x: Array, *, rngs: KeySource = None) -> Array:
    self._check_input(x)
    x = _apply_drop(self.drop, x.reshape((x.shape[0], -1)), rngs)
    return _apply_dense(self.head, x, rngs)


class MLP(_Model):
  """``depth`` hidden layers ``dropout(act(norm(dense(h))))`` of ``width``, then a classifier.

  ``residual=True`` adds each hidden layer's input after the first (MNIST-1D's MLP).
  """

  def __init__(self, input_shape: Sequence[int], *, width: int = 100, depth: int = 2,
               residual: bool = False, rngs: nnx.Rngs, **fields: Any):
    super().__init__(input_shape, **fields)
    c = self.layers
    self.depth, self.residual = depth, residual
    features = math.prod(self.input_shape)
    for i in range(depth):
      setattr(self, f"dense_{i}", _dense(c, features, width * c.pieces, rngs))
      setattr(self, f"norm_{i}", _norm(c, width * c.pieces, rngs))
      setattr(self, f"act_{i}", _act(c, width * c.pieces, rngs))
      setattr(self, f"drop_{i}", _dropout(c, rngs))
      features = width
    self.head = _dense(c, features, self.num_classes, rngs)

  def __call__(self, x: Array, *, rngs: KeySource = None) -> Array:
    self._check_input(x)
    h = x.reshape((x.shape[0], -1))
    for i in range(self.depth):
      y = _apply_norm(getattr(self, f"norm_{i}"), _apply_dense(getattr(self, f"dense_{i}"),
                                                               h, rngs))
      y = _apply_drop(getattr(self, f"drop_{i}"), getattr(self, f"act_{i}")(y, rngs=rngs),
                      rngs)
      h = h + y if self.residual and i > 0 else y
    return _apply_dense(self.head, h, rngs)


class CNN(_Model):
  """Conv network, 1D or 2D by input rank; default the MNIST-1D paper's (see the linen twin).

  ``depth`` layers ``conv -> norm -> act -> [pool] -> dropout`` of ``channels`` filters
  (first kernel 5, then 3; stride 2, or 1 with a pool; padding 1), then a classifier.
  """

  MIN_NDIM = 2

  def __init__(self, input_shape: Sequence[int], *, channels: int = 25, depth: int = 3,
               rngs: nnx.Rngs, **fields: Any):
    super().__init__(input_shape, **fields)
    c = self.layers
    self.depth = depth
    spatial, features = self.input_shape[:-1], self.input_shape[-1]
    nd, stride = len(spatial), 1 if c.pooled else 2
    for i in range(depth):
      kernel = 5 if i == 0 else 3
      setattr(self, f"conv_{i}", _conv(c, features, channels * c.pieces, kernel, stride, 1,
                                       nd, rngs))
      spatial = _conv_out(spatial, kernel, stride, 1)
      setattr(self, f"norm_{i}", _norm(c, channels * c.pieces, rngs))
      setattr(self, f"act_{i}", _act(c, channels * c.pieces, rngs))
      setattr(self, f"pool_{i}", _pool(c, nd, rngs) if c.pooled else None)
      spatial = _pool_out(spatial) if c.pooled else spatial
      setattr(self, f"drop_{i}", _dropout(c, rngs))
      features = channels
    self.head = _dense(c, math.prod(spatial) * features, self.num_classes, rngs)

  def __call__(self, x: Array, *, rngs: KeySource = None) -> Array:
    self._check_input(x)
    for i in range(self.depth):
      x = _apply_norm(getattr(self, f"norm_{i}"), getattr(self, f"conv_{i}")(x))
      x = getattr(self, f"act_{i}")(x, rngs=rngs)
      pool = getattr(self, f"pool_{i}")
      if pool is not None:
        x = pool(x, rngs=rngs)
      x = _apply_drop(getattr(self, f"drop_{i}"), x, rngs)
    return _apply_dense(self.head, x.reshape((x.shape[0], -1)), rngs)


class ConvNet(_Model):
  """Configurable image classifier (see the linen twin): convs, then dense layers, then a head.

  For each ``conv_channels[i]``: a ``kernel_size`` conv with SAME padding, norm, act, then the
  pool or (no pool) stride 2 in the conv; dropout. Flatten; for each ``dense_widths[j]``:
  dense, norm, act, dropout; then the classifier.
  """

  MIN_NDIM = 2

  def __init__(self, input_shape: Sequence[int], *, conv_channels: Sequence[int] = (32, 64),
               kernel_size: int = 3, dense_widths: Sequence[int] = (128,), rngs: nnx.Rngs,
               **fields: Any):
    super().__init__(input_shape, **fields)
    c = self.layers
    self.num_conv, self.num_dense = len(conv_channels), len(dense_widths)
    spatial, features = self.input_shape[:-1], self.input_shape[-1]
    nd, stride, pad = len(spatial), 1 if c.pooled else 2, kernel_size // 2
    for i, channels in enumerate(conv_channels):
      width = channels * c.pieces
      setattr(self, f"conv_{i}", _conv(c, features, width, kernel_size, stride, pad, nd, rngs))
      spatial = _conv_out(spatial, kernel_size, stride, pad)
      setattr(self, f"conv_norm_{i}", _norm(c, width, rngs))
      setattr(self, f"conv_act_{i}", _act(c, width, rngs))
      setattr(self, f"pool_{i}", _pool(c, nd, rngs) if c.pooled else None)
      spatial = _pool_out(spatial) if c.pooled else spatial
      setattr(self, f"conv_drop_{i}", _dropout(c, rngs))
      features = channels
    features = math.prod(spatial) * features
    for j, width in enumerate(dense_widths):
      setattr(self, f"dense_{j}", _dense(c, features, width * c.pieces, rngs))
      setattr(self, f"dense_norm_{j}", _norm(c, width * c.pieces, rngs))
      setattr(self, f"dense_act_{j}", _act(c, width * c.pieces, rngs))
      setattr(self, f"dense_drop_{j}", _dropout(c, rngs))
      features = width
    self.head = _dense(c, features, self.num_classes, rngs)

  def __call__(self, x: Array, *, rngs: KeySource = None) -> Array:
    self._check_input(x)
    for i in range(self.num_conv):
      x = _apply_norm(getattr(self, f"conv_norm_{i}"), getattr(self, f"conv_{i}")(x))
      x = getattr(self, f"conv_act_{i}")(x, rngs=rngs)
      pool = getattr(self, f"pool_{i}")
      if pool is not None:
        x = pool(x, rngs=rngs)
      x = _apply_drop(getattr(self, f"conv_drop_{i}"), x, rngs)
    x = x.reshape((x.shape[0], -1))
    for j in range(self.num_dense):
      x = _apply_norm(getattr(self, f"dense_norm_{j}"),
                      _apply_dense(getattr(self, f"dense_{j}"), x, rngs))
      x = _apply_drop(getattr(self, f"dense_drop_{j}"),
                      getattr(self, f"dense_act_{j}")(x, rngs=rngs), rngs)
    return _apply_dense(self.head, x, rngs)


class BasicBlock(nnx.Module):
  """He et al. 2016 basic block ``act(norm(conv(act(norm(conv(x))))) + shortcut(x))``.

  Shortcut: identity, or a 1x1 conv + norm when the shape changes. ``input_shape`` is the
  block input's per-example shape; ``output_shape`` the output's.
  """

  def __init__(self, input_shape: Sequence[int], features: int, downsample: bool = False,
               layers: Optional[LayerConfig] = None, *, rngs: nnx.Rngs):
    # The defaults of every layer field are the linen models' (one source).
    c = self.layers = layers if layers is not None else linen_models.MLP().layer_config
    spatial, in_features = tuple(input_shape[:-1]), input_shape[-1]
    nd = len(spatial)
    self.pool = _pool(c, nd, rngs) if downsample and c.pooled else None
    spatial = _pool_out(spatial) if self.pool is not None else spatial
    stride = 2 if downsample and not c.pooled else 1
    width = features * c.pieces
    self.conv_0 = _conv(c, in_features, width, 3, stride, 1, nd, rngs)
    out_spatial = _conv_out(spatial, 3, stride, 1)
    self.norm_0 = _norm(c, width, rngs)
    self.act_0 = _act(c, width, rngs)
    self.conv_1 = _conv(c, features, width, 3, 1, 1, nd, rngs)
    self.norm_1 = _norm(c, width, rngs)
    if (in_features, spatial) != (width, out_spatial):
      self.proj = _conv(c, in_features, width, 1, stride, 0, nd, rngs)
      self.proj_norm = _norm(c, width, rngs)
    else:
      self.proj, self.proj_norm = None, None
    self.act_1 = _act(c, width, rngs)
    self.output_shape = out_spatial + (features,)

  def __call__(self, x: Array, *, rngs: KeySource = None) -> Array:
    if self.pool is not None:
      x = self.pool(x, rngs=rngs)
    y = self.act_0(_apply_norm(self.norm_0, self.conv_0(x)), rngs=rngs)
    y = _apply_norm(self.norm_1, self.conv_1(y))
    shortcut = x if self.proj is None else _apply_norm(self.proj_norm, self.proj(x))
    return self.act_1(y + shortcut, rngs=rngs)


class ResNet(_Model):
  """Small ResNet (He et al. 2016): stem, 3 stages of ``depth`` blocks, GAP, classifier."""

  MIN_NDIM = 2

  def __init__(self, input_shape: Sequence[int], *, channels: int = 25, depth: int = 1,
               rngs: nnx.Rngs, **fields: Any):
    super().__init__(input_shape, **fields)
    c = self.layers
    self.depth = depth
    spatial, nd = self.input_shape[:-1], len(self.input_shape) - 1
    self.stem = _conv(c, self.input_shape[-1], channels * c.pieces, 3, 1, 1, nd, rngs)
    self.stem_norm = _norm(c, channels * c.pieces, rngs)
    self.stem_act = _act(c, channels * c.pieces, rngs)
    shape = _conv_out(spatial, 3, 1, 1) + (channels,)
    for stage, mult in enumerate((1, 2, 4)):
      for block in range(depth):
        module = BasicBlock(shape, channels * mult, downsample=stage > 0 and block == 0,
                            layers=c, rngs=rngs)
        setattr(self, f"stage{stage}_block{block}", module)
        shape = module.output_shape
    self.drop = _dropout(c, rngs)
    self.head = _dense(c, shape[-1], self.num_classes, rngs)

  def __call__(self, x: Array, *, rngs: KeySource = None) -> Array:
    self._check_input(x)
    x = self.stem_act(_apply_norm(self.stem_norm, self.stem(x)), rngs=rngs)
    for stage in range(3):
      for block in range(self.depth):
        x = getattr(self, f"stage{stage}_block{block}")(x, rngs=rngs)
    x = _apply_drop(self.drop, jnp.mean(x, axis=tuple(range(1, x.ndim - 1))), rngs)
    return _apply_dense(self.head, x, rngs)


MODELS: Mapping[str, type[_Model]] = {
    "logistic": Logistic,
    "mlp": MLP,
    "cnn": CNN,
    "convnet": ConvNet,
    "resnet": ResNet,
}
_TWINS: Mapping[type, type[_Model]] = {linen_models.MODELS[k]: v for k, v in MODELS.items()}


def from_linen_model(linen_model: Any, input_shape: Sequence[int],
                     rngs: nnx.Rngs) -> _Model:
  """The NNX twin of a (unbound) ``flaxopt.nn`` model, with the same fields.

  Raises:
    ValueError: for a linen module that is not one of ``flaxopt.nn``'s models.
  """
  cls = _TWINS.get(type(linen_model))
  if cls is None:
    raise ValueError(f"No NNX twin for {type(linen_model).__name__}; models: "
                     f"{', '.join(c.__name__ for c in _TWINS)}")
  fields = {f.name: getattr(linen_model, f.name) for f in dataclasses.fields(linen_model)
            if f.name not in ("parent", "name")}
  return cls(input_shape, rngs=rngs, **fields)


def build_model(model_config: Mapping[str, Any], num_classes: int, input_shape: Sequence[int],
                rngs: nnx.Rngs, axis_name: Optional[str] = None) -> _Model:
  """The NNX model named ``model_config.name``, from the same fields as ``nn.build_model``.

  The config is validated (and defaults filled) by ``flaxopt.nn.models.build_model``, so
  both APIs accept and reject the same configs with the same messages. A training
  config's ``model.api`` field, if present, must be ``'nnx'`` and is otherwise ignored.

  Args:
    model_config: ``model.*`` fields (see ``flaxopt.nn.models.default_model_config``).
    num_classes: number of logits.
    input_shape: one example's shape ``(*spatial, C)``, no batch axis.
    rngs: ``nnx.Rngs``; ``params`` initializes, ``dropout``/``rrelu``/``pool`` (if given)
      become the model's own streams.
    axis_name: pmap axis for BatchNorm's cross-device statistics (None under jit).

  Returns:
    An ``nnx.Module`` in training mode; ``model(x)`` returns logits ``(N, num_classes)``.
  """
  config = model_config.to_dict() if hasattr(model_config, "to_dict") else dict(model_config)
  if config.pop("api", "nnx") != "nnx":
    raise ValueError(f"model.api={model_config['api']!r}: flaxopt.nnx.build_model builds NNX "
                     "models (model.api='nnx').")
  linen_model = linen_models.build_model(config, num_classes, axis_name=axis_name)
  return from_linen_model(linen_model, input_shape, rngs)
