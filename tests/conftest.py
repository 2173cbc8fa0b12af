"""Test session setup: several CPU devices, so multi-device code is tested on a CPU-only machine.

Must run before JAX initializes its backends (conftest is imported before test modules).
Hazard (docs/design.md, verified facts): in-process forced devices hang on all-reduces of conv models here, so
in-process multi-device tests use dense models; conv / end-to-end multi-device tests run as
separate processes over gloo (see tests/training), all under pytest-timeout.

On an accelerator (the same suite runs there as a device check) two things differ: matmuls
default to TF32/bf16 passes, so tests compare at full float32 precision
(``jax_default_matmul_precision='highest'``: references are float32/float64 closed forms), and
the default backend has one device, so tests marked ``multidevice`` are skipped there. On CPU
they always run.
"""

import os
import shutil
import tempfile

import chex
import jax
import pytest

NUM_CPU_DEVICES = 4
chex.set_n_cpu_devices(NUM_CPU_DEVICES)
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
jax.config.update("jax_default_matmul_precision", "highest")

# One persistent compilation cache per test run, shared by the xdist workers (the controller
# makes the directory before it starts them; they inherit it through the environment):
# many tests compile the same programs (the tiny config's train and eval steps, in every
# loop/reliability/eval-point test), and XLA:CPU compiles dominate their time. The cache is
# keyed by the HLO, the compile options and the devices, so a hit is the same executable
# (bit-identical results); a fresh directory per run, removed at the end, so nothing carries
# over between runs. Tracing is unchanged, so trace/compile counts in tests still count.
_OWNS_CACHE = "FLAXOPT_TESTS_JAX_CACHE" not in os.environ
if _OWNS_CACHE:
  os.environ["FLAXOPT_TESTS_JAX_CACHE"] = tempfile.mkdtemp(prefix="flaxopt-tests-jax-cache-")
JAX_CACHE_DIR = os.environ["FLAXOPT_TESTS_JAX_CACHE"]
jax.config.update("jax_compilation_cache_dir", JAX_CACHE_DIR)
jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.2)


def pytest_sessionfinish(session, exitstatus):
  del exitstatus
  if _OWNS_CACHE and not hasattr(session.config, "workerinput"):  # the controller
    shutil.rmtree(JAX_CACHE_DIR, ignore_errors=True)


def pytest_collection_modifyitems(config, items):
  del config
  if jax.default_backend() == "cpu" and jax.device_count() >= NUM_CPU_DEVICES:
    return
  skip = pytest.mark.skip(
      reason=f"needs {NUM_CPU_DEVICES} devices on the default backend; this run has "
      f"{jax.device_count()} {jax.default_backend()} device(s)")
  for item in items:
    if "multidevice" in item.keywords:
      item.add_marker(skip)
