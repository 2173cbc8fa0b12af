"""Models whose activation, init, norm, pool and dropout are chosen by registry name.

``Logistic``, ``MLP``, ``CNN`` (1D or 2D by input rank; the MNIST-1D paper's), ``ConvNet``
(the image classifier with a configurable spec: conv channels, then dense widths) and a small
``ResNet``, all channels-last ``(N, *spatial, C)``, all called ``model.apply(variables, x,
train=bool, rngs={'dropout', 'rrelu', 'pool'}, mutable=['batch_stats'])`` and returning logits
``(N, num_classes)``. ``build_model(config, num_classes)`` makes one from the ``model.*`` config
fields, as ``Model(**config.model)`` (big_vision's convention): the defaults are the model
classes' dataclass fields, the one place they are written; ``default_model_config()`` lists
them.

Every hidden layer is ``Dense/Conv -> norm -> activation -> [pool] -> dropout``:

* ``kernel_init``: ``registry.get('initializer', name)`` for every kernel ('lsuv' gives the
  orthogonal base init; ``flaxopt.init`` rescales after ``init``). Biases start at 0.
  Default 'standard_uniform', ``U(-1/sqrt(fan_in), 1/sqrt(fan_in))``: PyTorch's default
  kernel init for Linear/Conv (``kaiming_uniform_(a=sqrt(5))``), which the MNIST-1D paper
  used; PyTorch also draws biases from that range, we start them at 0 (flax's default).
* ``norm``: ``registry.get('norm', name)`` called ``use_running_average=not train``
  ('batch' gets ``axis_name`` for pmap, 'group' gets ``num_groups``). 'weight' wraps every
  Dense/Conv (the classifier too) in ``WeightNorm`` instead and normalizes no activations.
* ``activation``: ``fnn.Activation(name)`` called ``deterministic=not train`` ('rrelu' draws
  from the 'rrelu' stream). For 'maxout' (``num_pieces`` pieces) the layer before it has
  ``num_pieces`` times the features, so widths stay as configured.
* ``pool`` ('none' or '' for none): ``registry.get('pool', name, window=2, strides=2,
  padding='SAME')`` called ``deterministic=not train``. With a pool the convolutions that
  would downsample use stride 1 and the pool downsamples instead; SAME padding keeps the
  shapes of the strided model (MNIST-1D CNN: 40 -> 19 -> 10 -> 5 either way).
* ``dropout``: ``fnn.Dropout(rate)`` after every hidden layer (and on the classifier input).
  ``dropconnect``: ``fnn.DropConnectDense`` for every Dense layer ('dropout' rng stream).
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any, Callable, Mapping, Optional, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
from ml_collections import config_dict

from flaxopt import registry
from flaxopt.nn.activations import Activation
from flaxopt.nn.regularization import DropConnectDense, Dropout

Array = jax.Array

__all__ = ["Logistic", "MLP", "CNN", "ConvNet", "ResNet", "BasicBlock", "LayerConfig",
           "build_model", "default_model_config"]

NO_POOL = ("none", "")
POOL_WINDOW = 2


@dataclasses.dataclass(frozen=True)
class LayerConfig:
  """How every hidden layer is built (the registry names; see the module docstring).

  No defaults here: they are ``_Model``'s fields, and ``_Model.layer_config`` fills these.
  """

  activation: str
  num_pieces: int  # maxout only.
  kernel_init: str
  norm: str
  num_groups: int  # group norm only.
  pool: str
  dropout: float
  dropconnect: float
  axis_name: Optional[str]  # BatchNorm statistics across pmap devices.

  @property
  def pieces(self) -> int:
    """How many times a layer's features the activation consumes (maxout's pieces, else 1)."""
    return self.num_pieces if self.activation == "maxout" else 1

  @property
  def pooled(self) -> bool:
    return self.pool not in NO_POOL


# The helpers below create submodules of whichever module's @nn.compact method calls them.

_NORM_KWARGS: Mapping[str, Callable[[LayerConfig], dict[str, Any]]] = {
    "batch": lambda c: {"axis_name": c.axis_name},
    "group": lambda c: {"num_groups": c.num_groups},
}


def _wrap(c: LayerConfig, make_layer: Callable[..., nn.Module], name: str) -> nn.Module:
  """The layer itself, or (norm='weight') the layer wrapped in WeightNorm."""
  if c.norm == "weight":
    return registry.get("norm", "weight", layer=make_layer(parent=None), name=name)
  return make_layer(name=name)


def _enabled(rate: Any) -> bool:
  """Whether a dropout / DropConnect layer exists: a rate > 0, or a traced rate (stacked
  runs trace the rate of every member; the sweep stacks only members whose rates are all
  > 0, so the layer structure never depends on a traced value)."""
  return isinstance(rate, jax.core.Tracer) or rate > 0


def _dense(c: LayerConfig, x: Array, features: int, name: str, train: bool) -> Array:
  init = registry.get("initializer", c.kernel_init)
  if _enabled(c.dropconnect):
    return DropConnectDense(features, rate=c.dropconnect, kernel_init=init,
                            name=name)(x, deterministic=not train)
  return _wrap(c, functools.partial(nn.Dense, features, kernel_init=init), name)(x)


def _conv(c: LayerConfig, x: Array, features: int, kernel: int, stride: int, padding: int,
          name: str) -> Array:
  nd = x.ndim - 2
  make = functools.partial(nn.Conv, features, (kernel,) * nd, strides=(stride,) * nd,
                           padding=padding, kernel_init=registry.get("initializer",
                                                                     c.kernel_init))
  return _wrap(c, make, name)(x)


def _normalize(c: LayerConfig, x: Array, name: str, train: bool) -> Array:
  if c.norm in ("none", "weight"):
    return x
  kwargs = _NORM_KWARGS.get(c.norm, lambda _: {})(c)
  return registry.get("norm", c.norm, name=name, **kwargs)(x, use_running_average=not train)


def _activate(c: LayerConfig, x: Array, name: str, train: bool) -> Array:
  kwargs = {"num_pieces": c.num_pieces} if c.activation == "maxout" else {}
  return Activation(c.activation, kwargs, name=name)(x, deterministic=not train)


def _downsample(c: LayerConfig, x: Array, name: str, train: bool) -> Array:
  window = (POOL_WINDOW,) * (x.ndim - 2)
  pool = registry.get("pool", c.pool, window=window, strides=window, padding="SAME", name=name)
  return pool(x, deterministic=not train)


def _drop(c: LayerConfig, x: Array, train: bool) -> Array:
  return Dropout(c.dropout)(x, deterministic=not train) if _enabled(c.dropout) else x


def _check_input(model: nn.Module, x: Array, min_ndim: int) -> None:
  if x.ndim < min_ndim:
    raise ValueError(f"{type(model).__name__} needs input (N, *spatial, C) with at least "
                     f"{min_ndim} axes, got shape {x.shape}.")


class _Model(nn.Module):
  """Fields shared by every model: ``num_classes`` and the ``LayerConfig`` fields, with defaults.

  ``kernel_init``'s default is PyTorch's Linear/Conv init (see the module docstring);
  ``num_pieces`` is maxout's, ``num_groups`` group norm's; ``pool`` 'none' or a pool name.
  """

  num_classes: int = 10
  activation: str = "relu"
  num_pieces: int = 2
  kernel_init: str = "standard_uniform"
  norm: str = "none"  # none | batch | layer | instance | group | weight
  num_groups: int = 5
  pool: str = "none"  # none | max | avg | stochastic | lp | mixed | gated
  dropout: float = 0.0
  dropconnect: float = 0.0
  axis_name: Optional[str] = None

  @property
  def layer_config(self) -> LayerConfig:
    return LayerConfig(**{f.name: getattr(self, f.name) for f in dataclasses.fields(LayerConfig)})


class Logistic(_Model):
  """Multinomial logistic regression: ``logits = flatten(x) @ W + b``.

  Uses ``kernel_init``, ``dropout`` (on the input) and ``dropconnect``; there is no hidden
  layer, so activation, norm (except 'weight') and pool do not apply.
  """

  @nn.compact
  def __call__(self, x: Array, train: bool = False) -> Array:
    c = self.layer_config
    x = _drop(c, x.reshape((x.shape[0], -1)), train)
    return _dense(c, x, self.num_classes, "head", train)


class MLP(_Model):
  """Multilayer perceptron: ``depth`` hidden layers of ``width`` units, then a linear classifier.

  Hidden layer: ``h = dropout(act(norm(dense(h))))``; with ``residual=True`` every hidden
  layer after the first adds its input, ``h = h + layer(h)``, as the MNIST-1D paper's MLP
  (Greydanus 2020: width 100, depth 2, residual). The input is flattened first, so 'instance'
  norm (which needs spatial axes) and pooling do not apply.
  """

  width: int = 100
  depth: int = 2
  residual: bool = False

  @nn.compact
  def __call__(self, x: Array, train: bool = False) -> Array:
    c = self.layer_config
    h = x.reshape((x.shape[0], -1))
    for i in range(self.depth):
      y = _dense(c, h, self.width * c.pieces, f"dense_{i}", train)
      y = _drop(c, _activate(c, _normalize(c, y, f"norm_{i}", train), f"act_{i}", train), train)
      h = h + y if self.residual and i > 0 else y
    return _dense(c, h, self.num_classes, "head", train)


class CNN(_Model):
  """Convolutional network, 1D or 2D by input rank; the default is the MNIST-1D paper's CNN.

  ``depth`` conv layers of ``channels`` filters: the first ``kernel 5, stride 2, padding 1``,
  the rest ``kernel 3, stride 2, padding 1``, each followed by norm, activation, dropout;
  then flatten and ``Dense(num_classes)``. Greydanus 2020 ("Scaling down deep learning"):
  3 layers of 25 channels, ReLU, 5,210 parameters on length-40 input. With a ``pool`` the
  convs use stride 1 and a window-2 stride-2 SAME pool follows each activation.
  """

  channels: int = 25
  depth: int = 3

  @nn.compact
  def __call__(self, x: Array, train: bool = False) -> Array:
    _check_input(self, x, 3)
    c = self.layer_config
    stride = 1 if c.pooled else 2
    for i in range(self.depth):
      x = _conv(c, x, self.channels * c.pieces, 5 if i == 0 else 3, stride, 1, f"conv_{i}")
      x = _activate(c, _normalize(c, x, f"norm_{i}", train), f"act_{i}", train)
      if c.pooled:
        x = _downsample(c, x, f"pool_{i}", train)
      x = _drop(c, x, train)
    return _dense(c, x.reshape((x.shape[0], -1)), self.num_classes, "head", train)


class ConvNet(_Model):
  """Image classifier with a configurable spec: conv layers, then dense layers, then the head.

  For each ``conv_channels[i]``: ``kernel_size`` x ``kernel_size`` conv with SAME padding (odd
  kernels), norm, activation, then the ``pool`` (window 2, stride 2) or, with no pool, stride 2
  in the conv itself; dropout. Flatten; for each ``dense_widths[j]``: dense, norm, activation,
  dropout; then ``Dense(num_classes)``. The default is the common "2 conv + 2 dense" baseline:
  conv 3x3 32, conv 3x3 64, dense 128, head; on 28x28 inputs 421,642 parameters (either way of
  downsampling: 28 -> 14 -> 7). ``dense_widths=()`` gives the small one (50,186 parameters,
  under the 100k of the Fashion-MNIST benchmark's "2 Conv <100K parameters" entry).
  """

  conv_channels: tuple[int, ...] = (32, 64)
  kernel_size: int = 3
  dense_widths: tuple[int, ...] = (128,)

  @nn.compact
  def __call__(self, x: Array, train: bool = False) -> Array:
    _check_input(self, x, 3)
    c = self.layer_config
    stride = 1 if c.pooled else 2
    for i, channels in enumerate(self.conv_channels):
      x = _conv(c, x, channels * c.pieces, self.kernel_size, stride, self.kernel_size // 2,
                f"conv_{i}")
      x = _activate(c, _normalize(c, x, f"conv_norm_{i}", train), f"conv_act_{i}", train)
      if c.pooled:
        x = _downsample(c, x, f"pool_{i}", train)
      x = _drop(c, x, train)
    x = x.reshape((x.shape[0], -1))
    for j, width in enumerate(self.dense_widths):
      x = _dense(c, x, width * c.pieces, f"dense_{j}", train)
      x = _activate(c, _normalize(c, x, f"dense_norm_{j}", train), f"dense_act_{j}", train)
      x = _drop(c, x, train)
    return _dense(c, x, self.num_classes, "head", train)


class BasicBlock(nn.Module):
  """He et al. 2016 basic block: ``act(norm(conv(act(norm(conv(x))))) + shortcut(x))``.

  Shortcut: identity, or a 1x1 conv + norm when the shape changes. Downsampling by 2: stride
  2 in the first conv and the shortcut, or (with a pool) the pool applied to the block input.
  """

  features: int
  layers: LayerConfig
  downsample: bool = False

  @nn.compact
  def __call__(self, x: Array, train: bool = False) -> Array:
    c = self.layers
    stride = 2 if self.downsample and not c.pooled else 1
    if self.downsample and c.pooled:
      x = _downsample(c, x, "pool", train)
    width = self.features * c.pieces
    y = _conv(c, x, width, 3, stride, 1, "conv_0")
    y = _activate(c, _normalize(c, y, "norm_0", train), "act_0", train)
    y = _normalize(c, _conv(c, y, width, 3, 1, 1, "conv_1"), "norm_1", train)
    shortcut = x
    if shortcut.shape != y.shape:
      shortcut = _normalize(c, _conv(c, x, width, 1, stride, 0, "proj"), "proj_norm", train)
    return _activate(c, y + shortcut, "act_1", train)


class ResNet(_Model):
  """A small ResNet (He et al. 2016, "Deep Residual Learning for Image Recognition").

  Stem ``conv3 -> norm -> act`` with ``channels`` filters; 3 stages of ``depth`` basic
  blocks with ``channels * (1, 2, 4)`` filters, stages 2 and 3 downsampling by 2 (stride, or
  the pool); global average pooling, dropout, ``Dense(num_classes)``. ``depth=1`` has 8
  weight layers (a ResNet-8, plus two 1x1 shortcut projections).
  """

  channels: int = 25
  depth: int = 1

  @nn.compact
  def __call__(self, x: Array, train: bool = False) -> Array:
    _check_input(self, x, 3)
    c = self.layer_config
    x = _conv(c, x, self.channels * c.pieces, 3, 1, 1, "stem")
    x = _activate(c, _normalize(c, x, "stem_norm", train), "stem_act", train)
    for stage, mult in enumerate((1, 2, 4)):
      for block in range(self.depth):
        x = BasicBlock(self.channels * mult, downsample=stage > 0 and block == 0, layers=c,
                       name=f"stage{stage}_block{block}")(x, train)
    x = _drop(c, jnp.mean(x, axis=tuple(range(1, x.ndim - 1))), train)
    return _dense(c, x, self.num_classes, "head", train)


MODELS: Mapping[str, type[_Model]] = {
    "logistic": Logistic,
    "mlp": MLP,
    "cnn": CNN,
    "convnet": ConvNet,
    "resnet": ResNet,
}
REGISTRY = dict(MODELS)  # model name -> class (not a flaxopt.registry family).


DEFAULT_MODEL = "cnn"
# Module fields that are not config fields: flax's own, and those build_model sets.
_NOT_CONFIG = ("parent", "name", "num_classes", "axis_name")


def _config_fields(cls: type[nn.Module]) -> dict[str, Any]:
  """``cls``'s config fields -> defaults, read from its dataclass fields."""
  return {f.name: f.default for f in dataclasses.fields(cls) if f.name not in _NOT_CONFIG}


# The front ends that build a model from the same model.* fields: flaxopt.nn (linen) and
# flaxopt.nnx. build_model here builds (and so validates) the linen module for either.
APIS = ("linen", "nnx")


def default_model_config() -> ml_collections.ConfigDict:
  """Every ``model.*`` config field with its default, derived from the models' dataclass fields.

  ``name`` is one of ``MODELS``. A field that models declare with different defaults (``depth``:
  mlp 2 hidden layers, cnn 3 conv layers, resnet 1 block per stage) is an int placeholder,
  None, meaning the chosen model's own default. ``width`` is the MLP's, ``channels`` the CNN's
  and ResNet's, ``conv_channels``/``kernel_size``/``dense_widths`` the ConvNet's.
  """
  defaults: dict[str, list[Any]] = {}
  for cls in MODELS.values():
    for field, value in _config_fields(cls).items():
      defaults.setdefault(field, []).append(value)
  c = ml_collections.ConfigDict()
  c.name = DEFAULT_MODEL
  c.api = APIS[0]  # linen | nnx: which front end builds the model (flaxopt.nn or flaxopt.nnx)
  for field, values in defaults.items():
    same = all(v == values[0] for v in values)
    setattr(c, field, values[0] if same else config_dict.placeholder(type(values[0])))
  return c


# model name -> the feature counts its norm layers see (for the group-divisibility check).
_NORMALIZED_FEATURES: Mapping[str, Callable[[Mapping[str, Any]], Sequence[int]]] = {
    "logistic": lambda c: (),
    "mlp": lambda c: (c["width"] * _pieces(c),),
    "cnn": lambda c: (c["channels"] * _pieces(c),),
    "convnet": lambda c: tuple(n * _pieces(c) for n in (*c["conv_channels"],
                                                         *c["dense_widths"])),
    "resnet": lambda c: tuple(c["channels"] * m * _pieces(c) for m in (1, 2, 4)),
}


def _pieces(c: Mapping[str, Any]) -> int:
  return c["num_pieces"] if c["activation"] == "maxout" else 1


def _check_positive_int(c: Mapping[str, Any], field: str) -> None:
  value = c[field]
  if isinstance(value, bool) or not isinstance(value, int) or value < 1:
    raise ValueError(f"model.{field}={value!r} must be a positive integer.")


def _check_widths(c: Mapping[str, Any], field: str, allow_empty: bool) -> None:
  value = c[field]
  ok = isinstance(value, (tuple, list)) and (allow_empty or len(value) > 0)
  ok = ok and all(isinstance(v, int) and not isinstance(v, bool) and v >= 1 for v in value)
  if not ok:
    need = "a" if allow_empty else "a non-empty"
    raise ValueError(f"model.{field}={value!r} must be {need} sequence of positive integers.")


def _check_rate(c: Mapping[str, Any], field: str) -> None:
  value = c[field]
  if not isinstance(value, (int, float)) or not 0.0 <= value < 1.0:
    raise ValueError(f"model.{field}={value!r} must be a rate in [0, 1).")


def _validate(c: Mapping[str, Any]) -> None:
  """Raises ValueError naming the offending field and value."""
  if c["name"] not in MODELS:
    raise ValueError(f"Unknown model {c['name']!r}; valid model names: {', '.join(MODELS)}")
  registry.check("activation", c["activation"])
  registry.check("initializer", c["kernel_init"])
  registry.check("norm", c["norm"])
  if c["pool"] not in NO_POOL:
    registry.check("pool", c["pool"])
  for field in ("width", "channels", "num_pieces", "num_groups"):
    _check_positive_int(c, field)
  if c["depth"] is not None:
    _check_positive_int(c, "depth")
  _check_positive_int(c, "kernel_size")
  if c["kernel_size"] % 2 == 0:
    raise ValueError(f"model.kernel_size={c['kernel_size']} must be odd (SAME padding).")
  _check_widths(c, "conv_channels", allow_empty=False)
  _check_widths(c, "dense_widths", allow_empty=True)
  for field in ("dropout", "dropconnect"):
    _check_rate(c, field)
  if c["norm"] == "weight" and c["dropconnect"] > 0:
    raise ValueError(f"model.norm='weight' cannot wrap DropConnectDense layers "
                     f"(model.dropconnect={c['dropconnect']}); use one or the other.")
  if c["norm"] == "instance" and c["name"] == "mlp":
    raise ValueError("model.norm='instance' normalizes over spatial axes; the mlp has none.")
  if c["norm"] == "instance" and c["name"] == "convnet" and c["dense_widths"]:
    raise ValueError(f"model.norm='instance' normalizes over spatial axes; the convnet's dense "
                     f"layers (model.dense_widths={tuple(c['dense_widths'])}) have none.")
  if c["norm"] == "group":
    for features in _NORMALIZED_FEATURES[c["name"]](c):
      if features % c["num_groups"]:
        raise ValueError(f"model.num_groups={c['num_groups']} does not divide the {features} "
                         f"channels of the {c['name']}'s normalized layers.")


def build_model(model_config: Mapping[str, Any], num_classes: int,
                axis_name: Optional[str] = None) -> nn.Module:
  """The model named ``model_config.name``, configured by the ``model.*`` fields.

  Args:
    model_config: a ConfigDict or mapping with (a subset of) the fields of
      ``default_model_config()``; missing fields take their defaults.
    num_classes: number of logits.
    axis_name: pmap axis for BatchNorm's cross-device statistics (None under jit).

  Returns:
    An unbound linen module; ``model.apply(variables, x, train=..., rngs=...,
    mutable=['batch_stats'])`` returns logits (N, num_classes).

  Raises:
    ValueError: unknown model/registry names (the registry's message, listing valid names),
      unknown fields, bad rates or sizes, or num_groups not dividing the channels.
  """
  given = model_config.to_dict() if hasattr(model_config, "to_dict") else dict(model_config)
  defaults = default_model_config().to_dict()
  unknown = sorted(set(given) - set(defaults))
  if unknown:
    raise ValueError(f"Unknown model config field(s) {unknown}; valid: {', '.join(defaults)}")
  c = {**defaults, **given}
  if c.pop("api") not in APIS:
    raise ValueError(f"model.api={given['api']!r}: must be one of {', '.join(APIS)}")
  _validate(c)
  if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 1:
    raise ValueError(f"num_classes={num_classes!r} must be a positive integer.")
  cls = MODELS[c["name"]]
  fields = _config_fields(cls)
  kwargs = {k: tuple(v) if isinstance(v, list) else v
            for k, v in c.items() if k in fields and v is not None}
  return cls(num_classes=num_classes, axis_name=axis_name, **kwargs)
