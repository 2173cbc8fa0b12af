"""The one home of configuration logic: defaults, the field schema, validation, overrides.

* :func:`default_config` builds the full training config. Each default has one source: the
  loop's own fields are :data:`LOOP_FIELDS` below; ``model.*`` comes from
  ``flaxopt.nn.models.default_model_config``; ``augment.*`` from the augmentation ops' keyword
  defaults; ``early_stopping.*`` and ``diagnostics.*`` from their modules; ``init.*`` from the
  keyword defaults of ``flaxopt.init.lsuv`` and ``flaxopt.init.pretrain_mlp``.
* :func:`schema` maps every dotted field to a :class:`Field` (type, range, allowed names or
  registry family); :func:`validate` checks a config against it and against the cross-field
  rules, before anything is built or written. Errors are :class:`ConfigError`, a
  ``ValueError`` whose message is one line: ``<field>=<value>: <why>``.
* :func:`apply_overrides` applies dotted ``field=value`` overrides (scripts and tests).

Unknown fields are errors, except under :data:`EXTENSIBLE_SECTIONS` (optimizer constructor
kwargs, which are checked against the optimizer's signature instead).
"""

from __future__ import annotations

import copy
import dataclasses
import difflib
import functools
import inspect
import math
import numbers
from typing import Any, Callable, Iterable, Mapping, Optional, Sequence

import ml_collections

__all__ = ["ConfigError", "EXTENSIBLE_SECTIONS", "Field", "LOOP_FIELDS", "apply_overrides",
           "augment_config", "complete", "default_config", "diff", "flatten", "init_config", "schema",
           "validate"]

# Top-level config sections under which an override may create a field the base lacks:
# optimizer constructor kwargs and augmentation op kwargs. Anywhere else a new field is a typo.
EXTENSIBLE_SECTIONS = ("optimizer", "augment")
# optimizer.* keys the loop consumes; every other optimizer.* key goes to the constructor.
SCHEDULE_KEYS = ("name", "learning_rate", "schedule", "warmup_steps")
# Metrics each evaluation record holds (val_* only with dataset.validation_size > 0).
EVAL_METRICS = ("train_loss", "test_loss", "test_accuracy", "val_loss", "val_accuracy")
_INT32_MAX = 2**31 - 1


class ConfigError(ValueError):
  """A user error in the config found before training starts (reported as one line)."""


def _error(field: str, value: Any, why: str) -> ConfigError:
  return ConfigError(" ".join(f"{field}={value!r}: {why}".split()))


# ---------------------------------------------------------------------------------------
# The schema.
# ---------------------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class Field:
  """One config field: its type, default and allowed values.

  Attributes:
    kind: ``int``, ``float``, ``bool`` or ``str`` (a float field accepts ints; bools are
      never numbers).
    default: the default value.
    low, high: inclusive numeric bounds (``low_open``/``high_open`` make them exclusive).
    choices: allowed values (or a callable returning them, for lazily known names).
    family: a ``flaxopt.registry`` family the value must name.
    optional: whether None is allowed.
    per_axis: an int field that also takes a sequence of ints (one per spatial axis).
    sequence: the value is a list/tuple (possibly empty) of ``kind`` values, each checked.
    doc: one line for the reader.
  """

  kind: type
  default: Any
  low: Optional[float] = None
  high: Optional[float] = None
  low_open: bool = False
  high_open: bool = False
  choices: Any = None
  family: Optional[str] = None
  optional: bool = False
  per_axis: bool = False
  sequence: bool = False
  doc: str = ""

  def allowed(self) -> Optional[Sequence[Any]]:
    return self.choices() if callable(self.choices) else self.choices

  def why_bad(self, value: Any) -> Optional[str]:
    """None for a good value, else the reason (one phrase)."""
    if value is None:
      return None if self.optional else f"must be a {self._kind_name()}, not None"
    if self.sequence:
      if not isinstance(value, (list, tuple)):
        return f"must be a list of {self._kind_name()}s, got {type(value).__name__}"
      element = dataclasses.replace(self, sequence=False)
      return next((r for r in map(element.why_bad, value) if r), None)
    if self.per_axis and isinstance(value, (list, tuple)):
      reasons = [self.why_bad(v) for v in value]
      return next((r for r in reasons if r), None) if value else "must not be empty"
    if not self._type_ok(value):
      return f"must be a {self._kind_name()}, got {type(value).__name__}"
    if self.kind in (int, float):
      return self._range_why(value)
    if self.family is not None:
      from flaxopt import registry  # pylint: disable=g-import-not-at-top
      if self.choices and value in self.allowed():
        return None
      try:
        registry.check(self.family, value)
      except ValueError as e:
        return str(e)
      return None
    allowed = self.allowed()
    if allowed is not None and value not in allowed:
      close = difflib.get_close_matches(str(value), [str(a) for a in allowed], n=1)
      hint = f"; did you mean {close[0]!r}?" if close else ""
      return f"must be one of {', '.join(map(str, allowed))}{hint}"
    return None

  def _kind_name(self) -> str:
    name = {int: "int", float: "number", bool: "bool", str: "string"}[self.kind]
    return name + (" or a list of them" if self.per_axis else "")

  def _type_ok(self, value: Any) -> bool:
    if self.kind is bool:
      return isinstance(value, bool)
    if self.kind is int:
      return isinstance(value, numbers.Integral) and not isinstance(value, bool)
    if self.kind is float:
      return isinstance(value, numbers.Real) and not isinstance(value, bool)
    return isinstance(value, self.kind)

  def _range_why(self, value: Any) -> Optional[str]:
    if not math.isfinite(value):
      return "must be finite"
    lo_ok = self.low is None or (value > self.low if self.low_open else value >= self.low)
    hi_ok = self.high is None or (value < self.high if self.high_open else value <= self.high)
    if lo_ok and hi_ok:
      return None
    if self.high is None:
      return f"must be {'>' if self.low_open else '>='} {self.low:g}"
    if self.low is None:
      return f"must be {'<' if self.high_open else '<='} {self.high:g}"
    return (f"must be in {'(' if self.low_open else '['}{self.low:g}, {self.high:g}"
            f"{')' if self.high_open else ']'}")


def _count(default: int, low: int = 1, doc: str = "", **kw) -> Field:
  return Field(int, default, low=low, doc=doc, **kw)


def _dataset_names() -> list[str]:
  from flaxopt.data import datasets  # pylint: disable=g-import-not-at-top
  return datasets.names()


def _parallel_modes() -> Sequence[str]:
  from flaxopt.data import pipeline  # pylint: disable=g-import-not-at-top
  return pipeline.PARALLEL_MODES


def _schedules() -> Sequence[str]:
  from flaxopt.training import loop  # pylint: disable=g-import-not-at-top
  return tuple(loop.SCHEDULES)


# The loop's own fields (every section except model, augment, early_stopping, diagnostics,
# init, whose fields come from the modules that define them). The main job's values.
LOOP_FIELDS: Mapping[str, Field] = {
    "seed": Field(int, 0, low=0, high=_INT32_MAX, doc="PRNGKey(seed): init, data order"),
    "dataset.name": Field(str, "mnist1d", choices=_dataset_names),
    "dataset.num_train": Field(int, 0, low=0, optional=True,
                               doc="0 / None: the whole training split"),
    "dataset.validation_size": _count(0, low=0, doc="held out of the training split"),
    "dataset.data_dir": Field(str, "", doc="'': the data module's default directory"),
    "batch_size": _count(100),
    "num_train_steps": _count(6000),
    "eval_every": _count(500, doc="one jitted evaluation of every evaluation set"),
    "eval_batch_size": _count(0, low=0, doc="0: the whole evaluation set in one chunk"),
    "log_every": _count(500, doc="progress line + divergence check (host sync)"),
    "checkpoint_every": _count(3000, low=0, doc="0: only at the end"),
    "max_to_keep": _count(2, doc="checkpoints kept (>= 1, or nothing could resume)"),
    "parallel": Field(str, "jit", choices=_parallel_modes,
                      doc="jit (mesh + NamedSharding) | pmap"),
    "stack_lowering": Field(str, "auto", choices=lambda: ("auto",) + tuple(_members().LOWERINGS),
                            doc="stacked runs: auto | vmap | unroll (training/members.py)"),
    "optimizer.name": Field(str, "adam", family="optimizer"),
    "optimizer.learning_rate": Field(float, 1e-2, low=0.0, low_open=True),
    "optimizer.schedule": Field(str, "constant", choices=_schedules,
                                doc="constant | cosine | warmup_cosine"),
    "optimizer.warmup_steps": _count(0, low=0),
    "regularizer.l1": Field(float, 0.0, low=0.0, doc="loss += l1 * sum |w|"),
    "regularizer.l2": Field(float, 0.0, low=0.0, doc="loss += 0.5 * l2 * sum w**2 (gradient + l2 * w = PyTorch's weight_decay)"),
    "init.num_examples": _count(1000, low=0, doc="training examples LSUV / RBM see"),
    "init.pretrain": Field(str, "none", choices=lambda: tuple(_init_lib().PRETRAIN),
                           doc="none | rbm (MLP hidden layers)"),
}

# augment.<op>.<kwarg> ranges (types and defaults come from the ops' signatures).
_AUGMENT_RANGES: Mapping[str, dict[str, Any]] = {
    "random_translate.max_shift": dict(low=0, per_axis=True),
    "random_crop.padding": dict(low=0, per_axis=True),
    "random_crop.pad_mode": dict(choices=("constant", "reflect", "edge", "symmetric", "wrap")),
    "horizontal_flip.prob": dict(low=0.0, high=1.0),
    "gaussian_noise.stddev": dict(low=0.0),
    "cutout.size": dict(low=0, per_axis=True),
    "cutout.prob": dict(low=0.0, high=1.0),
    "mixup.alpha": dict(low=0.0, low_open=True),
    "cutmix.alpha": dict(low=0.0, low_open=True),
}
_EARLY_STOPPING_RANGES: Mapping[str, dict[str, Any]] = {
    "criterion": dict(choices=("patience", "gl", "pq", "up")),
    "patience": dict(low=0),
    "min_delta": dict(low=0.0),
    "mode": dict(choices=("min", "max")),
    "metric": dict(choices=EVAL_METRICS),
    "alpha": dict(low=0.0),
    "strip_length": dict(low=1),
    "successive_strips": dict(low=1),
}
_CURVATURE_RANGES: Mapping[str, dict[str, Any]] = {
    "every": dict(low=0), "num_batches": dict(low=1), "top_k": dict(low=1),
    "trace_samples": dict(low=2), "lanczos_iters": dict(low=1), "seed": dict(low=0),
}
_DIAGNOSTICS_RANGES = {"every": dict(low=0), "saturation": dict(low=0.0, low_open=True,
                                                                 optional=True)}
# init.<field> -> (function whose keyword default it is, keyword, range)
_INIT_KWARGS: Mapping[str, tuple[str, str, dict[str, Any]]] = {
    "lsuv_tol": ("lsuv", "tol", dict(low=0.0, low_open=True)),
    "lsuv_max_iters": ("lsuv", "max_iters", dict(low=1)),
    "rbm_steps": ("train_rbm", "steps", dict(low=1)),
    "rbm_batch_size": ("train_rbm", "batch_size", dict(low=1)),
    "rbm_k": ("train_rbm", "k", dict(low=1)),
    "rbm_learning_rate": ("train_rbm", "learning_rate", dict(low=0.0, low_open=True)),
    "rbm_visible": ("pretrain_mlp", "visible", dict(choices=("gaussian", "bernoulli"))),
}
_MODEL_RANGES: Mapping[str, dict[str, Any]] = {
    "name": dict(choices=lambda: tuple(_models().MODELS)),
    "width": dict(low=1), "depth": dict(low=1, optional=True), "channels": dict(low=1),
    "num_pieces": dict(low=1), "num_groups": dict(low=1),
    "activation": dict(family="activation"), "kernel_init": dict(family="initializer"),
    "norm": dict(family="norm"), "pool": dict(family="pool", choices=("none", "")),
    "dropout": dict(low=0.0, high=1.0, high_open=True),
    "dropconnect": dict(low=0.0, high=1.0, high_open=True),
    "api": dict(choices=("linen", "nnx")),
    "conv_channels": dict(kind=int, sequence=True, low=1),
    "dense_widths": dict(kind=int, sequence=True, low=1),
    "kernel_size": dict(low=1),
}


def _members():
  from flaxopt.training import members  # pylint: disable=g-import-not-at-top
  return members


def _init_lib():
  import flaxopt.init  # pylint: disable=g-import-not-at-top
  return flaxopt.init


def _models():
  from flaxopt.nn import models  # pylint: disable=g-import-not-at-top
  return models


def _keyword_defaults(fn: Callable[..., Any]) -> dict[str, Any]:
  return {p.name: p.default for p in inspect.signature(fn).parameters.values()
          if p.kind is inspect.Parameter.KEYWORD_ONLY}


def _kind_of(value: Any) -> type:
  if isinstance(value, bool):
    return bool
  if isinstance(value, numbers.Integral):
    return int
  if isinstance(value, numbers.Real):
    return float
  return str


def _fields_from(section: str, defaults: Mapping[str, Any],
                 ranges: Mapping[str, Mapping[str, Any]]) -> dict[str, Field]:
  out = {}
  for key, default in defaults.items():
    extra = dict(ranges.get(key, {}))
    kind = extra.pop("kind", None) or _kind_of(default)
    optional = extra.pop("optional", default is None)
    out[f"{section}.{key}"] = Field(kind, default, optional=optional, **extra)
  return out


def _init_fields() -> dict[str, Field]:
  from flaxopt.init.lsuv import lsuv  # pylint: disable=g-import-not-at-top
  from flaxopt.init.rbm import pretrain_mlp, train_rbm  # pylint: disable=g-import-not-at-top
  functions = {"lsuv": lsuv, "train_rbm": train_rbm, "pretrain_mlp": pretrain_mlp}
  defaults = {field: _keyword_defaults(functions[fn])[kw]
              for field, (fn, kw, _) in _INIT_KWARGS.items()}
  return _fields_from("init", defaults, {f: r for f, (_, _, r) in _INIT_KWARGS.items()})


@functools.cache
def schema() -> Mapping[str, Field]:
  """Every dotted config field -> its :class:`Field` (built once, on first use)."""
  import flaxopt.functional as F  # pylint: disable=g-import-not-at-top
  from flaxopt.training import curvature_log  # pylint: disable=g-import-not-at-top
  from flaxopt.training import diagnostics  # pylint: disable=g-import-not-at-top
  from flaxopt.training import early_stopping  # pylint: disable=g-import-not-at-top
  fields: dict[str, Field] = dict(LOOP_FIELDS)
  model = _models().default_model_config().to_dict()
  model_fields = _fields_from("model", model, {k: {**r, **({"kind": int} if k == "depth"
                                                           else {})}
                                               for k, r in _MODEL_RANGES.items()})
  fields.update(model_fields)
  fields["augment.ops"] = Field(str, "", doc="comma-separated augmentation names ('' none)")
  for op, kwargs in F.augment_defaults().items():
    fields.update(_fields_from(f"augment.{op}", kwargs,
                               {k.split(".", 1)[1]: r for k, r in _AUGMENT_RANGES.items()
                                if k.split(".", 1)[0] == op}))
  es = {k: v for k, v in dataclasses.asdict(early_stopping.EarlyStopping()).items()}
  es["enabled"] = False  # tracked but never stopping unless asked for
  fields.update(_fields_from("early_stopping", es, _EARLY_STOPPING_RANGES))
  fields.update(_fields_from("diagnostics", diagnostics.DEFAULTS, _DIAGNOSTICS_RANGES))
  fields.update(_fields_from("curvature", curvature_log.default_config().to_dict(),
                             _CURVATURE_RANGES))
  fields.update(_init_fields())
  return fields


# ---------------------------------------------------------------------------------------
# Default configs.
# ---------------------------------------------------------------------------------------
def _nest(flat: Mapping[str, Any]) -> dict[str, Any]:
  out: dict[str, Any] = {}
  for dotted, value in flat.items():
    node = out
    *parents, leaf = dotted.split(".")
    for part in parents:
      node = node.setdefault(part, {})
    node[leaf] = value
  return out


def _section_config(prefix: str) -> ml_collections.ConfigDict:
  flat = {k[len(prefix) + 1:]: f.default for k, f in schema().items()
          if k.startswith(prefix + ".")}
  return ml_collections.ConfigDict(_nest(flat))


def augment_config() -> ml_collections.ConfigDict:
  """``augment.*``: ``ops=''`` and every op's keyword defaults as a sub-config."""
  return _section_config("augment")


def init_config() -> ml_collections.ConfigDict:
  """``init.*``: the data-dependent initializers' settings (their keyword defaults)."""
  return _section_config("init")


def default_config() -> ml_collections.ConfigDict:
  """The full training config: every field of :func:`schema` at its default.

  ``model.depth`` is a typed placeholder (None: the model's own default), as in
  ``flaxopt.nn.models.default_model_config``.
  """
  config = ml_collections.ConfigDict(_nest({k: f.default for k, f in schema().items()
                                            if not k.startswith("model.")}))
  config.model = _models().default_model_config()
  return config


def complete(config: Mapping[str, Any]) -> ml_collections.ConfigDict:
  """``config`` with the fields it lacks filled from :func:`default_config` (a new ConfigDict)."""
  base = default_config().to_dict()
  given = config.to_dict() if isinstance(config, ml_collections.ConfigDict) else dict(config)

  def merge(b: Any, g: Any) -> Any:
    if isinstance(b, dict) and isinstance(g, Mapping):
      return {**b, **{k: merge(b.get(k), v) for k, v in g.items()}}
    return g

  return ml_collections.ConfigDict(merge(base, given))


# ---------------------------------------------------------------------------------------
# Validation.
# ---------------------------------------------------------------------------------------
def flatten(tree: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
  """``{'a': {'b': 1}}`` -> ``{'a.b': 1}``."""
  out = {}
  for key, value in tree.items():
    name = f"{prefix}{key}"
    if isinstance(value, Mapping):
      out.update(flatten(value, name + "."))
      if not value:
        out[name] = value
    else:
      out[name] = value
  return out


def _as_dict(config: Mapping[str, Any]) -> dict[str, Any]:
  return config.to_dict() if isinstance(config, ml_collections.ConfigDict) else \
      {k: _as_dict(v) if isinstance(v, Mapping) else v for k, v in config.items()}


def _unknown_field_error(name: str, value: Any, known: Iterable[str]) -> ConfigError:
  """``name`` is not a field: list the valid fields of the deepest known section."""
  known = list(known)
  sections = {".".join(k.split(".")[:i]) for k in known for i in range(1, k.count(".") + 1)}
  parts = name.split(".")
  depth = 0
  while depth < len(parts) - 1 and ".".join(parts[:depth + 1]) in sections:
    depth += 1
  section = ".".join(parts[:depth])
  siblings = sorted({k[len(section) + 1:].split(".")[0] if section else k.split(".")[0]
                     for k in known if not section or k.startswith(section + ".")})
  close = difflib.get_close_matches(parts[depth], siblings, n=1)
  hint = f" Did you mean {close[0]!r}?" if close else ""
  where = f"section {section!r}" if section else "the top level"
  return _error(name, value, f"unknown field.{hint} Valid fields of {where}: "
                             f"{', '.join(siblings)}")


def _check_optimizer_kwargs(opt: Mapping[str, Any]) -> None:
  """Extra optimizer.* fields must be keyword arguments of the named optimizer."""
  from flaxopt import registry  # pylint: disable=g-import-not-at-top
  ctor = registry.table("optimizer")[opt["name"]]
  params = inspect.signature(ctor).parameters
  takes_any = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())
  valid = sorted(p for p in params if p != "learning_rate")
  for key, value in opt.items():
    if key in SCHEDULE_KEYS or takes_any or key in params:
      continue
    close = difflib.get_close_matches(key, valid, n=1, cutoff=0.5)
    hint = f" Did you mean {close[0]!r}?" if close else ""
    raise _error(f"optimizer.{key}", value, f"not an argument of optimizer "
                                            f"{opt['name']!r}.{hint} Valid: {', '.join(valid)}")


def _check_fields(flat: Mapping[str, Any]) -> None:
  fields = schema()
  for name, value in flat.items():
    field = fields.get(name)
    if field is None:
      if name.startswith("optimizer."):
        continue  # constructor kwargs: checked against the optimizer's signature
      raise _unknown_field_error(name, value, fields)
    why = field.why_bad(value)
    if why:
      raise _error(name, value, why)


def _check_augment(config: Mapping[str, Any]) -> None:
  import flaxopt.functional as F  # pylint: disable=g-import-not-at-top
  from flaxopt import registry  # pylint: disable=g-import-not-at-top
  ops_text = config["augment"]["ops"]
  valid = F.augment_defaults()
  for op in [o.strip() for o in ops_text.split(",") if o.strip()]:
    try:
      registry.check("augment", op)
    except ValueError as e:
      raise _error("augment.ops", ops_text, str(e)) from None
  for op in valid:
    section = config["augment"].get(op) or {}
    if "low" in section and "high" in section and section["low"] > section["high"]:
      raise _error(f"augment.{op}.high", section["high"],
                   f"must be >= augment.{op}.low={section['low']!r}")


def _check_combinations(config: Mapping[str, Any]) -> None:
  """Rules that involve more than one field."""
  es = config["early_stopping"]
  if es["enabled"] and es["metric"].startswith("val_") and \
      not config["dataset"]["validation_size"]:
    raise _error("early_stopping.metric", es["metric"],
                 "needs a validation split: set dataset.validation_size > 0")
  if es["criterion"] != "patience" and es["mode"] != "min":
    raise _error("early_stopping.mode", es["mode"],
                 f"criterion {es['criterion']!r} (Prechelt) needs mode='min'")
  opt = config["optimizer"]
  if opt["schedule"] == "warmup_cosine" and opt["warmup_steps"] > config["num_train_steps"]:
    raise _error("optimizer.warmup_steps", opt["warmup_steps"],
                 f"must be <= num_train_steps={config['num_train_steps']}")
  if config["model"]["api"] == "nnx":
    for field, value, off in (("model.kernel_init", config["model"]["kernel_init"], "lsuv"),
                              ("init.pretrain", config["init"]["pretrain"], "rbm"),
                              ("diagnostics.every", config["diagnostics"]["every"], None)):
      if (value == off) if off else value:
        raise _error(field, value, "is linen-only (it inspects linen modules); not with "
                                   "model.api='nnx'")
  curv = config["curvature"]
  if curv["every"] and curv["every"] % config["eval_every"]:
    raise _error("curvature.every", curv["every"],
                 f"must be a multiple of eval_every={config['eval_every']} (logged with "
                 "evaluations)")
  if curv["lanczos_iters"] < curv["top_k"]:
    raise _error("curvature.lanczos_iters", curv["lanczos_iters"],
                 f"must be >= curvature.top_k={curv['top_k']}")
  data_dir = config["dataset"]["data_dir"]
  if data_dir:
    import os  # pylint: disable=g-import-not-at-top
    parent = os.path.dirname(os.path.abspath(os.path.expanduser(data_dir)))
    if not os.path.isdir(parent):
      raise _error("dataset.data_dir", data_dir, f"no such folder: {parent}")


def _check_model(config: Mapping[str, Any]) -> None:
  """Cross-field model checks (e.g. groups dividing channels): build it, without init."""
  try:
    _models().build_model(config["model"], 10, axis_name=None)
  except ValueError as e:
    message = " ".join(str(e).split())
    raise ConfigError(message if "=" in message.split(":")[0] else
                      f"model={config['model']['name']!r}: {message}") from None


def validate(config: Mapping[str, Any]) -> None:
  """Raises :class:`ConfigError` ``<field>=<value>: <why>`` for a config that cannot run.

  Checks every field against :func:`schema` (type, range, names; missing fields take their
  defaults, see :func:`complete`), unknown fields (with a close-match suggestion), optimizer
  kwargs against the optimizer's signature, augmentation op names, and the cross-field
  rules (early stopping on a validation metric needs a validation split, ...). Pure: builds
  no arrays and compiles nothing.
  """
  tree = complete(config).to_dict()
  _check_fields(flatten(tree))
  _check_optimizer_kwargs(tree["optimizer"])
  _check_augment(tree)
  _check_combinations(tree)
  _check_model(tree)


def diff(a: Mapping[str, Any], b: Mapping[str, Any], *,
         ignore: Sequence[str] = ()) -> list[str]:
  """Dotted fields whose values differ between two configs (JSON-normalised)."""
  import json  # pylint: disable=g-import-not-at-top
  norm = lambda c: json.loads(json.dumps(_as_dict(c), default=str))
  fa, fb = flatten(norm(a)), flatten(norm(b))
  return sorted(k for k in set(fa) | set(fb) if k not in ignore and fa.get(k) != fb.get(k))


# ---------------------------------------------------------------------------------------
# Overrides.
# ---------------------------------------------------------------------------------------
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
