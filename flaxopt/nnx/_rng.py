"""Rng-stream plumbing shared by the stochastic NNX modules (not public)."""

from __future__ import annotations

from typing import Any, Optional, Union

import jax
from flax import nnx

KeySource = Union[nnx.Rngs, nnx.RngStream, jax.Array, None]


def fork_stream(rngs: Optional[nnx.Rngs], stream: str) -> Any:
  """A module's own fork of ``rngs[stream]`` (or its 'default'), or a data ``None`` if absent.

  A module built without the stream (e.g. ``nnx.Rngs(params=0)``) can still run
  deterministically, or stochastically with ``rngs=`` given at call time.
  """
  if rngs is None:
    return nnx.data(None)
  if isinstance(rngs, nnx.RngStream):
    return rngs.fork()
  try:
    return rngs[stream].fork()
  except (KeyError, AttributeError):
    return nnx.data(None)


def draw_key(owner: str, stream: str, override: KeySource, stored: KeySource) -> jax.Array:
  """The next key of ``stream``: from the call's ``rngs`` if given, else the module's own.

  ``override``/``stored`` may be an ``nnx.Rngs`` (its ``stream`` is advanced), an
  ``nnx.RngStream`` or a key array (used as is).
  """
  source = override if override is not None else stored
  if source is None:
    raise ValueError(f"{owner} is stochastic here but has no {stream!r} rng stream: build it "
                     f"with rngs=nnx.Rngs({stream}=...) or call it with rngs=.")
  if isinstance(source, nnx.Rngs):
    return source[stream]()
  if isinstance(source, nnx.RngStream):
    return source()
  return source


def first(value: Optional[bool], default: Optional[bool], field: str, owner: str) -> bool:
  """The call argument if given, else the module attribute (NNX's ``first_from``)."""
  result = value if value is not None else default
  if result is None:
    raise ValueError(f"{owner}: {field} is None both as an attribute and as a call argument.")
  return bool(result)
