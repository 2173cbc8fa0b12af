"""The benchmark's report: metadata, the results JSON, Markdown tables, plots."""

from __future__ import annotations

import json
import math
import os
import platform
import time
from typing import Any, Mapping, Optional

import jax
import numpy as np
import optax

from experiments.bench import options
from experiments.bench import tables
from experiments.bench.timing import load


def metadata(opts: options.Options) -> dict:
  """Device kind, library versions, time and load: the ``meta`` entry of the results."""
  import flax  # pylint: disable=g-import-not-at-top
  dev = jax.devices()[0]
  meta = {"device_kind": dev.device_kind, "platform": dev.platform,
          "num_devices": jax.device_count(), "jax": jax.__version__, "flax": flax.__version__,
          "optax": optax.__version__, "python": platform.python_version(),
          "machine": platform.machine(), "processor": platform.processor(),
          "time_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), **load()}
  bt = options.torch_module(opts)
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
  for name, table in tables.TABLES.items():
    if results.get(name):
      lines += [table(results[name]), ""]
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
