"""jaxinpaint.cli: the one runner of every entry point — one `error:` line and status 1 for expected errors (even
with a library thread still running), the traceback switch, other statuses passed through, XLA flags set, orbax's
INFO narration dropped from the absl log."""

import logging as std_logging
import os
import subprocess
import sys
import textwrap

import pytest

from jaxinpaint import cli, xla_flags

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# An entry point whose body fails after starting a non-daemon thread: a plain sys.exit would wait for the thread
# (120 s here, past the test's timeout) at interpreter shutdown; cli's exit is immediate.
CHILD = textwrap.dedent("""
  import os, sys, threading, time
  from absl import flags
  from jaxinpaint import cli
  _WHAT = flags.DEFINE_string("what", "error", "error | status | other")

  def body():
    print("XLA_FLAGS=" + os.environ.get("XLA_FLAGS", ""), flush=True)
    if _WHAT.value == "status":
      return 143
    if _WHAT.value == "other":
      raise KeyError("not an expected error")
    seconds = 1 if os.environ.get("JAXINPAINT_TRACEBACK") else 120  # with a traceback, shutdown waits for it
    threading.Thread(target=time.sleep, args=(seconds,)).start()  # like a library's worker still running
    raise ValueError("bad\\n   input")

  cli.run_main(body, sys.argv)
""")


def _child(tmp_path, *args, traceback=False):
  script = tmp_path / "child.py"
  script.write_text(CHILD)
  env = dict(os.environ, JAX_PLATFORMS="cpu", PYTHONPATH=ROOT)
  env.pop(cli.TRACEBACK, None)
  env.pop("XLA_FLAGS", None)
  if traceback:
    env[cli.TRACEBACK] = "1"
  return subprocess.run(
    [sys.executable, str(script), *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60
  )


def test_expected_error_is_one_line_last_status_1_at_once(tmp_path):
  proc = _child(tmp_path)
  assert proc.returncode == 1, proc.stderr[-2000:]
  assert proc.stderr.strip().splitlines()[-1] == "error: bad input", proc.stderr[-2000:]
  assert "Traceback" not in proc.stderr
  assert all(flag in proc.stdout for flag in xla_flags.CPU_FLAGS), proc.stdout  # set before the body runs


def test_status_passes_through_and_other_errors_keep_their_traceback(tmp_path):
  assert _child(tmp_path, "--what=status").returncode == 143
  other = _child(tmp_path, "--what=other")
  assert other.returncode == 1 and "Traceback" in other.stderr and "KeyError" in other.stderr, other.stderr[-2000:]
  assert not any(line.startswith("error:") for line in other.stderr.splitlines())


def test_traceback_switch_and_stray_arguments(tmp_path):
  shown = _child(tmp_path, traceback=True)
  assert shown.returncode == 1 and "Traceback" in shown.stderr and "ValueError: bad" in shown.stderr
  stray = _child(tmp_path, "extra")
  assert stray.returncode == 1 and "unexpected arguments: ['extra']" in stray.stderr, stray.stderr[-2000:]


def test_guarded_soft_exit_and_late_error_types(monkeypatch):
  monkeypatch.delenv(cli.TRACEBACK, raising=False)

  def bad():
    raise FileNotFoundError("no\nsuch   run")

  with pytest.raises(SystemExit) as exit_info:
    cli.guarded(bad, (FileNotFoundError,), hard=False)
  assert exit_info.value.code == "error: no such run"
  with pytest.raises(SystemExit):  # error types given by a function, for modules imported late
    cli.guarded(bad, lambda: (OSError,), hard=False)
  with pytest.raises(FileNotFoundError):  # not an expected error: raised as it is
    cli.guarded(bad, (ValueError,), hard=False)
  assert cli.guarded(lambda: 7, (ValueError,), hard=False) == 7
  monkeypatch.setenv(cli.TRACEBACK, "1")
  with pytest.raises(FileNotFoundError):
    cli.guarded(bad, (FileNotFoundError,), hard=False)


def test_quiet_filter_drops_orbax_info_only():
  def record(level, path):
    return std_logging.LogRecord("absl", level, path, 1, "message", None, None)

  quiet = cli.QuietLibraries()
  assert not quiet.filter(record(std_logging.INFO, "/site-packages/orbax/checkpoint/manager.py"))
  assert quiet.filter(record(std_logging.WARNING, "/site-packages/orbax/checkpoint/manager.py"))
  assert quiet.filter(record(std_logging.INFO, "/work/main/jaxinpaint/train.py"))
  from absl import logging

  cli.quiet_libraries()
  cli.quiet_libraries()
  assert sum(isinstance(f, cli.QuietLibraries) for f in logging.get_absl_handler().filters) == 1
