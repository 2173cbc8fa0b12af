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
from typing import Any, Callable, Mapping, Optional

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
from flaxopt.training import metrics as metrics_lib
from flaxopt.training import preemption
from flaxopt.training import plots
from flaxopt.training import steps as steps_lib
from flaxopt.training.config import ConfigError
from flaxopt.training.hooks import Hooks
from flaxopt.training.parallel import Parallel
from flaxopt.training.state import TrainState, create_train_state

__all__ = ["ConfigError", "SCHEDULES", "Setup", "make_optimizer", "make_schedule",
           "train_and_evaluate", "validate_config"]

# One-off programs (initialization) compile at XLA optimization level 1: threefry random
# bits take ~4 s to compile at the default level on XLA:CPU and ~0.5 s at level 1, with
# bit-identical results (level 0 changes the floating-point results).
_FAST_COMPILE = {"xla_backend_optimization_level": 1}


# ---------------------------------------------------------------------------------------
# Optimizer and learning-rate schedule from the config.
# ---------------------------------------------------------------------------------------
SCHEDULES: dict[str, Callable[..., Any]] = {
    # name -> (learning_rate, num_steps, warmup_steps) -> float or optax schedule
    "constant": lambda lr, steps, warmup: lr,
    "cosine": lambda lr, steps, warmup: optax.cosine_decay_schedule(lr, steps),
    "warmup_cosine": lambda lr, steps, warmup: optax.warmup_cosine_decay_schedule(
        0.0, lr, warmup, steps),
}


def make_schedule(opt_config: Mapping[str, Any], num_steps: int) -> Any:
  """``optimizer.schedule`` (constant | cosine | warmup_cosine) as a float or optax schedule.

  cosine: ``lr * (1 + cos(pi t / T)) / 2``; warmup_cosine: linear 0 -> lr over
  ``optimizer.warmup_steps``, then cosine to 0 at ``num_train_steps``.
  """
  name = opt_config.get("schedule", "constant")
  if name not in SCHEDULES:
    raise ValueError(f"Unknown optimizer.schedule {name!r}; valid: {', '.join(SCHEDULES)}")
  return SCHEDULES[name](float(opt_config["learning_rate"]), int(num_steps),
                         int(opt_config.get("warmup_steps", 0)))


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
  """What the loop needs, built from the config before the workdir is touched."""

  config: ml_collections.ConfigDict
  ds: Any  # flaxopt.data.datasets.Dataset
  par: Parallel
  pipe: pipeline_lib.Pipeline
  eval_sets: dict[str, list]
  model: Any  # a flax Module
  schedule: Any
  tx: optax.GradientTransformation
  augment_fn: Optional[Callable[..., Any]]
  train_fn: Callable[..., Any]
  eval_fn: Callable[..., Any]

  @property
  def num_steps(self) -> int:
    return int(self.config.num_train_steps)


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


def _prepare(config) -> Setup:
  """Data, device placement, model and optimizer (ValueError -> ConfigError; no compiling)."""
  ds = _load_data(config)
  par = Parallel(config.parallel)
  pipe = pipeline_lib.Pipeline(ds.x_train, ds.y_train, batch_size=config.batch_size,
                               seed=config.seed, parallel=par.mode, mesh=par.mesh)
  model = _build_model(config.model, ds.num_classes, ds.x_train.shape[1:], par.axis_name)
  schedule = make_schedule(config.optimizer, int(config.num_train_steps))
  tx = make_optimizer(config.optimizer, schedule)
  augment_fn = _augment_fn(config, ds.x_train[:1], ds.num_classes)
  step_fn = functools.partial(
      steps_lib.train_step, apply_fn=model.apply, tx=tx, num_classes=ds.num_classes,
      l1=float(config.regularizer.l1), l2=float(config.regularizer.l2),
      augment_fn=augment_fn, axis_name=par.axis_name)
  eval_fn = functools.partial(steps_lib.eval_step, apply_fn=model.apply,
                              num_classes=ds.num_classes, axis_name=par.axis_name)
  return Setup(config=config, ds=ds, par=par, pipe=pipe, eval_sets=_eval_sets(ds, par, config),
               model=model, schedule=schedule, tx=tx, augment_fn=augment_fn,
               train_fn=par.compile_train(step_fn), eval_fn=par.compile_eval(eval_fn))


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


def _init_state(setup: Setup) -> TrainState:
  """``model.init`` (+ data-dependent init) and ``tx.init`` from ``config.seed``, jitted.

  Keys: ``PRNGKey(seed)`` splits into the init key (params and rng streams), the
  data-dependent-init key and the run's base key ``TrainState.rng``. ``model.init`` sees
  one device's batch; LSUV / RBM pre-training see the first ``init.num_examples``.
  """
  config, model, x_train = setup.config, setup.model, setup.ds.x_train
  batch = setup.pipe.per_device
  streams = ("params",) + steps_lib.RNG_STREAMS

  @functools.partial(jax.jit, compiler_options=_FAST_COMPILE)
  def init(seed, x):
    init_key, dd_key, state_key = jax.random.split(jax.random.PRNGKey(seed), 3)
    rngs = dict(zip(streams, jax.random.split(init_key, len(streams))))
    return model.init(rngs, x, train=False), dd_key, state_key

  variables, dd_key, state_key = init(np.int32(config.seed), x_train[:batch])
  from flaxopt import init as init_lib  # pylint: disable=g-import-not-at-top
  x_dd = x_train[:max(batch, int(config.init.num_examples))]
  variables = init_lib.apply_data_dependent_init(config, model, variables, x_dd, dd_key)
  state = jax.jit(functools.partial(create_train_state, tx=setup.tx),
                  compiler_options=_FAST_COMPILE)(variables, rng=state_key)
  return setup.par.put(state)


# ---------------------------------------------------------------------------------------
# The run: mutable progress, and the named steps of the loop.
# ---------------------------------------------------------------------------------------
@dataclasses.dataclass
class _Run:
  """The loop's mutable progress (what a checkpoint must hold to resume bit-identically)."""

  state: TrainState
  step: int
  status: str  # running | completed | early_stopped | diverged | preempted
  es_state: es_lib.EarlyStoppingState
  best: Any  # params + batch_stats of the best evaluation (early stopping), or None
  sums: Any  # on-device metric sums since the last sync
  window: dict  # host train-loss sums since the last evaluation
  history: list  # evaluation records so far
  restored: Optional[dict] = None  # evaluation of the restored best parameters
  start: int = 0
  t_last: float = 0.0
  last_sync: int = 0
  steps_per_sec: float = 0.0
  compile_time: float = 0.0
  train_time: float = 0.0  # seconds in training steps so far (evaluation, saving excluded)


@dataclasses.dataclass
class _Context:
  """What the named steps share: the setup, outputs and the early-stopping rule."""

  setup: Setup
  workdir: str
  ckpt: Optional[checkpoint_lib.Checkpointer]
  writer: Optional[metrics_lib.MetricWriter]
  early: es_lib.EarlyStopping
  hooks: Hooks
  stop_requested: Callable[[int, bool], bool]
  t_start: float
  # (params, batch_stats, opt_state) -> the point to evaluate (schedule-free: x), or None.
  eval_point: Optional[Callable[..., Any]] = None
  # (params, step, learning_rate) -> curvature metrics (config.curvature.every > 0), or None.
  curvature: Optional[Callable[..., dict]] = None

  @property
  def keep_best(self) -> bool:
    return bool(self.setup.config.early_stopping.enabled and self.early.restore_best)

  def copy_best(self, state: TrainState) -> Any:  # copies survive donation
    return jax.tree.map(lambda a: a.copy(), self.setup.par.get(
        {"params": state.params, "batch_stats": state.batch_stats}))


def _new_window() -> dict:
  return {"loss": 0.0, "count": 0, "losses": []}


def _attach_extras(ctx: _Context, state: TrainState) -> None:
  """The optional evaluation point and curvature logger (``training/eval_point.py``)."""
  setup, config = ctx.setup, ctx.setup.config
  model = setup.model
  if getattr(model, "axis_name", None) is not None:
    model = model.clone(axis_name=None)  # host-side programs: no pmap axis
  x, y = setup.ds.x_train, setup.ds.y_train
  rngs = dict(zip(steps_lib.RNG_STREAMS, jax.random.split(jax.random.PRNGKey(config.seed),
                                                          len(steps_lib.RNG_STREAMS))))
  ctx.eval_point = eval_point_lib.eval_point_fn(
      model, state.opt_state, eval_point_lib.fixed_train_batches(
          x, y, config.batch_size, eval_point_lib.RECOMPUTE_BATCHES), rngs)
  ctx.curvature = eval_point_lib.curvature_logger(
      config, model, setup.ds.num_classes, state.batch_stats,
      eval_point_lib.fixed_train_batches(x, y, config.batch_size,
                                         int(config.curvature.num_batches)))


def _resume(ctx: _Context) -> _Run:
  """Step 0 from the seed, or the newest valid checkpoint (with its metrics history)."""
  setup = ctx.setup
  par = setup.par
  state = _init_state(setup)
  _attach_extras(ctx, par.get(state))
  run = _Run(state=state, step=0, status="running", es_state=ctx.early.init(),
             best=ctx.copy_best(state) if ctx.keep_best else None, sums=par.zeros_sums(),
             window=_new_window(), history=[])
  found = ctx.ckpt.restore_latest(par.get(state), run.best)
  if found is not None:
    step, restored, best, meta = found
    run.state, run.best, run.step, run.start = par.put(restored), best, step, step
    run.es_state = es_lib.EarlyStoppingState.from_dict(meta["early_stopping"])
    run.window = meta["window"]
    run.train_time = float(meta.get("train_time", 0.0))
    run.status = meta.get("status", "running")
    if "pending_sums" in meta:
      run.sums = par.put({k: np.float32(v) for k, v in meta["pending_sums"].items()})
    if run.status == "completed" and step < setup.num_steps:
      run.status = "running"  # num_train_steps was raised: train on
    logging.info("Resumed from the checkpoint at step %d (%s).", step, meta["pipeline"])
  ctx.writer = metrics_lib.MetricWriter(ctx.workdir, resume_step=run.start or None)
  if jax.process_index() == 0:  # diagnostics rows after the checkpoint go too
    metrics_lib.truncate_jsonl(os.path.join(ctx.workdir, diagnostics_lib.DIAGNOSTICS_FILE),
                               run.start)
  run.history = [r for r in metrics_lib.read_jsonl(ctx.writer.path) if r["step"] <= run.start]
  return run


def _train_chunk(ctx: _Context, run: _Run) -> bool:
  """Steps until the next sync step; False when a stop was requested in between."""
  setup = ctx.setup
  while run.step < setup.num_steps:
    run.step += 1
    batch = setup.pipe.batch(run.step - 1)
    run.state, run.sums = setup.train_fn(run.state, batch, run.sums)
    diagnostics_lib.maybe_log_diagnostics(setup.config, run.state, batch, run.step,
                                          ctx.workdir, model=setup.model,
                                          num_classes=setup.ds.num_classes, par=setup.par)
    if run.step == run.start + 1:
      jax.block_until_ready(run.sums)
      run.compile_time = time.time() - run.t_last
      run.t_last = time.time()
    if _is_sync_step(run.step, setup.config, setup.num_steps):
      return True
    ctx.hooks.after_step(run.step)
    if ctx.stop_requested(run.step, False):
      return False
  return True


def _is_sync_step(step: int, config, num_steps: int) -> bool:
  every = [config.log_every, config.eval_every]
  if config.checkpoint_every:
    every.append(config.checkpoint_every)
  return step == num_steps or any(step % e == 0 for e in every)


def _sync(ctx: _Context, run: _Run) -> None:
  """Window metrics to the host, divergence guard, progress line."""
  setup, step = ctx.setup, run.step
  host = setup.par.read(run.sums)
  run.sums = setup.par.zeros_sums()
  now = time.time()
  run.steps_per_sec = (step - run.last_sync) / max(now - run.t_last, 1e-9)
  run.train_time += now - run.t_last
  run.last_sync, run.t_last = step, now
  if not math.isfinite(float(host["loss"])):
    run.status = "diverged"
    logging.error(
        "Training diverged: non-finite loss between steps %d and %d (learning rate %.3g). "
        "Stopping; the last good checkpoint is step %s.", step - int(host["count"]), step,
        learning_rate_at(setup.schedule, step - 1), ctx.ckpt.latest_step())
    return
  run.window["loss"] += float(host["loss"])
  run.window["count"] += int(host["count"])
  run.window["losses"].append(float(host["loss"] / host["count"]))
  if step % setup.config.log_every == 0 or step == setup.num_steps:
    metrics_lib.log_progress(metrics_lib.format_progress(
        step, setup.num_steps, float(host["loss"] / host["count"]), run.steps_per_sec))


def _evaluate(ctx: _Context, state: TrainState) -> dict[str, float]:
  """``<set>_loss`` and ``<set>_accuracy`` of every evaluation set (at ``ctx.eval_point``)."""
  setup = ctx.setup
  params, batch_stats = state.params, state.batch_stats
  if ctx.eval_point is not None:
    host = setup.par.get({"p": params, "s": batch_stats, "o": state.opt_state})
    params, batch_stats = setup.par.put(ctx.eval_point(host["p"], host["s"], host["o"]))
  out = {}
  for name, chunks in setup.eval_sets.items():
    total = None
    for chunk in chunks:
      sums = setup.eval_fn(params, batch_stats, chunk)
      total = sums if total is None else jax.tree.map(jnp.add, total, sums)
    total = setup.par.read(total)
    out[f"{name}_loss"] = float(total["loss_sum"] / total["count"])
    out[f"{name}_accuracy"] = float(total["correct"] / total["count"])
  return out


def _evaluate_and_maybe_stop(ctx: _Context, run: _Run) -> None:
  """Evaluation record, early-stopping update, best parameters (restored when stopping)."""
  setup, step = ctx.setup, run.step
  ctx.hooks.before_evaluate(step)
  record = {"step": step, "train_loss": run.window["loss"] / run.window["count"],
            **_evaluate(ctx, run.state),
            "learning_rate": learning_rate_at(setup.schedule, step - 1),  # the last update's
            "wall_time": time.time() - ctx.t_start,
            "train_time": run.train_time,
            "steps_per_sec": run.steps_per_sec}
  if ctx.curvature is not None and step % int(setup.config.curvature.every) == 0:
    record.update(ctx.curvature(setup.par.get(run.state.params), step,
                                record["learning_rate"]))
  ctx.hooks.before_metrics_write(step)
  ctx.writer.write(record)
  run.history.append(metrics_lib.to_jsonable(record))
  losses, run.window = run.window["losses"], _new_window()
  if ctx.early.metric not in record:  # only possible with early stopping off (validated)
    return
  run.es_state, stop = ctx.early.update(run.es_state, step, record[ctx.early.metric], losses)
  if ctx.keep_best and run.es_state.best_step == step:
    run.best = ctx.copy_best(run.state)
  if not stop:
    return
  run.status = "early_stopped"
  logging.info("Early stopping at step %d (%s); best %s=%.4g at step %d.", step,
               ctx.early.criterion, ctx.early.metric, run.es_state.best_value,
               run.es_state.best_step)
  if ctx.keep_best:
    run.state = run.state.replace(**setup.par.put(run.best))
    run.restored = {"step": run.es_state.best_step, "restored_best": True,
                    **_evaluate(ctx, run.state)}


def _checkpoint(ctx: _Context, run: _Run, status: str) -> None:
  """Saves the run at ``run.step`` (``pending_sums``: metric sums since the last sync)."""
  ctx.hooks.before_save(run.step)
  meta = {"pipeline": ctx.setup.pipe.position(run.step),
          "early_stopping": run.es_state.to_dict(), "window": run.window, "status": status,
          "pending_sums": {k: float(v) for k, v in ctx.setup.par.read(run.sums).items()},
          "train_time": run.train_time}
  ctx.ckpt.save(run.step, ctx.setup.par.get(run.state), meta, run.best)


def _train(ctx: _Context, run: _Run) -> None:
  """The loop proper: chunks of steps, then sync, evaluate, checkpoint, or stop."""
  config, num_steps = ctx.setup.config, ctx.setup.num_steps
  run.t_last = time.time()
  run.last_sync = run.step
  while run.status == "running" and run.step < num_steps:
    if not _train_chunk(ctx, run):
      run.status = "preempted"
      _checkpoint(ctx, run, "running")
      break
    _sync(ctx, run)
    if run.status == "diverged":
      break
    step = run.step
    if step % config.eval_every == 0 or step == num_steps:
      _evaluate_and_maybe_stop(ctx, run)
    if run.status == "early_stopped":
      _checkpoint(ctx, run, run.status)
      break
    if (config.checkpoint_every and step % config.checkpoint_every == 0) or step == num_steps:
      _checkpoint(ctx, run, "running" if step < num_steps else "completed")
    run.t_last = time.time()  # evaluation and saving are not training time
    ctx.hooks.after_step(step)
    if ctx.stop_requested(step, True) and step < num_steps:
      run.status = "preempted"
      _checkpoint(ctx, run, "running")
  if run.status == "running":
    run.status = "completed"


def _finish(ctx: _Context, run: _Run, t_train: float) -> dict:
  """summary.json and curves.png (process 0); returns the summary."""
  config = ctx.setup.config
  train_time = time.time() - t_train
  summary = _summary(run, ctx.early, config, wall_time=time.time() - ctx.t_start,
                     setup_time=t_train - ctx.t_start, compile_time=run.compile_time,
                     train_time=train_time)
  if jax.process_index() == 0:
    metrics_lib.write_json(os.path.join(ctx.workdir, "summary.json"), summary)
    if run.history:
      plots.plot_curves(run.history, os.path.join(ctx.workdir, "curves.png"),
                        title=f"{config.dataset.name} {config.model.name} "
                              f"{config.optimizer.name}")
      from flaxopt.training import curvature_log  # pylint: disable=g-import-not-at-top
      curvature_log.plot_sharpness(run.history, os.path.join(ctx.workdir, "sharpness.png"),
                                   title=f"{config.dataset.name} {config.model.name} "
                                         f"{config.optimizer.name}")
  logging.info("Finished: status %s, final %s", run.status, summary.get("final"))
  return summary


def _never_stop(step: int, sync: bool) -> bool:
  del step, sync
  return False


def _validated_setup(config: ml_collections.ConfigDict) -> Setup:
  """The complete, validated config's :class:`Setup`; any ValueError becomes ConfigError."""
  try:
    config = config_lib.complete(config)
    config_lib.validate(config)
    return _prepare(config)
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
  t_start = time.time()
  setup = _validated_setup(config)
  _check_workdir_config(setup.config, workdir)
  stop = preemption.StopOnSignal() if handle_signals else contextlib.nullcontext()
  with lock_lib.WorkdirLock(workdir), stop:
    ctx = _Context(setup=setup, workdir=workdir, ckpt=None, writer=None,
                   early=es_lib.from_config(setup.config.early_stopping),
                   hooks=hooks or Hooks(),
                   stop_requested=stop.requested if handle_signals else _never_stop,
                   t_start=t_start)
    try:
      return _run(ctx)
    except Exception as e:  # pylint: disable=broad-except
      if not checkpoint_lib.is_disk_full(e):
        raise
      latest = ctx.ckpt.latest_step() if ctx.ckpt is not None else None
      raise checkpoint_lib.StorageError(
          f"writing to {workdir} failed: {' '.join(str(e).split())}; the newest checkpoint "
          f"(step {latest}) is intact: free space and run the same command to resume"
          ) from e


def _run(ctx: _Context) -> dict:
  """config.json, resume, train, finish (the workdir is held)."""
  config, workdir = ctx.setup.config, ctx.workdir
  metrics_lib.write_json(os.path.join(workdir, "config.json"), config.to_dict())
  ctx.ckpt = checkpoint_lib.Checkpointer(os.path.join(workdir, "checkpoints"),
                                         max_to_keep=int(config.max_to_keep))
  try:
    run = _resume(ctx)
    t_train = time.time()
    _train(ctx, run)
    jax.block_until_ready(run.state)
  finally:
    _close(ctx)
  if run.status == "preempted":
    logging.warning("Preempted: saved the checkpoint at step %d; run the same command to "
                    "resume.", run.step)
  return _finish(ctx, run, t_train)


def _close(ctx: _Context) -> None:
  for closeable in (ctx.ckpt, ctx.writer):
    if closeable is None:
      continue
    try:
      closeable.close()
    except Exception as e:  # pylint: disable=broad-except
      logging.warning("Closing %s failed: %s", type(closeable).__name__, e)


def _summary(run: _Run, early, config, **times) -> dict:
  """summary.json: status, final and best evaluation records, timing.

  ``final`` is the last evaluation, or after early stopping with ``restore_best`` the record
  of the best step updated with a fresh evaluation of the restored parameters. ``best`` is
  the evaluation with the highest validation accuracy (None without a validation split):
  the test split reports, it never selects.
  """
  history, es_state = run.history, run.es_state
  final = history[-1] if history else None
  if run.status == "early_stopped" and history and early.restore_best:
    final = dict(next(r for r in history if r["step"] == es_state.best_step))
    final.update(run.restored or {"restored_best": True})
  validated = [r for r in history if r.get("val_accuracy") is not None]
  best = max(validated, key=lambda r: r["val_accuracy"]) if validated else None
  resumed_steps = run.step - run.start
  train_time = times["train_time"] - times["compile_time"]
  return {
      "status": run.status,
      "step": run.step,
      "final": final,
      "best": best,
      "early_stopping": {**es_state.to_dict(), "metric": early.metric,
                         "enabled": bool(config.early_stopping.enabled)},
      "steps_per_sec": (resumed_steps - 1) / train_time if train_time > 0 and resumed_steps > 1
                       else None,
      "num_devices": jax.device_count(),
      "num_processes": jax.process_count(),
      **times,
  }
