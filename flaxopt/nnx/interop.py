"""Linen interop: copy variables between twins, and a linen-style ``init``/``apply`` adapter.

An NNX twin has the linen module's parameter tree (same names and nesting), so

* ``load_linen_variables(module, variables)`` copies linen ``{'params', 'batch_stats'}``
  into an NNX module (in place), and ``linen_variables(module)`` reads them out;
* ``LinenAdapter`` gives an NNX model the functional interface of a linen module,
  ``init(rngs, x, train=False) -> variables`` and ``apply(variables, x, train=...,
  rngs=..., mutable=[...])``, with ``nnx.split``/``nnx.merge``, so code written for linen
  (``flaxopt.training``'s jitted steps, orbax checkpoints of plain dicts) runs an NNX model
  unchanged.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any, Callable, Mapping, Optional, Sequence, Union

import jax
from flax import nnx

__all__ = ["COLLECTIONS", "LinenAdapter", "linen_variables", "load_linen_variables"]

# linen collection name -> the NNX variable type that holds it.
COLLECTIONS: Mapping[str, type[nnx.Variable]] = {"params": nnx.Param,
                                                 "batch_stats": nnx.BatchStat}


def _structure(tree: Any) -> Any:
  return jax.tree.structure(jax.tree.map(lambda _: 0, tree))


def linen_variables(module: nnx.Module) -> dict[str, Any]:
  """``{'params': ..., 'batch_stats': ...}`` of ``module`` as nested dicts (empty ones left out)."""
  out = {}
  for collection, kind in COLLECTIONS.items():
    tree = nnx.to_pure_dict(nnx.state(module, kind))
    if tree:
      out[collection] = tree
  return out


def load_linen_variables(module: nnx.Module, variables: Mapping[str, Any]) -> nnx.Module:
  """Copies linen ``variables`` (``params``, ``batch_stats``) into ``module``; returns it.

  Arrays are taken as they are (their dtype too). The trees must match exactly.

  Raises:
    ValueError: an unknown collection, or a tree whose structure or shapes differ from the
      module's (naming the collection).
  """
  unknown = sorted(set(variables) - set(COLLECTIONS))
  if unknown:
    raise ValueError(f"Unknown variable collection(s) {unknown}; valid: "
                     f"{', '.join(COLLECTIONS)}")
  for collection, kind in COLLECTIONS.items():
    state = nnx.state(module, kind)
    given = variables.get(collection, {})
    expected = nnx.to_pure_dict(state)
    shapes = lambda t: jax.tree.map(lambda a: tuple(jax.numpy.shape(a)), t)
    if _structure(given) != _structure(expected) or shapes(dict(given)) != shapes(expected):
      raise ValueError(f"{collection}: the linen tree {shapes(dict(given))} does not match "
                       f"the NNX module's {shapes(expected)}.")
    if expected:
      nnx.replace_by_pure_dict(state, dict(given))
      nnx.update(module, state)
  return module


def _mutable_names(mutable: Union[bool, str, Sequence[str]]) -> tuple[str, ...]:
  if mutable is True:
    return tuple(COLLECTIONS)
  if mutable is False or mutable is None:
    return ()
  names = (mutable,) if isinstance(mutable, str) else tuple(mutable)
  unknown = sorted(set(names) - set(COLLECTIONS))
  if unknown:
    raise ValueError(f"mutable={mutable!r}: unknown collection(s) {unknown}; valid: "
                     f"{', '.join(COLLECTIONS)}")
  return names


@dataclasses.dataclass(frozen=True, eq=False)
class LinenAdapter:
  """An NNX model behind linen's functional ``init``/``apply``.

  ``make(rngs)`` builds the model from an ``nnx.Rngs`` holding only ``params`` (the
  model then owns no rng streams; ``apply`` passes the call's keys as
  ``model(x, rngs=nnx.Rngs(**rngs))``); its state must be ``nnx.Param`` and
  ``nnx.BatchStat`` only. ``variables`` are plain nested dicts, linen's layout.

  Example::

    adapter = LinenAdapter.from_config(config.model, num_classes=10, input_shape=(40, 1))
    variables = adapter.init({'params': key}, x)
    logits, updates = adapter.apply(variables, x, train=True, rngs={'dropout': k},
                                    mutable=['batch_stats'])
  """

  make: Callable[[nnx.Rngs], nnx.Module]
  input_shape: tuple[int, ...]

  @classmethod
  def from_config(cls, model_config: Mapping[str, Any], num_classes: int,
                  input_shape: Sequence[int], axis_name: Optional[str] = None
                  ) -> "LinenAdapter":
    """The adapter of ``flaxopt.nnx.build_model(model_config, ...)`` (validated here)."""
    from flaxopt.nnx import models  # pylint: disable=g-import-not-at-top
    config = model_config.to_dict() if hasattr(model_config, "to_dict") else dict(model_config)
    make = lambda rngs: models.build_model(config, num_classes, tuple(input_shape), rngs,
                                           axis_name=axis_name)
    adapter = cls(make, tuple(input_shape))
    adapter.graphdef  # builds abstractly: config and shape errors surface here.
    return adapter

  @functools.cached_property
  def graphdef(self) -> nnx.GraphDef:
    """The model's graph (structure and static fields), built without computing anything."""
    abstract = nnx.eval_shape(lambda: self.make(nnx.Rngs(params=0)))
    graphdef, _, _, rest = nnx.split(abstract, nnx.Param, nnx.BatchStat, ...)
    if jax.tree.leaves(rest):
      raise ValueError("LinenAdapter needs a model whose state is only nnx.Param and "
                       f"nnx.BatchStat; it also has {rest}.")
    return graphdef

  def _check(self, x: jax.Array) -> None:
    if tuple(x.shape[1:]) != self.input_shape:
      raise ValueError(f"x has shape {x.shape}; the model was built for (N, "
                       f"{', '.join(map(str, self.input_shape))}).")

  def init(self, rngs: Union[jax.Array, Mapping[str, jax.Array]], x: jax.Array,
           train: bool = False) -> dict[str, Any]:
    """Linen's ``init``: ``{'params': ..., 'batch_stats': ...}`` from ``rngs['params']``.

    ``x`` only checks the input shape (NNX models are built eagerly); ``train`` is ignored
    (as in linen, ``init`` does not update statistics).
    """
    del train
    self._check(x)
    key = rngs["params"] if isinstance(rngs, Mapping) else rngs
    return linen_variables(self.make(nnx.Rngs(params=key)))

  def model(self, variables: Mapping[str, Any]) -> nnx.Module:
    """The NNX model holding ``variables`` (``nnx.merge`` of the graph and the state)."""
    states = [variables.get(c, {}) for c in COLLECTIONS]
    return nnx.merge(self.graphdef, *states)

  def apply(self, variables: Mapping[str, Any], x: jax.Array, train: bool = False,
            rngs: Optional[Mapping[str, jax.Array]] = None,
            mutable: Union[bool, str, Sequence[str]] = False) -> Any:
    """Linen's ``apply``: logits, or ``(logits, updated collections)`` when ``mutable``.

    ``train`` sets ``model.train()`` / ``model.eval()``; ``rngs`` (stream -> key) feed the
    stochastic layers. As in linen, training with running statistics needs
    ``mutable=['batch_stats']``.
    """
    self._check(x)
    names = _mutable_names(mutable)
    model = self.model(variables)
    model.train() if train else model.eval()  # pylint: disable=expression-not-assigned
    has_stats = bool(jax.tree.leaves(variables.get("batch_stats", {})))
    if train and has_stats and "batch_stats" not in names:
      raise ValueError("apply(train=True) updates batch_stats: pass mutable=['batch_stats'].")
    out = model(x, rngs=nnx.Rngs(**rngs) if rngs else None)
    if not names:
      return out
    updated = linen_variables(model)
    return out, {c: updated[c] for c in names if c in updated}
