"""Test session setup: several CPU devices, so multi-device code is tested on a CPU-only machine.

Must run before JAX initializes its backends (conftest is imported before test modules).
Hazard (DESIGN.md): in-process forced devices hang on all-reduces of conv models here, so
in-process multi-device tests use dense models; conv / end-to-end multi-device tests run as
separate processes over gloo (see tests/training), all under pytest-timeout.
"""

import os

import chex

NUM_CPU_DEVICES = 4
chex.set_n_cpu_devices(NUM_CPU_DEVICES)
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
