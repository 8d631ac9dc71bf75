"""Orbax checkpoints: the train state and the grain iterator state, saved together, restored together.

`Checkpointer` wraps one `ocp.CheckpointManager` under `workdir/checkpoints`: async saves, keep-N, a save forced on
preemption (SIGTERM, or orbax's multi-host preemption sync point), restore of the latest step onto an abstract
target that carries the shardings, so a resumed run continues exactly where the saved one stopped — same params,
same optimiser moments, same next batch. Orbax writes each step to a temporary directory and renames it when
complete, so a crash mid-save never leaves a half-written step behind for `latest_step()`.
"""

from __future__ import annotations

import os
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
    self.directory = os.path.abspath(os.path.join(workdir, "checkpoints"))
    options = ocp.CheckpointManagerOptions(
        max_to_keep=max_to_keep,
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
    items = {"state": ocp.args.StandardSave(state)}
    if data_iter is not None:
      items["data"] = grain.checkpoint.CheckpointSave(data_iter)
    saved = self.manager.save(step, args=ocp.args.Composite(**items), force=force)
    if saved:
      logging.info("checkpoint: saving step %d to %s", step, self.directory)
    return saved

  def restore(self, abstract_state: Any, data_iter: grain.DatasetIterator | None,
              step: int | None = None) -> tuple[int, Any] | None:
    """Restores `step` (default latest) onto `abstract_state` (ShapeDtypeStructs with shardings) and rewinds
    `data_iter` in place. Returns (step, state), or None when there is no checkpoint."""
    step = self.latest_step() if step is None else step
    if step is None:
      return None
    items = {"state": ocp.args.StandardRestore(abstract_state)}
    if data_iter is not None:
      items["data"] = grain.checkpoint.CheckpointRestore(data_iter)
    restored = self.manager.restore(step, args=ocp.args.Composite(**items))
    logging.info("checkpoint: restored step %d from %s", step, self.directory)
    return step, restored["state"]

  def restore_state_only(self, abstract_state: Any, step: int | None = None) -> tuple[int, Any]:
    """For evaluation and inference: the state alone. Raises FileNotFoundError naming the directory if empty."""
    step = self.latest_step() if step is None else step
    if step is None:
      raise FileNotFoundError(f"no checkpoint found in {self.directory}")
    restored = self.manager.restore(step, args=ocp.args.Composite(state=ocp.args.StandardRestore(abstract_state)))
    return step, restored["state"]

  def wait_until_finished(self):
    self.manager.wait_until_finished()

  def close(self):
    self.manager.wait_until_finished()
    self.manager.close()


def abstract_with_shardings(state: Any, shardings: Any) -> Any:
  """ShapeDtypeStructs carrying the shardings, the restore target for `Checkpointer.restore`."""
  return jax.tree.map(lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s), state, shardings)
