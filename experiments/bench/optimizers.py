"""Optimizer measurements: memory bandwidth, update time against optax, Adam against PyTorch,
and optimizer-state bytes per parameter."""

from __future__ import annotations

import math
from typing import Any, Callable, Mapping, Optional, Sequence

import jax
import jax.numpy as jnp
import numpy as np
import optax

from experiments.bench import options
from experiments.bench import timing
from experiments.bench.timing import interleaved
from experiments.bench.timing import load
from experiments.bench.timing import Runner
from experiments.bench.timing import stateful_runner
from flaxopt import registry


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
    timing.block(x)

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


def bench_optimizers(sizes: Sequence[int], names: Sequence[str], copy_GBps: Optional[float],
                     opts: options.Options) -> dict:
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
      runners = {"flaxopt": optimizer_runner(tx_f, params, grads),
                 "optax": optimizer_runner(tx_o, params, grads)}
      res = options.compare(runners, opts, baseline="optax")
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


def bench_torch_adam(sizes: Sequence[int], opts: options.Options) -> dict:
  """flaxopt Adam vs PyTorch's fused and foreach Adam (and optax Adam) on one matrix."""
  bt = options.torch_module(opts)
  if bt is None:
    return {"skipped": "torch not available"}
  bt.num_threads()
  device = options.torch_device()
  out = {}
  for size in sizes:
    shape = param_shape(size)
    params = {"w": jax.random.normal(jax.random.PRNGKey(0), shape)}
    grads = {"w": jax.random.normal(jax.random.PRNGKey(1), shape)}
    runners = {"flaxopt": optimizer_runner(flaxopt_optimizer("adam"), params, grads),
               "optax": optimizer_runner(optax.adam(LEARNING_RATE), params, grads),
               }
    for label, threads in options.torch_thread_variants(opts):
      for impl in ("fused", "foreach"):
        runners[f"torch_{impl}{label}"] = options.with_threads(
            bt, threads, bt.TorchAdam(shape, impl, LEARNING_RATE, device).run)
    res = options.compare(runners, opts, baseline="torch_fused")
    out[str(size)] = {"shape": list(shape),
                      "ms": {k: 1e3 * v for k, v in res["median_s"].items()},
                      "ratio_to_torch_fused": res["ratio"],
                      "cpu_ratio_to_torch_fused": res["cpu_ratio"], "timing": res,
                      "load": load()}
    print(f"  adam n={size:.0e}: " + ", ".join(
        f"{k} {v:.3f}" for k, v in res["ratio"].items()) + " (time / torch fused)", flush=True)
    del runners
  return out


def bench_memory(names: Sequence[str], shape: tuple[int, int] = (4096, 4096)) -> dict:
  """State bytes per parameter of a ``shape`` float32 matrix, flaxopt and optax (no alloc)."""
  params = jax.ShapeDtypeStruct(shape, jnp.float32)
  size = shape[0] * shape[1]
  rows = {}
  for name in names:
    f = state_bytes(flaxopt_optimizer(name), params)
    o = state_bytes(OPTAX_EQUIVALENTS[name][1](LEARNING_RATE), params)
    rows[name] = {"flaxopt_bytes": f, "flaxopt_bytes_per_param": f / size,
                  "optax_bytes": o, "optax_bytes_per_param": o / size}
  return {"shape": list(shape), "rows": rows}


def optimizer_names(names: Sequence[str] = ()) -> list[str]:
  """``names`` (default: every optimizer with an optax equivalent), checked."""
  names = list(names) or list(OPTAX_EQUIVALENTS)
  for name in names:
    if name not in OPTAX_EQUIVALENTS:
      raise ValueError(f"No optax equivalent for optimizer {name!r}; valid: "
                       f"{', '.join(OPTAX_EQUIVALENTS)}")
  return names


