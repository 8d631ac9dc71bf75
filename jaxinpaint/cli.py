"""One runner for every command-line entry point (`jaxinpaint.main`, `evaluate`, `inpaint`, `ablate`, `export`,
`serve`, `masks`).

`run_main(body, argv)` parses absl flags (`app.run`), refuses stray positional arguments, sets the project's XLA
CPU flags before JAX starts its backends, drops orbax's INFO narration from the absl log, and turns the errors an
entry point expects (bad input) into one `error:` line on stderr, the last line of output, and exit status 1.
`JAXINPAINT_TRACEBACK=1` lets those errors raise instead, with their traceback. Any other status the body returns
(or passes to `sys.exit`, e.g. 143 after a preemption) is the program's status.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Sequence
from typing import NoReturn

TRACEBACK = "JAXINPAINT_TRACEBACK"  # set (to anything non-empty): expected errors raise with their traceback

Errors = tuple[type[BaseException], ...] | Callable[[], tuple[type[BaseException], ...]]


class QuietLibraries:
  """absl log filter: orbax narrates every save and restore at INFO; keep its warnings, drop the narration."""

  def filter(self, record) -> bool:
    return record.levelno >= 30 or "/orbax/" not in record.pathname


def quiet_libraries() -> None:
  """Adds `QuietLibraries` to absl's handler, once however often it is called."""
  from absl import logging

  handler = logging.get_absl_handler()
  if not any(isinstance(f, QuietLibraries) for f in handler.filters):
    handler.addFilter(QuietLibraries())


def error_line(message: object) -> str:
  """`error: <message>` on one line (a message's newlines and runs of spaces become single spaces)."""
  return "error: " + " ".join(str(message).split())


def exit_now(status: int) -> NoReturn:
  """Exits now, so that no background thread of a library (orbax's asyncio loops, grain's workers) prints a
  traceback at interpreter shutdown below the error line; checkpoints are already waited for by then."""
  from absl import logging

  logging.flush()
  sys.stdout.flush()
  sys.stderr.flush()
  os._exit(status)


def fail(message: object, *, hard: bool = True) -> NoReturn:
  """Ends the program with one `error:` line and status 1.

  hard: exit at once (`exit_now`), for errors raised once libraries may have started threads; False raises
  SystemExit (what argparse-style callers and in-process tests expect) for errors found before anything started.
  """
  if not hard:
    sys.exit(error_line(message))
  sys.stderr.write(error_line(message) + "\n")
  exit_now(1)


def start() -> None:
  """What every entry point does before its first JAX computation: XLA CPU flags, the quiet log filter."""
  from jaxinpaint import xla_flags

  xla_flags.set_cpu_flags()  # before the first JAX computation starts the CPU backend: same numbers everywhere
  quiet_libraries()


def guarded(body: Callable[[], int | None], errors: Errors, *, hard: bool = True) -> int | None:
  """body(), with the exceptions in `errors` (types, or a function returning them, for types of modules that are
  imported late to keep --help fast) ended by `fail` unless JAXINPAINT_TRACEBACK is set."""
  try:
    return body()
  except Exception as e:  # noqa: BLE001 -- re-raised below unless it is one of `errors`
    if not isinstance(e, errors() if callable(errors) else errors) or os.environ.get(TRACEBACK):
      raise
    fail(e, hard=hard)


def flag_value(argv: Sequence[str], name: str) -> str | None:
  """`--name=V` or `--name V` in `argv` (None when absent), read before absl parses the flags."""
  for i, arg in enumerate(argv):
    if arg.startswith(f"--{name}="):
      return arg.split("=", 1)[1]
    if arg == f"--{name}" and i + 1 < len(argv):
      return argv[i + 1]
  return None


def define_run_config(argv: Sequence[str], help_text: str) -> None:
  """Defines `--config` as the saved config of the run named by `--workdir` in `argv` (so only keys that exist
  can be overridden with --config.k=v), the base config without one (absl then asks for --workdir). A missing or
  unreadable config.json is one `error:` line, a plain SystemExit (no flag is defined or library started yet)."""
  from ml_collections import config_flags

  from jaxinpaint import configs_lib, runs

  workdir = flag_value(argv, "workdir")
  config = guarded(
    lambda: runs.load_run_config(workdir) if workdir else configs_lib.base_config(), (FileNotFoundError,), hard=False
  )
  config_flags.DEFINE_config_dict("config", config, help_text)


def run_main(
  body: Callable[[], int | None],
  argv: Sequence[str] | None = None,
  *,
  errors: Errors = (ValueError, FileNotFoundError),
  flags_parser: Callable[[list[str]], list[str]] | None = None,
) -> None:
  """`app.run` of `body()` (which reads its absl flags from `flags.FLAGS`); see the module docstring.

  argv: the program's arguments, argv[0] its name (None: sys.argv). flags_parser: absl's, unless given.
  """
  from absl import app

  def main(args: list[str]) -> int | None:
    if len(args) > 1:
      raise app.UsageError(f"unexpected arguments: {args[1:]}")
    start()
    return guarded(body, errors)

  app.run(main, None if argv is None else list(argv), **({"flags_parser": flags_parser} if flags_parser else {}))
