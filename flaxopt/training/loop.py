"""The training loop: ``train_and_evaluate(config, workdir) -> summary``.

Reads top to bottom, as Flax's imagenet example: validate the config (``training/config.py``),
load the data and build model + optimizer (:func:`_prepare`), take the workdir, initialize or
resume from the newest valid checkpoint (:func:`_resume`), then a Python loop of jitted steps
(:func:`_train_chunk`) that syncs with the host only every ``log_every`` / ``eval_every`` /
``checkpoint_every`` steps (:func:`_sync`, :func:`_evaluate_and_maybe_stop`,
:func:`_checkpoint`), and :func:`_finish`. A Python loop rather than ``lax.scan`` over steps:
scanning made conv models 4-6x slower on XLA:CPU (measured on a 2-core machine).

Outputs in ``workdir``: ``config.json``, ``metrics.jsonl`` (one record per evaluation),
TensorBoard events under ``tensorboard/``, orbax checkpoints under ``checkpoints/``, the
plot ``curves.png`` and ``summary.json`` with ``status`` ``completed`` | ``early_stopped`` |
``diverged`` | ``preempted``. Process 0 alone writes files other than checkpoints.

Divergence guard: at each sync the summed training loss of the window is checked; a
non-finite value stops the run with status ``diverged`` and the non-finite state is never
saved (the last good checkpoint stays the newest).

Faults (docs/reliability.md): bad configs, a workdir in use, corrupt checkpoints, signals
(``handle_signals=True``: SIGTERM/SIGINT save a checkpoint at the current step and end with
status ``preempted``) and a full disk each end in one line, and a rerun of the same command
resumes bit-identically. Tests reach exact points through ``hooks`` (``training/hooks.py``).
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import math
import os
import time
from typing import Any, Callable, Mapping, Optional, Sequence

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
from absl import logging

from flaxopt import registry
from flaxopt.data import pipeline as pipeline_lib
from flaxopt.training import checkpoint as checkpoint_lib
from flaxopt.training import config as config_lib
from flaxopt.training import diagnostics as diagnostics_lib
from flaxopt.training import early_stopping as es_lib
from flaxopt.training import eval_point as eval_point_lib
from flaxopt.training import lock as lock_lib
from flaxopt.training import members as members_lib
from flaxopt.training import metrics as metrics_lib
from flaxopt.training import preemption
from flaxopt.training import plots
from flaxopt.training import steps as steps_lib
from flaxopt.training.config import ConfigError
from flaxopt.training.hooks import Hooks
from flaxopt.training.parallel import Parallel
from flaxopt.training.state import TrainState, create_train_state

__all__ = ["ConfigError", "SCHEDULES", "Setup", "make_optimizer", "make_schedule",
           "train_and_evaluate", "train_stack", "validate_config"]

# One-off programs (initialization) compile at XLA optimization level 1: threefry random
# bits take ~4 s to compile at the default level on XLA:CPU and ~0.5 s at level 1, with
# bit-identical results (level 0 changes the floating-point results).
_FAST_COMPILE = {"xla_backend_optimization_level": 1}


# ---------------------------------------------------------------------------------------
# Optimizer and learning-rate schedule from the config.
# ---------------------------------------------------------------------------------------
def _as_float(count: Any) -> jax.Array:
  """The step count in the default float dtype (float64 runs compute schedules in float64;
  optax's schedules compute in float32 whatever the run's dtype)."""
  return jnp.asarray(count, jnp.result_type(float))


def _cosine(t: jax.Array, steps: int) -> jax.Array:
  return 0.5 * (1.0 + jnp.cos(jnp.pi * jnp.minimum(t, steps) / steps))


def _warmup_cosine(t: jax.Array, warmup: int, steps: int) -> jax.Array:
  return jnp.where(t < warmup, t / max(warmup, 1),
                   _cosine(jnp.maximum(t - warmup, 0.0), max(steps - warmup, 1)))


SCHEDULES: dict[str, Callable[..., Any]] = {
    # name -> (learning_rate, num_steps, warmup_steps) -> float or schedule(count); each is
    # lr * unit(count), so a traced learning rate (stacked runs) works as a float does.
    "constant": lambda lr, steps, warmup: lr,
    "cosine": lambda lr, steps, warmup: lambda c: lr * _cosine(_as_float(c), steps),
    "warmup_cosine": lambda lr, steps, warmup: lambda c: lr * _warmup_cosine(
        _as_float(c), warmup, steps),
}


def make_schedule(opt_config: Mapping[str, Any], num_steps: int) -> Any:
  """``optimizer.schedule`` (constant | cosine | warmup_cosine) as a float or a schedule.

  cosine: ``lr * (1 + cos(pi min(t, T) / T)) / 2`` with ``T = num_train_steps``
  (``optax.cosine_decay_schedule(lr, T)``); warmup_cosine: ``lr * t / W`` for ``t < W =
  optimizer.warmup_steps``, then cosine from lr to 0 over the remaining ``T - W`` steps
  (``optax.warmup_cosine_decay_schedule(0, lr, W, T)``). Computed in the default float dtype;
  the learning rate may be a traced value (a stacked member's).
  """
  name = opt_config.get("schedule", "constant")
  if name not in SCHEDULES:
    raise ValueError(f"Unknown optimizer.schedule {name!r}; valid: {', '.join(SCHEDULES)}")
  lr = opt_config["learning_rate"]
  lr = lr if isinstance(lr, jax.core.Tracer) else float(lr)
  return SCHEDULES[name](lr, int(num_steps), int(opt_config.get("warmup_steps", 0)))


def make_optimizer(opt_config: Mapping[str, Any], schedule: Any) -> optax.GradientTransformation:
  """``registry.get('optimizer', name, learning_rate=schedule, **other optimizer.* fields)``."""
  kwargs = {k: v for k, v in dict(opt_config).items() if k not in config_lib.SCHEDULE_KEYS}
  return registry.get("optimizer", opt_config["name"], learning_rate=schedule, **kwargs)


def learning_rate_at(schedule: Any, count: int) -> float:
  """The learning rate of update number ``count`` (0-based, optax's count; host side)."""
  return float(schedule(count)) if callable(schedule) else float(schedule)


def validate_config(config: ml_collections.ConfigDict) -> None:
  """Raises ConfigError ``<field>=<value>: <why>`` for a config that cannot run.

  The public name of ``flaxopt.training.config.validate`` (see there).
  """
  config_lib.validate(config)


# ---------------------------------------------------------------------------------------
# Setup: data, devices, model, optimizer (no compilation, nothing written).
# ---------------------------------------------------------------------------------------
@dataclasses.dataclass
class Setup:
  """What the loop needs, built from the configs before any workdir is touched.

  ``configs`` are the stack's members (one for a solo run); ``config`` is the first, whose
  model, optimizer and schedule the stack shares (the members differ only in ``seed`` and
  the numeric fields ``hp`` holds, ``training/members.py``).
  """

  configs: list
  ds: Any  # flaxopt.data.datasets.Dataset
  par: Parallel
  pipe: pipeline_lib.Pipeline
  eval_sets: dict[str, list]
  model: Any  # a flax Module
  schedule: Any
  tx: optax.GradientTransformation
  augment_fn: Optional[Callable[..., Any]]
  train_fn: Callable[..., Any]  # (state, batch, sums, active) -> (state, sums)
  eval_fn: Callable[..., Any]
  hp: dict = dataclasses.field(default_factory=dict)  # varying field -> (K,) values

  @property
  def config(self) -> ml_collections.ConfigDict:
    return self.configs[0]

  @property
  def num_steps(self) -> int:
    return int(self.config.num_train_steps)

  @property
  def num_members(self) -> int:
    return len(self.configs)

  @property
  def stacked(self) -> bool:
    """Whether the state has a member axis (K > 1; a solo run has none)."""
    return self.num_members > 1

  def hp_arrays(self) -> dict[str, np.ndarray]:
    """The varying hyperparameters ``(K,)`` in the default float dtype (traced per member)."""
    return {f: np.asarray(v, jnp.result_type(float)) for f, v in self.hp.items()}

  def member_hp(self, k: int) -> dict[str, float]:
    return {f: float(v[k]) for f, v in self.hp.items()}

  def pieces(self, hp: Any) -> dict[str, Any]:
    """The optimizer, schedule, penalties, model and augmentation for hyperparameter values
    ``hp`` (member ``k``'s concrete values when ``hp`` is an int, or traced values)."""
    hp = self.member_hp(hp) if isinstance(hp, int) else hp
    return members_lib.member_pieces(self.config, hp, model=self.model,
                                     num_steps=self.num_steps, make_schedule=make_schedule,
                                     make_optimizer=make_optimizer)


def _load_data(config):
  from flaxopt.data import datasets  # pylint: disable=g-import-not-at-top
  return datasets.load(config.dataset.name, data_dir=config.dataset.data_dir or None,
                       num_train=config.dataset.num_train or None,
                       validation_size=int(config.dataset.validation_size),
                       batch_size=int(config.batch_size))


def _augment_fn(config, x_example: np.ndarray, num_classes: int):
  """The augmentation pipeline, traced once on abstract inputs (shape errors surface here)."""
  if not config.augment.ops.strip():
    return None
  import flaxopt.functional as F  # pylint: disable=g-import-not-at-top
  fn = F.augment_pipeline_from_config(config.augment)
  abstract = lambda shape: jax.ShapeDtypeStruct(shape, jnp.float32)
  try:
    jax.eval_shape(fn, jax.random.key(0), abstract((2,) + x_example.shape[1:]),
                   abstract((2, num_classes)))
  except ValueError as e:
    raise ConfigError(f"augment.ops={config.augment.ops!r}: {' '.join(str(e).split())}"
                      ) from None
  return fn


def _eval_sets(ds, par: Parallel, config) -> dict[str, list]:
  sets = {"test": (ds.x_test, ds.y_test)}
  if len(ds.y_val):
    sets["val"] = (ds.x_val, ds.y_val)
  out = {}
  for name, (x, y) in sets.items():
    size = min(len(x), int(config.eval_batch_size or len(x)))
    size = -(-size // par.num_devices) * par.num_devices
    out[name] = pipeline_lib.shard_eval_set(x, y, chunk_size=size, parallel=par.mode,
                                            mesh=par.mesh)
  return out


def _pipeline(configs, ds, par: Parallel) -> pipeline_lib.Pipeline:
  """One seed: the solo pipeline (a stack's members share its batches); else per member."""
  seeds = [int(c.seed) for c in configs]
  config = configs[0]
  if len(set(seeds)) == 1:
    return pipeline_lib.Pipeline(ds.x_train, ds.y_train, batch_size=config.batch_size,
                                 seed=config.seed, parallel=par.mode, mesh=par.mesh)
  return pipeline_lib.MemberPipeline(ds.x_train, ds.y_train, batch_size=config.batch_size,
                                     seeds=seeds, mesh=par.mesh)


def _prepare(configs) -> Setup:
  """Data, device placement, model and optimizer (ValueError -> ConfigError; no compiling)."""
  config = configs[0]
  ds = _load_data(config)
  par = Parallel(config.parallel)
  pipe = _pipeline(configs, ds, par)
  model = _build_model(config.model, ds.num_classes, ds.x_train.shape[1:], par.axis_name)
  schedule = make_schedule(config.optimizer, int(config.num_train_steps))
  tx = make_optimizer(config.optimizer, schedule)
  augment_fn = _augment_fn(config, ds.x_train[:1], ds.num_classes)
  eval_fn = functools.partial(steps_lib.eval_step, apply_fn=model.apply,
                              num_classes=ds.num_classes, axis_name=par.axis_name)
  setup = Setup(configs=list(configs), ds=ds, par=par, pipe=pipe,
                eval_sets=_eval_sets(ds, par, config), model=model, schedule=schedule, tx=tx,
                augment_fn=augment_fn, train_fn=None, eval_fn=None,
                hp=members_lib.hyperparameters(configs))
  if setup.stacked:
    setup.train_fn = _stacked_train_fn(setup)
    setup.eval_fn = par.compile_stacked_eval(
        eval_fn, members=setup.num_members,
        lowering=members_lib.lowering(config, jax.default_backend()))
  else:
    step_fn = functools.partial(
        steps_lib.train_step, apply_fn=model.apply, tx=tx, num_classes=ds.num_classes,
        l1=float(config.regularizer.l1), l2=float(config.regularizer.l2),
        augment_fn=augment_fn, axis_name=par.axis_name)
    compiled = par.compile_train(step_fn)
    setup.train_fn = lambda state, batch, sums, active: compiled(state, batch, sums)
    setup.eval_fn = par.compile_eval(eval_fn)
  return setup


def _stacked_train_fn(setup: Setup) -> Callable[..., Any]:
  """The members' step, vmapped: each member's hyperparameters enter traced (``hp``)."""
  config, num_classes = setup.config, setup.ds.num_classes

  def member_step(state, batch, hp):
    p = setup.pieces(hp)
    return steps_lib.train_step(state, batch, apply_fn=p["model"].apply, tx=p["tx"],
                                num_classes=num_classes, l1=p["l1"], l2=p["l2"],
                                augment_fn=p["augment_fn"])

  shared = not isinstance(setup.pipe, pipeline_lib.MemberPipeline)
  compiled = setup.par.compile_stacked_train(
      member_step, shared_batch=shared, members=setup.num_members,
      lowering=members_lib.lowering(config, jax.default_backend()))
  hp = setup.par.put(setup.hp_arrays())
  return lambda state, batch, sums, active: compiled(state, batch, sums, hp, active)


def _build_model(model_config, num_classes: int, input_shape, axis_name: Optional[str]):
  """The model with linen's functional interface: a linen module, or with ``model.api='nnx'``
  the NNX model behind ``flaxopt.nnx.LinenAdapter`` (``init``/``apply`` over plain variables,
  so the same jitted steps, checkpoints and evaluation serve both front ends)."""
  from flaxopt.nn import models  # pylint: disable=g-import-not-at-top
  if model_config.api == "nnx":
    from flaxopt import nnx as fnnx  # pylint: disable=g-import-not-at-top
    return fnnx.LinenAdapter.from_config(model_config, num_classes, tuple(input_shape),
                                         axis_name=axis_name)
  return models.build_model(model_config, num_classes, axis_name=axis_name)


def _init_variables_of(setup: Setup, k: int = 0) -> tuple[Any, jax.Array]:
  """Member ``k``'s ``model.init`` variables (+ data-dependent init) and its rng key.

  Keys: ``PRNGKey(seed)`` splits into the init key (params and rng streams), the
  data-dependent-init key and the run's base key ``TrainState.rng``. ``model.init`` sees
  one device's batch; LSUV / RBM pre-training see the first ``init.num_examples``.
  """
  config, model, x_train = setup.configs[k], setup.model, setup.ds.x_train
  batch = setup.pipe.per_device
  variables, dd_key, state_key = _init_variables(model, np.int32(config.seed), x_train[:batch])
  from flaxopt import init as init_lib  # pylint: disable=g-import-not-at-top
  x_dd = x_train[:max(batch, int(config.init.num_examples))]
  return init_lib.apply_data_dependent_init(config, model, variables, x_dd, dd_key), state_key


def _init_state(setup: Setup) -> TrainState:
  """A solo run's step 0: its variables and ``tx.init``, jitted; on the host."""
  variables, state_key = _init_variables_of(setup)
  return jax.jit(functools.partial(create_train_state, tx=setup.tx),
                 compiler_options=_FAST_COMPILE)(variables, rng=state_key)


@functools.lru_cache(maxsize=8)
def _init_program(model):
  """``(seed, x) -> (variables, dd_key, state_key)``, jitted once per model (members share)."""
  streams = ("params",) + steps_lib.RNG_STREAMS

  @functools.partial(jax.jit, compiler_options=_FAST_COMPILE)
  def init(seed, x):
    init_key, dd_key, state_key = jax.random.split(jax.random.PRNGKey(seed), 3)
    rngs = dict(zip(streams, jax.random.split(init_key, len(streams))))
    return model.init(rngs, x, train=False), dd_key, state_key

  return init


def _init_variables(model, seed, x):
  try:
    return _init_program(model)(seed, x)
  except TypeError:  # an unhashable module (NNX adapter): no cache
    return _init_program.__wrapped__(model)(seed, x)


def _init_states(setup: Setup) -> TrainState:
  """Every member's step 0, stacked on the member axis when K > 1, placed on the devices.

  A stack initializes its members' variables one by one (one compiled ``model.init``), then
  every optimizer state in one vmapped program with the members' traced hyperparameters.
  """
  if not setup.stacked:
    return setup.par.put(_init_state(setup))
  inits = [jax.device_get(_init_variables_of(setup, k)) for k in range(setup.num_members)]
  variables, keys = members_lib.stack([v for v, _ in inits]), np.stack([k for _, k in inits])
  create = jax.jit(jax.vmap(lambda v, key, hp: create_train_state(
      v, tx=setup.pieces(hp)["tx"], rng=key)), compiler_options=_FAST_COMPILE)
  hp = setup.hp_arrays()
  return setup.par.put(jax.device_get(create(variables, keys, hp)))


# ---------------------------------------------------------------------------------------
# The run: mutable progress (per member and for the stack), and the named steps.
# ---------------------------------------------------------------------------------------
@dataclasses.dataclass
class _Member:
  """One member's outputs and progress (what its checkpoint must hold to resume)."""

  index: int
  config: ml_collections.ConfigDict
  workdir: str
  schedule: Any  # host-side, for the learning rate of the records
  early: es_lib.EarlyStopping
  ckpt: Optional[checkpoint_lib.Checkpointer] = None
  writer: Optional[metrics_lib.MetricWriter] = None
  status: str = "running"  # running | completed | early_stopped | diverged | preempted
  es_state: Any = None
  best: Any = None  # params + batch_stats of the best evaluation (early stopping), or None
  window: dict = dataclasses.field(default_factory=lambda: _new_window())
  history: list = dataclasses.field(default_factory=list)
  restored: Optional[dict] = None  # evaluation of the restored best parameters
  start: int = 0
  step: int = 0
  train_time: float = 0.0  # seconds in training steps so far (evaluation, saving excluded)
  # (params, batch_stats, opt_state) -> the point to evaluate (schedule-free: x), or None.
  eval_point: Optional[Callable[..., Any]] = None
  # (params, step, learning_rate) -> curvature metrics (config.curvature.every > 0), or None.
  curvature: Optional[Callable[..., dict]] = None

  @property
  def keep_best(self) -> bool:
    return bool(self.config.early_stopping.enabled and self.early.restore_best)

  @property
  def running(self) -> bool:
    return self.status == "running"


@dataclasses.dataclass
class _Run:
  """The stack's progress: the (stacked) state and metric sums, timing, the members."""

  state: TrainState
  members: list
  step: int = 0
  sums: Any = None  # on-device metric sums since the last sync
  active: Any = None  # device bool (K,): members that train (stacks only)
  t_last: float = 0.0
  last_sync: int = 0
  steps_per_sec: float = 0.0
  compile_time: float = 0.0

  @property
  def running(self) -> list:
    return [m for m in self.members if m.running]


@dataclasses.dataclass
class _Context:
  """What the named steps share: the setup, the hooks and the stop request."""

  setup: Setup
  hooks: Hooks
  stop_requested: Callable[[int, bool], bool]
  t_start: float
  members: list = dataclasses.field(default_factory=list)  # the _Member of each config

  def member_state(self, state: TrainState, k: int) -> TrainState:
    """Member ``k``'s state (one logical copy: pmap's device axis dropped)."""
    state = self.setup.par.get(state)
    return members_lib.index(state, k) if self.setup.stacked else state

  def copy_best(self, state: TrainState, k: int) -> Any:  # copies survive donation
    state = self.member_state(state, k)
    return jax.tree.map(lambda a: a.copy(), {"params": state.params,
                                             "batch_stats": state.batch_stats})

  def set_member(self, run: _Run, k: int, **fields) -> None:
    """Replaces ``fields`` (params, batch_stats, ...) of member ``k``'s state."""
    par = self.setup.par
    if not self.setup.stacked:
      run.state = run.state.replace(**par.put(fields))
      return
    host = jax.device_get({f: getattr(run.state, f) for f in fields})
    host = {f: members_lib.replace(host[f], k, jax.device_get(v)) for f, v in fields.items()}
    run.state = run.state.replace(**par.put(host))

  def update_active(self, run: _Run) -> None:
    if self.setup.stacked:
      run.active = self.setup.par.put(np.asarray([m.running for m in run.members]))


def _new_window() -> dict:
  return {"loss": 0.0, "count": 0, "losses": []}


def _attach_extras(ctx: _Context, member: _Member, state: TrainState) -> None:
  """The optional evaluation point and curvature logger (``training/eval_point.py``)."""
  setup, config = ctx.setup, member.config
  model = setup.pieces(member.index)["model"] if setup.stacked else setup.model
  if getattr(model, "axis_name", None) is not None:
    model = model.clone(axis_name=None)  # host-side programs: no pmap axis
  x, y = setup.ds.x_train, setup.ds.y_train
  rngs = dict(zip(steps_lib.RNG_STREAMS, jax.random.split(jax.random.PRNGKey(config.seed),
                                                          len(steps_lib.RNG_STREAMS))))
  member.eval_point = eval_point_lib.eval_point_fn(
      model, state.opt_state, eval_point_lib.fixed_train_batches(
          x, y, config.batch_size, eval_point_lib.RECOMPUTE_BATCHES), rngs)
  member.curvature = eval_point_lib.curvature_logger(
      config, model, setup.ds.num_classes, state.batch_stats,
      eval_point_lib.fixed_train_batches(x, y, config.batch_size,
                                         int(config.curvature.num_batches)))


def _restore(ctx: _Context, member: _Member, template: TrainState, step: Optional[int]):
  """``(step, state, best, meta)``: the newest valid checkpoint, or the one at ``step``."""
  best_like = member.best
  if step is None:
    return member.ckpt.restore_latest(template, best_like)
  state, best, meta = member.ckpt.restore(step, template, best_like)
  return step, state, best, meta


def _restored_running(found, num_steps: int) -> bool:
  if found is None:
    return True
  status = found[3].get("status", "running")
  return status == "running" or (status == "completed" and found[0] < num_steps)


def _resume(ctx: _Context, run_members: list) -> _Run:
  """Step 0 from the seeds, or each member's newest valid checkpoint (with its history).

  The members still training must resume at one step: when their newest checkpoints differ
  (a stack killed between two members' saves), all resume at the oldest of them (or from
  step 0 if one has none). Finished members are restored and stay frozen.
  """
  setup, par = ctx.setup, ctx.setup.par
  state = _init_states(setup)
  run = _Run(state=state, members=run_members, sums=par.zeros_sums(
      setup.num_members if setup.stacked else 0))
  for m in run.members:
    template = ctx.member_state(state, m.index)
    _attach_extras(ctx, m, template)
    m.es_state = m.early.init()
    m.best = ctx.copy_best(state, m.index) if m.keep_best else None
  found = [m.ckpt.restore_latest(ctx.member_state(state, m.index), m.best)
           for m in run.members]
  training = [k for k, f in enumerate(found) if _restored_running(f, setup.num_steps)]
  common = min((found[k][0] if found[k] else 0) for k in training) if training else 0
  for k in training:
    if found[k] is not None and found[k][0] != common:
      m = run.members[k]
      logging.warning("%s: resuming at step %d with the other members of its stack (its "
                      "newest checkpoint is step %d).", m.workdir, common, found[k][0])
      found[k] = (_restore(ctx, m, ctx.member_state(state, k), common) if common else None)
  pending = [None] * setup.num_members
  for m, f in zip(run.members, found):
    if f is not None:
      pending[m.index] = _apply_checkpoint(ctx, run, m, f)
    m.step = m.start
    m.status = m.status if m.status != "completed" or m.step >= setup.num_steps else "running"
    m.writer = metrics_lib.MetricWriter(m.workdir, resume_step=m.start or None)
    if jax.process_index() == 0:  # diagnostics rows after the checkpoint go too
      metrics_lib.truncate_jsonl(os.path.join(m.workdir, diagnostics_lib.DIAGNOSTICS_FILE),
                                 m.start)
    m.history = [r for r in metrics_lib.read_jsonl(m.writer.path) if r["step"] <= m.start]
  run.step = common if training else max(m.step for m in run.members)
  if any(p is not None for p in pending):
    sums = jax.device_get(run.sums)
    for k, p in enumerate(pending):
      if p is not None:
        sums = {key: (members_lib.replace(v, k, p[key]) if setup.stacked else np.float32(p[key]))
                for key, v in sums.items()}
    run.sums = par.put({k: np.asarray(v, np.float32) for k, v in sums.items()})
  ctx.update_active(run)
  return run


def _apply_checkpoint(ctx: _Context, run: _Run, m: _Member, found) -> Optional[dict]:
  """Puts a restored checkpoint into member ``m``; returns its pending metric sums."""
  step, restored, best, meta = found
  if ctx.setup.stacked:
    host = jax.device_get(run.state)
    run.state = ctx.setup.par.put(members_lib.replace(host, m.index, jax.device_get(restored)))
  else:
    run.state = ctx.setup.par.put(restored)
  m.best, m.start = best, step
  m.es_state = es_lib.EarlyStoppingState.from_dict(meta["early_stopping"])
  m.window = meta["window"]
  m.train_time = float(meta.get("train_time", 0.0))
  m.status = meta.get("status", "running")
  logging.info("Resumed from the checkpoint at step %d (%s) in %s.", step, meta["pipeline"],
               m.workdir)
  return meta.get("pending_sums")


def _train_chunk(ctx: _Context, run: _Run) -> bool:
  """Steps until the next sync step; False when a stop was requested in between."""
  setup = ctx.setup
  while run.step < setup.num_steps:
    run.step += 1
    batch = setup.pipe.batch(run.step - 1)
    run.state, run.sums = setup.train_fn(run.state, batch, run.sums, run.active)
    _maybe_log_diagnostics(ctx, run, batch)
    if run.step == run.last_sync + 1 and not run.compile_time:
      jax.block_until_ready(run.sums)
      run.compile_time = time.time() - run.t_last
      run.t_last = time.time()
    if _is_sync_step(run.step, setup.config, setup.num_steps):
      return True
    ctx.hooks.after_step(run.step)
    if ctx.stop_requested(run.step, False):
      return False
  return True


def _maybe_log_diagnostics(ctx: _Context, run: _Run, batch) -> None:
  setup = ctx.setup
  if not setup.stacked:
    m = run.members[0]
    diagnostics_lib.maybe_log_diagnostics(m.config, run.state, batch, run.step, m.workdir,
                                          model=setup.model, num_classes=setup.ds.num_classes,
                                          par=setup.par)
    return
  every = int(setup.config.get("diagnostics", {}).get("every", 0) or 0)
  if not every or run.step % every:
    return
  for m in run.running:
    member_batch = (batch if not isinstance(setup.pipe, pipeline_lib.MemberPipeline)
                    else members_lib.index(batch, m.index))
    diagnostics_lib.maybe_log_diagnostics(
        m.config, ctx.member_state(run.state, m.index), member_batch, run.step, m.workdir,
        model=setup.pieces(m.index)["model"], num_classes=setup.ds.num_classes)


def _is_sync_step(step: int, config, num_steps: int) -> bool:
  every = [config.log_every, config.eval_every]
  if config.checkpoint_every:
    every.append(config.checkpoint_every)
  return step == num_steps or any(step % e == 0 for e in every)


def _member_sums(setup: Setup, host: dict, k: int) -> dict:
  return {key: (v[k] if setup.stacked else v) for key, v in host.items()}


def _sync(ctx: _Context, run: _Run) -> None:
  """Window metrics to the host, divergence guard (per member), progress line."""
  setup, step = ctx.setup, run.step
  host = setup.par.read(run.sums)
  run.sums = setup.par.zeros_sums(setup.num_members if setup.stacked else 0)
  now = time.time()
  run.steps_per_sec = (step - run.last_sync) / max(now - run.t_last, 1e-9)
  losses = []
  for m in run.running:
    sums = _member_sums(setup, host, m.index)
    m.train_time += now - run.t_last
    m.step = step
    if not math.isfinite(float(sums["loss"])):
      m.status = "diverged"
      logging.error(
          "Training diverged: non-finite loss between steps %d and %d (learning rate %.3g). "
          "Stopping%s; the last good checkpoint is step %s (%s).", step - int(sums["count"]),
          step, learning_rate_at(m.schedule, step - 1), " this member" if setup.stacked else "",
          m.ckpt.latest_step(), m.workdir)
      continue
    m.window["loss"] += float(sums["loss"])
    m.window["count"] += int(sums["count"])
    m.window["losses"].append(float(sums["loss"] / sums["count"]))
    losses.append(float(sums["loss"] / sums["count"]))
  run.last_sync, run.t_last = step, now
  ctx.update_active(run)
  if losses and (step % setup.config.log_every == 0 or step == setup.num_steps):
    line = metrics_lib.format_progress(step, setup.num_steps, float(np.mean(losses)),
                                       run.steps_per_sec)
    if setup.stacked:
      line += f"  ({len(losses)} of {setup.num_members} members training; mean loss)"
    metrics_lib.log_progress(line)


def _evaluate(ctx: _Context, state: TrainState) -> list[dict[str, float]]:
  """Per member: ``<set>_loss`` and ``<set>_accuracy`` of every evaluation set (at each
  member's evaluation point)."""
  setup = ctx.setup
  params, batch_stats = _eval_points(ctx, state)
  totals = {}
  for name, chunks in setup.eval_sets.items():
    total = None
    for chunk in chunks:
      sums = setup.eval_fn(params, batch_stats, chunk)
      total = sums if total is None else jax.tree.map(jnp.add, total, sums)
    totals[name] = setup.par.read(total)
  out = []
  for k in range(setup.num_members):
    record = {}
    for name, total in totals.items():
      t = _member_sums(setup, total, k)
      record[f"{name}_loss"] = float(t["loss_sum"] / t["count"])
      record[f"{name}_accuracy"] = float(t["correct"] / t["count"])
    out.append(record)
  return out


def _eval_points(ctx: _Context, state: TrainState) -> tuple[Any, Any]:
  """The (stacked) params and batch statistics to evaluate: ``eval_point`` where a member
  has one (schedule-free), else the state's."""
  setup, mems = ctx.setup, ctx.members
  params, batch_stats = state.params, state.batch_stats
  if all(m.eval_point is None for m in mems):
    return params, batch_stats
  points = []
  for m in mems:
    host = ctx.member_state(state, m.index)
    point = (host.params, host.batch_stats)
    if m.eval_point is not None:
      point = m.eval_point(host.params, host.batch_stats, host.opt_state)
    points.append(jax.device_get(point))
  stacked = members_lib.stack(points) if setup.stacked else points[0]
  return setup.par.put(stacked)


def _evaluate_and_maybe_stop(ctx: _Context, run: _Run) -> list:
  """Evaluation records, early-stopping updates, best parameters (restored when stopping);
  returns the members that stopped early."""
  step = run.step
  ctx.hooks.before_evaluate(step)
  evaluations = _evaluate(ctx, run.state)
  stopped = []
  for m in run.running:
    record = {"step": step, "train_loss": m.window["loss"] / m.window["count"],
              **evaluations[m.index],
              "learning_rate": learning_rate_at(m.schedule, step - 1),  # the last update's
              "wall_time": time.time() - ctx.t_start,
              "train_time": m.train_time,
              "steps_per_sec": run.steps_per_sec}
    if m.curvature is not None and step % int(m.config.curvature.every) == 0:
      record.update(m.curvature(ctx.member_state(run.state, m.index).params, step,
                                record["learning_rate"]))
    ctx.hooks.before_metrics_write(step)
    m.writer.write(record)
    m.history.append(metrics_lib.to_jsonable(record))
    losses, m.window = m.window["losses"], _new_window()
    if m.early.metric not in record:  # only possible with early stopping off (validated)
      continue
    m.es_state, stop = m.early.update(m.es_state, step, record[m.early.metric], losses)
    if m.keep_best and m.es_state.best_step == step:
      m.best = ctx.copy_best(run.state, m.index)
    if stop:
      stopped.append(m)
  for m in stopped:
    m.status = "early_stopped"
    logging.info("Early stopping at step %d (%s); best %s=%.4g at step %d (%s).", step,
                 m.early.criterion, m.early.metric, m.es_state.best_value,
                 m.es_state.best_step, m.workdir)
    if m.keep_best:
      ctx.set_member(run, m.index, **m.best)
  if any(m.keep_best for m in stopped):
    evaluations = _evaluate(ctx, run.state)
    for m in stopped:
      if m.keep_best:
        m.restored = {"step": m.es_state.best_step, "restored_best": True,
                      **evaluations[m.index]}
  ctx.update_active(run)
  return stopped


def _checkpoint(ctx: _Context, run: _Run, m: _Member, status: str) -> None:
  """Saves member ``m`` at ``run.step`` (``pending_sums``: metric sums since the last sync)."""
  ctx.hooks.before_save(run.step)
  sums = _member_sums(ctx.setup, ctx.setup.par.read(run.sums), m.index)
  meta = {"pipeline": ctx.setup.pipe.position(run.step, m.index),
          "early_stopping": m.es_state.to_dict(), "window": m.window, "status": status,
          "pending_sums": {k: float(v) for k, v in sums.items()},
          "train_time": m.train_time}
  m.ckpt.save(run.step, ctx.member_state(run.state, m.index), meta, m.best)


def _train(ctx: _Context, run: _Run) -> None:
  """The loop proper: chunks of steps, then sync, evaluate, checkpoint, or stop."""
  config, num_steps = ctx.setup.config, ctx.setup.num_steps
  run.t_last = time.time()
  run.last_sync = run.step
  while run.running and run.step < num_steps:
    if not _train_chunk(ctx, run):
      _preempt(ctx, run)
      break
    _sync(ctx, run)
    if not run.running:  # every member diverged
      break
    step = run.step
    if step % config.eval_every == 0 or step == num_steps:
      for m in _evaluate_and_maybe_stop(ctx, run):
        _checkpoint(ctx, run, m, m.status)
    if (config.checkpoint_every and step % config.checkpoint_every == 0) or step == num_steps:
      for m in run.running:
        _checkpoint(ctx, run, m, "running" if step < num_steps else "completed")
    run.t_last = time.time()  # evaluation and saving are not training time
    ctx.hooks.after_step(step)
    if ctx.stop_requested(step, True) and step < num_steps and run.running:
      _preempt(ctx, run)
  for m in run.running:
    m.status = "completed"


def _preempt(ctx: _Context, run: _Run) -> None:
  for m in run.running:
    m.status, m.step = "preempted", run.step
    _checkpoint(ctx, run, m, "running")


def _finish(ctx: _Context, run: _Run, t_train: float) -> list[dict]:
  """summary.json and curves.png of every member (process 0); returns the summaries."""
  summaries = []
  for m in run.members:
    config = m.config
    summary = _summary(m, config, wall_time=time.time() - ctx.t_start,
                       setup_time=t_train - ctx.t_start, compile_time=run.compile_time,
                       train_time=time.time() - t_train)
    if ctx.setup.stacked:
      summary["stack"] = {"members": ctx.setup.num_members, "index": m.index}
    if jax.process_index() == 0:
      metrics_lib.write_json(os.path.join(m.workdir, "summary.json"), summary)
      if m.history:
        title = f"{config.dataset.name} {config.model.name} {config.optimizer.name}"
        plots.plot_curves(m.history, os.path.join(m.workdir, "curves.png"), title=title)
        from flaxopt.training import curvature_log  # pylint: disable=g-import-not-at-top
        curvature_log.plot_sharpness(m.history, os.path.join(m.workdir, "sharpness.png"),
                                     title=title)
    if m.status == "preempted":
      logging.warning("Preempted: saved the checkpoint at step %d in %s; run the same "
                      "command to resume.", m.step, m.workdir)
    logging.info("Finished: status %s, final %s (%s)", m.status, summary.get("final"),
                 m.workdir)
    summaries.append(summary)
  return summaries


def _never_stop(step: int, sync: bool) -> bool:
  del step, sync
  return False


def _validated_setup(config) -> Setup:
  """The complete, validated configs' :class:`Setup`; any ValueError becomes ConfigError.

  ``config``: one config, or the list of a stack's members (see ``training/members.py``).
  """
  configs = list(config) if isinstance(config, (list, tuple)) else [config]
  try:
    configs = [config_lib.complete(c) for c in configs]
    for c in configs:
      config_lib.validate(c)
    problem = members_lib.stack_problem(configs)
    if problem is not None:
      raise ConfigError(f"these {len(configs)} configs cannot train as one stack: {problem}")
    if len(configs) > 1 and jax.process_count() > 1:
      raise ConfigError("a stack of members trains in one process; run multi-host jobs solo")
    return _prepare(configs)
  except ConfigError:
    raise
  except ValueError as e:
    raise ConfigError(" ".join(str(e).split())) from e


def _check_workdir_config(config: ml_collections.ConfigDict, workdir: str) -> None:
  """A workdir's runs share one config: only ``num_train_steps`` may change on resume."""
  path = os.path.join(workdir, "config.json")
  if not os.path.exists(path):
    return
  stored = config_lib.complete(metrics_lib.read_json(path)).to_dict()
  fields = config_lib.diff(stored, config, ignore=("num_train_steps",))
  if not fields:
    return
  flat_old, flat_new = config_lib.flatten(stored), config_lib.flatten(config.to_dict())
  shown = ", ".join(f"{f} {flat_old.get(f)!r} -> {flat_new.get(f)!r}" for f in fields[:5])
  more = f" and {len(fields) - 5} more" if len(fields) > 5 else ""
  raise ConfigError(f"workdir={workdir!r}: the config differs from its config.json in "
                    f"{shown}{more}; use a new workdir, or the same config (only "
                    "num_train_steps may change)")


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str, *,
                       hooks: Optional[Hooks] = None, handle_signals: bool = False) -> dict:
  """Trains ``config`` in ``workdir`` (resuming from its newest checkpoint); returns summary.

  The solo run: :func:`train_stack` with one member (no member axis; the programs are those
  of a plain jitted step).

  Args:
    config: a training config (``configs/*.py``); missing fields take their defaults.
    workdir: the run's directory (created).
    hooks: test callbacks at exact points of the loop (``training/hooks.py``).
    handle_signals: SIGTERM / SIGINT save a checkpoint at the current step and return
      with status ``preempted`` (``training/preemption.py``); main thread only.

  Raises:
    ConfigError: a config that cannot run (bad names or values, batch size not divisible by
      the device count, ...) or that differs from the workdir's config.json; nothing is
      written.
    WorkdirLockedError: another live run holds the workdir.
    CheckpointError: checkpoints exist but none restores.
    StorageError: an output could not be written (full disk); the last checkpoint is intact.
  """
  return train_stack([config], [workdir], hooks=hooks, handle_signals=handle_signals)[0]


def train_stack(configs: Sequence[ml_collections.ConfigDict], workdirs: Sequence[str], *,
                hooks: Optional[Hooks] = None, handle_signals: bool = False) -> list[dict]:
  """Trains K configs as one stack (one vmapped program); returns their summaries.

  The configs may differ only in ``seed`` and numeric hyperparameters
  (``training/members.py``); anything else is a ConfigError naming the field. Member ``k``
  trains in ``workdirs[k]`` and writes exactly the files of a solo run there (config.json,
  metrics.jsonl, checkpoints, summary.json with ``stack: {members, index}`` added, plots),
  so it resumes, is reported and is plotted as any run. A member that diverges or stops
  early is frozen (its state no longer changes, nothing more is saved for it) and the others
  train on. Raises as :func:`train_and_evaluate`, for any member.
  """
  if len(configs) != len(workdirs) or not configs:
    raise ConfigError(f"train_stack needs one workdir per config, got {len(configs)} configs "
                      f"and {len(workdirs)} workdirs")
  if len(set(map(os.path.abspath, workdirs))) != len(workdirs):
    raise ConfigError(f"workdirs={list(workdirs)!r}: every member needs its own workdir")
  t_start = time.time()
  setup = _validated_setup(list(configs))
  for config, workdir in zip(setup.configs, workdirs):
    _check_workdir_config(config, workdir)
  stop = preemption.StopOnSignal() if handle_signals else contextlib.nullcontext()
  with contextlib.ExitStack() as held:
    for workdir in workdirs:
      held.enter_context(lock_lib.WorkdirLock(workdir))
    held.enter_context(stop)
    ctx = _Context(setup=setup, hooks=hooks or Hooks(),
                   stop_requested=stop.requested if handle_signals else _never_stop,
                   t_start=t_start)
    ctx.members = [_Member(index=k, config=c, workdir=w,
                           schedule=make_schedule(c.optimizer, setup.num_steps),
                           early=es_lib.from_config(c.early_stopping))
                   for k, (c, w) in enumerate(zip(setup.configs, workdirs))]
    try:
      return _run(ctx, ctx.members)
    except Exception as e:  # pylint: disable=broad-except
      if not checkpoint_lib.is_disk_full(e):
        raise
      latest = {m.workdir: m.ckpt.latest_step() for m in ctx.members if m.ckpt is not None}
      raise checkpoint_lib.StorageError(
          f"writing to {', '.join(workdirs)} failed: {' '.join(str(e).split())}; the newest "
          f"checkpoint (step {', '.join(str(s) for s in latest.values()) or None}) is intact: "
          "free space and run the same command to resume") from e


def _run(ctx: _Context, run_members: list) -> list[dict]:
  """config.json, resume, train, finish (the workdirs are held)."""
  for m in run_members:
    metrics_lib.write_json(os.path.join(m.workdir, "config.json"), m.config.to_dict())
    m.ckpt = checkpoint_lib.Checkpointer(os.path.join(m.workdir, "checkpoints"),
                                         max_to_keep=int(m.config.max_to_keep))
  try:
    run = _resume(ctx, run_members)
    t_train = time.time()
    _train(ctx, run)
    jax.block_until_ready(run.state)
  finally:
    _close(run_members)
  return _finish(ctx, run, t_train)


def _close(run_members: list) -> None:
  for m in run_members:
    for closeable in (m.ckpt, m.writer):
      if closeable is None:
        continue
      try:
        closeable.close()
      except Exception as e:  # pylint: disable=broad-except
        logging.warning("Closing %s failed: %s", type(closeable).__name__, e)


def _summary(m: _Member, config, **times) -> dict:
  """summary.json: status, final and best evaluation records, timing.

  ``final`` is the last evaluation, or after early stopping with ``restore_best`` the record
  of the best step updated with a fresh evaluation of the restored parameters. ``best`` is
  the evaluation with the highest validation accuracy (None without a validation split):
  the test split reports, it never selects.
  """
  history, es_state = m.history, m.es_state
  final = history[-1] if history else None
  if m.status == "early_stopped" and history and m.early.restore_best:
    final = dict(next(r for r in history if r["step"] == es_state.best_step))
    final.update(m.restored or {"restored_best": True})
  validated = [r for r in history if r.get("val_accuracy") is not None]
  best = max(validated, key=lambda r: r["val_accuracy"]) if validated else None
  resumed_steps = m.step - m.start
  train_time = times["train_time"] - times["compile_time"]
  return {
      "status": m.status,
      "step": m.step,
      "final": final,
      "best": best,
      "early_stopping": {**es_state.to_dict(), "metric": m.early.metric,
                         "enabled": bool(config.early_stopping.enabled)},
      "steps_per_sec": (resumed_steps - 1) / train_time if train_time > 0 and resumed_steps > 1
                       else None,
      "num_devices": jax.device_count(),
      "num_processes": jax.process_count(),
      **times,
  }
