"""NNX twins vs their linen modules: same parameters -> same outputs, gradients, state updates.

One table of cases (every module and model ``flaxopt.nn`` exports); each runs jitted, in
train and eval mode, in float64 (to 1e-12 relative) and, for a subset, float32 (1e-6).
Both get the same variables (filled from numpy so that scales, biases and statistics are
not trivial), merged into the NNX module's graph: the trees have the same layout.

Randomness: a stochastic linen module at the top level draws ``make_rng(stream)``; the
test computes that key with a probe module at the same path and hands it to the NNX
module as ``rngs=key``, so both apply the same mask. Models draw keys per layer in each
API's own way (linen folds in module paths), so stochastic model configs are compared in
eval mode only, and their train mode must differ from eval (the randomness is live).
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any, Callable, Optional

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

import flaxopt.nn as fnn
import flaxopt.nnx as fnnx
from flaxopt.nn import models as linen_models

F64, F32 = jnp.float64, jnp.float32
TOL = {F64: 1e-12, F32: 1e-6}


class _Probe(nn.Module):
  """Returns ``make_rng(stream)`` of the scope at ``path`` (what a linen module there draws)."""

  stream: str
  path: tuple[str, ...] = ()

  @nn.compact
  def __call__(self):
    if self.path:
      return _Probe(self.stream, self.path[1:], name=self.path[0])()
    return self.make_rng(self.stream)


@dataclasses.dataclass(frozen=True)
class Case:
  """One module: its linen and NNX constructions, input, call convention and randomness."""

  id: str
  linen: Callable[[], nn.Module]
  nnx: Callable[[nnx.Rngs], nnx.Module]
  shape: tuple[int, ...]
  mode: Optional[str] = None  # linen call keyword: deterministic | use_running_average | train.
  stream: Optional[str] = None  # rng stream drawn at the linen module's ...
  path: tuple[str, ...] = ()  # ... scope path; None stream: deterministic.
  positive: bool = False  # inputs in (0, 1) (stochastic pooling samples by value).
  model_rngs: bool = False  # a model with stochastic layers: train mode not compared.
  float32: bool = False  # also run in float32.


def _act(name, kwargs=None, **nnx_kw):
  return (lambda: fnn.Activation(name, kwargs or {}),
          lambda r: fnnx.Activation(name, kwargs, rngs=r, **nnx_kw))


def _same(name, *args, linen_kw=None, nnx_kw=None, **kw):
  """Linen ``fnn.<name>(*args, **kw, **linen_kw)`` and NNX ``fnnx.<name>(*args, **kw, ...)``."""
  return (lambda: getattr(fnn, name)(*args, **kw, **(linen_kw or {})),
          lambda r: getattr(fnnx, name)(*args, **kw, **(nnx_kw or {}), rngs=r))


def _dcd(**kw):
  return (lambda: fnn.DropConnectDense(5, **kw),
          lambda r: fnnx.DropConnectDense(6, 5, **kw, rngs=r))


def _model(shape, **config):
  return (lambda: linen_models.build_model(config, 10),
          lambda r: fnnx.build_model(config, 10, shape[1:], r))


V, IMG, SEQ = (4, 6), (3, 6, 6, 2), (4, 9, 6)
CASES = [
    # Activations.
    Case("Activation-relu", *_act("relu"), V, "deterministic", float32=True),
    Case("Activation-leaky_relu", *_act("leaky_relu", {"negative_slope": 0.2}), V,
         "deterministic"),
    Case("Activation-swish", *_act("swish", {"beta": 1.5}), V, "deterministic"),
    Case("Activation-maxout", *_act("maxout", {"num_pieces": 3}), V, "deterministic"),
    Case("Activation-prelu", *_act("prelu", num_features=6), V, "deterministic"),
    Case("Activation-rrelu", *_act("rrelu", {"lower": 0.1, "upper": 0.4}), V,
         "deterministic", stream="rrelu", path=("rrelu",), float32=True),
    Case("PReLU", *_same("PReLU", nnx_kw={"num_features": 6}), V),
    Case("PReLU-shared", *_same("PReLU", shared=True), V),
    Case("RReLU", *_same("RReLU"), V, "deterministic", stream="rrelu"),
    Case("Swish", *_same("Swish", beta_init=0.7), V),
    Case("Maxout", *_same("Maxout", 2), V),
    # Normalization.
    Case("Identity", *_same("Identity"), SEQ, "use_running_average"),
    Case("BatchNorm", *_same("BatchNorm", momentum=0.9, nnx_kw={"num_features": 6}), SEQ,
         "use_running_average", float32=True),
    Case("BatchNorm-unbiased", *_same("BatchNorm", unbiased_running_var=True,
                                      nnx_kw={"num_features": 2}), IMG,
         "use_running_average"),
    Case("LayerNorm", *_same("LayerNorm", nnx_kw={"num_features": 6}), SEQ,
         "use_running_average"),
    Case("InstanceNorm", *_same("InstanceNorm", nnx_kw={"num_features": 2}), IMG,
         "use_running_average"),
    Case("GroupNorm", *_same("GroupNorm", num_groups=3, nnx_kw={"num_features": 6}), SEQ,
         "use_running_average"),
    Case("GroupNorm-size", *_same("GroupNorm", group_size=2, nnx_kw={"num_features": 6}),
         SEQ, "use_running_average"),
    Case("WeightNorm-dense", lambda: fnn.WeightNorm(nn.Dense(5)),
         lambda r: fnnx.WeightNorm(nnx.Linear(6, 5, rngs=r)), V, "use_running_average",
         float32=True),
    Case("WeightNorm-conv", lambda: fnn.WeightNorm(nn.Conv(3, (3,), padding=1)),
         lambda r: fnnx.WeightNorm(nnx.Conv(6, 3, (3,), padding=1, rngs=r)), SEQ,
         "use_running_average"),
    # Pooling.
    Case("MaxPool", *_same("MaxPool", (2, 2)), IMG, "deterministic"),
    Case("AvgPool", *_same("AvgPool", (3, 3), (2, 2), "SAME", count_include_pad=False), IMG,
         "deterministic"),
    Case("StochasticPool", *_same("StochasticPool", (2, 2)), IMG, "deterministic",
         stream="pool", positive=True, float32=True),
    Case("LPPool", *_same("LPPool", (2, 2), p_init=3.0, per_channel=True,
                          nnx_kw={"num_features": 2}), IMG, "deterministic", positive=True),
    Case("MixedPool", *_same("MixedPool", (3,), (2,), "SAME", alpha_init=0.3), SEQ,
         "deterministic"),
    Case("GatedPool", *_same("GatedPool", (2, 2), per_channel=True,
                             nnx_kw={"num_features": 2}), IMG, "deterministic"),
    # Regularization.
    Case("Dropout", *_same("Dropout", 0.3), SEQ, "deterministic", stream="dropout",
         float32=True),
    Case("DropConnectDense", *_dcd(rate=0.3), V, "deterministic", stream="dropout"),
    Case("DropConnectDense-per_example", *_dcd(rate=0.4, per_example=True), V,
         "deterministic", stream="dropout"),
    Case("DropConnectDense-gaussian", *_dcd(rate=0.3, inference="gaussian", num_samples=8,
                                            activation=jax.nn.relu), V, "deterministic",
         stream="dropout"),
    # Models (from model.* configs).
    Case("Logistic", *_model((4, 16, 1), name="logistic"), (4, 16, 1), "train"),
    Case("MLP-batch-swish", *_model((8, 16, 1), name="mlp", width=8, norm="batch",
                                    activation="swish"), (8, 16, 1), "train", float32=True),
    Case("MLP-residual-layer-prelu",
         *_model((4, 16, 1), name="mlp", width=8, depth=3, residual=True, norm="layer",
                 activation="prelu"), (4, 16, 1), "train"),
    Case("MLP-weight-maxout", *_model((4, 16, 1), name="mlp", width=6, norm="weight",
                                      activation="maxout", num_pieces=3), (4, 16, 1), "train"),
    Case("MLP-dropout-rrelu-dropconnect",
         *_model((4, 16, 1), name="mlp", width=8, dropout=0.3, activation="rrelu",
                 dropconnect=0.2), (4, 16, 1), "train", model_rngs=True),
    Case("CNN-batch-max", *_model((4, 16, 1), name="cnn", channels=4, norm="batch",
                                  pool="max"), (4, 16, 1), "train"),
    Case("CNN-group-maxout-lp", *_model((4, 16, 1), name="cnn", channels=4, norm="group",
                                        num_groups=2, activation="maxout", pool="lp"),
         (4, 16, 1), "train"),
    Case("CNN2D-instance-mixed", *_model((2, 8, 8, 1), name="cnn", channels=3, depth=2,
                                         norm="instance", pool="mixed"), (2, 8, 8, 1),
         "train"),
    Case("CNN-weight-gated", *_model((4, 16, 1), name="cnn", channels=4, norm="weight",
                                     pool="gated"), (4, 16, 1), "train"),
    Case("ConvNet2D-batch", *_model((2, 8, 8, 1), name="convnet", conv_channels=(3, 4),
                                    dense_widths=(5,), norm="batch"), (2, 8, 8, 1), "train"),
    Case("ConvNet2D-max-nodense", *_model((2, 8, 8, 1), name="convnet", conv_channels=(3,),
                                          kernel_size=5, dense_widths=(), pool="max"),
         (2, 8, 8, 1), "train"),
    Case("ResNet-batch-avg-prelu", *_model((4, 8, 1), name="resnet", channels=2, norm="batch",
                                           pool="avg", activation="prelu"), (4, 8, 1),
         "train"),
]
SLOW = ("ResNet-batch-avg-prelu",)  # over 10 s on 2 cores (compiles).
PARAMS = [pytest.param(c, F64, id=f"{c.id}-f64",
                       marks=[pytest.mark.slow] if c.id in SLOW else []) for c in CASES] + \
    [pytest.param(c, F32, id=f"{c.id}-f32") for c in CASES if c.float32]

STREAMS = ("params", "dropout", "rrelu", "pool")


def _filled(shapes: Any, dtype, seed: int = 0) -> Any:
  """Variables of the given shapes from numpy (no random init to compile).

  Parameters U(-0.5, 0.5); running means N(0, 1); running variances U(0.5, 1.5).
  """
  rng = np.random.default_rng(seed)
  def fill(path, s):
    name = jax.tree_util.keystr(path)
    value = rng.uniform(0.5, 1.5, s.shape) if name.endswith("['var']") else \
        rng.normal(size=s.shape) if name.endswith("['mean']") else \
        rng.uniform(-0.5, 0.5, s.shape)
    return jnp.asarray(value, dtype)
  return jax.tree_util.tree_map_with_path(fill, shapes)


def _linen_call(case: Case, module: nn.Module, variables, x, train: bool, key):
  kwargs = {case.mode: (train if case.mode == "train" else not train)} if case.mode else {}
  rngs = {case.stream: key} if case.stream else {}
  if case.model_rngs:
    rngs = dict(zip(STREAMS[1:], jax.random.split(key, 3)))
  def f(params, x):
    out, state = module.apply({**variables, "params": params}, x, rngs=rngs,
                              mutable=["batch_stats"], **kwargs)
    return out, state.get("batch_stats", {})
  return f


def _nnx_call(case: Case, graphdef, variables, x, train: bool, key):
  def f(params, x):
    module = nnx.merge(graphdef, params, variables.get("batch_stats", {}))
    module.train() if train else module.eval()  # pylint: disable=expression-not-assigned
    if case.model_rngs:
      out = module(x, rngs=nnx.Rngs(**dict(zip(STREAMS[1:], jax.random.split(key, 3)))))
    else:
      out = module(x, rngs=key) if case.stream else module(x)
    return out, fnnx.linen_variables(module).get("batch_stats", {})
  return f


def _outputs(call, variables, x, cotangent):
  """(output, d<output, cotangent>/dparams, d/dx, updated batch_stats) for train and eval."""
  results = {}
  for train in (True, False):
    f = call(train)
    def loss(p, x):
      out, stats = f(p, x)
      return jnp.sum(out * cotangent), (out, stats)
    (_, (out, stats)), (dparams, dx) = jax.value_and_grad(loss, argnums=(0, 1), has_aux=True)(
        variables.get("params", {}), x)
    results["train" if train else "eval"] = (out, dparams, dx, stats)
  return results


def _assert_close(actual, expected, tol, what):
  assert jax.tree.structure(actual) == jax.tree.structure(expected), what
  for path, a, b in zip([p for p, _ in jax.tree_util.tree_flatten_with_path(expected)[0]],
                        jax.tree.leaves(actual), jax.tree.leaves(expected)):
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    assert a.shape == b.shape, (what, path)
    scale = max(np.max(np.abs(b)), 1e-30) if b.size else 1.0
    err = np.max(np.abs(a - b)) / scale if b.size else 0.0
    assert err <= tol, f"{what} {jax.tree_util.keystr(path)}: relative error {err:.3g} > {tol}"


@pytest.mark.parametrize("case, dtype", PARAMS)
def test_nnx_matches_linen(case: Case, dtype):
  with jax.enable_x64(dtype == F64):
    rng = np.random.default_rng(1)
    x = rng.uniform(0.05, 1.0, case.shape) if case.positive else rng.normal(size=case.shape)
    x = jnp.asarray(x, dtype)
    linen = case.linen()
    init_rngs = dict(zip(STREAMS, jax.random.split(jax.random.key(0), len(STREAMS))))
    kwargs = {case.mode: case.mode != "train"} if case.mode else {}
    variables = _filled(jax.eval_shape(functools.partial(linen.init, **kwargs), init_rngs,
                                       x), dtype)
    graphdef = nnx.graphdef(nnx.eval_shape(lambda: case.nnx(nnx.Rngs(params=1))))
    key = jax.random.key(2)
    linen_key = _Probe(case.stream, case.path).apply({}, rngs={case.stream: key}) \
        if case.stream else key
    cotangent = jnp.asarray(rng.normal(size=jax.eval_shape(
        lambda: linen.apply(variables, x, rngs={s: key for s in STREAMS[1:]},
                            **kwargs)).shape), dtype)

    @jax.jit
    def run(variables, x):
      both = {}
      for name, make in (("linen", lambda t: _linen_call(case, linen, variables, x, t, key)),
                         ("nnx", lambda t: _nnx_call(case, graphdef, variables, x, t,
                                                     linen_key))):
        both[name] = _outputs(make, variables, x, cotangent)
      return both

    both = run(variables, x)
    tol = TOL[dtype]
    for mode in ("eval",) if case.model_rngs else ("train", "eval"):
      for what, a, b in zip(("output", "dparams", "dx", "batch_stats"), both["nnx"][mode],
                            both["linen"][mode]):
        _assert_close(a, b, tol, f"{case.id} {mode} {what}")
    if case.stream or case.model_rngs:  # the randomness is live: train differs from eval.
      assert not np.allclose(both["nnx"]["train"][0], both["nnx"]["eval"][0])
    if variables.get("batch_stats"):  # training moved the statistics; eval did not.
      assert not np.allclose(jax.tree.leaves(both["nnx"]["train"][3])[0],
                             jax.tree.leaves(variables["batch_stats"])[0])
      _assert_close(both["nnx"]["eval"][3], variables["batch_stats"], 0.0, "eval stats")
