"""Orbax checkpoints: the train state and the grain iterator state, saved together, restored together.

`Checkpointer` wraps one `ocp.CheckpointManager` under `workdir/checkpoints`: async saves, keep-N, a save forced on
preemption (SIGTERM, or orbax's multi-host preemption sync point), restore of the latest step onto an abstract
target that carries the shardings, so a resumed run continues exactly where the saved one stopped — same params,
same optimiser moments, same next batch. Orbax writes each step to a temporary directory and renames it when
complete, so a crash mid-save never leaves a half-written step behind for `latest_step()`.

A step that exists but cannot be read (files lost or damaged after the save) is skipped with a warning: restore
takes the newest step that reads, and moves the unreadable newer ones to `workdir/unreadable_checkpoints/` (kept,
not deleted) so the resumed run can save those step numbers again. `restore(step=N)` picks a step explicitly and
moves the newer ones to `workdir/discarded_checkpoints/`.
"""

from __future__ import annotations

import errno
import os
import shutil
import signal
import threading
from typing import Any

import grain
import jax
import orbax.checkpoint as ocp
from absl import logging


class PreemptionFlag:
  """Set by SIGTERM (what SLURM and cloud schedulers send before killing a job); polled by the train loop."""

  def __init__(self):
    self._event = threading.Event()
    self._previous = None

  def install(self) -> "PreemptionFlag":
    if threading.current_thread() is threading.main_thread():
      self._previous = signal.signal(signal.SIGTERM, self._handle)
    return self

  def _handle(self, signum, frame):
    del frame
    logging.warning("received signal %d: saving a checkpoint at the next step, then exiting", signum)
    self._event.set()

  def is_set(self) -> bool:
    return self._event.is_set()

  def uninstall(self):
    if self._previous is not None:
      signal.signal(signal.SIGTERM, self._previous)
      self._previous = None


class Checkpointer:
  """Saves and restores {'state': train state, 'data': grain iterator} under `workdir/checkpoints`."""

  def __init__(self, workdir: str, *, max_to_keep: int = 3, async_save: bool = True):
    self.workdir = os.path.abspath(workdir)
    self.directory = os.path.join(self.workdir, "checkpoints")
    if max_to_keep < 0:
      raise ValueError(f"config.train.keep_checkpoints must be >= 0 (0 = keep all); got {max_to_keep}")
    options = ocp.CheckpointManagerOptions(
      max_to_keep=max_to_keep or None,  # orbax reads 0 as "keep none"; None keeps every step
      enable_async_checkpointing=async_save,
      create=True,
    )
    self.manager = ocp.CheckpointManager(self.directory, options=options)

  def latest_step(self) -> int | None:
    return self.manager.latest_step()

  def reached_preemption(self, step: int) -> bool:
    """Orbax's multi-host preemption sync point (all processes agree); False when not distributed."""
    try:
      return bool(self.manager.reached_preemption(step))
    except Exception:  # single-process runs without jax.distributed have no preemption service
      return False

  def save(self, step: int, state: Any, data_iter: grain.DatasetIterator | None, *, force: bool = False) -> bool:
    """Starts (async) or writes step `step`; CheckpointWriteError (one line) when the disk is full or unwritable,
    raised here or, for an async save, by the next save or `close`."""
    items = {"state": ocp.args.StandardSave(state)}
    if data_iter is not None:
      items["data"] = grain.checkpoint.CheckpointSave(data_iter)
    try:
      saved = self.manager.save(step, args=ocp.args.Composite(**items), force=force)
    except Exception as e:
      raise _write_error(e, self.directory) or e
    if saved:
      logging.info("checkpoint: saving step %d to %s", step, self.directory)
    return saved

  def all_steps(self) -> list[int]:
    return sorted(self.manager.all_steps())

  def restore(
    self, abstract_state: Any, data_iter: grain.DatasetIterator | None, step: int | None = None
  ) -> tuple[int, Any] | None:
    """Restores `step` (default: the newest readable one) onto `abstract_state` (ShapeDtypeStructs with
    shardings) and rewinds `data_iter` in place. Returns (step, state), or None when there is no checkpoint.
    ValueError (one line) when `step` does not exist or no step can be read."""

    def read(s):
      items = {"state": ocp.args.StandardRestore(abstract_state)}
      if data_iter is not None:
        items["data"] = grain.checkpoint.CheckpointRestore(data_iter)
      return self.manager.restore(s, args=ocp.args.Composite(**items))["state"]

    found = self._restore_first(read, step)
    if found is None:
      return None
    logging.info("checkpoint: restored step %d from %s", found[0], self.directory)
    return found

  def restore_state_only(self, abstract_state: Any, step: int | None = None) -> tuple[int, Any]:
    """For evaluation and inference: the state alone (newest readable step by default, nothing moved).
    Raises FileNotFoundError naming the directory if empty."""
    read = lambda s: self.manager.restore(s, args=ocp.args.Composite(state=ocp.args.StandardRestore(abstract_state)))[
      "state"
    ]
    found = self._restore_first(read, step, move=False)
    if found is None:
      raise FileNotFoundError(f"no checkpoint found in {self.directory}")
    return found

  def _restore_first(self, read, step: int | None, move: bool = True) -> tuple[int, Any] | None:
    steps = self.all_steps()
    if not steps:
      if step is not None:
        raise ValueError(f"--restore_step={step}: there is no checkpoint in {self.directory}")
      return None
    if step is not None:
      if step not in steps:
        raise ValueError(
          f"--restore_step={step}: no such checkpoint in {self.directory}; steps: {', '.join(map(str, steps))}"
        )
      try:
        state = read(step)
      except Exception as e:  # orbax/tensorstore raise many types for damaged files
        raise ValueError(f"checkpoint step {step} in {self.directory} cannot be read: {_first_line(e)}") from e
      newer = [s for s in steps if s > step]
      if newer and move:
        logging.warning(
          "--restore_step=%d: moving the newer steps %s to %s",
          step,
          newer,
          self._move_aside(newer, "discarded_checkpoints"),
        )
      return step, state
    failed = []
    for s in reversed(steps):
      try:
        state = read(s)
      except Exception as e:  # an unreadable step: try the one before
        logging.warning(
          "checkpoint step %d in %s cannot be read (%s); trying the previous step", s, self.directory, _first_line(e)
        )
        failed.append((s, e))
        continue
      if failed and move:
        logging.warning(
          "resuming from step %d; the unreadable steps %s are moved to %s",
          s,
          [f for f, _ in failed],
          self._move_aside([f for f, _ in failed], "unreadable_checkpoints"),
        )
      return s, state
    # Nothing reads: more likely a state of another shape (another config) than every step damaged; move nothing.
    raise ValueError(
      f"no checkpoint in {self.directory} can be restored into this run's state (steps "
      f"{', '.join(map(str, steps))}); newest: {_first_line(failed[0][1])}"
    )

  def _move_aside(self, steps: list[int], folder: str) -> str:
    """Moves step directories out of the manager's view (kept for inspection); returns where they went."""
    dest = os.path.join(self.workdir, folder)
    if jax.process_index() == 0:
      os.makedirs(dest, exist_ok=True)
      for s in steps:
        target = os.path.join(dest, str(s))
        while os.path.exists(target):
          target += "_"
        shutil.move(os.path.join(self.directory, str(s)), target)
    if jax.process_count() > 1:
      from jax.experimental import multihost_utils

      multihost_utils.sync_global_devices("jaxinpaint_checkpoints_moved")
    self.manager.reload()
    return dest

  def wait_until_finished(self):
    try:
      self.manager.wait_until_finished()
    except Exception as e:  # an async save that failed
      raise _write_error(e, self.directory) or e

  def close(self):
    try:
      self.wait_until_finished()
    finally:
      self.manager.close()


class CheckpointWriteError(OSError):
  """A checkpoint could not be written (full disk, no permission); the message says what to do."""


def _write_error(e: BaseException, directory: str) -> CheckpointWriteError | None:
  """One line for orbax/tensorstore write failures (wrapped in ValueError with the OS message), else None."""
  text = str(e)
  # finished steps only: orbax writes into STEP.orbax-checkpoint-tmp and renames when complete
  done = [int(n) for n in (os.listdir(directory) if os.path.isdir(directory) else []) if n.isdigit()]
  latest = max(done) if done else None
  code = e.errno if isinstance(e, OSError) and e.errno else None
  if code == errno.ENOSPC or "No space left on device" in text or "os_error_code='28'" in text:
    then = f"it resumes from step {latest}" if latest is not None else "no checkpoint of this run exists yet"
    return CheckpointWriteError(
      errno.ENOSPC,
      f"no space left on the device holding {directory}; the checkpoint "
      f"was not written. Free space and start the same command again ({then})",
    )
  if code in (errno.EACCES, errno.EROFS, errno.EPERM) or "Permission denied" in text:
    return CheckpointWriteError(
      code or errno.EACCES, f"cannot write checkpoints to {directory}: permission denied or read-only file system"
    )
  return None


def abstract_with_shardings(state: Any, shardings: Any) -> Any:
  """ShapeDtypeStructs carrying the shardings, the restore target for `Checkpointer.restore`."""
  return jax.tree.map(lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s), state, shardings)


def _first_line(e: BaseException) -> str:
  lines = [line.strip() for line in str(e).splitlines() if line.strip()]
  return f"{type(e).__name__}: {lines[0] if lines else ''}"[:300]
