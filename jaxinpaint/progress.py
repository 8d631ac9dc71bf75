"""Progress bars (tqdm) for the long loops — training, evaluation, ablation, latent completion, pack writing.

A bar is drawn only when its stream is a terminal and this is process 0; otherwise `bar(...)` returns a no-op
with the same methods, so log files and multi-process runs keep today's log lines and no carriage-return noise.

  with progress.bar(total=1200, initial=300, desc="train", unit="step") as b:
    b.update(1); b.set_postfix(loss=0.12)

Loops that run inside one jitted call (latent completion's `lax.scan`) feed a bar with `device_tick(step)` (a
`jax.debug.callback`) while `fed_from_device(bar)` is active.
"""

from __future__ import annotations

import contextlib
import sys
import threading
from typing import IO, Any


class NoBar:
  """The bar's interface doing nothing (not a TTY, not process 0, or disabled)."""

  enabled = False
  n = 0

  def update(self, n: int = 1) -> None:
    self.n += n

  def set_description(self, desc: str | None = None, refresh: bool = True) -> None:
    del desc, refresh

  def set_postfix(self, ordered_dict=None, refresh: bool = True, **kwargs) -> None:
    del ordered_dict, refresh, kwargs

  def close(self) -> None:
    pass

  def __enter__(self):
    return self

  def __exit__(self, *exc) -> None:
    self.close()


def is_terminal(stream: IO | None) -> bool:
  """Whether `stream` is an interactive terminal (False for files, pipes, closed or missing streams)."""
  try:
    return bool(stream is not None and stream.isatty())
  except (AttributeError, ValueError):  # no isatty, or a closed file
    return False


def bar(
  total: int | None,
  *,
  desc: str = "",
  unit: str = "it",
  initial: int = 0,
  stream: IO | None = None,
  process_index: int | None = None,
  enabled: bool = True,
  **kwargs: Any,
):
  """A tqdm bar on `stream` (default sys.stderr) when enabled, a terminal and process 0; else a `NoBar`.

  `process_index` defaults to `jax.process_index()` when jax is already imported, else 0.
  """
  stream = sys.stderr if stream is None else stream
  if process_index is None:
    jax = sys.modules.get("jax")
    process_index = jax.process_index() if jax is not None else 0
  if not enabled or process_index != 0 or not is_terminal(stream):
    return NoBar()
  from tqdm import tqdm

  class Bar(tqdm):
    """tqdm that, while open, writes absl log lines above the bar instead of into it."""

    enabled = True
    _restore_logs = None

    def close(self):
      try:
        super().close()
      finally:
        restore, self._restore_logs = getattr(self, "_restore_logs", None), None
        if restore is not None:
          restore()

  b = Bar(total=total, desc=desc, unit=unit, initial=initial, file=stream, dynamic_ncols=True, leave=True, **kwargs)
  b._restore_logs = _logs_above_bars(stream)
  return b


class _AboveBars:
  """A stream for absl's log handler that prints each record with `tqdm.write` (clear the bars, write, redraw)."""

  def __init__(self, stream: IO):
    self.stream = stream

  def write(self, text: str) -> None:
    from tqdm import tqdm

    if text.strip():
      tqdm.write(text.rstrip("\n"), file=self.stream)

  def flush(self) -> None:
    self.stream.flush()

  def isatty(self) -> bool:
    return is_terminal(self.stream)


def _logs_above_bars(stream: IO):
  """Routes absl's log records written to `stream` through `tqdm.write`; returns the function that undoes it."""
  from absl import logging as absl_logging

  handler = absl_logging.get_absl_handler().python_handler
  if handler.stream is not stream:
    return None
  handler.stream = _AboveBars(stream)

  def restore():
    handler.stream = stream

  return restore


_device_bar: Any = None  # the bar `device_tick` moves; set by `fed_from_device`
_lock = threading.Lock()  # sharded programs call back from several device threads


@contextlib.contextmanager
def fed_from_device(b):
  """Makes `b` the bar that `device_tick` calls move while the block runs."""
  global _device_bar
  previous, _device_bar = _device_bar, b
  try:
    yield b
  finally:
    _device_bar = previous


def _host_tick(step) -> None:
  with _lock:
    b = _device_bar
    done = int(step) + 1
    if b is not None and done > b.n:  # vmapped and sharded programs report each step several times
      b.update(done - b.n)


def device_tick(step, every: int = 1) -> None:
  """Inside jitted code: moves the `fed_from_device` bar to `step + 1` every `every` steps (a host callback)."""
  import jax

  jax.lax.cond(step % every == 0, lambda s: jax.debug.callback(_host_tick, s), lambda s: None, step)
