"""Layer-sequential unit-variance (LSUV) initialization, generic over Flax models.

Mishkin & Matas, "All you need is a good init", ICLR 2016 (arXiv:1511.06422), Algorithm 1:

1. Pre-initialize every kernel with an orthonormal matrix (``F.orthogonal``).
2. For each layer ``L`` with a kernel, in forward order: while
   ``|Var(B_L) - 1| >= tol`` and fewer than ``max_iters`` iterations ran, do a forward pass
   on the batch, measure the variance ``Var(B_L)`` of the layer's output ``B_L`` (all its
   elements) and set ``W_L <- W_L / sqrt(Var(B_L))``.

The paper's values are ``tol = 0.1`` and ``max_iters = 10``; they are the defaults here.

"A layer" is any Flax module whose own parameters contain a ``kernel`` (``nn.Dense``,
``nn.Conv``, ``fnn.DropConnectDense``, ...), which is rescaled, or a ``g`` (the gain of
``fnn.WeightNorm``, whose effective kernel ``g * v / ||v||`` is linear in ``g``), which is
rescaled instead. Their outputs are captured with
``flax.linen.intercept_methods``, so no model has to be written for LSUV: any
``apply_fn(variables, x)`` that runs Flax modules works.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from typing import Any, Callable, Mapping, Optional, Sequence

import flax
import flax.linen as nn
import jax
import jax.numpy as jnp

__all__ = ["LayerReport", "SCALED_PARAMS", "kernel_layers", "layer_outputs", "lsuv",
           "lsuv_base_init", "module_params", "scaled_param"]

Path = tuple[str, ...]
ApplyFn = Callable[[Any, jax.Array], Any]


@dataclasses.dataclass(frozen=True)
class LayerReport:
  """What LSUV did to one layer.

  Attributes:
    path: the module path of the layer inside ``variables['params']``.
    initial_var: output variance before LSUV rescaled this layer.
    final_var: output variance after the last rescaling.
    iterations: number of rescalings applied (0 when already within tolerance).
    converged: whether ``|final_var - target_var| < tol``.
  """
  path: Path
  initial_var: float
  final_var: float
  iterations: int
  converged: bool


def lsuv_base_init(gain: float = 1.0) -> Callable[..., jax.Array]:
  """The kernel initializer of a model built with ``kernel_init='lsuv'``: ``F.orthogonal(gain)``.

  LSUV starts from orthonormal kernels (Mishkin & Matas 2016, step 1); the data-dependent
  rescaling (step 2) runs later, in ``flaxopt.init.apply_data_dependent_init``.
  """
  from flaxopt.functional import initializers  # pylint: disable=g-import-not-at-top
  return initializers.orthogonal(gain=gain)


def module_params(params: Mapping[str, Any], path: Path) -> Any:
  """The parameter subtree of the module at ``path`` (None when there is none)."""
  node = params
  for name in path:
    if not isinstance(node, Mapping) or name not in node:
      return None
    node = node[name]
  return node


# The parameter LSUV rescales, by name, in order of preference: a layer's ``kernel``, or the
# gain ``g`` of ``fnn.WeightNorm`` (its kernel is g * v / ||v||, linear in g).
SCALED_PARAMS: tuple[str, ...] = ("kernel", "g")


def scaled_param(params: Mapping[str, Any], path: Path) -> Optional[str]:
  """Name of the parameter LSUV scales in the module at ``path`` (None: not a layer)."""
  node = module_params(params, path)
  if not isinstance(node, Mapping):
    return None
  for name in SCALED_PARAMS:
    if name in node and not isinstance(node[name], Mapping):
      return name
  return None


def layer_outputs(apply_fn: ApplyFn, variables: Mapping[str, Any],
                  x_batch: jax.Array) -> dict[Path, jax.Array]:
  """Runs ``apply_fn(variables, x_batch)`` and returns each kernel layer's output, in forward order.

  Keys are module paths (``('Dense_0',)``, ``('block', 'conv')``); only modules that own a
  ``kernel`` (or WeightNorm's ``g``) parameter are kept; a module called twice keeps its
  first output. Pure: works under ``jax.jit`` (the capture happens at trace time; a jitted
  call returns the dict with sorted keys, see ``kernel_layers`` for the order).
  """
  params = variables["params"]
  captured: dict[Path, jax.Array] = {}

  def interceptor(next_fun, args, kwargs, context):
    out = next_fun(*args, **kwargs)
    if context.method_name == "__call__":
      path = tuple(context.module.path)
      if (path not in captured and isinstance(out, jax.Array)
          and scaled_param(params, path) is not None):
        captured[path] = out
    return out

  with nn.intercept_methods(interceptor):
    apply_fn(variables, x_batch)
  return captured


def kernel_layers(apply_fn: ApplyFn, variables: Mapping[str, Any],
                  x_batch: jax.Array) -> list[Path]:
  """Module paths of the layers with a kernel (or ``g``), in the order the forward pass runs them.

  (The dict ``layer_outputs`` returns is in forward order only when it is called eagerly:
  ``jax.jit`` rebuilds dicts with sorted keys. This function keeps the order.)
  """
  order: list[Path] = []

  def trace(v, x):
    outs = layer_outputs(apply_fn, v, x)
    order.extend(outs)  # At trace time, before jax sorts the keys.
    return outs

  jax.eval_shape(trace, variables, x_batch)
  return order


def _replace_param(variables: dict[str, Any], path: Path, name: str,
                   value: jax.Array) -> dict[str, Any]:
  """A copy of ``variables`` with ``params[path][name]`` replaced (copy on the path only)."""
  def go(node: Mapping[str, Any], rest: Sequence[str]) -> dict[str, Any]:
    node = dict(node)
    if not rest:
      node[name] = value
    else:
      node[rest[0]] = go(node[rest[0]], rest[1:])
    return node
  return {**variables, "params": go(variables["params"], path)}


def _orthogonalize(key: jax.Array, variables: dict[str, Any],
                   paths: Sequence[Path]) -> dict[str, Any]:
  init = lsuv_base_init()
  for path, k in zip(paths, jax.random.split(key, max(len(paths), 1))):
    kernel = module_params(variables["params"], path).get("kernel")
    if kernel is not None:  # WeightNorm layers keep their direction v.
      variables = _replace_param(variables, path, "kernel", init(k, kernel.shape, kernel.dtype))
  return variables


@functools.partial(jax.jit, static_argnums=(0, 1))
def _variances(apply_fn: ApplyFn, paths: tuple[Path, ...], variables: Any,
               x_batch: jax.Array) -> jax.Array:
  """Output variance of each layer in ``paths`` (float32), one forward pass."""
  outs = layer_outputs(apply_fn, variables, x_batch)
  return jnp.stack([jnp.var(outs[p].astype(jnp.float32)) for p in paths])


def lsuv(apply_fn: ApplyFn,
         variables: Mapping[str, Any],
         x_batch: jax.Array,
         *,
         tol: float = 0.1,
         max_iters: int = 10,
         target_var: float = 1.0,
         orthogonal_key: Optional[jax.Array] = None) -> tuple[Any, list[LayerReport]]:
  """LSUV: rescales each layer's kernel, in forward order, until its output variance is 1.

  For each layer with a kernel, in forward order (Mishkin & Matas 2016, Algorithm 1)::

    while |Var(B_L) - target_var| >= tol and t < max_iters:
      W_L <- W_L * sqrt(target_var / Var(B_L))

  where ``B_L`` is the layer's output on ``x_batch`` (pre-activation, bias included) and the
  variance is over all its elements.

  Args:
    apply_fn: ``apply_fn(variables, x)`` running a Flax model, e.g.
      ``lambda v, x: model.apply(v, x, train=False)``. Its return value is ignored.
    variables: the model's variables, with kernels under ``variables['params']``.
    x_batch: a batch of inputs (the paper uses one mini-batch).
    tol: tolerance on the variance, ``Tol_var`` in the paper (default 0.1, as there).
    max_iters: most rescalings per layer, ``T_max`` in the paper (default 10, as there).
    target_var: the variance to reach (1 in the paper).
    orthogonal_key: if given, every kernel is first re-drawn from ``F.orthogonal()``
      (step 1 of the paper); by default the kernels are taken as they are (a model built
      with ``kernel_init='lsuv'`` already has orthogonal kernels).

  Returns:
    ``(variables, reports)``: the rescaled variables (same structure and dtypes) and one
    ``LayerReport`` per layer, in forward order. A layer whose output variance is zero or
    not finite (a dead layer) is left as it is and reported with ``converged=False``.

  Raises:
    ValueError: on ``tol <= 0``, ``max_iters < 1`` or ``target_var <= 0``, or when the
      model has no layer with a kernel (or WeightNorm gain).
  """
  if not tol > 0:
    raise ValueError(f"lsuv: tol must be positive, got {tol!r}.")
  if not (isinstance(max_iters, int) and max_iters >= 1):
    raise ValueError(f"lsuv: max_iters must be an int >= 1, got {max_iters!r}.")
  if not target_var > 0:
    raise ValueError(f"lsuv: target_var must be positive, got {target_var!r}.")
  frozen = isinstance(variables, flax.core.FrozenDict)
  variables = flax.core.unfreeze(variables)
  paths = kernel_layers(apply_fn, variables, x_batch)
  if not paths:
    raise ValueError("lsuv: the model has no module with a 'kernel' (or WeightNorm 'g') "
                     "parameter.")
  if orthogonal_key is not None:
    variables = _orthogonalize(orthogonal_key, variables, paths)

  reports = []
  for index, path in enumerate(paths):
    var = initial = float(_variances(apply_fn, tuple(paths), variables, x_batch)[index])
    iterations = 0
    while abs(var - target_var) >= tol and iterations < max_iters:
      if not (math.isfinite(var) and var > 0):
        break
      name = scaled_param(variables["params"], path)
      param = module_params(variables["params"], path)[name]
      scale = jnp.sqrt(target_var / var).astype(param.dtype)
      variables = _replace_param(variables, path, name, param * scale)
      var = float(_variances(apply_fn, tuple(paths), variables, x_batch)[index])
      iterations += 1
    reports.append(LayerReport(path=path, initial_var=initial, final_var=var,
                               iterations=iterations,
                               converged=bool(abs(var - target_var) < tol)))
  if frozen:
    variables = flax.core.freeze(variables)
  return variables, reports
