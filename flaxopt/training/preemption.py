"""Preemption: SIGTERM / SIGINT ask the loop to stop at a step boundary and save there.

A cluster scheduler or a preempted VM sends SIGTERM, a user presses Ctrl-C (SIGINT). While
a :class:`StopOnSignal` is active, the first such signal only sets a flag; the loop finishes
the step it is in, saves a checkpoint at that step and ends with status ``preempted``
(``experiments/train.py`` exits 75, EX_TEMPFAIL: run the same command again). A second
signal restores the previous handler and re-sends itself (an impatient Ctrl-C still stops).

Multi-process runs must all save at the same step: the flag is all-reduced (max over
processes) at sync steps only, so every process sees the same answer at the same step.
"""

from __future__ import annotations

import signal
import threading
from typing import Optional, Sequence

import jax
import numpy as np
from absl import logging

__all__ = ["PREEMPTED_EXIT_CODE", "StopOnSignal"]

PREEMPTED_EXIT_CODE = 75  # EX_TEMPFAIL


class StopOnSignal:
  """Context manager turning ``signals`` into a stop request checked by the loop."""

  def __init__(self, signals: Sequence[int] = (signal.SIGTERM, signal.SIGINT)):
    self.signals = tuple(signals)
    self.signum: Optional[int] = None
    self._previous: dict[int, object] = {}

  def _handle(self, signum: int, frame) -> None:
    del frame
    if self.signum is not None:  # second signal: act as if we were not here
      self._restore()
      signal.raise_signal(signum)
      return
    self.signum = signum
    logging.warning("Received %s: stopping after the current step and saving a checkpoint.",
                    signal.Signals(signum).name)

  def __enter__(self) -> "StopOnSignal":
    if threading.current_thread() is threading.main_thread():
      for sig in self.signals:
        self._previous[sig] = signal.signal(sig, self._handle)
    return self

  def __exit__(self, *exc) -> None:
    self._restore()

  def _restore(self) -> None:
    for sig, handler in self._previous.items():
      signal.signal(sig, handler)
    self._previous = {}

  def requested(self, step: int, sync: bool) -> bool:
    """Whether to stop after ``step``; multi-process: agreed at sync steps only."""
    del step
    if jax.process_count() == 1:
      return self.signum is not None
    if not sync:
      return False
    from jax.experimental import multihost_utils  # pylint: disable=g-import-not-at-top
    flags = multihost_utils.process_allgather(np.int32(self.signum is not None))
    return bool(np.max(flags))
