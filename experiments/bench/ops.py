"""Op measurements: activations, normalizers, pooling, forward and forward+backward (jitted),
against jax.nn / flax.linen (or a composition of flax ops)."""

from __future__ import annotations

import functools
from typing import Callable, Mapping, Optional, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from experiments.bench import options
from experiments.bench.timing import jax_runner
from experiments.bench.timing import load
import flaxopt.functional as F


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
                    out_shape: tuple, argnums: Sequence[int], opts: options.Options,
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
      runners = {"flaxopt": jax_runner(f, *call_args),
                 "reference": jax_runner(r, *call_args)}
      res = options.compare(runners, opts, baseline="reference",
                            rounds=min(opts.timing_rounds, opts.ops_rounds),
                            round_s=opts.timing_round_s / 2)
      row[mode] = {"flaxopt_us": 1e6 * res["median_s"]["flaxopt"],
                   "reference_us": 1e6 * res["median_s"]["reference"],
                   "ratio": res["ratio"]["flaxopt"], "cpu_ratio": res["cpu_ratio"]["flaxopt"]}
    rows[name] = row
    print(f"  op {name:13s}: forward {row['forward']['ratio']:.3f}, forward+backward "
          f"{row['backward']['ratio']:.3f} (flaxopt / reference)", flush=True)
  return rows


def bench_ops(num_elements: int, opts: options.Options,
              only: Optional[Sequence[str]] = None) -> dict:
  """Activations on ``(n/1024, 1024)``; norms and pools on ``(n/(32*32*64), 32, 32, 64)``.

  ``only``: op names to time (default: every entry of ACTIVATIONS, NORMS, POOLS).
  """
  key = jax.random.PRNGKey(0)
  x2 = jax.random.normal(key, (max(1, num_elements // 1024), 1024))
  n4 = max(2, num_elements // (32 * 32 * 64))
  x4 = jax.random.normal(key, (n4, 32, 32, 64))
  scale, bias = jnp.ones(64) * 1.1, jnp.zeros(64) + 0.1
  out = {"load_before": load()}
  out["activations"] = _bench_op_table(ACTIVATIONS, (x2,), x2.shape, (0,), opts, only)
  out["norms"] = _bench_op_table(NORMS, (x4, scale, bias), x4.shape, (0, 1, 2), opts,
                                  only)
  out["pools"] = _bench_op_table(POOLS, (x4,), (n4, 16, 16, 64), (0,), opts, only)
  out["shapes"] = {"activations": list(x2.shape), "norms_pools": list(x4.shape)}
  out["load_after"] = load()
  return out


