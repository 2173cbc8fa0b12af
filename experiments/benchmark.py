r"""How fast flaxopt does its work, next to optax, flax / jax.nn and PyTorch, side by side.

Every comparison runs its candidates in one process, interleaved: each round runs every
candidate for the same number of calls (the order rotated per round), and we report the
median over rounds of the per-call time and of the per-round *ratio* to the baseline. The
machine is shared and noisy; ratios of interleaved medians are what the README quotes, never
single times. ``os.getloadavg()`` is recorded before and after every section.

Sections (``--sections``, comma-separated, default all):

* ``bandwidth``   this machine's memory-copy bandwidth (numpy ``copyto`` and a jitted JAX
                  scale), bytes read + written per second: the roofline for optimizer updates.
* ``optimizers``  each flaxopt optimizer's jitted ``update + apply_updates`` (params and state
                  donated) against optax's alias, at ``--opt_sizes`` parameters; also the
                  effective bandwidth ``(3 P + 2 S) / t`` (P param bytes, S state bytes:
                  params, grads, state read; params, state written).
* ``torch_adam``  flaxopt Adam against ``torch.optim.Adam(fused=True)`` and the default
                  foreach Adam, at ``--torch_adam_sizes`` parameters.
* ``ops``         activations, normalizers, pooling: forward and forward+backward (jitted)
                  against jax.nn / flax.linen (or a composition of flax ops).
* ``memory``      optimizer-state bytes per parameter of a 4096 x 4096 matrix (flaxopt, optax).
* ``train_step``  MNIST-1D CNN and MLP steps/s at ``--train_batches``: flaxopt's train step
                  (registry model + optimizer, ``Parallel('jit').compile_train``, the loop's
                  input pipeline) vs a hand-written jitted JAX step vs PyTorch eager.
* ``step_overhead`` (not in the default list) flaxopt's step with the batch gathered inside
                  the jitted step, against the two above: the measured cost of the loop's
                  separate gather dispatch.
* ``end_to_end``  ``python -m experiments.train --workdir=...`` (the main job) vs
                  ``python -m experiments.bench_torch`` (same recipe) as subprocesses: wall
                  time, compile time, steps/s (from summary.json) and peak RSS.
* ``scaling``     steps/s of the MLP (batch 512) over 1, 2, 4 forced CPU devices, jit and
                  pmap, each in a subprocess with a hard timeout (DESIGN.md: conv all-reduces
                  hang on forced devices, so dense only).

Usage::

  python -m experiments.benchmark --out=docs/benchmarks/cpu_results.json --plots=docs/images
  python -m experiments.benchmark --quick --sections=optimizers,ops,train_step  # e.g. on a GPU
  python -m experiments.benchmark --opt_sizes=1e6,1e7,5e7  # 50M-parameter updates too

The results JSON records ``jax.devices()[0].device_kind``; ``--markdown`` prints its tables.
"""

from __future__ import annotations

import functools
import json
import math
import os
import platform
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from typing import Any, Callable, Iterable, Mapping, Optional, Sequence

from absl import app
from absl import flags
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax

import flaxopt.functional as F
from flaxopt import registry

_SECTIONS = flags.DEFINE_list(
    "sections", "bandwidth,optimizers,torch_adam,ops,memory,train_step,end_to_end,scaling",
    "Sections to run (see the module docstring).")
_QUICK = flags.DEFINE_bool("quick", False, "Smaller sizes and fewer rounds (a first look / GPU).")
_OUT = flags.DEFINE_string("out", "", "Results JSON ('' : do not write).")
_PLOTS = flags.DEFINE_string("plots", "", "Directory for bench_*.png plots ('' : none).")
_FROM_JSON = flags.DEFINE_string("from_json", "", "Run nothing; plot and tabulate this file.")
_PLOT_SUFFIX = flags.DEFINE_string("plot_suffix", "", "Appended to the plot file names.")
_MARKDOWN = flags.DEFINE_string("markdown", "", "Write the result tables as Markdown here.")
_ROUNDS = flags.DEFINE_integer("rounds", 7, "Interleaved rounds per comparison.")
_ROUND_S = flags.DEFINE_float("round_s", 0.25, "Target seconds per candidate per round.")
_OPT_SIZES = flags.DEFINE_list("opt_sizes", ["1e6", "1e7"], "Parameter counts, optimizers.")
_OPTIMIZERS = flags.DEFINE_list("optimizers", [], "Optimizer names ([] : all first-order).")
_TORCH_ADAM_SIZES = flags.DEFINE_list("torch_adam_sizes", ["1e7", "5e7"],
                                      "Parameter counts, flaxopt Adam vs PyTorch Adam.")
_OPS_ELEMENTS = flags.DEFINE_integer("ops_elements", 2**20, "Elements per op input.")
_TRAIN_MODELS = flags.DEFINE_list("train_models", ["cnn", "mlp"], "Models, train_step.")
_TRAIN_BATCHES = flags.DEFINE_list("train_batches", ["100", "512"], "Batch sizes, train_step.")
_E2E_REPEATS = flags.DEFINE_integer("e2e_repeats", 2, "Runs of each end-to-end job.")
_E2E_ARGS = flags.DEFINE_list("e2e_args", [], "Extra --config.x=y flags for experiments.train.")
_E2E_STEPS = flags.DEFINE_integer("e2e_steps", 6000, "Training steps of both end-to-end jobs.")
_E2E_TORCH_THREADS = flags.DEFINE_integer(
    "e2e_torch_threads", 1, "PyTorch threads of the end-to-end script (0: every core; see "
    "_torch_thread_variants for why 1 is the default on a shared machine).")
_OPS_ROUNDS = flags.DEFINE_integer("ops_rounds", 5, "Interleaved rounds per op comparison.")
_SCALING_DEVICES = flags.DEFINE_list("scaling_devices", ["1", "2", "4"], "Forced CPU devices.")
_SCALING_STEPS = flags.DEFINE_integer("scaling_steps", 300, "Timed steps per scaling worker.")
_SCALING_TIMEOUT = flags.DEFINE_integer("scaling_timeout", 120,
                                        "Seconds before a scaling worker is killed.")
_TORCH = flags.DEFINE_bool("torch", True, "Run the PyTorch comparisons (if torch imports).")
_TORCH_1THREAD = flags.DEFINE_bool(
    "torch_1thread", True, "Also time PyTorch with 1 thread (see _torch_thread_variants).")
_WORKER = flags.DEFINE_string("worker", "", "Internal: 'scaling' runs one scaling measurement.")
_WORKER_ARGS = flags.DEFINE_string("worker_args", "{}", "Internal: JSON kwargs of the worker.")

Runner = Callable[[int], None]  # run(n): n calls, returns when the work is done.

# ---------------------------------------------------------------------------------------
# Timing: interleaved rounds, medians, ratios.
# ---------------------------------------------------------------------------------------


def _calibrate(run: Runner, round_s: float) -> int:
  """Calls per round so one candidate's round lasts about ``round_s`` seconds (>= 1)."""
  n = 1
  while True:
    t = time.perf_counter()
    run(n)
    dt = time.perf_counter() - t
    if dt >= round_s / 4 or n >= 1 << 16:
      return max(1, int(round(n * round_s / max(dt, 1e-9))))
    n *= 4


def interleaved(runners: Mapping[str, Runner], *, rounds: int, round_s: float,
                baseline: Optional[str] = None, number: Optional[int] = None) -> dict:
  """Times ``runners`` side by side; returns per-call medians and ratios to ``baseline``.

  Every runner is warmed up (compiled) and calibrated first; then each of ``rounds`` rounds
  calls every runner ``number`` times (the slowest runner's calibration), in an order rotated
  by one each round. Result: ``{'number', 'rounds', 'seconds': {name: [per-call s per
  round]}, 'median_s': {name: s}, 'ratio': {name: median over rounds of t_name / t_base}}``,
  plus ``median_cpu_s`` / ``cpu_ratio``, the same for process CPU time (all threads): on a
  loaded machine CPU time measures the work done, little affected by waiting for a core.
  """
  names = list(runners)
  baseline = baseline or names[0]
  for run in runners.values():
    run(1)  # compile / warm caches
  if number is None:
    number = min(_calibrate(run, round_s) for run in runners.values())
  seconds: dict[str, list[float]] = {k: [] for k in names}
  cpu: dict[str, list[float]] = {k: [] for k in names}
  for r in range(rounds):
    order = names[r % len(names):] + names[:r % len(names)]
    for name in order:
      t, c = time.perf_counter(), time.process_time()
      runners[name](number)
      cpu[name].append((time.process_time() - c) / number)
      seconds[name].append((time.perf_counter() - t) / number)

  def ratios(times):
    return {k: statistics.median(a / max(b, 1e-12) for a, b in zip(times[k], times[baseline]))
            for k in names}

  return {"number": number, "rounds": rounds, "baseline": baseline,
          "median_s": {k: statistics.median(v) for k, v in seconds.items()},
          "ratio": ratios(seconds), "seconds": seconds,
          "median_cpu_s": {k: statistics.median(v) for k, v in cpu.items()},
          "cpu_ratio": ratios(cpu)}


def _block(tree: Any) -> None:
  jax.block_until_ready(tree)


def jax_runner(fn: Callable[..., Any], *args: Any) -> Runner:
  """``run(n)``: calls the (jitted) ``fn(*args)`` n times and blocks on the last result."""
  def run(n: int) -> None:
    out = None
    for _ in range(n):
      out = fn(*args)
    _block(out)
  return run


def stateful_runner(step: Callable[..., Any], carry: tuple, *const: Any) -> Runner:
  """``run(n)``: ``carry = step(*carry, *const)`` n times (carry donated), then blocks."""
  holder = [carry]

  def run(n: int) -> None:
    c = holder[0]
    for _ in range(n):
      c = step(*c, *const)
    _block(c)
    holder[0] = c
  return run


def load() -> dict:
  """This machine's load averages (1, 5, 15 min) and CPU count, for the record."""
  return {"loadavg": [round(x, 2) for x in os.getloadavg()],
          "cpus": len(os.sched_getaffinity(0))}


def _size(text: str) -> int:
  return int(float(text))


def _rounds() -> int:
  return max(3, _ROUNDS.value // 2) if _QUICK.value else _ROUNDS.value


def _round_s() -> float:
  return _ROUND_S.value / 2 if _QUICK.value else _ROUND_S.value


def _compare(runners: Mapping[str, Runner], baseline: Optional[str] = None, **kw) -> dict:
  return interleaved(runners, rounds=kw.pop("rounds", _rounds()),
                     round_s=kw.pop("round_s", _round_s()), baseline=baseline, **kw)


def _torch_module():
  """``experiments.bench_torch`` or None (torch missing or ``--notorch``)."""
  if not _TORCH.value:
    return None
  try:
    from experiments import bench_torch  # pylint: disable=g-import-not-at-top
  except ImportError:
    return None
  return bench_torch


def _torch_thread_variants(bt) -> list[tuple[str, int]]:
  """PyTorch thread counts to time: the cores available ('' label), and 1 thread.

  On a loaded machine PyTorch's OpenMP regions wait for descheduled threads, so one thread
  can be many times faster than two; we report both and compare against the faster.
  """
  cores = len(os.sched_getaffinity(0))
  variants = [("", cores)]
  if cores > 1 and _TORCH_1THREAD.value and _torch_device() == "cpu":
    variants.append(("_1thread", 1))
  return variants


def _with_threads(bt, threads: int, run: Runner) -> Runner:
  def wrapped(n: int) -> None:
    bt.num_threads(threads)
    run(n)
  return wrapped


def _torch_device() -> str:
  return "cuda" if jax.default_backend() == "gpu" else "cpu"


# ---------------------------------------------------------------------------------------
# Memory bandwidth.
# ---------------------------------------------------------------------------------------


def bench_bandwidth(num_bytes: int = 2**28, rounds: int = 7) -> dict:
  """Copy bandwidth, (bytes read + bytes written) / s: numpy copyto and a jitted scale."""
  n = num_bytes // 4
  src = np.random.default_rng(0).standard_normal(n, dtype=np.float32)
  dst = np.empty_like(src)
  x = jnp.asarray(src)
  scale = jax.jit(lambda a: a * 1.0001, donate_argnums=0)

  def numpy_copy(k):
    for _ in range(k):
      np.copyto(dst, src)

  def jax_scale(k):
    nonlocal x
    for _ in range(k):
      x = scale(x)
    _block(x)

  res = interleaved({"numpy_copy": numpy_copy, "jax_scale": jax_scale}, rounds=rounds,
                    round_s=0.3)
  gbps = {k: 2 * num_bytes / t / 1e9 for k, t in res["median_s"].items()}
  return {"bytes": num_bytes, "GBps": gbps, "reference_GBps": max(gbps.values()), "timing": res}


# ---------------------------------------------------------------------------------------
# Optimizer updates: flaxopt vs optax, effective bandwidth; Adam vs PyTorch.
# ---------------------------------------------------------------------------------------

# flaxopt registry name -> (flaxopt kwargs, optax constructor). Each pair does the same work
# per element; where defaults differ (eps placement, adagrad's initial value, nadam's
# momentum schedule) flaxopt keeps its own defaults, the cost per element is the same.
OPTAX_EQUIVALENTS: Mapping[str, tuple[dict, Callable[[float], optax.GradientTransformation]]] = {
    "sgd": ({}, optax.sgd),
    "momentum": ({}, lambda lr: optax.sgd(lr, momentum=0.9)),
    "nesterov": ({}, lambda lr: optax.sgd(lr, momentum=0.9, nesterov=True)),
    "adagrad": ({}, optax.adagrad),
    "adadelta": ({}, optax.adadelta),
    "rmsprop": ({}, optax.rmsprop),
    "adam": ({}, optax.adam),
    "nadam": ({}, optax.nadam),
    "adamax": ({}, optax.adamax),
    "amsgrad": ({}, optax.amsgrad),
    "adafactor": ({"relative_step": False}, optax.adafactor),
}
LEARNING_RATE = 1e-3


def param_shape(num_params: int) -> tuple[int, int]:
  """A near-square ``(rows, cols)`` matrix with about ``num_params`` entries, cols % 128 == 0."""
  cols = max(128, int(round(math.sqrt(num_params) / 128)) * 128)
  return max(1, num_params // cols), cols


def make_params(num_params: int, seed: int = 0, dtype=jnp.float32) -> dict:
  """``{'w': (rows, cols), 'b': (cols,)}``: one dense layer of about ``num_params``."""
  rows, cols = param_shape(num_params)
  kw, kb = jax.random.split(jax.random.PRNGKey(seed))
  return {"w": jax.random.normal(kw, (rows, cols), dtype),
          "b": jax.random.normal(kb, (cols,), dtype)}


def tree_bytes(tree: Any) -> int:
  """Bytes of a pytree's arrays (shapes only: works on ``jax.eval_shape`` results)."""
  return sum(int(np.prod(x.shape)) * np.dtype(x.dtype).itemsize for x in jax.tree.leaves(tree))


def state_bytes(tx: optax.GradientTransformation, params: Any) -> int:
  """Bytes of ``tx.init(params)`` without allocating it."""
  return tree_bytes(jax.eval_shape(tx.init, params))


def _update_step(tx: optax.GradientTransformation) -> Callable[..., Any]:
  """``(params, state, grads) -> (params, state)``, jitted, params and state donated."""
  def step(params, state, grads):
    updates, state = tx.update(grads, state, params)
    return optax.apply_updates(params, updates), state
  return jax.jit(step, donate_argnums=(0, 1))


def optimizer_runner(tx: optax.GradientTransformation, params: Any, grads: Any) -> Runner:
  """``run(n)``: n jitted ``update + apply_updates`` steps of ``tx`` with a fixed gradient."""
  params = jax.tree.map(jnp.copy, params)  # donated: each runner owns its copy
  return stateful_runner(_update_step(tx), (params, tx.init(params)), grads)


def flaxopt_optimizer(name: str) -> optax.GradientTransformation:
  """``registry.get('optimizer', name, learning_rate=1e-3)`` with OPTAX_EQUIVALENTS' kwargs."""
  kwargs = OPTAX_EQUIVALENTS[name][0] if name in OPTAX_EQUIVALENTS else {}
  return registry.get("optimizer", name, learning_rate=LEARNING_RATE, **kwargs)


def bench_optimizers(sizes: Sequence[int], names: Sequence[str],
                     copy_GBps: Optional[float]) -> dict:
  """flaxopt vs optax update time per optimizer and size, and effective bandwidth."""
  out = {}
  for size in sizes:
    params = make_params(size)
    grads = make_params(size, seed=1)
    p_bytes = tree_bytes(params)
    rows = {}
    for name in names:
      tx_f = flaxopt_optimizer(name)
      tx_o = OPTAX_EQUIVALENTS[name][1](LEARNING_RATE)
      res = _compare({"flaxopt": optimizer_runner(tx_f, params, grads),
                      "optax": optimizer_runner(tx_o, params, grads)}, baseline="optax")
      s_bytes = state_bytes(tx_f, params)
      moved = 3 * p_bytes + 2 * s_bytes
      gbps = moved / res["median_s"]["flaxopt"] / 1e9
      rows[name] = {
          "flaxopt_ms": 1e3 * res["median_s"]["flaxopt"],
          "optax_ms": 1e3 * res["median_s"]["optax"],
          "ratio": res["ratio"]["flaxopt"], "cpu_ratio": res["cpu_ratio"]["flaxopt"],
          "bytes_moved": moved, "GBps": gbps,
          "fraction_of_copy": gbps / copy_GBps if copy_GBps else None,
          "timing": res, "load": load()}
      print(f"  optimizer {name:9s} n={size:.0e}: flaxopt/optax {rows[name]['ratio']:.3f}, "
            f"{gbps:.1f} GB/s", flush=True)
    out[str(size)] = {"num_params": sum(x.size for x in jax.tree.leaves(params)),
                      "shape": list(param_shape(size)), "param_bytes": p_bytes, "rows": rows}
    del params, grads
  return out


def bench_torch_adam(sizes: Sequence[int]) -> dict:
  """flaxopt Adam vs PyTorch's fused and foreach Adam (and optax Adam) on one matrix."""
  bt = _torch_module()
  if bt is None:
    return {"skipped": "torch not available"}
  bt.num_threads()
  device = _torch_device()
  out = {}
  for size in sizes:
    shape = param_shape(size)
    params = {"w": jax.random.normal(jax.random.PRNGKey(0), shape)}
    grads = {"w": jax.random.normal(jax.random.PRNGKey(1), shape)}
    runners = {"flaxopt": optimizer_runner(flaxopt_optimizer("adam"), params, grads),
               "optax": optimizer_runner(optax.adam(LEARNING_RATE), params, grads),
               }
    for label, threads in _torch_thread_variants(bt):
      for impl in ("fused", "foreach"):
        runners[f"torch_{impl}{label}"] = _with_threads(
            bt, threads, bt.TorchAdam(shape, impl, LEARNING_RATE, device).run)
    res = _compare(runners, baseline="torch_fused")
    out[str(size)] = {"shape": list(shape),
                      "ms": {k: 1e3 * v for k, v in res["median_s"].items()},
                      "ratio_to_torch_fused": res["ratio"],
                      "cpu_ratio_to_torch_fused": res["cpu_ratio"], "timing": res,
                      "load": load()}
    print(f"  adam n={size:.0e}: " + ", ".join(
        f"{k} {v:.3f}" for k, v in res["ratio"].items()) + " (time / torch fused)", flush=True)
    del runners
  return out


# ---------------------------------------------------------------------------------------
# Ops: activations, normalizers, pooling, forward and forward+backward.
# ---------------------------------------------------------------------------------------

# name -> (flaxopt fn, reference fn), both x -> y.
ACTIVATIONS: Mapping[str, tuple[Callable, Callable]] = {
    "relu": (F.relu, jax.nn.relu),
    "relu6": (F.relu6, jax.nn.relu6),
    "leaky_relu": (F.leaky_relu, jax.nn.leaky_relu),
    "elu": (F.elu, jax.nn.elu),
    "selu": (F.selu, jax.nn.selu),
    "celu": (F.celu, jax.nn.celu),
    "gelu": (F.gelu, functools.partial(jax.nn.gelu, approximate=False)),
    "silu": (F.silu, jax.nn.silu),
    "sigmoid": (F.sigmoid, jax.nn.sigmoid),
    "tanh": (F.tanh, jnp.tanh),
    "softplus": (F.softplus, jax.nn.softplus),
    "mish": (F.mish, jax.nn.mish),
    "softsign": (F.softsign, jax.nn.soft_sign),
    "hard_sigmoid": (F.hard_sigmoid, jax.nn.hard_sigmoid),
    "hard_tanh": (F.hard_tanh, jax.nn.hard_tanh),
    "hard_swish": (F.hard_swish, jax.nn.hard_swish),
}


def _flax_norm(module: nn.Module, mutable: bool = False) -> Callable:
  """``(x, scale, bias) -> y`` through a flax.linen norm module's ``apply``."""
  def fn(x, scale, bias):
    variables = {"params": {"scale": scale, "bias": bias}}
    if mutable:
      c = x.shape[-1]
      variables["batch_stats"] = {"mean": jnp.zeros(c), "var": jnp.ones(c)}
      return module.apply(variables, x, mutable=["batch_stats"])[0]
    return module.apply(variables, x)
  return fn


NUM_GROUPS = 8
# name -> (flaxopt fn, reference fn), both (x, scale, bias) -> y; flax's eps set to ours.
NORMS: Mapping[str, tuple[Callable, Callable]] = {
    "batch_norm": (lambda x, s, b: F.batch_norm(x, s, b),
                   _flax_norm(nn.BatchNorm(use_running_average=False, epsilon=1e-5), True)),
    "layer_norm": (lambda x, s, b: F.layer_norm(x, s, b),
                   _flax_norm(nn.LayerNorm(epsilon=1e-5))),
    "instance_norm": (lambda x, s, b: F.instance_norm(x, s, b),
                      _flax_norm(nn.InstanceNorm(epsilon=1e-5))),
    "group_norm": (lambda x, s, b: F.group_norm(x, NUM_GROUPS, s, b),
                   _flax_norm(nn.GroupNorm(num_groups=NUM_GROUPS, epsilon=1e-5))),
}

WINDOW = (2, 2)


def _flax_lp_pool(x, p=2.0):
  """``(mean_window |x|^p)^(1/p)`` from flax's avg_pool (no overflow guard)."""
  return nn.avg_pool(jnp.abs(x) ** p, WINDOW, WINDOW) ** (1 / p)


# name -> (flaxopt fn, reference fn), both x -> y, window 2x2, stride 2, VALID.
POOLS: Mapping[str, tuple[Callable, Callable]] = {
    "max_pool": (lambda x: F.max_pool(x, WINDOW), lambda x: nn.max_pool(x, WINDOW, WINDOW)),
    "avg_pool": (lambda x: F.avg_pool(x, WINDOW), lambda x: nn.avg_pool(x, WINDOW, WINDOW)),
    "lp_pool": (lambda x: F.lp_pool(x, 2.0, WINDOW), _flax_lp_pool),
    "mixed_pool": (lambda x: F.mixed_pool(x, 0.5, WINDOW),
                   lambda x: 0.5 * nn.max_pool(x, WINDOW, WINDOW)
                   + 0.5 * nn.avg_pool(x, WINDOW, WINDOW)),
}


def _fwd_bwd(fn: Callable, argnums: Sequence[int]) -> Callable:
  """Jitted forward + backward: grads of ``sum(fn(*args) * cotangent)``, last arg cotangent."""
  def loss(*args):
    *inputs, cot = args
    return jnp.sum(fn(*inputs) * cot)
  return jax.jit(jax.grad(loss, argnums=tuple(argnums)))


def _bench_op_table(table: Mapping[str, tuple[Callable, Callable]], args: tuple,
                    out_shape: tuple, argnums: Sequence[int],
                    only: Optional[Sequence[str]] = None) -> dict:
  cot = jax.random.normal(jax.random.PRNGKey(7), out_shape, args[0].dtype)
  rows = {}
  for name, (ours, ref) in table.items():
    if only is not None and name not in only:
      continue
    row = {}
    for mode in ("forward", "backward"):
      if mode == "forward":
        f, r = jax.jit(ours), jax.jit(ref)
        call_args = args
      else:
        f, r = _fwd_bwd(ours, argnums), _fwd_bwd(ref, argnums)
        call_args = args + (cot,)
      res = _compare({"flaxopt": jax_runner(f, *call_args),
                      "reference": jax_runner(r, *call_args)}, baseline="reference",
                     rounds=min(_rounds(), _OPS_ROUNDS.value), round_s=_round_s() / 2)
      row[mode] = {"flaxopt_us": 1e6 * res["median_s"]["flaxopt"],
                   "reference_us": 1e6 * res["median_s"]["reference"],
                   "ratio": res["ratio"]["flaxopt"], "cpu_ratio": res["cpu_ratio"]["flaxopt"]}
    rows[name] = row
    print(f"  op {name:13s}: forward {row['forward']['ratio']:.3f}, forward+backward "
          f"{row['backward']['ratio']:.3f} (flaxopt / reference)", flush=True)
  return rows


def bench_ops(num_elements: int, only: Optional[Sequence[str]] = None) -> dict:
  """Activations on ``(n/1024, 1024)``; norms and pools on ``(n/(32*32*64), 32, 32, 64)``.

  ``only``: op names to time (default: every entry of ACTIVATIONS, NORMS, POOLS).
  """
  key = jax.random.PRNGKey(0)
  x2 = jax.random.normal(key, (max(1, num_elements // 1024), 1024))
  n4 = max(2, num_elements // (32 * 32 * 64))
  x4 = jax.random.normal(key, (n4, 32, 32, 64))
  scale, bias = jnp.ones(64) * 1.1, jnp.zeros(64) + 0.1
  out = {"load_before": load()}
  out["activations"] = _bench_op_table(ACTIVATIONS, (x2,), x2.shape, (0,), only)
  out["norms"] = _bench_op_table(NORMS, (x4, scale, bias), x4.shape, (0, 1, 2), only)
  out["pools"] = _bench_op_table(POOLS, (x4,), (n4, 16, 16, 64), (0,), only)
  out["shapes"] = {"activations": list(x2.shape), "norms_pools": list(x4.shape)}
  out["load_after"] = load()
  return out


# ---------------------------------------------------------------------------------------
# Memory: optimizer state per parameter.
# ---------------------------------------------------------------------------------------


def bench_memory(shape: tuple[int, int] = (4096, 4096)) -> dict:
  """State bytes per parameter of a ``shape`` float32 matrix, flaxopt and optax (no alloc)."""
  params = jax.ShapeDtypeStruct(shape, jnp.float32)
  size = shape[0] * shape[1]
  rows = {}
  for name in _optimizer_names():
    f = state_bytes(flaxopt_optimizer(name), params)
    o = state_bytes(OPTAX_EQUIVALENTS[name][1](LEARNING_RATE), params)
    rows[name] = {"flaxopt_bytes": f, "flaxopt_bytes_per_param": f / size,
                  "optax_bytes": o, "optax_bytes_per_param": o / size}
  return {"shape": list(shape), "rows": rows}


def _optimizer_names() -> list[str]:
  names = _OPTIMIZERS.value or list(OPTAX_EQUIVALENTS)
  for name in names:
    if name not in OPTAX_EQUIVALENTS:
      raise ValueError(f"No optax equivalent for optimizer {name!r}; valid: "
                       f"{', '.join(OPTAX_EQUIVALENTS)}")
  return names


# ---------------------------------------------------------------------------------------
# Training steps: flaxopt vs hand-written JAX vs PyTorch eager.
# ---------------------------------------------------------------------------------------


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
    _block(sums)
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
    _block(out)
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


def bench_train_step(models: Sequence[str], batches: Sequence[int],
                     data: Optional[Mapping[str, Any]] = None) -> dict:
  """Steps/s of flaxopt's train step, a hand-written JAX step and PyTorch eager (Adam 1e-2)."""
  data = data or load_mnist1d()
  bt = _torch_module()
  threads = bt.num_threads() if bt else None
  out = {"synthetic_data": bool(data["synthetic"]), "torch_threads": threads}
  for model_name in models:
    for batch in batches:
      runners = {"flaxopt": flaxopt_train_runner(model_name, data, batch),
                 "jax_handwritten": handwritten_train_runner(model_name, data, batch)}
      if bt is not None:
        for label, threads in _torch_thread_variants(bt):
          runners[f"torch_eager{label}"] = _with_threads(bt, threads, bt.TorchTrainer(
              model_name, data["x_train"], data["y_train"], batch_size=batch,
              device=_torch_device()).run)
      before = load()
      res = _compare(runners, baseline="flaxopt")
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


def bench_step_overhead(models: Sequence[str], batches: Sequence[int],
                        data: Optional[Mapping[str, Any]] = None) -> dict:
  """Where flaxopt's step loses to the hand-written one: the separate gather dispatch."""
  data = data or load_mnist1d()
  out = {}
  for model_name in models:
    for batch in batches:
      res = _compare({"jax_handwritten": handwritten_train_runner(model_name, data, batch),
                      "flaxopt": flaxopt_train_runner(model_name, data, batch),
                      "flaxopt_fused_gather": fused_gather_train_runner(model_name, data,
                                                                         batch)},
                     baseline="jax_handwritten")
      key = f"{model_name}_b{batch}"
      out[key] = {"us_per_step": {k: 1e6 * v for k, v in res["median_s"].items()},
                  "time_over_handwritten": res["ratio"],
                  "cpu_time_over_handwritten": res["cpu_ratio"], "load": load()}
      print(f"  step overhead {key}: " + ", ".join(
          f"{k} {v:.3f}" for k, v in res["ratio"].items()) + " (time / hand-written)",
            flush=True)
  return out


# ---------------------------------------------------------------------------------------
# End to end: the main job and the PyTorch script, as subprocesses.
# ---------------------------------------------------------------------------------------

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def run_subprocess(cmd: Sequence[str], *, env: Optional[Mapping[str, str]] = None,
                   timeout: Optional[float] = None, cwd: str = REPO) -> dict:
  """Runs ``cmd``; returns wall time, exit code, peak RSS (``wait4``), and output tail."""
  t = time.perf_counter()
  with tempfile.TemporaryFile() as log:
    proc = subprocess.Popen(cmd, cwd=cwd, env=dict(env or os.environ), stdout=log,
                            stderr=subprocess.STDOUT)
    deadline = None if timeout is None else t + timeout
    status, usage = 0, None
    while True:
      pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
      if pid:
        break
      if deadline is not None and time.perf_counter() > deadline:
        proc.kill()
        _, status, usage = os.wait4(proc.pid, 0)
        break
      time.sleep(0.02)
    wall = time.perf_counter() - t
    proc.returncode = os.waitstatus_to_exitcode(status)
    log.seek(0)
    tail = log.read().decode(errors="replace")[-3000:]
  timed_out = deadline is not None and wall > timeout
  return {"wall_s": wall, "returncode": proc.returncode, "timed_out": timed_out,
          "maxrss_bytes": usage.ru_maxrss * 1024, "user_s": usage.ru_utime,
          "sys_s": usage.ru_stime, "output_tail": tail}


def _drop_log_if_ok(res: dict) -> None:
  if res["returncode"] == 0:
    res.pop("output_tail")


def _python() -> str:
  return sys.executable


def bench_end_to_end(repeats: int, steps: int, extra_args: Sequence[str] = (),
                     data: Optional[Mapping[str, Any]] = None, torch_threads: int = 1) -> dict:
  """Main job vs the PyTorch recipe, alternating; the first flaxopt run has a cold XLA cache."""
  tmp = tempfile.mkdtemp(prefix="bench_e2e_")
  try:
    data = data or load_mnist1d()
    npz = os.path.join(tmp, "mnist1d.npz")
    np.savez(npz, **{k: data[k] for k in ("x_train", "y_train", "x_test", "y_test")})
    cache = os.path.join(tmp, "xla_cache")
    bt = _torch_module()
    runs: dict[str, list] = {"flaxopt_cold_cache": [], "flaxopt_warm_cache": [],
                             "torch": []}
    for r in range(repeats):
      workdir = os.path.join(tmp, f"flaxopt_{r}")
      cmd = [_python(), "-m", "experiments.train", f"--workdir={workdir}",
             f"--jax_cache_dir={cache}", f"--config.num_train_steps={steps}", *extra_args]
      before = load()
      res = run_subprocess(cmd)
      res["load_before"], res["load_after"] = before, load()
      summary_path = os.path.join(workdir, "summary.json")
      if os.path.exists(summary_path):
        with open(summary_path) as f:
          summary = json.load(f)
        res["summary"] = {k: summary.get(k) for k in (
            "status", "step", "wall_time", "setup_time", "compile_time", "train_time",
            "steps_per_sec", "final")}
      _drop_log_if_ok(res)
      runs["flaxopt_cold_cache" if r == 0 else "flaxopt_warm_cache"].append(res)
      print(f"  e2e flaxopt run {r}: {res['wall_s']:.1f} s (rc {res['returncode']})", flush=True)
      if bt is not None:
        out_json = os.path.join(tmp, f"torch_{r}.json")
        tworkdir = os.path.join(tmp, f"torch_{r}")
        os.makedirs(tworkdir)
        cmd = [_python(), "-m", "experiments.bench_torch", f"--data={npz}", f"--out={out_json}",
               f"--steps={steps}", f"--workdir={tworkdir}", f"--threads={torch_threads}"]
        before = load()
        res = run_subprocess(cmd)
        res["load_before"], res["load_after"] = before, load()
        if os.path.exists(out_json):
          with open(out_json) as f:
            res["summary"] = json.load(f)
        _drop_log_if_ok(res)
        runs["torch"].append(res)
        print(f"  e2e torch run {r}: {res['wall_s']:.1f} s (rc {res['returncode']})",
              flush=True)
  finally:
    shutil.rmtree(tmp, ignore_errors=True)
  med = {k: statistics.median(x["wall_s"] for x in v) for k, v in runs.items() if v}
  return {"steps": steps, "runs": runs, "median_wall_s": med, "torch_threads": torch_threads,
          "synthetic_data": bool(data["synthetic"])}


# ---------------------------------------------------------------------------------------
# Scaling over forced CPU devices (subprocess workers).
# ---------------------------------------------------------------------------------------


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
      res = run_subprocess([_python(), "-m", "experiments.benchmark", "--worker=scaling",
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


def metadata() -> dict:
  """Device kind, library versions, time and load: the ``meta`` entry of the results."""
  import flax  # pylint: disable=g-import-not-at-top
  dev = jax.devices()[0]
  meta = {"device_kind": dev.device_kind, "platform": dev.platform,
          "num_devices": jax.device_count(), "jax": jax.__version__, "flax": flax.__version__,
          "optax": optax.__version__, "python": platform.python_version(),
          "machine": platform.machine(), "processor": platform.processor(),
          "time_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), **load()}
  bt = _torch_module()
  if bt is not None:
    meta["torch"] = bt.torch.__version__
  return meta


def _fmt(x: Optional[float], digits: int = 2) -> str:
  return "n/a" if x is None else f"{x:.{digits}f}"


def _best_torch_ratio(ratio: Mapping[str, float], prefix: str) -> float:
  """flaxopt's time over the fastest PyTorch thread variant named ``prefix*``.

  ``ratio`` holds per-round ``t_k / t_base``; ``t_flaxopt / t_best = ratio[flaxopt] /
  ratio[best]`` (each a median over rounds).
  """
  best = min(v for k, v in ratio.items() if k.startswith(prefix))
  return ratio["flaxopt"] / best


def markdown(results: Mapping[str, Any]) -> str:
  """The result tables as Markdown (what docs/readme/benchmarks.md quotes)."""
  lines = []
  meta = results.get("meta", {})
  lines.append(f"Device: {meta.get('device_kind')} ({meta.get('cpus')} CPUs), jax "
               f"{meta.get('jax')}, torch {meta.get('torch', 'n/a')}, load at start "
               f"{meta.get('loadavg')}.\n")
  bw = results.get("bandwidth")
  if bw:
    lines.append("Copy bandwidth (read + write): " + ", ".join(
        f"{k} {v:.1f} GB/s" for k, v in bw["GBps"].items()) + "\n")
  opt = results.get("optimizers")
  if opt:
    sizes = list(opt)
    lines.append("| optimizer | " + " | ".join(
        f"flaxopt / optax @ {float(s):.0e} | GB/s @ {float(s):.0e}" for s in sizes) + " |")
    lines.append("|---|" + "---:|---:|" * len(sizes))
    for name in opt[sizes[0]]["rows"]:
      cells = []
      for s in sizes:
        row = opt[s]["rows"].get(name)
        frac = row and row["fraction_of_copy"]
        cells += [_fmt(row and row["ratio"]),
                  f"{row['GBps']:.1f}" + (f" ({100 * frac:.0f}%)" if frac else "")
                  if row else "n/a"]
      lines.append(f"| {name} | " + " | ".join(cells) + " |")
    lines.append("")
  ta = results.get("torch_adam")
  if ta and "skipped" not in ta:
    impls = list(next(iter(ta.values()))["ms"])
    lines.append("| params | " + " | ".join(f"{k} ms" for k in impls) +
                 " | flaxopt / torch fused (best of threads) |")
    lines.append("|---|" + "---:|" * (len(impls) + 1))
    for s, row in ta.items():
      lines.append(f"| {float(s):.0e} | " + " | ".join(f"{row['ms'][k]:.2f}" for k in impls) +
                   f" | {_best_torch_ratio(row['ratio_to_torch_fused'], 'torch_fused'):.2f} |")
    lines.append("")
  ops = results.get("ops")
  if ops:
    lines.append("| op | forward flaxopt / ref | fwd+bwd flaxopt / ref | fwd us | fwd+bwd us |")
    lines.append("|---|---:|---:|---:|---:|")
    for group in ("activations", "norms", "pools"):
      for name, row in ops[group].items():
        lines.append(f"| {name} | {row['forward']['ratio']:.2f} | "
                     f"{row['backward']['ratio']:.2f} | {row['forward']['flaxopt_us']:.0f} | "
                     f"{row['backward']['flaxopt_us']:.0f} |")
    lines.append("")
  mem = results.get("memory")
  if mem:
    lines.append("| optimizer | flaxopt bytes/param | optax bytes/param |")
    lines.append("|---|---:|---:|")
    for name, row in mem["rows"].items():
      lines.append(f"| {name} | {row['flaxopt_bytes_per_param']:.4f} | "
                   f"{row['optax_bytes_per_param']:.4f} |")
    lines.append("")
  tr = results.get("train_step")
  if tr:
    rows = {k: v for k, v in tr.items() if isinstance(v, dict) and "steps_per_sec" in v}
    impls = list(next(iter(rows.values()))["steps_per_sec"]) if rows else []
    lines.append("| model, batch | " + " | ".join(f"{k} steps/s" for k in impls) +
                 " | flaxopt / JAX | flaxopt / PyTorch (best) |")
    lines.append("|---|" + "---:|" * (len(impls) + 2))
    for key, row in rows.items():
      sps, sp = row["steps_per_sec"], row["flaxopt_speedup_over"]
      torch_keys = [k for k in sp if k.startswith("torch")]
      best = min(sp[k] for k in torch_keys) if torch_keys else None
      lines.append(f"| {key} | " + " | ".join(f"{sps[k]:.0f}" for k in impls) +
                   f" | {sp['jax_handwritten']:.2f} | {_fmt(best)} |")
    lines.append("")
  so = results.get("step_overhead")
  if so:
    lines.append("| model, batch | flaxopt / hand-written (time) | flaxopt fused gather / "
                 "hand-written (time) | same, CPU time |")
    lines.append("|---|---:|---:|---:|")
    for key, row in so.items():
      t, c = row["time_over_handwritten"], row["cpu_time_over_handwritten"]
      lines.append(f"| {key} | {t['flaxopt']:.2f} | {t['flaxopt_fused_gather']:.2f} | "
                   f"{c['flaxopt']:.2f} / {c['flaxopt_fused_gather']:.2f} |")
    lines.append("")
  e2e = results.get("end_to_end")
  if e2e:
    lines.append("| job | wall s (median) | compile s | steps/s | peak RSS MiB | test acc |")
    lines.append("|---|---:|---:|---:|---:|---:|")
    for name, runs in e2e["runs"].items():
      for r in runs:
        s = r.get("summary", {})
        lines.append(f"| {name} | {r['wall_s']:.1f} | {_fmt(s.get('compile_time'))} | "
                     f"{_fmt(s.get('steps_per_sec'), 0)} | {r['maxrss_bytes'] / 2**20:.0f} | "
                     f"{_fmt((s.get('final') or {}).get('test_accuracy'), 3)} |")
    lines.append("")
  sc = results.get("scaling")
  if sc:
    lines.append("| parallel | devices | steps/s |")
    lines.append("|---|---:|---:|")
    for row in sc["rows"]:
      lines.append(f"| {row['parallel']} | {row['devices']} | "
                   f"{_fmt(row.get('steps_per_sec'), 0)}"
                   f"{' (timed out)' if row['timed_out'] else ''} |")
    lines.append("")
  return "\n".join(lines)


def plot(results: Mapping[str, Any], outdir: str, suffix: str = "") -> list[str]:
  """bench_optimizers, bench_ops, bench_train, bench_scaling ``{suffix}.png`` (those with data)."""
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
  os.makedirs(outdir, exist_ok=True)
  kind = results.get("meta", {}).get("device_kind", "")
  written = []

  def save(fig, name):
    path = os.path.join(outdir, name.replace(".png", f"{suffix}.png"))
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    written.append(path)

  opt = results.get("optimizers")
  if opt:
    fig, ax = plt.subplots(figsize=(9, 3.5))
    sizes = list(opt)
    names = list(opt[sizes[0]]["rows"])
    width = 0.8 / len(sizes)
    for i, s in enumerate(sizes):
      vals = [opt[s]["rows"][n]["ratio"] for n in names]
      ax.bar(np.arange(len(names)) + i * width, vals, width, label=f"{float(s):.0e} params")
    ax.axhline(1.0, color="k", lw=0.8)
    ax.axhline(1.1, color="r", lw=0.8, ls="--", label="target 1.1")
    ax.set_xticks(np.arange(len(names)) + width * (len(sizes) - 1) / 2, names, rotation=30)
    ax.set_ylabel("update time, flaxopt / optax")
    ax.set_title(f"Optimizer update (jit, donated), {kind}")
    ax.legend(fontsize=8)
    save(fig, "bench_optimizers.png")
  ops = results.get("ops")
  if ops:
    names, fwd, bwd = [], [], []
    for group in ("activations", "norms", "pools"):
      for name, row in ops[group].items():
        names.append(name)
        fwd.append(row["forward"]["ratio"])
        bwd.append(row["backward"]["ratio"])
    fig, ax = plt.subplots(figsize=(11, 3.5))
    x = np.arange(len(names))
    ax.bar(x - 0.2, fwd, 0.4, label="forward")
    ax.bar(x + 0.2, bwd, 0.4, label="forward + backward")
    ax.axhline(1.0, color="k", lw=0.8)
    ax.set_xticks(x, names, rotation=45, ha="right")
    ax.set_ylabel("time, flaxopt / reference")
    ax.set_title(f"Ops vs jax.nn / flax.linen, {kind}")
    ax.legend(fontsize=8)
    save(fig, "bench_ops.png")
  tr = results.get("train_step")
  if tr:
    keys = [k for k, v in tr.items() if isinstance(v, dict) and "steps_per_sec" in v]
    impls = list(tr[keys[0]]["steps_per_sec"]) if keys else []
    fig, ax = plt.subplots(figsize=(8, 3.5))
    x = np.arange(len(keys))
    for i, impl in enumerate(impls):
      vals = [tr[k]["steps_per_sec"].get(impl, 0.0) for k in keys]
      w = 0.8 / len(impls)
      ax.bar(x + (i - (len(impls) - 1) / 2) * w, vals, w, label=impl)
    ax.set_xticks(x, keys)
    ax.set_ylabel("steps / s")
    ax.set_title(f"MNIST-1D train step, Adam, {kind}")
    ax.legend(fontsize=8)
    save(fig, "bench_train.png")
  sc = results.get("scaling")
  if sc:
    fig, ax = plt.subplots(figsize=(5, 3.5))
    for parallel in ("jit", "pmap"):
      rows = [r for r in sc["rows"] if r["parallel"] == parallel and "steps_per_sec" in r]
      ax.plot([r["devices"] for r in rows], [r["steps_per_sec"] for r in rows], "o-",
              label=parallel)
    ax.set_xlabel("forced CPU devices")
    ax.set_ylabel("steps / s")
    ax.set_title("MLP, batch 512")
    ax.legend()
    save(fig, "bench_scaling.png")
  return written


def _jsonable(x: Any) -> Any:
  if isinstance(x, Mapping):
    return {str(k): _jsonable(v) for k, v in x.items()}
  if isinstance(x, (list, tuple)):
    return [_jsonable(v) for v in x]
  if isinstance(x, (np.generic,)):
    return x.item()
  if isinstance(x, float) and not math.isfinite(x):
    return str(x)
  return x


def write_results(results: Mapping[str, Any], path: str) -> None:
  """Merges ``results`` into the JSON at ``path`` (sections replaced, others kept)."""
  old = {}
  if os.path.exists(path):
    with open(path) as f:
      old = json.load(f)
  results = _jsonable(results)
  sections = {**old.get("meta", {}).get("sections", {}),
              **results.get("meta", {}).get("sections", {})}
  merged = {**old, **results}
  merged["meta"] = {**results.get("meta", {}), "sections": sections}
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  with open(path + ".tmp", "w") as f:
    json.dump(merged, f, indent=1)
  os.replace(path + ".tmp", path)


# ---------------------------------------------------------------------------------------
# Main.
# ---------------------------------------------------------------------------------------

SECTIONS: Mapping[str, Callable[[dict], dict]] = {
    "bandwidth": lambda r: bench_bandwidth(2**26 if _QUICK.value else 2**28),
    "optimizers": lambda r: bench_optimizers(
        [_size(s) for s in _OPT_SIZES.value], _optimizer_names(),
        (r.get("bandwidth") or {}).get("reference_GBps")),
    "torch_adam": lambda r: bench_torch_adam([_size(s) for s in _TORCH_ADAM_SIZES.value]),
    "ops": lambda r: bench_ops(_OPS_ELEMENTS.value),
    "memory": lambda r: bench_memory(),
    "train_step": lambda r: bench_train_step(_TRAIN_MODELS.value,
                                             [int(b) for b in _TRAIN_BATCHES.value]),
    "step_overhead": lambda r: bench_step_overhead(_TRAIN_MODELS.value,
                                                   [int(b) for b in _TRAIN_BATCHES.value]),
    "end_to_end": lambda r: bench_end_to_end(
        1 if _QUICK.value else _E2E_REPEATS.value,
        min(_E2E_STEPS.value, 1000) if _QUICK.value else _E2E_STEPS.value, _E2E_ARGS.value,
        torch_threads=_E2E_TORCH_THREADS.value),
    "scaling": lambda r: bench_scaling([int(n) for n in _SCALING_DEVICES.value],
                                       _SCALING_STEPS.value, _SCALING_TIMEOUT.value),
}


def run_sections(names: Iterable[str]) -> dict:
  """Runs the named sections in order; returns ``{'meta': ..., section: result}``."""
  results: dict[str, Any] = {"meta": metadata()}
  for name in names:
    if name not in SECTIONS:
      raise ValueError(f"Unknown section {name!r}; valid: {', '.join(SECTIONS)}")
  for name in names:
    print(f"[{name}] load {load()['loadavg']}", flush=True)
    t = time.perf_counter()
    before = load()
    results[name] = SECTIONS[name](results)
    results["meta"].setdefault("sections", {})[name] = {
        "load_before": before, "load_after": load(), "seconds": time.perf_counter() - t}
  results["meta"]["loadavg_end"] = load()["loadavg"]
  results["meta"]["maxrss_bytes"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
  return results


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {' '.join(argv[1:])}")
  if _WORKER.value == "scaling":
    print("SCALING_RESULT " + json.dumps(scaling_worker(**json.loads(_WORKER_ARGS.value))),
          flush=True)
    return
  if _FROM_JSON.value:  # report a saved run: plots and tables only
    with open(_FROM_JSON.value) as f:
      results = json.load(f)
  else:
    results = run_sections([s.strip() for s in _SECTIONS.value if s.strip()])
  if _OUT.value and not _FROM_JSON.value:
    # Report everything in the file, this run's sections replacing older ones.
    write_results(results, _OUT.value)
    with open(_OUT.value) as f:
      results = json.load(f)
  if _PLOTS.value:
    print("plots:", plot(results, _PLOTS.value, _PLOT_SUFFIX.value))
  text = markdown(results)
  if _MARKDOWN.value:
    with open(_MARKDOWN.value, "w") as f:
      f.write(text)
  print(text)


if __name__ == "__main__":
  app.run(main)
