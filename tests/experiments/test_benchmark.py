"""Smoke tests of experiments/bench (what experiments/benchmark.py runs): every section's code
path once, at tiny sizes, with one frozen Options record (no flags).

They check the structure of the results and that each compared pair computes the same thing;
they never assert on timings (the machine is shared; see docs/readme/benchmarks.md).
"""

import json
import os
import sys

import chex
import jax
import jax.numpy as jnp
import pytest

from experiments.bench import end_to_end
from experiments.bench import ops
from experiments.bench import optimizers as O
from experiments.bench import options
from experiments.bench import report
from experiments.bench import sections
from experiments.bench import timing
from experiments.bench import train
from flaxopt import registry

try:
  from experiments.bench import torch_ref as bench_torch
except ImportError:  # torch is the optional 'bench' extra
  bench_torch = None

needs_torch = pytest.mark.skipif(bench_torch is None, reason="torch not installed")

# One round of a few calls: exercises the timing code without spending time.
FAST = options.Options(rounds=1, round_s=1e-4, torch_1thread=False)


@pytest.fixture(scope="module")
def tiny_data():
  return train.synthetic_mnist1d(num_train=400, num_test=50)


@pytest.mark.parametrize("field, value", [("rounds", 0), ("round_s", 0.0),
                                          ("e2e_eval_every", -1)])
def test_options_reject_bad_values(field, value):
  with pytest.raises(ValueError, match=f"{field}={value}"):
    options.Options(**{field: value})


def test_quick_halves_rounds_and_round_length():
  quick = options.Options(quick=True, rounds=8, round_s=0.5)
  assert (quick.timing_rounds, quick.timing_round_s) == (4, 0.25)
  assert (FAST.timing_rounds, FAST.timing_round_s) == (1, 1e-4)


def _flag(cmd, name):
  (value,) = [a.split("=", 1)[1] for a in cmd if a.startswith(f"--{name}=")]
  return int(value)


def test_end_to_end_jobs_do_equal_evaluation_work():
  opts = options.Options(e2e_eval_every=700)
  ours = end_to_end.flaxopt_command("w", "c", opts, steps=2100)
  ref = end_to_end.torch_command("d.npz", "o.json", "w", opts, steps=2100)
  assert _flag(ours, "config.eval_every") == _flag(ref, "eval_every") == 700
  assert _flag(ours, "config.num_train_steps") == _flag(ref, "steps") == 2100
  assert _flag(ours, "config.checkpoint_every") == _flag(ref, "checkpoint_every")


def test_run_sections_rejects_an_unknown_section_before_running():
  with pytest.raises(ValueError, match="'nope'"):
    sections.run_sections(["memory", "nope"], FAST)


def test_interleaved_structure():
  calls = {"a": 0, "b": 0}

  def runner(name):
    def run(n):
      calls[name] += n
    return run

  res = timing.interleaved({"a": runner("a"), "b": runner("b")}, rounds=3, round_s=1e-4,
                      baseline="b", number=2)
  assert res["number"] == 2 and res["baseline"] == "b"
  assert {k: len(v) for k, v in res["seconds"].items()} == {"a": 3, "b": 3}
  assert res["ratio"]["b"] == 1.0
  assert calls == {"a": 1 + 3 * 2, "b": 1 + 3 * 2}  # one warm-up call each, then 3 rounds


def test_param_shape_and_bytes():
  rows, cols = O.param_shape(10**6)
  assert cols % 128 == 0 and abs(rows * cols - 10**6) < cols
  params = O.make_params(5000)
  assert O.tree_bytes(params) == 4 * sum(x.size for x in jax.tree.leaves(params))


def test_optax_table_covers_every_first_order_optimizer():
  from flaxopt.optim import alias
  assert set(O.OPTAX_EQUIVALENTS) == set(alias.REGISTRY)
  assert set(alias.REGISTRY) <= set(registry.names("optimizer"))


def test_bandwidth():
  res = O.bench_bandwidth(num_bytes=2**16, rounds=1)
  assert set(res["GBps"]) == {"numpy_copy", "jax_scale"}
  assert res["reference_GBps"] == max(res["GBps"].values()) > 0


def test_optimizers_section():
  res = O.bench_optimizers([2000], ["sgd", "adam", "adafactor"], 1.0, FAST)
  (size_res,) = res.values()
  assert set(size_res["rows"]) == {"sgd", "adam", "adafactor"}
  p = size_res["param_bytes"]
  adam = size_res["rows"]["adam"]
  # Adam reads params, grads, m, v and writes params, m, v (+ the int32 count twice).
  assert adam["bytes_moved"] == 3 * p + 2 * (2 * p + 4)
  assert size_res["rows"]["sgd"]["bytes_moved"] == 3 * p
  for row in size_res["rows"].values():
    assert row["ratio"] > 0 and row["fraction_of_copy"] == pytest.approx(row["GBps"])


def test_compared_optimizers_agree():
  """flaxopt and its optax counterpart take the same steps where their defaults agree."""
  names = ("sgd", "momentum", "adam", "adamax", "amsgrad")
  params = O.make_params(300)
  grads = O.make_params(300, seed=1)

  @jax.jit
  def two_steps():
    out = {}
    for name in names:
      pair = (O.flaxopt_optimizer(name), O.OPTAX_EQUIVALENTS[name][1](O.LEARNING_RATE))
      for label, tx in zip(("flaxopt", "optax"), pair):
        state = tx.init(params)
        for _ in range(2):
          updates, state = tx.update(grads, state, params)
        out[name, label] = updates
    return out

  out = two_steps()
  for name in names:
    chex.assert_trees_all_close(out[name, "flaxopt"], out[name, "optax"], rtol=1e-5,
                                atol=1e-7, custom_message=name)


def test_memory_section():
  res = O.bench_memory(O.optimizer_names(), shape=(256, 128))
  rows = res["rows"]
  assert set(rows) == set(O.OPTAX_EQUIVALENTS)
  assert rows["sgd"]["flaxopt_bytes_per_param"] == 0
  assert rows["adam"]["flaxopt_bytes"] == 2 * 4 * 256 * 128 + 4
  assert rows["adafactor"]["flaxopt_bytes_per_param"] < 0.1


@needs_torch
def test_torch_adam_section():
  res = O.bench_torch_adam([1000], FAST)
  (row,) = res.values()
  assert {"flaxopt", "optax", "torch_fused", "torch_foreach"} <= set(row["ms"])


def _assert_same(table, args):
  # One jitted program per table (a compile per op would dominate the test's time).
  outs = jax.jit(lambda *a: {k: (f(*a), r(*a)) for k, (f, r) in table.items()})(*args)
  for name, (ours, ref) in outs.items():
    chex.assert_trees_all_close(ours, ref, rtol=2e-5, atol=2e-5, custom_message=name)


@pytest.mark.slow
def test_op_pairs_compute_the_same_function():
  key = jax.random.PRNGKey(0)
  x = jax.random.normal(key, (4, 8, 8, 16)) * 3
  scale, bias = jnp.linspace(0.5, 1.5, 16), jnp.linspace(-1, 1, 16)
  _assert_same(ops.ACTIVATIONS, (x,))
  _assert_same(ops.NORMS, (x, scale, bias))
  _assert_same(ops.POOLS, (x,))


@pytest.mark.slow
def test_ops_section():
  res = ops.bench_ops(2**14, FAST, only=("relu",))
  assert list(res["activations"]) == ["relu"] and not res["norms"] and not res["pools"]
  for mode in ("forward", "backward"):
    assert res["activations"]["relu"][mode]["ratio"] > 0


def test_handwritten_models_match_flaxopt_parameter_counts():
  from flaxopt.nn import models
  x = jnp.zeros((2, 40, 1))
  key = jax.random.PRNGKey(0)
  for name, (init, apply) in train.HANDWRITTEN.items():
    params = jax.eval_shape(init, key)
    ours = jax.eval_shape(models.build_model({"name": name}, 10).init, key, x)
    assert (sum(a.size for a in jax.tree.leaves(params))
            == sum(a.size for a in jax.tree.leaves(ours["params"])))
    chex.assert_shape(jax.eval_shape(apply, params, x), (2, 10))
    if bench_torch is not None:
      torch_model = bench_torch.make_model(name)
      assert sum(p.numel() for p in torch_model.parameters()) == sum(
          a.size for a in jax.tree.leaves(params))


@pytest.mark.slow
def test_train_step_section(tiny_data):
  res = train.bench_train_step(["mlp"], [20], FAST, data=tiny_data)
  row = res["mlp_b20"]
  expected = {"flaxopt", "jax_handwritten"} | ({"torch_eager"} if bench_torch else set())
  assert set(row["steps_per_sec"]) == expected
  assert row["flaxopt_speedup_over"]["flaxopt"] == 1.0


@pytest.mark.slow
def test_step_overhead_section(tiny_data, monkeypatch):
  # The other two runners are exercised by test_train_step_section; only compile the new one.
  def idle(*args, **kwargs):
    return lambda n: None
  monkeypatch.setattr(train, "flaxopt_train_runner", idle)
  monkeypatch.setattr(train, "handwritten_train_runner", idle)
  res = train.bench_step_overhead(["mlp"], [20], FAST, data=tiny_data)
  row = res["mlp_b20"]
  assert set(row["time_over_handwritten"]) == {"jax_handwritten", "flaxopt",
                                               "flaxopt_fused_gather"}
  assert "| mlp_b20 |" in report.markdown({"step_overhead": res})


@needs_torch
def test_torch_recipe_end_to_end(tiny_data, tmp_path):
  res = bench_torch.run_recipe(tiny_data, steps=6, batch_size=20, eval_every=3,
                               checkpoint_every=3, workdir=str(tmp_path))
  assert res["final"]["step"] == 6 and 0 <= res["final"]["test_accuracy"] <= 1
  assert sorted(os.listdir(tmp_path)) == ["checkpoint_3.pt", "checkpoint_6.pt"]


def test_run_subprocess_reports_rss_and_timeout():
  ok = timing.run_subprocess([sys.executable, "-c", "print('hi')"])
  assert ok["returncode"] == 0 and ok["maxrss_bytes"] > 0 and "hi" in ok["output_tail"]
  hung = timing.run_subprocess([sys.executable, "-c", "import time; time.sleep(30)"], timeout=0.5)
  assert hung["timed_out"] and hung["returncode"] != 0


@pytest.mark.slow
@pytest.mark.timeout(120)
def test_scaling_worker_dense_model():
  """In process, over conftest's 4 CPU devices (dense model only: conv all-reduces hang on
  forced host devices, docs/design.md)."""
  res = train.scaling_worker("jit", batch_size=16, steps=5)
  assert res["devices"] == jax.device_count() and res["steps_per_sec"] > 0


def test_report_markdown_plots_and_json(tmp_path):
  results = {"meta": report.metadata(FAST),
             "optimizers": O.bench_optimizers([1000], ["sgd"], None, FAST),
             "memory": O.bench_memory(["sgd"], shape=(8, 8)),
             "scaling": {"rows": [{"devices": 1, "parallel": "jit", "timed_out": False,
                                   "steps_per_sec": 10.0}]}}
  text = report.markdown(results)
  assert "| sgd |" in text and "| jit | 1 | 10 |" in text
  written = report.plot(results, str(tmp_path))
  assert sorted(os.path.basename(p) for p in written) == ["bench_optimizers.png",
                                                          "bench_scaling.png"]
  path = str(tmp_path / "r.json")
  report.write_results(results, path)
  report.write_results({"meta": {"sections": {"x": 1}}, "extra": 1}, path)
  with open(path) as f:
    merged = json.load(f)
  assert merged["extra"] == 1 and "optimizers" in merged and merged["meta"]["sections"]["x"] == 1
