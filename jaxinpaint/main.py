"""Entry point: `python -m jaxinpaint.main --config=configs/wconv.py[:variant] --workdir=DIR [--config.k=v]`.

`--mode=train` (default) trains with periodic evaluation and resumes from the latest checkpoint in DIR; other
modes (see `MODES`) run other jobs on the same config and workdir. Multi-host starts only when asked:
`--distributed` (or JAXINPAINT_DISTRIBUTED=1) calls `jax.distributed.initialize()`, which reads the coordinator
from the cluster environment (SLURM, ...) or from JAX_COORDINATOR_ADDRESS / JAX_NUM_PROCESSES / JAX_PROCESS_ID.
Bad input (config values, data, batch sizes) ends with one `error:` line and exit status 1.
"""

import os
import sys

from absl import app, flags, logging
from ml_collections import config_flags

_CONFIG = config_flags.DEFINE_config_file("config", None, "Config file, e.g. configs/wconv.py:demo.",
                                          lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "Directory for checkpoints, TensorBoard logs and samples.")
_DISTRIBUTED = flags.DEFINE_bool("distributed", os.environ.get("JAXINPAINT_DISTRIBUTED", "0") == "1",
                                 "Call jax.distributed.initialize() (multi-host).")
flags.mark_flags_as_required(["config", "workdir"])

# mode -> "module:function", each called as function(config, workdir). Features add their own mode here.
MODES = {
    "train": "jaxinpaint.train:train_and_evaluate",
    "eval": "jaxinpaint.evaluate:evaluate",
    "complete": "jaxinpaint.completion:complete_run",
}
_MODE = flags.DEFINE_enum("mode", "train", list(MODES), "What to run on --config and --workdir.")


class _QuietLibraries:
  """absl log filter: orbax narrates every save at INFO; keep its warnings, drop the narration."""

  def filter(self, record):
    return record.levelno >= 30 or "/orbax/" not in record.pathname


def load_config():
  """The parsed config; config_flags defers a bad config file's error to first use: report it in one line."""
  try:
    config = _CONFIG.value
    config.keys()
  except OSError as e:
    sys.exit("error: " + " ".join(str(e).split()))
  return config


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  config = load_config()
  logging.get_absl_handler().addFilter(_QuietLibraries())
  from jaxinpaint import xla_flags

  xla_flags.set_cpu_flags()  # before the first JAX computation starts the CPU backend
  import jax  # after flag parsing, so --help stays fast

  if _DISTRIBUTED.value:
    from jaxinpaint import sharding  # reads JAX_COORDINATOR_ADDRESS / JAX_NUM_PROCESSES / JAX_PROCESS_ID

    sharding.initialize_distributed()
  logging.info("JAX process %d/%d, %d local / %d global devices", jax.process_index(), jax.process_count(),
               jax.local_device_count(), jax.device_count())
  import importlib

  from jaxinpaint import train

  module, function = MODES[_MODE.value].split(":")
  try:
    getattr(importlib.import_module(module), function)(config, _WORKDIR.value)
  except (ValueError, FileNotFoundError, train.NonFiniteLossError) as e:
    if os.environ.get("JAXINPAINT_TRACEBACK"):
      raise
    logging.error("%s", e)
    sys.exit(f"error: {e}")


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
  app.run(main, flags_parser=parse_flags)
