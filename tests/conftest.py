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

import chex
import jax
import pytest

NUM_CPU_DEVICES = 4
chex.set_n_cpu_devices(NUM_CPU_DEVICES)
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
jax.config.update("jax_default_matmul_precision", "highest")


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
