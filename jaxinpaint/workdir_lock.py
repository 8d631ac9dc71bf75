"""One writer per workdir: an exclusive `fcntl.flock` on `WORKDIR/.lock`, which records who holds it.

Two trainers on one workdir (two terminals, a requeue racing the job it replaces) would overwrite each other's
checkpoints and config.json. Whatever writes into a workdir takes this lock first; a second writer fails at
once with one line naming the holder (host, pid, since when). The kernel drops a flock when its process dies, so
a lock left by a killed run is free: the next writer takes it over and warns, naming the dead holder from the
file's contents (a clean release empties the file). Nested acquisitions by the holding process are counted.
"""

from __future__ import annotations

import fcntl
import json
import os
import socket
import time

from absl import logging

LOCK_FILE = ".lock"
_held: dict[str, list] = {}  # realpath of the workdir -> [open lock file, nesting count]


class WorkdirBusyError(RuntimeError):
  """Another process holds the workdir's lock; the message names it."""


def _describe(holder: dict) -> str:
  since = holder.get("since")
  when = time.strftime("%Y-%m-%d %H:%M:%S %Z", time.localtime(since)) if isinstance(since, (int, float)) else "?"
  return f"pid {holder.get('pid', '?')} on host {holder.get('host', '?')} (since {when})"


def _read_holder(f) -> dict:
  f.seek(0)
  text = f.read().strip()
  if not text:
    return {}
  try:
    holder = json.loads(text)
  except ValueError:
    return {"pid": "?", "host": "?"}
  return holder if isinstance(holder, dict) else {}


class WorkdirLock:
  """`with WorkdirLock(workdir):` creates the workdir if needed and holds its lock for the block.

  Raises WorkdirBusyError naming the holder when another process (on any host sharing the filesystem) has it.
  """

  def __init__(self, workdir: str):
    self.workdir = workdir
    self.key = os.path.realpath(workdir)

  def acquire(self) -> "WorkdirLock":
    if self.key in _held:
      _held[self.key][1] += 1
      return self
    os.makedirs(self.workdir, exist_ok=True)
    f = open(os.path.join(self.workdir, LOCK_FILE), "a+")
    try:
      fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
      holder = _read_holder(f)
      f.close()
      raise WorkdirBusyError(
        f"{self.workdir} is in use by another run: {_describe(holder)} holds "
        f"{os.path.join(self.workdir, LOCK_FILE)}; wait for it to finish, stop it, or use "
        "another --workdir"
      ) from None
    previous = _read_holder(f)
    if previous:  # a clean release empties the file: the holder died without releasing
      logging.warning(
        "taking over the lock of %s left by %s, which is no longer running", self.workdir, _describe(previous)
      )
    f.seek(0)
    f.truncate()
    f.write(json.dumps({"host": socket.gethostname(), "pid": os.getpid(), "since": time.time()}))
    f.flush()
    os.fsync(f.fileno())
    _held[self.key] = [f, 1]
    return self

  def release(self) -> None:
    entry = _held.get(self.key)
    if entry is None:
      return
    entry[1] -= 1
    if entry[1] > 0:
      return
    del _held[self.key]
    f = entry[0]
    try:
      f.seek(0)
      f.truncate()  # empty = released cleanly; the file stays, so no second writer can lock a different inode
      f.flush()
    except OSError:  # a full disk must not hide the error that ended the run
      pass
    fcntl.flock(f, fcntl.LOCK_UN)
    f.close()

  def __enter__(self) -> "WorkdirLock":
    return self.acquire()

  def __exit__(self, *exc) -> None:
    self.release()
