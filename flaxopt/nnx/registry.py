"""The registry for NNX users: module families resolve to ``flaxopt.nnx`` classes.

``registry_get(family, name, **kwargs)`` is ``flaxopt.registry.get`` except that the
module families (``norm``, ``pool``) return the NNX twins, constructed with ``kwargs``
(NNX constructors take the feature count and ``rngs``, e.g.
``registry_get('norm', 'batch', num_features=32, rngs=nnx.Rngs(0))``). The other
families (activation functions, initializers, regularizers, optimizers) are API-neutral
and come from ``flaxopt.registry`` unchanged. Names and error messages are the same.
"""

from __future__ import annotations

from typing import Any, Callable, Mapping

from flaxopt import registry
from flaxopt.nnx import normalization, pooling

__all__ = ["MODULE_TABLES", "registry_get", "registry_names", "registry_table"]

# family -> the NNX table replacing the linen one.
MODULE_TABLES: Mapping[str, Mapping[str, Callable[..., Any]]] = {
    "norm": normalization.REGISTRY,
    "pool": pooling.REGISTRY,
}


def registry_table(family: str) -> dict[str, Callable[..., Any]]:
  """The name -> constructor table of ``family`` for NNX users."""
  linen = registry.table(family)  # raises on an unknown family.
  if family not in MODULE_TABLES:
    return linen
  nnx_table = dict(MODULE_TABLES[family])
  if set(nnx_table) != set(linen):
    raise ValueError(f"{family}: NNX names {sorted(nnx_table)} differ from linen names "
                     f"{sorted(linen)}.")
  return nnx_table


def registry_names(family: str) -> list[str]:
  """Sorted valid names of ``family`` (the same as ``flaxopt.registry.names``)."""
  return sorted(registry_table(family))


def registry_get(family: str, name: str, /, **kwargs: Any) -> Any:
  """Builds the ``family`` entry ``name``: an NNX module for norm/pool, else as the registry."""
  registry.check(family, name)
  return registry_table(family)[name](**kwargs)
