"""The benchmark's sections: name -> measurement, each ``fn(opts, results_so_far) -> dict``."""

from __future__ import annotations

import resource
import time
from typing import Any, Callable, Iterable, Mapping

from experiments.bench import end_to_end
from experiments.bench import ops
from experiments.bench import optimizers
from experiments.bench import options
from experiments.bench import report
from experiments.bench import stacked
from experiments.bench import train
from experiments.bench.timing import load

Section = Callable[[options.Options, Mapping[str, Any]], dict]

SECTIONS: Mapping[str, Section] = {
    "bandwidth": lambda o, r: optimizers.bench_bandwidth(2**26 if o.quick else 2**28),
    "optimizers": lambda o, r: optimizers.bench_optimizers(
        o.opt_sizes, optimizers.optimizer_names(o.optimizers),
        (r.get("bandwidth") or {}).get("reference_GBps"), o),
    "torch_adam": lambda o, r: optimizers.bench_torch_adam(o.torch_adam_sizes, o),
    "ops": lambda o, r: ops.bench_ops(o.ops_elements, o),
    "memory": lambda o, r: optimizers.bench_memory(optimizers.optimizer_names(o.optimizers)),
    "train_step": lambda o, r: train.bench_train_step(o.train_models, o.train_batches, o),
    "step_overhead": lambda o, r: train.bench_step_overhead(o.train_models, o.train_batches, o),
    "end_to_end": lambda o, r: end_to_end.bench_end_to_end(o, train.load_mnist1d()),
    "scaling": lambda o, r: train.bench_scaling(o.scaling_devices, o.scaling_steps,
                                                o.scaling_timeout),
    "stacked": lambda o, r: stacked.bench_stacked(o.stacked_models, o.stacked_members, 100, o),
    "stacked_study": lambda o, r: stacked.bench_stacked_study(
        o.stacked_models, o.stacked_study_steps, o.stacked_study_repeats),
}
DEFAULT_SECTIONS = ("bandwidth", "optimizers", "torch_adam", "ops", "memory", "train_step",
                    "end_to_end", "scaling")


def run_sections(names: Iterable[str], opts: options.Options) -> dict:
  """Runs the named sections in order; returns ``{'meta': ..., section: result}``."""
  names = list(names)
  for name in names:
    if name not in SECTIONS:
      raise ValueError(f"sections: unknown section {name!r}; valid: {', '.join(SECTIONS)}")
  results: dict[str, Any] = {"meta": report.metadata(opts)}
  for name in names:
    print(f"[{name}] load {load()['loadavg']}", flush=True)
    t = time.perf_counter()
    before = load()
    results[name] = SECTIONS[name](opts, results)
    results["meta"].setdefault("sections", {})[name] = {
        "load_before": before, "load_after": load(), "seconds": time.perf_counter() - t}
  results["meta"]["loadavg_end"] = load()["loadavg"]
  results["meta"]["maxrss_bytes"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
  return results
