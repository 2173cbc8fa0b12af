"""The training loop: ``train_and_evaluate(config, workdir) -> summary``.

Reads top to bottom: validate the config, load the data, build model + optimizer, resume
from the newest checkpoint in ``workdir`` if there is one, then a Python loop of jitted steps
(``lax.scan`` over steps is 4-6x slower for conv models on XLA:CPU, DESIGN.md) that syncs
with the host only every ``log_every`` / ``eval_every`` / ``checkpoint_every`` steps.

Outputs in ``workdir``: ``config.json``, ``metrics.jsonl`` (one record per evaluation),
TensorBoard events under ``tensorboard/``, orbax checkpoints under ``checkpoints/``, the
plot ``curves.png`` and ``summary.json`` with ``status`` ``completed`` | ``early_stopped`` |
``diverged``. Process 0 alone writes files other than checkpoints.

Divergence guard: at each sync the summed training loss of the window is checked; a
non-finite value stops the run with status ``diverged`` and the non-finite state is never
saved (the last good checkpoint stays the newest).

Test hook: with the environment variable ``FLAXOPT_KILL_AT_STEP=k`` the process SIGKILLs
itself at the first host sync at or after step ``k`` (used to test resuming).
"""

from __future__ import annotations

import functools
import math
import os
import signal
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
from flaxopt.training.config import ConfigError
from flaxopt.training import diagnostics as diagnostics_lib
from flaxopt.training import early_stopping as es_lib
from flaxopt.training import metrics as metrics_lib
from flaxopt.training import plots
from flaxopt.training import steps as steps_lib
from flaxopt.training.parallel import Parallel
from flaxopt.training.state import TrainState, create_train_state

__all__ = ["ConfigError", "SCHEDULES", "make_optimizer", "make_schedule", "train_and_evaluate",
           "validate_config"]

# optimizer.* keys consumed here; every other optimizer.* key is passed to the constructor.
_SCHEDULE_KEYS = ("name", "learning_rate", "schedule", "warmup_steps")
# One-off programs (initialization) compile at XLA optimization level 1: threefry random
# bits take ~4 s to compile at the default level on XLA:CPU and ~0.5 s at level 1, with
# bit-identical results (level 0 changes the floating-point results).
_FAST_COMPILE = {"xla_backend_optimization_level": 1}
# Test hook: SIGKILL this process right after step N (used by the resume test).
KILL_AT_STEP_ENV = "FLAXOPT_KILL_AT_STEP"


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
  kwargs = {k: v for k, v in dict(opt_config).items() if k not in _SCHEDULE_KEYS}
  return registry.get("optimizer", opt_config["name"], learning_rate=schedule, **kwargs)


def learning_rate_at(schedule: Any, count: int) -> float:
  """The learning rate of update number ``count`` (0-based, optax's count; host side)."""
  return float(schedule(count)) if callable(schedule) else float(schedule)


# ---------------------------------------------------------------------------------------
# Config validation: user errors become one-line ValueErrors before anything is built.
# ---------------------------------------------------------------------------------------
def _positive(config, field: str, kind=int, allow_zero: bool = False) -> None:
  value = config
  for part in field.split("."):
    value = value[part]
  ok = isinstance(value, (int, float)) and not isinstance(value, bool)
  ok = ok and (value >= 0 if allow_zero else value > 0)
  ok = ok and (kind is float or float(value).is_integer())
  if not ok:
    need = "a non-negative" if allow_zero else "a positive"
    raise ValueError(f"{field} must be {need} {kind.__name__}, got {value!r}")


def validate_config(config: ml_collections.ConfigDict) -> None:
  """Raises ValueError (one line, naming the bad value) for a config that cannot run."""
  for field in ("batch_size", "num_train_steps", "eval_every", "log_every"):
    _positive(config, field)
  _positive(config, "checkpoint_every", allow_zero=True)
  _positive(config, "optimizer.learning_rate", float)
  for field in ("regularizer.l1", "regularizer.l2"):
    _positive(config, field, float, allow_zero=True)
  if config.parallel not in pipeline_lib.PARALLEL_MODES:
    raise ValueError(f"Unknown parallel {config.parallel!r}; valid: "
                     f"{', '.join(pipeline_lib.PARALLEL_MODES)}")
  from flaxopt.data import datasets  # pylint: disable=g-import-not-at-top
  if config.dataset.name not in datasets.names():
    raise ValueError(f"Unknown dataset {config.dataset.name!r}; valid: "
                     f"{', '.join(datasets.names())}")
  registry.check("optimizer", config.optimizer.name)
  make_schedule(config.optimizer, config.num_train_steps)
  _build_model(config, 10, None)  # model.* errors: unknown names, sizes, groups vs channels
  ops = [op.strip() for op in str(config.augment.get("ops", "")).split(",") if op.strip()]
  for op in ops:
    registry.check("augment", op)
  es_lib.from_config(config.early_stopping)  # raises on unknown fields / criteria


# ---------------------------------------------------------------------------------------
# The loop.
# ---------------------------------------------------------------------------------------
def _load_data(config):
  from flaxopt.data import datasets  # pylint: disable=g-import-not-at-top
  return datasets.load(config.dataset.name, data_dir=config.dataset.get("data_dir") or None,
                       num_train=config.dataset.get("num_train") or None,
                       validation_size=int(config.dataset.get("validation_size", 0) or 0))


def _build_model(config, num_classes: int, axis_name: Optional[str]):
  from flaxopt.nn import models  # pylint: disable=g-import-not-at-top
  return models.build_model(config.model, num_classes, axis_name=axis_name)


def _augment_fn(config) -> Optional[Callable[..., Any]]:
  if not str(config.augment.get("ops", "")).strip():
    return None
  import flaxopt.functional as F  # pylint: disable=g-import-not-at-top
  return F.augment_pipeline_from_config(config.augment)


def _init_state(config, model, tx, x_train: np.ndarray, batch: int) -> TrainState:
  """``model.init`` (+ data-dependent init) and ``tx.init`` from ``config.seed``, jitted.

  Keys: ``PRNGKey(seed)`` splits into the init key (params and rng streams), the
  data-dependent-init key and the run's base key ``TrainState.rng``. ``model.init`` sees
  ``batch`` examples; LSUV / RBM pre-training see the first ``init.num_examples`` (1000).
  """
  x_example = x_train[:batch]
  streams = ("params",) + steps_lib.RNG_STREAMS

  @functools.partial(jax.jit, compiler_options=_FAST_COMPILE)
  def init(seed, x):
    init_key, dd_key, state_key = jax.random.split(jax.random.PRNGKey(seed), 3)
    rngs = dict(zip(streams, jax.random.split(init_key, len(streams))))
    return model.init(rngs, x, train=False), dd_key, state_key

  variables, dd_key, state_key = init(np.int32(config.seed), x_example)
  from flaxopt import init as init_lib  # pylint: disable=g-import-not-at-top
  x_dd = x_train[:max(batch, int(config.get("init", {}).get("num_examples", 1000) or 0))]
  variables = init_lib.apply_data_dependent_init(config, model, variables, x_dd, dd_key)
  return jax.jit(functools.partial(create_train_state, tx=tx),
                 compiler_options=_FAST_COMPILE)(variables, rng=state_key)


def _eval_sets(ds, par: Parallel, config) -> dict[str, list]:
  sets = {"test": (ds.x_test, ds.y_test)}
  if len(ds.y_val):
    sets["val"] = (ds.x_val, ds.y_val)
  out = {}
  for name, (x, y) in sets.items():
    size = min(len(x), int(config.get("eval_batch_size", 0) or len(x)))
    size = -(-size // par.num_devices) * par.num_devices
    out[name] = pipeline_lib.shard_eval_set(x, y, chunk_size=size, parallel=par.mode,
                                            mesh=par.mesh)
  return out


def _evaluate(eval_fn, par: Parallel, state, chunks) -> tuple[float, float]:
  total = None
  for chunk in chunks:
    sums = eval_fn(state.params, state.batch_stats, chunk)
    total = sums if total is None else jax.tree.map(jnp.add, total, sums)
  total = par.read(total)
  return float(total["loss_sum"] / total["count"]), float(total["correct"] / total["count"])


def _is_sync_step(step: int, config, num_steps: int) -> bool:
  every = [config.log_every, config.eval_every]
  if config.checkpoint_every:
    every.append(config.checkpoint_every)
  return step == num_steps or any(step % e == 0 for e in every)


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str) -> dict:
  """Trains ``config`` in ``workdir`` (resuming from its newest checkpoint); returns summary.

  Raises:
    ConfigError: for a config that cannot run (bad names or values, batch size not divisible
      by the device count, groups not dividing channels, ...), before any training step.
  """
  t_start = time.time()
  try:
    validate_config(config)
    setup = _setup(config)
  except ConfigError:
    raise
  except ValueError as e:
    raise ConfigError(" ".join(str(e).split())) from e
  return _train(config, workdir, setup, t_start)


def _setup(config) -> dict:
  """Data, device placement, model, optimizer and the initial state (may raise ValueError)."""
  ds = _load_data(config)
  par = Parallel(config.parallel)
  pipe = pipeline_lib.Pipeline(ds.x_train, ds.y_train, batch_size=config.batch_size,
                               seed=config.seed, parallel=par.mode, mesh=par.mesh)
  eval_sets = _eval_sets(ds, par, config)
  model = _build_model(config, ds.num_classes, par.axis_name)
  schedule = make_schedule(config.optimizer, int(config.num_train_steps))
  tx = make_optimizer(config.optimizer, schedule)
  state = par.put(_init_state(config, model, tx, ds.x_train, pipe.per_device))
  step_fn = functools.partial(
      steps_lib.train_step, apply_fn=model.apply, tx=tx, num_classes=ds.num_classes,
      l1=float(config.regularizer.l1), l2=float(config.regularizer.l2),
      augment_fn=_augment_fn(config), axis_name=par.axis_name)
  eval_fn = functools.partial(steps_lib.eval_step, apply_fn=model.apply,
                              num_classes=ds.num_classes, axis_name=par.axis_name)
  return dict(ds=ds, par=par, pipe=pipe, eval_sets=eval_sets, model=model, schedule=schedule,
              tx=tx, state=state, train_fn=par.compile_train(step_fn),
              eval_fn=par.compile_eval(eval_fn))


def _train(config, workdir: str, setup: dict, t_start: float) -> dict:
  """The loop proper (see the module docstring)."""
  ds, par, pipe, eval_sets = setup["ds"], setup["par"], setup["pipe"], setup["eval_sets"]
  schedule, state = setup["schedule"], setup["state"]
  train_fn, eval_fn = setup["train_fn"], setup["eval_fn"]
  num_steps = int(config.num_train_steps)
  is_main = jax.process_index() == 0
  if is_main:
    os.makedirs(workdir, exist_ok=True)
  metrics_lib.write_json(os.path.join(workdir, "config.json"), config.to_dict())

  early = es_lib.from_config(config.early_stopping)
  es_state = early.init()
  keep_best = bool(config.early_stopping.enabled and early.restore_best)
  copy_best = lambda s: jax.tree.map(lambda a: a.copy(), par.get(  # survives donation
      {"params": s.params, "batch_stats": s.batch_stats}))
  best = copy_best(state) if keep_best else None
  history: list[dict] = []
  window = {"loss": 0.0, "count": 0, "losses": []}  # train loss since the last evaluation

  # Resume.
  ckpt = checkpoint_lib.Checkpointer(os.path.join(workdir, "checkpoints"),
                                     max_to_keep=int(config.get("max_to_keep", 3)))
  start = ckpt.latest_step() or 0
  status = "running"
  if start:
    restored, best, meta = ckpt.restore(start, par.get(state), best)
    state = par.put(restored)
    es_state = es_lib.EarlyStoppingState.from_dict(meta["early_stopping"])
    window = meta["window"]
    status = meta.get("status", "running")
    if status == "completed" and start < num_steps:
      status = "running"  # num_train_steps was raised: train on
    history = [r for r in metrics_lib.read_jsonl(os.path.join(workdir, "metrics.jsonl"))
               if r["step"] <= start]
    logging.info("Resumed from the checkpoint at step %d (%s).", start,
                 meta["pipeline"])
  writer = metrics_lib.MetricWriter(workdir, resume_step=start if start else None)

  def save(step: int, run_status: str) -> None:
    meta = {"pipeline": pipe.position(step), "early_stopping": es_state.to_dict(),
            "window": window, "status": run_status}
    ckpt.save(step, par.get(state), meta, best)

  setup_time = time.time() - t_start
  kill_at = int(os.environ.get(KILL_AT_STEP_ENV, "0") or 0)

  sums = par.zeros_sums()
  compile_time = 0.0
  t_train = t_last = time.time()
  last_sync = start
  step = start
  restored = None  # evaluation of the restored best parameters (early stopping)
  if status == "running":
    for step in range(start + 1, num_steps + 1):
      batch = pipe.batch(step - 1)
      state, sums = train_fn(state, batch, sums)
      diagnostics_lib.maybe_log_diagnostics(config, state, batch, step, workdir,
                                            model=setup["model"], num_classes=ds.num_classes,
                                            par=par)
      if step == start + 1:
        jax.block_until_ready(sums)
        compile_time = time.time() - t_train
        t_last = time.time()
      if not _is_sync_step(step, config, num_steps):
        continue

      # Host sync: window metrics, divergence guard, progress line.
      host = par.read(sums)
      sums = par.zeros_sums()
      now = time.time()
      steps_per_sec = (step - last_sync) / max(now - t_last, 1e-9)
      last_sync, t_last = step, now
      if not math.isfinite(float(host["loss"])):
        status = "diverged"
        logging.error(
            "Training diverged: non-finite loss between steps %d and %d (learning rate %.3g). "
            "Stopping; the last good checkpoint is step %s.", step - int(host["count"]), step,
            learning_rate_at(schedule, step - 1), ckpt.latest_step())
        break
      window["loss"] += float(host["loss"])
      window["count"] += int(host["count"])
      window["losses"].append(float(host["loss"] / host["count"]))
      if step % config.log_every == 0 or step == num_steps:
        metrics_lib.log_progress(metrics_lib.format_progress(
            step, num_steps, float(host["loss"] / host["count"]), steps_per_sec))

      # Evaluation.
      if step % config.eval_every == 0 or step == num_steps:
        record = {"step": step, "train_loss": window["loss"] / window["count"]}
        for name, chunks in eval_sets.items():
          record[f"{name}_loss"], record[f"{name}_accuracy"] = _evaluate(
              eval_fn, par, state, chunks)
        record.update(learning_rate=learning_rate_at(schedule, step - 1),  # the last update's
                      wall_time=time.time() - t_start, steps_per_sec=steps_per_sec)
        writer.write(record)
        history.append(metrics_lib.to_jsonable(record))
        if early.metric not in record:
          raise ValueError(f"early_stopping.metric {early.metric!r} is not among the "
                           f"evaluation metrics {sorted(record)}")
        es_state, stop = early.update(es_state, step, record[early.metric], window["losses"])
        window = {"loss": 0.0, "count": 0, "losses": []}
        if keep_best and es_state.best_step == step:
          best = copy_best(state)
        if stop:
          status = "early_stopped"
          logging.info("Early stopping at step %d (%s); best %s=%.4g at step %d.", step,
                       early.criterion, early.metric, es_state.best_value, es_state.best_step)
          if keep_best:
            state = state.replace(**par.put(best))
            restored = {"step": es_state.best_step, "restored_best": True}
            for name, chunks in eval_sets.items():
              restored[f"{name}_loss"], restored[f"{name}_accuracy"] = _evaluate(
                  eval_fn, par, state, chunks)
          save(step, status)
          break

      if (config.checkpoint_every and step % config.checkpoint_every == 0) or \
          step == num_steps:
        save(step, "running" if step < num_steps else "completed")
      if kill_at and step >= kill_at:
        os.kill(os.getpid(), signal.SIGKILL)
    else:
      status = "completed"
  train_time = time.time() - t_train
  jax.block_until_ready(state)
  ckpt.close()
  writer.close()

  summary = _summary(status, history, restored, es_state, early, config, step,
                     wall_time=time.time() - t_start, setup_time=setup_time,
                     compile_time=compile_time, train_time=train_time, start=start)
  if is_main:
    metrics_lib.write_json(os.path.join(workdir, "summary.json"), summary)
    if history:
      plots.plot_curves(history, os.path.join(workdir, "curves.png"),
                        title=f"{config.dataset.name} {config.model.get('name', '')} "
                              f"{config.optimizer.name}")
  logging.info("Finished: status %s, final %s", status, summary.get("final"))
  return summary


def _summary(status: str, history: list, restored: Optional[dict], es_state, early, config,
             step: int, **times) -> dict:
  """summary.json: status, final and best evaluation records, timing.

  ``final`` is the last evaluation, or after early stopping with ``restore_best`` the record
  of the best step updated with a fresh evaluation of the restored parameters.
  """
  final = history[-1] if history else None
  if status == "early_stopped" and history and early.restore_best:
    final = dict(next(r for r in history if r["step"] == es_state.best_step))
    final.update(restored or {"restored_best": True})
  best = max(history, key=lambda r: r.get("test_accuracy", -1.0)) if history else None
  resumed_steps = step - times.pop("start")
  train_time = times["train_time"] - times["compile_time"]
  return {
      "status": status,
      "step": step,
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
