"""Stacked runs: K configs that differ only in seed and numeric hyperparameters, as members.

The training loop trains a *stack* of K members at once (``training.train_stack``): params,
optimizer state, BatchNorm statistics, rng and each member's data order carry a leading member
axis, one jitted step is ``vmap``-ed over it and one evaluation serves every member. K = 1 is
the solo run (``training.train_and_evaluate``), compiled exactly as before: no member axis.

What may differ between members (:data:`STACKABLE`): ``seed``, every float field of
``optimizer`` (``learning_rate``, ``momentum``, ``b1``, ``b2``, ``eps``, ``weight_decay``, ...),
``regularizer.l1`` / ``regularizer.l2``, ``model.dropout`` / ``model.dropconnect`` (only
when every member's rate is > 0, or all are equal: the layer exists only for a rate > 0) and
the float arguments of the augmentation ops (``augment.<op>.<arg>``). Everything else must be
equal; :func:`stack_problem` says which field is not, so the sweep runs such configs
separately with the reason logged.

The varying fields enter the step as traced per-member values (:func:`hyperparameters`):
the optimizer, its learning-rate schedule, the penalties, the model and the augmentation are
rebuilt inside the vmapped step from them (:func:`member_pieces`), so one compilation serves
every value. Constructors check concrete values when the config is validated and skip
tracers (``optim/_utils.py``).
"""

from __future__ import annotations

import fnmatch
import json
from typing import Any, Callable, Mapping, Optional, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from flaxopt.training import config as config_lib

__all__ = ["LOWERINGS", "STACKABLE", "hyperparameters", "index", "lowering", "member_pieces",
           "stack", "stack_key", "stack_problem", "varying_fields"]

# Field patterns (fnmatch) whose values may differ between the members of one stack.
STACKABLE = ("seed", "optimizer.*", "regularizer.l1", "regularizer.l2", "model.dropout",
             "model.dropconnect", "augment.*.*")
# Optimizer fields that are not numeric hyperparameters (they shape the program).
_STATIC_OPTIMIZER = ("optimizer.name", "optimizer.schedule", "optimizer.warmup_steps")
_RATES = ("model.dropout", "model.dropconnect")


def _is_number(value: Any) -> bool:
  return isinstance(value, (int, float)) and not isinstance(value, bool)


def _stackable(field: str, values: Sequence[Any]) -> bool:
  if field == "seed":
    return all(isinstance(v, int) and not isinstance(v, bool) for v in values)
  if field in _STATIC_OPTIMIZER or not any(fnmatch.fnmatchcase(field, p) for p in STACKABLE):
    return False
  return all(_is_number(v) for v in values)


def _flat(config: Any) -> dict[str, Any]:
  return config_lib.flatten(config.to_dict() if hasattr(config, "to_dict") else dict(config))


def varying_fields(configs: Sequence[Any]) -> list[str]:
  """Fields (dotted) whose values are not the same in every config, sorted."""
  flats = [_flat(c) for c in configs]
  fingerprint = lambda flat, k: (json.dumps(flat[k], sort_keys=True, default=str)
                                 if k in flat else "<missing>")
  return [k for k in sorted(set().union(*flats))
          if len({fingerprint(f, k) for f in flats}) > 1]


def stack_problem(configs: Sequence[Any]) -> Optional[str]:
  """None when ``configs`` can train as one stack, else why not (one line)."""
  if len(configs) < 2:
    return None
  flats = [_flat(c) for c in configs]
  fields = varying_fields(configs)  # names (strings) first: the likeliest cause
  fields.sort(key=lambda k: not any(isinstance(f.get(k), str) for f in flats))
  for field in fields:
    values = [f.get(field) for f in flats]
    if not _stackable(field, values):
      shown = ", ".join(dict.fromkeys(map(repr, values)))
      return f"{field} differs ({shown}) and is not a stackable numeric hyperparameter"
    if field in _RATES and min(values) == 0:
      return (f"{field} is 0 in some members and not others (the layer exists only for a "
              "rate > 0)")
  if flats[0].get("parallel", "jit") != "jit":
    return f"parallel={flats[0]['parallel']!r}: stacks train under parallel='jit' only"
  if flats[0].get("model.api", "linen") != "linen" and any(
      f in _RATES for f in varying_fields(configs)):
    return "model.api='nnx': dropout rates cannot vary within a stack"
  return None


def stack_key(config: Any) -> str:
  """Equal for configs that may share a stack (the config without its stackable fields)."""
  flat = _flat(config)
  kept = {k: v for k, v in flat.items()
          if not (_stackable(k, [v]) and (k not in _RATES or v > 0))}
  rates = {k: flat[k] > 0 for k in _RATES if k in flat}  # a rate's layer exists or not
  return json.dumps({"fields": kept, "rates": rates}, sort_keys=True, default=str)


def hyperparameters(configs: Sequence[Any]) -> dict[str, np.ndarray]:
  """``{field: (K,) float array}`` of the varying numeric fields (seed excluded)."""
  flats = [_flat(c) for c in configs]
  return {f: np.asarray([fl[f] for fl in flats], np.float64)
          for f in varying_fields(configs) if f != "seed"}


def _set(tree: dict, field: str, value: Any) -> None:
  *parents, leaf = field.split(".")
  for p in parents:
    tree = tree.setdefault(p, {})
  tree[leaf] = value


def with_values(config: Any, hp: Mapping[str, Any]) -> dict:
  """The config as a plain nested dict with ``hp``'s (possibly traced) values set."""
  out = config.to_dict() if hasattr(config, "to_dict") else json.loads(json.dumps(config))
  for field, value in hp.items():
    _set(out, field, value)
  return out


def member_pieces(config: Any, hp: Mapping[str, Any], *, model: Any, num_steps: int,
                  make_schedule: Callable[..., Any], make_optimizer: Callable[..., Any]
                  ) -> dict[str, Any]:
  """The optimizer, penalties, model and augmentation of one member with values ``hp``.

  Called inside the vmapped step (``hp`` traced) and, with concrete values, to build a
  member's host-side schedule. Returns ``{'tx', 'schedule', 'l1', 'l2', 'model',
  'augment_fn'}``; ``augment_fn`` is None without augmentation ops.
  """
  values = with_values(config, hp)
  schedule = make_schedule(values["optimizer"], num_steps)
  tx = make_optimizer(values["optimizer"], schedule)
  rates = {f.split(".")[1]: values["model"][f.split(".")[1]] for f in _RATES if f in hp}
  augment_fn = None
  if str(values["augment"].get("ops", "")).strip():
    import flaxopt.functional as F  # pylint: disable=g-import-not-at-top
    augment_fn = F.augment_pipeline_from_config(values["augment"])
  return {"tx": tx, "schedule": schedule, "l1": values["regularizer"]["l1"],
          "l2": values["regularizer"]["l2"], "model": model.clone(**rates) if rates else model,
          "augment_fn": augment_fn}


# How a stack maps its step over the members (``config.stack_lowering``):
LOWERINGS = {
    # one batched program: jax.vmap (bigger matmuls; XLA:CPU turns a vmapped convolution
    # into a grouped one, slower than K plain ones)
    "vmap": "jax.vmap over the member axis",
    # K solo computations in one program (one dispatch; XLA:CPU runs independent
    # convolutions side by side on its threads)
    "unroll": "K copies of the member's step in one program",
}
# Models with convolutions (their long stacks unroll on a CPU under stack_lowering='auto').
_CONV_MODELS = ("cnn", "convnet", "resnet")


# 'auto' unrolls a convolutional model on a CPU from this many training steps on.
UNROLL_MIN_STEPS = 3000


def lowering(config: Any, backend: str) -> str:
  """``config.stack_lowering``, with 'auto' resolved.

  'auto': 'unroll' for a convolutional model on a CPU trained for at least
  :data:`UNROLL_MIN_STEPS` steps, else 'vmap'. Measured on a 2-core CPU, MNIST-1D CNN,
  batch 100, K = 16 seeds x learning rates, quiet machine: a solo run 925 steps/s (first step,
  compilation included, 3.2 s); vmap 750 member-steps/s (0.81x; 4.1 s); unrolled 1237
  (1.34x; 22 s: K copies to compile); ``lax.map`` over the members 242 (0.26x: XLA:CPU's
  convolutions inside a loop). Unrolling pays back its compilation after about 2500 steps;
  for the MLP vmap is best (``experiments/benchmark.py --sections=stacked``).
  """
  choice = config.get("stack_lowering", "auto")
  if choice != "auto":
    return choice
  conv = backend == "cpu" and config.model.name in _CONV_MODELS
  return "unroll" if conv and int(config.num_train_steps) >= UNROLL_MIN_STEPS else "vmap"


# ---------------------------------------------------------------------------------------
# The member axis of pytrees (host or device arrays).
# ---------------------------------------------------------------------------------------
def index(tree: Any, k: int) -> Any:
  """Member ``k`` of a stacked pytree."""
  return jax.tree.map(lambda a: a[k], tree)


def stack(trees: Sequence[Any]) -> Any:
  """Stacks K same-structure pytrees on a new leading member axis (host arrays)."""
  return jax.tree.map(lambda *xs: np.stack([np.asarray(x) for x in xs]), *trees)


def replace(tree: Any, k: int, member: Any) -> Any:
  """``tree`` with member ``k`` replaced by ``member`` (host arrays)."""
  def put(a, m):
    a = np.array(a)
    a[k] = np.asarray(m)
    return a
  return jax.tree.map(put, tree, member)


def where(active: jax.Array, new: Any, old: Any) -> Any:
  """Per member: ``new`` where ``active`` else ``old`` (frozen members keep their state)."""
  return jax.tree.map(lambda n, o: jnp.where(active, n, o), new, old)
