r"""Trains one config: ``python -m experiments.train --workdir=runs/x [--config.x=y ...]``.

The default config (configs/default.py) is the main job: MNIST-1D, the paper's CNN, Adam
lr 1e-2, batch 100, 6000 steps. Re-running the same command on a workdir with a checkpoint
resumes from it. Multi-host (one process per host; on one machine over loopback)::

  python -m experiments.train --workdir=runs/x --coordinator_address=127.0.0.1:12345 \
      --num_processes=2 --process_id=0   # and --process_id=1 in a second process

Optimizer and augmentation kwargs the config lacks can be added from the command line
(``--config.optimizer.b1=0.5``, ``--config.augment.cutout.size=4``); every field is then
validated (``flaxopt.training.config``), and an unknown one is reported with the valid
fields of its section.

Exit codes: 0 done; 2 a user error (bad config, a config that differs from the workdir's
``config.json``, a workdir in use by another run), one line ``error: ...``, nothing written;
75 preempted (SIGTERM/SIGINT: a checkpoint was saved, run the same command again); 74 an
output could not be written (e.g. a full disk; the previous checkpoint is intact); 1 a
checkpoint that cannot be restored or any other failure.
"""

import logging as logging_std
import os
import sys

from absl import app
from absl import flags
from absl import logging
from ml_collections import config_flags

_CONFIG = config_flags.DEFINE_config_file(
    "config", os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                           "configs", "default.py"),
    "Training configuration file; override fields with --config.<field>=<value>.",
    lock_config=False, accept_new_attributes=True)  # new fields: validated by the loop
_WORKDIR = flags.DEFINE_string("workdir", None, "Directory for checkpoints and metrics.")
_COORDINATOR = flags.DEFINE_string("coordinator_address", None,
                                   "host:port of process 0, for multi-host runs.")
_NUM_PROCESSES = flags.DEFINE_integer("num_processes", 1, "Number of processes (hosts).")
_PROCESS_ID = flags.DEFINE_integer("process_id", 0, "This process's index, 0-based.")
_JAX_CACHE = flags.DEFINE_string(
    "jax_cache_dir", os.path.expanduser("~/.cache/flaxopt/jax_compilation_cache"),
    "Persistent XLA compilation cache ('' disables); repeat runs skip compilation.")
_FAULT = flags.DEFINE_string(
    "fault", "", "Tests only: faults to inject, '<action>@<point>=<step>[+<delay_s>]' "
    "(flaxopt.training.hooks.FaultInjector), e.g. 'kill@step=40' or 'sigterm@save=30'.")
flags.mark_flags_as_required(["workdir"])

USER_ERROR_EXIT_CODE = 2
STORAGE_ERROR_EXIT_CODE = 74  # EX_IOERR


def _init_distributed() -> None:
  """Joins the multi-process run (gloo collectives on CPU) when ``--num_processes > 1``."""
  import jax  # pylint: disable=g-import-not-at-top
  from flaxopt.training.config import ConfigError  # pylint: disable=g-import-not-at-top
  if _NUM_PROCESSES.value <= 1:
    return
  if not _COORDINATOR.value:
    raise ConfigError(
        f"--num_processes={_NUM_PROCESSES.value} needs --coordinator_address")
  jax.config.update("jax_cpu_collectives_implementation", "gloo")
  jax.distributed.initialize(_COORDINATOR.value, num_processes=_NUM_PROCESSES.value,
                             process_id=_PROCESS_ID.value)


class _QuietOrbax(logging_std.Filter):
  """Drops orbax's per-save INFO chatter (dozens of lines per checkpoint)."""

  def filter(self, record: logging_std.LogRecord) -> bool:
    return record.levelno >= logging_std.WARNING or "/orbax/" not in record.pathname


def _configure_jax() -> None:
  import jax  # pylint: disable=g-import-not-at-top
  if _JAX_CACHE.value:
    jax.config.update("jax_compilation_cache_dir", _JAX_CACHE.value)
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.1)


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {' '.join(argv[1:])}")
  logging.get_absl_handler().addFilter(_QuietOrbax())
  _configure_jax()
  from flaxopt.training import checkpoint  # pylint: disable=g-import-not-at-top
  from flaxopt.training import hooks  # pylint: disable=g-import-not-at-top
  from flaxopt.training import lock  # pylint: disable=g-import-not-at-top
  from flaxopt.training import loop  # pylint: disable=g-import-not-at-top
  from flaxopt.training import preemption  # pylint: disable=g-import-not-at-top
  # error type -> exit code; the message is one line, no traceback.
  exit_codes = {loop.ConfigError: USER_ERROR_EXIT_CODE,
                lock.WorkdirLockedError: USER_ERROR_EXIT_CODE,
                checkpoint.StorageError: STORAGE_ERROR_EXIT_CODE,
                checkpoint.CheckpointError: 1}
  try:
    _init_distributed()
    logging.info("Config:\n%s", _CONFIG.value)
    fault = hooks.FaultInjector(_FAULT.value) if _FAULT.value else None
    summary = loop.train_and_evaluate(_CONFIG.value, _WORKDIR.value, hooks=fault,
                                      handle_signals=True)
  except tuple(exit_codes) as e:
    print(f"error: {e}", file=sys.stderr)
    sys.exit(next(code for kind, code in exit_codes.items() if isinstance(e, kind)))
  if summary["status"] == "preempted":
    sys.exit(preemption.PREEMPTED_EXIT_CODE)


if __name__ == "__main__":
  app.run(main)
