"""Training-step measurements: flaxopt's step vs a hand-written jitted JAX step vs PyTorch
eager (MNIST-1D CNN and MLP, Adam), the cost of the loop's separate gather dispatch, and
steps/s over forced CPU devices (subprocess workers)."""

from __future__ import annotations

import functools
import json
import math
import os
import statistics
import sys
import time
from typing import Any, Callable, Mapping, Optional, Sequence

import jax
import jax.numpy as jnp
import numpy as np
import optax

from experiments.bench import options
from experiments.bench import timing
from experiments.bench.timing import load
from experiments.bench.timing import Runner
from experiments.bench.timing import run_subprocess
from flaxopt import registry


def load_mnist1d() -> dict:
  """MNIST-1D train/test arrays via ``flaxopt.data.load`` (synthetic stand-in if unavailable)."""
  try:
    from flaxopt import data  # pylint: disable=g-import-not-at-top
    ds = data.load("mnist1d")
    return {"x_train": ds.x_train, "y_train": ds.y_train, "x_test": ds.x_test,
            "y_test": ds.y_test, "num_classes": ds.num_classes, "synthetic": False}
  except Exception as e:  # pylint: disable=broad-except  (e.g. no tfds on a GPU image)
    print(f"  mnist1d unavailable ({type(e).__name__}: {e}); using random data of its shape")
    return synthetic_mnist1d()


def synthetic_mnist1d(num_train: int = 4000, num_test: int = 1000, seed: int = 0) -> dict:
  """Random arrays shaped like MNIST-1D (speed does not depend on the values)."""
  rng = np.random.default_rng(seed)
  return {"x_train": rng.standard_normal((num_train, 40, 1), np.float32),
          "y_train": rng.integers(0, 10, num_train).astype(np.int32),
          "x_test": rng.standard_normal((num_test, 40, 1), np.float32),
          "y_test": rng.integers(0, 10, num_test).astype(np.int32),
          "num_classes": 10, "synthetic": True}


def flaxopt_train_runner(model_name: str, data: Mapping[str, Any], batch_size: int,
                         learning_rate: float = 1e-2, parallel: str = "jit") -> Runner:
  """flaxopt's own step: registry model and optimizer, the loop's compile and input pipeline."""
  from flaxopt.data import pipeline as pipeline_lib  # pylint: disable=g-import-not-at-top
  from flaxopt.nn import models  # pylint: disable=g-import-not-at-top
  from flaxopt.training import steps as steps_lib  # pylint: disable=g-import-not-at-top
  from flaxopt.training.parallel import Parallel  # pylint: disable=g-import-not-at-top
  from flaxopt.training.state import create_train_state  # pylint: disable=g-import-not-at-top

  par = Parallel(parallel)
  pipe = pipeline_lib.Pipeline(data["x_train"], data["y_train"], batch_size=batch_size, seed=0,
                               parallel=par.mode, mesh=par.mesh)
  model = models.build_model({"name": model_name}, data["num_classes"], axis_name=par.axis_name)
  tx = registry.get("optimizer", "adam", learning_rate=learning_rate)
  variables = jax.jit(lambda k, x: model.init({"params": k}, x, train=False))(
      jax.random.PRNGKey(0), data["x_train"][:pipe.per_device])
  state = par.put(create_train_state(variables, tx, jax.random.PRNGKey(1)))
  train_fn = par.compile_train(functools.partial(
      steps_lib.train_step, apply_fn=model.apply, tx=tx, num_classes=data["num_classes"],
      axis_name=par.axis_name))
  holder = {"state": state, "sums": par.zeros_sums(), "step": 0}

  def run(n: int) -> None:
    state, sums, step = holder["state"], holder["sums"], holder["step"]
    for _ in range(n):
      state, sums = train_fn(state, pipe.batch(step), sums)
      step += 1
    timing.block(sums)
    holder.update(state=state, sums=sums, step=step)
  return run


# The hand-written JAX models: plain jnp / lax, parameters in a dict, PyTorch's default init.
def _uniform(key, shape, fan_in):
  bound = 1 / math.sqrt(fan_in)
  return jax.random.uniform(key, shape, jnp.float32, -bound, bound)


def _init_cnn(key, length=40, classes=10):
  keys = jax.random.split(key, 8)
  params, c_in = {}, 1
  for i, k in enumerate((5, 3, 3)):
    params[f"conv{i}"] = {"w": _uniform(keys[2 * i], (k, c_in, 25), k * c_in),
                          "b": _uniform(keys[2 * i + 1], (25,), k * c_in)}
    c_in, length = 25, (length + 2 - k) // 2 + 1
  params["head"] = {"w": _uniform(keys[6], (25 * length, classes), 25 * length),
                    "b": _uniform(keys[7], (classes,), 25 * length)}
  return params


def _apply_cnn(params, x):
  for i in range(3):
    p = params[f"conv{i}"]
    x = jax.lax.conv_general_dilated(x, p["w"], (2,), ((1, 1),),
                                     dimension_numbers=("NWC", "WIO", "NWC"))
    x = jax.nn.relu(x + p["b"])
  x = x.reshape(x.shape[0], -1)
  return x @ params["head"]["w"] + params["head"]["b"]


def _init_mlp(key, length=40, classes=10):
  keys = jax.random.split(key, 6)
  sizes = [(length, 100), (100, 100), (100, classes)]
  return [{"w": _uniform(keys[2 * i], s, s[0]), "b": _uniform(keys[2 * i + 1], s[1:], s[0])}
          for i, s in enumerate(sizes)]


def _apply_mlp(params, x):
  x = x.reshape(x.shape[0], -1)
  for p in params[:-1]:
    x = jax.nn.relu(x @ p["w"] + p["b"])
  return x @ params[-1]["w"] + params[-1]["b"]


HANDWRITTEN = {"cnn": (_init_cnn, _apply_cnn), "mlp": (_init_mlp, _apply_mlp)}


def _indexed_runner(advance: Callable[[np.ndarray], Any], num_examples: int,
                    batch_size: int) -> Runner:
  """A runner calling ``advance(indices)`` once per step, in the loop's batch order.

  Indices come from ``flaxopt.data.pipeline.batch_indices`` (seed 0), the same order the
  trainer uses, computed on the host and passed to a step that gathers on device.
  """
  from flaxopt.data import pipeline  # pylint: disable=g-import-not-at-top
  position = {"step": 0}

  def run(k: int) -> None:
    out = None
    for _ in range(k):
      out = advance(pipeline.batch_indices(0, position["step"], num_examples, batch_size))
      position["step"] += 1
    timing.block(out)
  return run


def handwritten_train_runner(model_name: str, data: Mapping[str, Any], batch_size: int,
                             learning_rate: float = 1e-2) -> Runner:
  """A jitted step as a JAX user writes it: data on device, batch gathered by indices."""
  init, apply = HANDWRITTEN[model_name]
  tx = optax.adam(learning_rate)
  params = init(jax.random.PRNGKey(0))
  x_all, y_all = jnp.asarray(data["x_train"]), jnp.asarray(data["y_train"])

  @functools.partial(jax.jit, donate_argnums=(0, 1))
  def step(params, opt_state, idx):
    x, y = x_all[idx], y_all[idx]

    def loss_fn(p):
      return optax.softmax_cross_entropy_with_integer_labels(apply(p, x), y).mean()

    loss, grads = jax.value_and_grad(loss_fn)(params)
    updates, opt_state = tx.update(grads, opt_state, params)
    return optax.apply_updates(params, updates), opt_state, loss

  holder = {"params": params, "opt": tx.init(params)}

  def advance(idx: np.ndarray) -> jax.Array:
    holder["params"], holder["opt"], loss = step(holder["params"], holder["opt"], idx)
    return loss

  return _indexed_runner(advance, len(data["y_train"]), batch_size)


def bench_train_step(models: Sequence[str], batches: Sequence[int], opts: options.Options,
                     data: Optional[Mapping[str, Any]] = None) -> dict:
  """Steps/s of flaxopt's train step, a hand-written JAX step and PyTorch eager (Adam 1e-2)."""
  data = data or load_mnist1d()
  bt = options.torch_module(opts)
  threads = bt.num_threads() if bt else None
  out = {"synthetic_data": bool(data["synthetic"]), "torch_threads": threads}
  for model_name in models:
    for batch in batches:
      runners = {"flaxopt": flaxopt_train_runner(model_name, data, batch),
                 "jax_handwritten": handwritten_train_runner(model_name, data, batch)}
      if bt is not None:
        for label, threads in options.torch_thread_variants(opts):
          runners[f"torch_eager{label}"] = options.with_threads(bt, threads, bt.TorchTrainer(
              model_name, data["x_train"], data["y_train"], batch_size=batch,
              device=options.torch_device()).run)
      before = load()
      res = options.compare(runners, opts, baseline="flaxopt")
      sps = {k: 1 / v for k, v in res["median_s"].items()}
      # speedup of flaxopt over k: median over rounds of t_k / t_flaxopt.
      speedup = dict(res["ratio"])
      key = f"{model_name}_b{batch}"
      out[key] = {"steps_per_sec": sps, "flaxopt_speedup_over": speedup,
                  "flaxopt_cpu_time_saving_over": dict(res["cpu_ratio"]), "timing": res,
                  "load_before": before, "load_after": load()}
      print(f"  train {key}: " + ", ".join(f"{k} {v:.0f} steps/s" for k, v in sps.items()),
            flush=True)
  return out


def fused_gather_train_runner(model_name: str, data: Mapping[str, Any], batch_size: int,
                              learning_rate: float = 1e-2) -> Runner:
  """flaxopt's ``train_step`` with the batch gathered *inside* the jitted step (one dispatch).

  The experiment behind docs/readme/benchmarks.md's step-overhead table: the same registry
  model, optimizer, ``steps.train_step`` and metric sums as ``flaxopt_train_runner``, but the
  step takes the host batch indices (numpy, plain ``jax.jit``, no shardings) and gathers from
  the device-resident training set itself, instead of ``Pipeline.batch`` dispatching a
  separate jitted gather and building a sharded index array every step.
  """
  from flaxopt.nn import models  # pylint: disable=g-import-not-at-top
  from flaxopt.training import steps as steps_lib  # pylint: disable=g-import-not-at-top
  from flaxopt.training.state import create_train_state  # pylint: disable=g-import-not-at-top

  model = models.build_model({"name": model_name}, data["num_classes"])
  tx = registry.get("optimizer", "adam", learning_rate=learning_rate)
  variables = jax.jit(lambda k, x: model.init({"params": k}, x, train=False))(
      jax.random.PRNGKey(0), data["x_train"][:batch_size])
  state = create_train_state(variables, tx, jax.random.PRNGKey(1))
  step_fn = functools.partial(steps_lib.train_step, apply_fn=model.apply, tx=tx,
                              num_classes=data["num_classes"])
  x_all, y_all = jnp.asarray(data["x_train"]), jnp.asarray(data["y_train"])

  @functools.partial(jax.jit, donate_argnums=(0, 3))
  def step(state, x_all, y_all, sums, idx):
    state, metrics = step_fn(state, {"x": jnp.take(x_all, idx, 0), "y": jnp.take(y_all, idx, 0)})
    return state, {k: sums[k] + metrics.get(k, 1.0) for k in sums}

  sums = {k: jnp.zeros((), jnp.float32) for k in ("loss", "ce_loss", "accuracy", "count")}
  holder = {"state": state, "sums": sums}

  def advance(idx: np.ndarray) -> Any:
    holder["state"], holder["sums"] = step(holder["state"], x_all, y_all, holder["sums"], idx)
    return holder["sums"]

  return _indexed_runner(advance, len(data["y_train"]), batch_size)


def bench_step_overhead(models: Sequence[str], batches: Sequence[int], opts: options.Options,
                        data: Optional[Mapping[str, Any]] = None) -> dict:
  """Where flaxopt's step loses to the hand-written one: the separate gather dispatch."""
  data = data or load_mnist1d()
  out = {}
  for model_name in models:
    for batch in batches:
      runners = {"jax_handwritten": handwritten_train_runner(model_name, data, batch),
                 "flaxopt": flaxopt_train_runner(model_name, data, batch),
                 "flaxopt_fused_gather": fused_gather_train_runner(model_name, data, batch)}
      res = options.compare(runners, opts, baseline="jax_handwritten")
      key = f"{model_name}_b{batch}"
      out[key] = {"us_per_step": {k: 1e6 * v for k, v in res["median_s"].items()},
                  "time_over_handwritten": res["ratio"],
                  "cpu_time_over_handwritten": res["cpu_ratio"], "load": load()}
      print(f"  step overhead {key}: " + ", ".join(
          f"{k} {v:.3f}" for k, v in res["ratio"].items()) + " (time / hand-written)",
            flush=True)
  return out


def scaling_worker(parallel: str, batch_size: int, steps: int, model: str = "mlp") -> dict:
  """In a process started with N forced devices: steps/s of flaxopt's step (median of 5)."""
  data = synthetic_mnist1d()
  run = flaxopt_train_runner(model, data, batch_size, parallel=parallel)
  run(2)
  chunk = max(1, steps // 5)
  times = []
  for _ in range(5):
    t = time.perf_counter()
    run(chunk)
    times.append((time.perf_counter() - t) / chunk)
  return {"devices": jax.device_count(), "parallel": parallel, "model": model,
          "batch_size": batch_size, "steps_per_sec": 1 / statistics.median(times)}


def bench_scaling(devices: Sequence[int], steps: int, timeout: int,
                  batch_size: int = 512) -> dict:
  """MLP steps/s over forced host devices, jit and pmap; a hung worker is killed."""
  rows = []
  for parallel in ("jit", "pmap"):
    for n in devices:
      env = dict(os.environ)
      env["XLA_FLAGS"] = (env.get("XLA_FLAGS", "") +
                          f" --xla_force_host_platform_device_count={n}").strip()
      env["JAX_PLATFORMS"] = "cpu"
      args = json.dumps({"parallel": parallel, "batch_size": batch_size, "steps": steps})
      before = load()
      res = run_subprocess([sys.executable, "-m", "experiments.benchmark", "--worker=scaling",
                            f"--worker_args={args}"], env=env, timeout=timeout)
      row = {"devices": n, "parallel": parallel, "wall_s": res["wall_s"],
             "timed_out": res["timed_out"], "returncode": res["returncode"],
             "load_before": before, "load_after": load()}
      lines = [l for l in res["output_tail"].splitlines() if l.startswith("SCALING_RESULT ")]
      if lines:
        row.update(json.loads(lines[-1][len("SCALING_RESULT "):]))
      else:
        row["error"] = res["output_tail"][-500:]
      rows.append(row)
      print(f"  scaling {parallel} x{n}: {row.get('steps_per_sec', float('nan')):.0f} steps/s"
            f"{' (TIMED OUT)' if res['timed_out'] else ''}", flush=True)
  return {"model": "mlp", "batch_size": batch_size, "rows": rows}


# ---------------------------------------------------------------------------------------
# Report: metadata, JSON, Markdown tables, plots.
# ---------------------------------------------------------------------------------------
