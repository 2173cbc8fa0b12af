"""One run per workdir: an exclusive ``flock`` on ``<workdir>/run.lock`` holding PID and host.

``flock`` is atomic (two processes started at the same instant: exactly one gets it) and the
kernel releases it when its holder dies, even by SIGKILL; the file then still names the dead
holder, and the next run takes it over with a warning. A second live run fails with
:class:`WorkdirLockedError` naming the holder. In a multi-process run, process 0 holds the
lock and every process learns whether it got it.
"""

from __future__ import annotations

import fcntl
import os
import socket
from typing import Optional

from absl import logging

__all__ = ["LOCK_FILE", "WorkdirLock", "WorkdirLockedError"]

LOCK_FILE = "run.lock"


class WorkdirLockedError(RuntimeError):
  """Another live run holds the workdir (one-line message naming it)."""


def _alive(pid: int) -> bool:
  try:
    os.kill(pid, 0)
  except ProcessLookupError:
    return False
  except PermissionError:
    return True
  return True


def _read_holder(fd: int) -> Optional[tuple[int, str]]:
  os.lseek(fd, 0, os.SEEK_SET)
  text = os.read(fd, 4096).decode(errors="replace").split()
  if len(text) >= 2 and text[0].isdigit():
    return int(text[0]), text[1]
  return None


class WorkdirLock:
  """Context manager: holds ``<workdir>/run.lock`` (creating ``workdir``) while it is open."""

  def __init__(self, workdir: str):
    self.path = os.path.join(workdir, LOCK_FILE)
    self._fd: Optional[int] = None

  def acquire(self) -> None:
    """Takes the lock (process 0), or raises WorkdirLockedError on every process."""
    import jax  # pylint: disable=g-import-not-at-top
    error = ""
    if jax.process_index() == 0:
      try:
        self._acquire()
      except WorkdirLockedError as e:
        error = str(e)
    if jax.process_count() > 1:
      import numpy as np  # pylint: disable=g-import-not-at-top
      from jax.experimental import multihost_utils  # pylint: disable=g-import-not-at-top
      failed = multihost_utils.broadcast_one_to_all(np.int32(bool(error)))
      if int(failed) and not error:
        error = f"{self.path} is held by another run (see process 0)"
    if error:
      raise WorkdirLockedError(error)

  def _acquire(self) -> None:
    os.makedirs(os.path.dirname(self.path) or ".", exist_ok=True)
    fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
      fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
      holder = _read_holder(fd)
      os.close(fd)
      who = f"PID {holder[0]} on {holder[1]}" if holder else "another process"
      raise WorkdirLockedError(
          f"workdir {os.path.dirname(self.path)} is in use by {who} (lock {self.path}); "
          "wait for that run or use another workdir") from None
    previous = _read_holder(fd)
    host = socket.gethostname()
    if previous and previous[0] != os.getpid():
      state = "no longer running" if previous[1] == host and not _alive(previous[0]) else \
          "no longer holding it"
      logging.warning("Took over the lock %s left by PID %d on %s (%s).", self.path,
                      previous[0], previous[1], state)
    os.ftruncate(fd, 0)
    os.lseek(fd, 0, os.SEEK_SET)
    os.write(fd, f"{os.getpid()} {host}\n".encode())
    os.fsync(fd)
    self._fd = fd

  def release(self) -> None:
    """Empties the lock file (a clean exit leaves no holder behind) and unlocks it."""
    if self._fd is None:
      return
    try:
      os.ftruncate(self._fd, 0)
    except OSError:
      pass  # a full disk must not hide the error being reported
    fcntl.flock(self._fd, fcntl.LOCK_UN)
    os.close(self._fd)
    self._fd = None

  def __enter__(self) -> "WorkdirLock":
    self.acquire()
    return self

  def __exit__(self, *exc) -> None:
    self.release()
