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
}
_MODE = flags.DEFINE_enum("mode", "train", list(MODES), "What to run on --config and --workdir.")


class _QuietLibraries:
  """absl log filter: orbax narrates every save at INFO; keep its warnings, drop the narration."""

  def filter(self, record):
    return record.levelno >= 30 or "/orbax/" not in record.pathname


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  logging.get_absl_handler().addFilter(_QuietLibraries())
  import jax  # after flag parsing, so --help stays fast

  if _DISTRIBUTED.value:
    jax.distributed.initialize()
  logging.info("JAX process %d/%d, %d local / %d global devices", jax.process_index(), jax.process_count(),
               jax.local_device_count(), jax.device_count())
  import importlib

  from jaxinpaint import train

  module, function = MODES[_MODE.value].split(":")
  try:
    getattr(importlib.import_module(module), function)(_CONFIG.value, _WORKDIR.value)
  except (ValueError, FileNotFoundError, train.NonFiniteLossError) as e:
    if os.environ.get("JAXINPAINT_TRACEBACK"):
      raise
    logging.error("%s", e)
    sys.exit(f"error: {e}")


if __name__ == "__main__":
  app.run(main)
