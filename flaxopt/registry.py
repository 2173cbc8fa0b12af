"""Name -> constructor tables, one per family. Configs speak names only.

Each family's table lives beside the code it names (``REGISTRY`` dicts in the
family's modules); this module only finds, merges and queries them, so adding
a technique never touches this file.

>>> from flaxopt import registry
>>> relu = registry.get("activation", "leaky_relu", negative_slope=0.2)
>>> registry.names("optimizer")[:3]  # doctest: +SKIP

What ``get(family, name, **kwargs)`` returns, by family:

* ``activation``:  ``Callable[[Array], Array]`` with the hyperparameters bound.
* ``initializer``: ``init(key, shape, dtype=jnp.float32)`` (jax.nn.initializers signature).
* ``norm``:        a fresh Flax module instance (create it inside ``@compact``).
* ``pool``:        a fresh Flax module instance, called ``m(x, deterministic=...)``.
* ``penalty``:     ``l1``/``l2`` -> an ``optax.GradientTransformation`` that adds the
  penalty's gradient (``weight`` keyword; ``l2``: ``g + weight * w``, the gradient of
  ``weight / 2 * sum w**2``). Chain it before the optimizer.
* ``dropout``:     ``fn(x, key, deterministic=False)`` with ``rate`` bound
  (``dropout``: activations; ``dropconnect``: a weight mask).
* ``augment``:     ``fn(key, x, y) -> (x, y)``, a batch augmentation with its
  hyperparameters bound (``flaxopt.functional.augmentation``).
* ``optimizer``:   an ``optax.GradientTransformation`` (``learning_rate`` keyword).
"""

from __future__ import annotations

import difflib
import importlib
from typing import Any, Callable, Mapping

# family -> the "module:attribute" tables merged (in order) into that family.
_SOURCES: Mapping[str, tuple[str, ...]] = {
    "activation": ("flaxopt.functional.activations:REGISTRY",),
    "initializer": (
        "flaxopt.functional.initializers:REGISTRY",
        "flaxopt.init:REGISTRY",
    ),
    "norm": ("flaxopt.nn.normalization:REGISTRY",),
    "pool": ("flaxopt.nn.pooling:REGISTRY",),
    "penalty": ("flaxopt.optim.penalties:REGISTRY",),
    "dropout": ("flaxopt.functional.regularization:REGISTRY",),
    "augment": ("flaxopt.functional.augmentation:REGISTRY",),
    "optimizer": ("flaxopt.optim:REGISTRY",),
}

FAMILIES: tuple[str, ...] = tuple(_SOURCES)

# Families that were split, for the error message: old name -> the new families.
_SPLIT = {"regularizer": ("penalty", "dropout", "augment")}


def _load(source: str) -> Mapping[str, Callable[..., Any]]:
  module_name, attr = source.split(":")
  return getattr(importlib.import_module(module_name), attr)


def table(family: str) -> dict[str, Callable[..., Any]]:
  """The merged name -> constructor table of one family."""
  if family not in _SOURCES:
    hint = f" ({family!r} was split into {', '.join(_SPLIT[family])})" \
        if family in _SPLIT else ""
    raise ValueError(f"Unknown registry family {family!r}{hint}; "
                     f"valid families: {', '.join(FAMILIES)}")
  merged: dict[str, Callable[..., Any]] = {}
  for source in _SOURCES[family]:
    for name, ctor in _load(source).items():
      if name in merged and merged[name] is not ctor:
        raise ValueError(f"{family} name {name!r} is registered twice ({source}).")
      merged[name] = ctor
  return merged


def names(family: str) -> list[str]:
  """Sorted valid names of ``family``."""
  return sorted(table(family))


def check(family: str, name: str) -> None:
  """Raises ValueError naming the family, the bad name and the valid names."""
  valid = table(family)
  if name not in valid:
    close = difflib.get_close_matches(str(name), list(valid), n=1)
    hint = f" Did you mean {close[0]!r}?" if close else ""
    raise ValueError(
        f"Unknown {family} {name!r}.{hint} Valid {family} names: {', '.join(sorted(valid))}")


def get(family: str, name: str, /, **kwargs: Any) -> Any:
  """Builds the ``family`` entry called ``name`` with ``kwargs``."""
  check(family, name)
  return table(family)[name](**kwargs)
