r"""How fast flaxopt does its work, next to optax, flax / jax.nn and PyTorch, side by side.

A thin main over ``experiments/bench/`` (the timing harness, one module per group of
measurements, the report): the flags become one frozen ``bench.options.Options`` passed down.
Every comparison runs its candidates in one process, interleaved, and reports medians of
per-round ratios (``bench/timing.py``); the machine is shared and noisy.

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
                  time, compile time, steps/s (from summary.json) and peak RSS. Both sides
                  evaluate on the test set every ``--e2e_eval_every`` steps (default 1000).
* ``scaling``     steps/s of the MLP (batch 512) over 1, 2, 4 forced CPU devices, jit and
                  pmap, each in a subprocess with a hard timeout (docs/design.md: conv
                  all-reduces hang on forced devices, so dense only).
* ``stacked``     (not in the default list) member-steps/s of stacks of ``--stacked_members``
                  runs (seeds x learning rates, the loop's vmapped step) against one solo run,
                  interleaved, MNIST-1D CNN and MLP at batch 100 (``bench/stacked.py``).
* ``stacked_study`` (not in the default list) the wall time of a 16-run study through
                  ``experiments.compare`` with ``--max_members=16`` vs ``--max_members=1``.

Usage::

  python -m experiments.benchmark --out=docs/benchmarks/cpu_results.json --plots=docs/images
  python -m experiments.benchmark --quick --sections=optimizers,ops,train_step  # e.g. on a GPU
  python -m experiments.benchmark --opt_sizes=1e6,1e7,5e7  # 50M-parameter updates too

The results JSON records ``jax.devices()[0].device_kind``; ``--markdown`` prints its tables.
"""

from __future__ import annotations
import json

from absl import app
from absl import flags

from experiments.bench import options as options_lib
from experiments.bench import report
from experiments.bench import sections as sections_lib
from experiments.bench import train

_D = options_lib.Options()  # the defaults, one source
_SECTIONS = flags.DEFINE_list("sections", list(sections_lib.DEFAULT_SECTIONS),
                              "Sections to run (see the module docstring).")
_QUICK = flags.DEFINE_bool("quick", _D.quick, "Smaller sizes and fewer rounds (a first look / "
                           "GPU).")
_OUT = flags.DEFINE_string("out", "", "Results JSON ('' : do not write).")
_PLOTS = flags.DEFINE_string("plots", "", "Directory for bench_*.png plots ('' : none).")
_FROM_JSON = flags.DEFINE_string("from_json", "", "Run nothing; plot and tabulate this file.")
_PLOT_SUFFIX = flags.DEFINE_string("plot_suffix", "", "Appended to the plot file names.")
_MARKDOWN = flags.DEFINE_string("markdown", "", "Write the result tables as Markdown here.")
_ROUNDS = flags.DEFINE_integer("rounds", _D.rounds, "Interleaved rounds per comparison.")
_ROUND_S = flags.DEFINE_float("round_s", _D.round_s, "Target seconds per candidate per round.")
_OPS_ROUNDS = flags.DEFINE_integer("ops_rounds", _D.ops_rounds,
                                   "Interleaved rounds per op comparison.")
_OPT_SIZES = flags.DEFINE_list("opt_sizes", [f"{s:.0e}" for s in _D.opt_sizes],
                               "Parameter counts, optimizers.")
_OPTIMIZERS = flags.DEFINE_list("optimizers", list(_D.optimizers),
                                "Optimizer names ([] : all first-order).")
_TORCH_ADAM_SIZES = flags.DEFINE_list("torch_adam_sizes", [f"{s:.0e}" for s in _D.torch_adam_sizes],
                                      "Parameter counts, flaxopt Adam vs PyTorch Adam.")
_OPS_ELEMENTS = flags.DEFINE_integer("ops_elements", _D.ops_elements, "Elements per op input.")
_TRAIN_MODELS = flags.DEFINE_list("train_models", list(_D.train_models), "Models, train_step.")
_TRAIN_BATCHES = flags.DEFINE_list("train_batches", [str(b) for b in _D.train_batches],
                                   "Batch sizes, train_step.")
_E2E_REPEATS = flags.DEFINE_integer("e2e_repeats", _D.e2e_repeats, "Runs of each end-to-end job.")
_E2E_STEPS = flags.DEFINE_integer("e2e_steps", _D.e2e_steps,
                                  "Training steps of both end-to-end jobs.")
_E2E_EVAL_EVERY = flags.DEFINE_integer("e2e_eval_every", _D.e2e_eval_every,
                                       "Steps between test-set evaluations, both end-to-end jobs.")
_E2E_ARGS = flags.DEFINE_list("e2e_args", list(_D.e2e_args),
                              "Extra --config.x=y flags for experiments.train.")
_E2E_TORCH_THREADS = flags.DEFINE_integer(
    "e2e_torch_threads", _D.e2e_torch_threads, "PyTorch threads of the end-to-end script (0: "
    "every core; see bench.options.torch_thread_variants for why 1 on a shared machine).")
_SCALING_DEVICES = flags.DEFINE_list("scaling_devices", [str(n) for n in _D.scaling_devices],
                                     "Forced CPU devices.")
_SCALING_STEPS = flags.DEFINE_integer("scaling_steps", _D.scaling_steps,
                                      "Timed steps per scaling worker.")
_SCALING_TIMEOUT = flags.DEFINE_integer("scaling_timeout", _D.scaling_timeout,
                                        "Seconds before a scaling worker is killed.")
_STACKED_MEMBERS = flags.DEFINE_list("stacked_members", [str(k) for k in _D.stacked_members],
                                     "Stack sizes K, section stacked.")
_STACKED_MODELS = flags.DEFINE_list("stacked_models", list(_D.stacked_models),
                                    "MNIST-1D models, sections stacked and stacked_study.")
_STACKED_STUDY_STEPS = flags.DEFINE_integer("stacked_study_steps", _D.stacked_study_steps,
                                            "Steps of each run of the 16-run study.")
_STACKED_STUDY_REPEATS = flags.DEFINE_integer("stacked_study_repeats",
                                              _D.stacked_study_repeats,
                                              "Alternating repeats of each study command.")
_TORCH = flags.DEFINE_bool("torch", _D.torch, "Run the PyTorch comparisons (if torch imports).")
_TORCH_1THREAD = flags.DEFINE_bool("torch_1thread", _D.torch_1thread,
                                   "Also time PyTorch with 1 thread.")
_WORKER = flags.DEFINE_string("worker", "", "Internal: 'scaling' runs one scaling measurement.")
_WORKER_ARGS = flags.DEFINE_string("worker_args", "{}", "Internal: JSON kwargs of the worker.")


def _ints(texts) -> tuple[int, ...]:
  return tuple(int(float(t)) for t in texts)


def options_from_flags() -> options_lib.Options:
  """The one frozen options record every measurement takes."""
  return options_lib.Options(
      quick=_QUICK.value, rounds=_ROUNDS.value, round_s=_ROUND_S.value,
      ops_rounds=_OPS_ROUNDS.value, opt_sizes=_ints(_OPT_SIZES.value),
      optimizers=tuple(_OPTIMIZERS.value), torch_adam_sizes=_ints(_TORCH_ADAM_SIZES.value),
      ops_elements=_OPS_ELEMENTS.value, train_models=tuple(_TRAIN_MODELS.value),
      train_batches=_ints(_TRAIN_BATCHES.value), e2e_repeats=_E2E_REPEATS.value,
      e2e_steps=_E2E_STEPS.value, e2e_eval_every=_E2E_EVAL_EVERY.value,
      e2e_args=tuple(_E2E_ARGS.value), e2e_torch_threads=_E2E_TORCH_THREADS.value,
      scaling_devices=_ints(_SCALING_DEVICES.value), scaling_steps=_SCALING_STEPS.value,
      scaling_timeout=_SCALING_TIMEOUT.value, torch=_TORCH.value,
      stacked_members=_ints(_STACKED_MEMBERS.value), stacked_models=tuple(_STACKED_MODELS.value),
      stacked_study_steps=_STACKED_STUDY_STEPS.value,
      stacked_study_repeats=_STACKED_STUDY_REPEATS.value,
      torch_1thread=_TORCH_1THREAD.value)


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {' '.join(argv[1:])}")
  if _WORKER.value == "scaling":
    print("SCALING_RESULT " + json.dumps(train.scaling_worker(**json.loads(_WORKER_ARGS.value))),
          flush=True)
    return
  if _FROM_JSON.value:  # report a saved run: plots and tables only
    with open(_FROM_JSON.value) as f:
      results = json.load(f)
  else:
    try:
      opts = options_from_flags()
      names = [s.strip() for s in _SECTIONS.value if s.strip()]
      results = sections_lib.run_sections(names, opts)
    except ValueError as e:
      raise app.UsageError(str(e)) from None
  if _OUT.value and not _FROM_JSON.value:
    # Report everything in the file, this run's sections replacing older ones.
    report.write_results(results, _OUT.value)
    with open(_OUT.value) as f:
      results = json.load(f)
  if _PLOTS.value:
    print("plots:", report.plot(results, _PLOTS.value, _PLOT_SUFFIX.value))
  text = report.markdown(results)
  if _MARKDOWN.value:
    with open(_MARKDOWN.value, "w") as f:
      f.write(text)
  print(text)


if __name__ == "__main__":
  app.run(main)
