"""Entry point: `python -m jaxinpaint.main --config=configs/wconv.py[:variant] --workdir=DIR [--config.k=v]`.

`--mode=train` (default) trains with periodic evaluation and resumes from the latest checkpoint in DIR; other
modes (see `MODES`) run other jobs on the same config and workdir. Multi-host starts only when asked:
`--distributed` (or JAXINPAINT_DISTRIBUTED=1) calls `jax.distributed.initialize()`, which reads the coordinator
from the cluster environment (SLURM, ...) or from JAX_COORDINATOR_ADDRESS / JAX_NUM_PROCESSES / JAX_PROCESS_ID.
Bad input (config values, data, batch sizes, a busy or unwritable workdir, a full disk) ends with one `error:`
line, the last line of output, and exit status 1. A run stopped by SIGTERM saves a checkpoint and exits with
status 143 (128 + SIGTERM), so wrappers can tell a preemption from a finished run (0).
"""

import os
import sys

from absl import flags, logging
from ml_collections import config_flags

from jaxinpaint import cli

_CONFIG = config_flags.DEFINE_config_file("config", None, "Config file, e.g. configs/wconv.py:demo.", lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "Directory for checkpoints, TensorBoard logs and samples.")
_DISTRIBUTED = flags.DEFINE_bool(
  "distributed", os.environ.get("JAXINPAINT_DISTRIBUTED", "0") == "1", "Call jax.distributed.initialize() (multi-host)."
)
_RESTORE_STEP = flags.DEFINE_integer(
  "restore_step",
  None,
  "Resume (or fork) from this checkpoint step instead of the "
  "newest readable one; newer steps are moved to WORKDIR/discarded_checkpoints.",
)
_FORK_TO = flags.DEFINE_string(
  "fork_to",
  None,
  "Start a run of --config in this new directory from --workdir's "
  "latest (or --restore_step) checkpoint, e.g. to continue a run with another config.",
)
flags.mark_flags_as_required(["config", "workdir"])

PREEMPTED_STATUS = 143  # 128 + SIGTERM: what a shell reports for a job killed by SIGTERM

# mode -> "module:function", each called as function(config, workdir). Features add their own mode here.
MODES = {
  "train": "jaxinpaint.train:train_and_evaluate",
  "eval": "jaxinpaint.evaluate:evaluate",
  "complete": "jaxinpaint.complete:complete_run",
  "report": "jaxinpaint.report:evaluate_and_print",  # `make demo`'s closing table (margins over the peers), any run
}
_MODE = flags.DEFINE_enum("mode", "train", list(MODES), "What to run on --config and --workdir.")


def load_config():
  """The parsed config; config_flags defers a bad config file's error to first use: report it in one line."""
  try:
    config = _CONFIG.value
    config.keys()
  except OSError as e:
    sys.exit("error: " + " ".join(str(e).split()))
  return config


def main(argv: list[str] | None = None) -> None:
  """Runs `--mode` on `--config` and `--workdir` (`cli.run_main`: XLA flags, log filter, one `error:` line)."""
  cli.run_main(_run, argv, errors=_errors, flags_parser=parse_flags)


def _errors() -> tuple[type[BaseException], ...]:
  """What ends a run with an `error:` line: bad input, a halted run, a busy workdir (imported late: fast --help)."""
  from jaxinpaint import train, workdir_lock

  return ValueError, FileNotFoundError, OSError, train.TrainingHalted, workdir_lock.WorkdirBusyError


def _run() -> None:
  config = load_config()
  import jax  # after flag parsing, so --help stays fast

  if _DISTRIBUTED.value:
    from jaxinpaint import sharding  # reads JAX_COORDINATOR_ADDRESS / JAX_NUM_PROCESSES / JAX_PROCESS_ID

    sharding.initialize_distributed()
  logging.info(
    "JAX process %d/%d, %d local / %d global devices",
    jax.process_index(),
    jax.process_count(),
    jax.local_device_count(),
    jax.device_count(),
  )
  import contextlib
  import importlib

  from jaxinpaint import train, workdir_lock

  module, function = MODES[_MODE.value].split(":")
  if _FORK_TO.value and os.path.realpath(_FORK_TO.value) == os.path.realpath(_WORKDIR.value):
    raise ValueError(f"--fork_to={_FORK_TO.value} is --workdir itself; a fork needs a new directory")
  if _MODE.value == "train":
    result = train.train_and_evaluate(
      config,
      _FORK_TO.value or _WORKDIR.value,
      restore_step=_RESTORE_STEP.value,
      fork_from=_WORKDIR.value if _FORK_TO.value else None,
    )
    if result.get("preempted"):
      logging.warning(
        "preempted: checkpoint of step %d saved; exiting with status %d", result["step"], PREEMPTED_STATUS
      )
      sys.exit(PREEMPTED_STATUS)
    if config.eval.get("after_train", False):  # make demo ends with its verdict: model vs classical peers
      from jaxinpaint import report

      report.evaluate_and_print(config, _FORK_TO.value or _WORKDIR.value)
    return
  if _RESTORE_STEP.value is not None or _FORK_TO.value:
    raise ValueError(f"--restore_step and --fork_to are for --mode=train, not --mode={_MODE.value}")
  # other modes write results into the workdir too: one writer at a time
  lock = workdir_lock.WorkdirLock(_WORKDIR.value) if jax.process_index() == 0 else contextlib.nullcontext()
  with lock:
    getattr(importlib.import_module(module), function)(config, _WORKDIR.value)


def parse_flags(argv):
  """absl flag parsing, with config overrides that name no key or have the wrong type reported in one line."""
  try:
    return flags.FLAGS(argv)
  except flags.Error as e:  # config_flags folds a config file's traceback into the message: keep its last line
    lines = [line for line in str(e).splitlines() if line.strip()]
    sys.exit(f"error: {lines[-1] if lines else e}")
  except (AttributeError, KeyError, TypeError, ValueError) as e:  # raised by config_flags for bad overrides
    message = str(e).strip().strip("'\"").replace("\\n", " ").replace("\n", " ").replace("\\'", "'")
    sys.exit(f"error: bad --config override: {message}")


if __name__ == "__main__":
  main()
