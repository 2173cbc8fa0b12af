"""The study spec: its fields, their string syntax, and the settings they expand to.

A study is a ConfigDict with ``base`` (a training config) and the fields of
:func:`default_study_fields`: ``axes`` (``'field=v1,v2,...'``; values split on ``'|'`` instead
when the string holds one, so values may contain commas), ``variants`` (``'label: field=value;
field=value'``, for settings that change different fields), ``seeds``, ``lr_grid``
(``'1e-4:1e-1:7'`` log-spaced or ``'1e-3,1e-2'``), ``tune_seeds``, ``validation_size``,
``target_accuracy``. A plain training config (no ``base``) is the base of a study with no axes.

The settings are the product of the variants (first) and the axes, each setting a tuple of
dotted overrides applied to the base by ``flaxopt.training.config.apply_overrides``. Errors
are ``ConfigError`` (a ValueError) with a one-line message naming the field and the value.
"""

from __future__ import annotations

import copy
import dataclasses
import itertools
import re
from typing import Any, Sequence

import ml_collections
import numpy as np

from flaxopt.training.config import ConfigError

__all__ = ["Setting", "as_study", "default_study_fields", "make_settings", "parse_axis",
           "parse_lr_grid", "parse_seeds", "parse_value", "parse_variant"]


def default_study_fields() -> ml_collections.ConfigDict:
  """Every study field with its default (a study config sets ``base`` plus some of these)."""
  s = ml_collections.ConfigDict()
  s.name = ""  # leaderboard / image name; '' -> the workdir's basename
  s.title = ""  # one line above the leaderboard
  s.axes = ()  # 'field=v1,v2,...' (or 'field=v1|v2' when values hold commas)
  s.variants = ()  # 'label: field=value; field=value' ('label:' alone: the base config)
  s.seeds = "0,1"  # comma-separated ints, or 'a:b' for range(a, b)
  s.lr_grid = ""  # '' none; 'lo:hi:n' log-spaced (inclusive); or 'v1,v2,...'
  s.tune_seeds = 1  # seeds (the first ones) each lr of the grid is tuned on
  s.validation_size = 1000  # training examples held out while tuning the lr
  s.target_accuracy = 0.9  # for steps / seconds to target
  return s


def as_study(config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
  """A study ConfigDict: ``config`` if it has ``base``, else a study of ``config`` alone.

  Missing study fields take the defaults of ``default_study_fields()``; unknown ones raise.
  """
  study = default_study_fields()
  if "base" in config:
    unknown = sorted(set(config) - set(study) - {"base"})
    if unknown:
      raise ConfigError(f"Unknown study field(s) {unknown}; valid: base, {', '.join(study)}")
    for key in config:
      if key != "base":
        study[key] = config[key]
    study.base = copy.deepcopy(config.base)
  else:
    study.base = copy.deepcopy(config)
  return study


def parse_value(text: str) -> Any:
  """A command-line value: 'true'/'false' -> bool, ints, floats, else the string itself."""
  text = text.strip()
  lowered = text.lower()
  if lowered in ("true", "false"):
    return lowered == "true"
  for kind in (int, float):
    try:
      return kind(text)
    except ValueError:
      pass
  return text


def parse_axis(spec: str) -> tuple[str, list[Any]]:
  """``'field=v1,v2'`` -> ``(field, [v1, v2])``; values split on '|' if the spec holds one."""
  field, sep, values = spec.partition("=")
  field = field.strip()
  if not sep or not field or not values.strip():
    raise ConfigError(f"Axis {spec!r} must look like 'field=value1,value2,...'.")
  parts = values.split("|") if "|" in values else values.split(",")
  parsed = [parse_value(p) for p in parts]
  if len(set(map(repr, parsed))) != len(parsed):
    raise ConfigError(f"Axis {spec!r} repeats a value.")
  return field, parsed


def parse_variant(spec: str) -> tuple[str, list[tuple[str, Any]]]:
  """``'label: a.b=1; c=x,y'`` -> ``('label', [('a.b', 1), ('c', 'x,y')])``."""
  label, sep, rest = spec.partition(":")
  label = label.strip()
  if not sep or not label or "=" in label:
    raise ConfigError(f"Variant {spec!r} must look like 'label: field=value; field=value'.")
  assignments = []
  for item in filter(str.strip, rest.split(";")):
    field, eq, value = item.partition("=")
    if not eq or not field.strip():
      raise ConfigError(f"Variant {spec!r}: {item.strip()!r} is not 'field=value'.")
    assignments.append((field.strip(), parse_value(value)))
  return label, assignments


def parse_seeds(spec: Any) -> list[int]:
  """``'0,1,2'``, ``'0:3'`` (range), an int (that many seeds from 0) or a sequence of ints."""
  try:
    if isinstance(spec, int) and not isinstance(spec, bool):
      seeds = list(range(spec))
    elif isinstance(spec, str) and ":" in spec:
      lo, hi = (int(v) for v in spec.split(":"))
      seeds = list(range(lo, hi))
    elif isinstance(spec, str):
      seeds = [int(v) for v in spec.split(",") if v.strip()]
    else:
      seeds = [int(v) for v in spec]
  except (TypeError, ValueError) as e:
    raise ConfigError(f"seeds={spec!r}: not '0,1,2', 'a:b' or a count ({e}).") from None
  if not seeds or len(set(seeds)) != len(seeds):
    raise ConfigError(f"seeds={spec!r} must name at least one seed, none twice.")
  return seeds


def parse_lr_grid(spec: Any) -> list[float]:
  """``'1e-4:1e-1:4'`` -> ``[1e-4, 1e-3, 1e-2, 1e-1]`` (log-spaced); ``'1e-3,1e-2'``; ``''``."""
  try:
    if isinstance(spec, (list, tuple)):
      grid = [float(v) for v in spec]
    elif not str(spec).strip():
      return []
    elif ":" in str(spec):
      lo, hi, num = str(spec).split(":")
      if float(lo) <= 0 or float(hi) <= float(lo) or int(num) < 2:
        raise ConfigError(f"lr_grid={spec!r} needs 0 < lo < hi and at least 2 points.")
      grid = np.geomspace(float(lo), float(hi), int(num)).tolist()
    else:
      grid = [float(v) for v in str(spec).split(",") if v.strip()]
  except (TypeError, ValueError) as e:
    if isinstance(e, ConfigError):
      raise
    raise ConfigError(f"lr_grid={spec!r}: not 'lo:hi:n' or 'v1,v2' ({e}).") from None
  if not grid or any(not v > 0 for v in grid):
    raise ConfigError(f"lr_grid={spec!r} must hold positive learning rates.")
  return [float(f"{v:.4g}") for v in grid]


@dataclasses.dataclass(frozen=True)
class Setting:
  """One point of the sweep: its label per axis and the overrides that make it."""

  labels: tuple[tuple[str, str], ...]  # (axis name, value as text), in axis order
  overrides: tuple[tuple[str, Any], ...]  # (field, value) applied to the base config

  @property
  def key(self) -> str:
    """'variant,field=value,...' ('base' for the base config alone)."""
    parts = [v if k == "variant" else f"{k}={v}" for k, v in self.labels]
    return ",".join(parts) or "base"

  @property
  def dirname(self) -> str:
    """``key`` with characters other than letters, digits and ``._=,+-`` replaced by '_'."""
    return re.sub(r"[^\w.=,+-]+", "_", self.key).strip("_") or "_"


def make_settings(axes: Sequence[str], variants: Sequence[str]) -> list[Setting]:
  """The product of ``variants`` (first) and ``axes``, in the order given."""
  dims = []
  if variants:
    parsed = [parse_variant(v) for v in variants]
    labels = [label for label, _ in parsed]
    if len(set(labels)) != len(labels):
      raise ConfigError(f"Variant labels repeat: {labels}.")
    dims.append([((("variant", label),), tuple(assign)) for label, assign in parsed])
  fields_seen = set()
  for spec in axes:
    field, values = parse_axis(spec)
    if field in fields_seen:
      raise ConfigError(f"Axis field {field!r} given twice.")
    fields_seen.add(field)
    dims.append([(((field, _text(v)),), ((field, v),)) for v in values])
  settings = []
  for combo in itertools.product(*dims):
    labels = tuple(l for labs, _ in combo for l in labs)
    overrides = tuple(o for _, ovs in combo for o in ovs)
    settings.append(Setting(labels, overrides))
  dirnames = [s.dirname for s in settings]
  if len(set(dirnames)) != len(dirnames):
    raise ConfigError(f"Settings map to the same directory name: {dirnames}.")
  return settings


def _text(value: Any) -> str:
  return "''" if value == "" else str(value)
