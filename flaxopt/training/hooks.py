"""Test hooks of the training loop: callbacks at exact points, and a fault injector.

``train_and_evaluate(config, workdir, hooks=...)`` calls, on every process:

* ``after_step(step)`` when step ``step`` is done: its update dispatched and, at a sync step,
  its evaluation and checkpoint written (the loop checks for a stop request right after);
* ``before_evaluate(step)`` when the evaluation at ``step`` starts;
* ``before_save(step)`` when the checkpoint at ``step`` starts to be written;
* ``before_metrics_write(step)`` before the evaluation record of ``step`` is appended.

Production runs pass nothing (:class:`Hooks`, all no-ops). :class:`FaultInjector` is what
the tests use through ``experiments/train.py --fault=...``: it kills the process, sends it a
signal, or raises ``OSError(ENOSPC)`` (a full disk) at one of those points.
"""

from __future__ import annotations

import dataclasses
import errno
import os
import signal
import threading

__all__ = ["FaultInjector", "Hooks", "POINTS", "ACTIONS"]


class Hooks:
  """No-op callbacks; subclass and override the points you need."""

  def after_step(self, step: int) -> None:
    del step

  def before_evaluate(self, step: int) -> None:
    del step

  def before_save(self, step: int) -> None:
    del step

  def before_metrics_write(self, step: int) -> None:
    del step


POINTS = {"step": "after_step", "evaluate": "before_evaluate", "save": "before_save",
          "metrics": "before_metrics_write"}


def _kill(sig: int):
  return lambda: os.kill(os.getpid(), sig)


def _enospc():
  raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC) + " (injected)")


# action -> what it does (called at the point, or after a delay from a timer thread).
ACTIONS = {"kill": _kill(signal.SIGKILL), "sigterm": _kill(signal.SIGTERM),
           "sigint": _kill(signal.SIGINT), "enospc": _enospc}


@dataclasses.dataclass
class _Fault:
  action: str
  point: str
  step: int
  delay: float = 0.0
  done: bool = False


class FaultInjector(Hooks):
  """Faults from a spec ``'<action>@<point>=<step>[+<delay_s>]'`` (comma-separated).

  ``action``: kill (SIGKILL) | sigterm | sigint | enospc (raise ``OSError(ENOSPC)``);
  ``point``: step | evaluate | save | metrics (see the module docstring); ``step``: the
  first call at or after this step fires, once. ``+delay`` fires from a timer thread that
  many seconds later (e.g. ``kill@save=30+0.02``: killed while the checkpoint is written).
  """

  def __init__(self, spec: str):
    self.faults = [self._parse(part.strip()) for part in spec.split(",") if part.strip()]

  @staticmethod
  def _parse(part: str) -> _Fault:
    try:
      action, rest = part.split("@")
      point, when = rest.split("=")
      step, _, delay = when.partition("+")
      fault = _Fault(action, point, int(step), float(delay or 0.0))
    except ValueError:
      raise ValueError(f"fault {part!r} must look like '<action>@<point>=<step>[+<delay>]'"
                       ) from None
    if action not in ACTIONS or point not in POINTS:
      raise ValueError(f"fault {part!r}: action one of {', '.join(ACTIONS)}, point one of "
                       f"{', '.join(POINTS)}")
    return fault

  def _fire(self, point: str, step: int) -> None:
    for fault in self.faults:
      if fault.done or fault.point != point or step < fault.step:
        continue
      fault.done = True
      if fault.delay:
        threading.Timer(fault.delay, ACTIONS[fault.action]).start()
      else:
        ACTIONS[fault.action]()

  def after_step(self, step: int) -> None:
    self._fire("step", step)

  def before_evaluate(self, step: int) -> None:
    self._fire("evaluate", step)

  def before_save(self, step: int) -> None:
    self._fire("save", step)

  def before_metrics_write(self, step: int) -> None:
    self._fire("metrics", step)
