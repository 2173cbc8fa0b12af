"""The one home of configuration logic: dotted overrides, the field schema and validation.

Every script and test that changes a training config goes through :func:`apply_overrides`;
every config is checked by ``validate`` (``flaxopt.training.loop.validate_config`` today)
before anything is built or written. Errors are :class:`ConfigError`, a ``ValueError`` whose
message is one line naming the field and value.
"""

from __future__ import annotations

import copy
from typing import Any, Iterable

import ml_collections

__all__ = ["ConfigError", "EXTENSIBLE_SECTIONS", "apply_overrides"]

# Top-level config sections under which an override may create a field the base lacks:
# optimizer constructor kwargs and augmentation op kwargs. Anywhere else a new field is a typo.
EXTENSIBLE_SECTIONS = ("optimizer", "augment")


class ConfigError(ValueError):
  """A user error in the config found before training starts (reported as one line)."""


def apply_overrides(config: ml_collections.ConfigDict,
                    overrides: Iterable[tuple[str, Any]]) -> ml_collections.ConfigDict:
  """A copy of ``config`` with ``field=value`` overrides (dotted fields).

  A field the config lacks may be created only under ``EXTENSIBLE_SECTIONS`` (optimizer
  kwargs, augmentation kwargs); elsewhere it raises ConfigError naming the field.
  """
  config = copy.deepcopy(config)
  for field, value in overrides:
    parts = field.split(".")
    node = config
    for i, part in enumerate(parts):
      last = i == len(parts) - 1
      exists = isinstance(node, ml_collections.ConfigDict) and part in node
      if not exists:
        if parts[0] not in EXTENSIBLE_SECTIONS or i == 0 or \
            not isinstance(node, ml_collections.ConfigDict):
          raise ConfigError(f"Unknown config field {field!r} (no {'.'.join(parts[:i + 1])!r}).")
        with node.unlocked():
          node[part] = value if last else ml_collections.ConfigDict()
      elif last:
        try:
          node[part] = value
        except TypeError as e:
          raise ConfigError(f"Bad value {value!r} for config field {field!r}: {e}") from e
      node = node[part]
  return config
