"""What the train loop's one-step wait (`sharding.RunAhead`) costs: `train_and_evaluate` with and without it.

  .venv/bin/python bench/run_ahead_cost.py --config=configs/wconv.py --variant=tiny --repeats=3

Runs alternate (with, without, with, ...) in one process on 8 fake CPU devices, so drift of the host's speed hits
both alike; the first run of each also compiles. Prints one JSON line: the seconds of every run and the medians.
"""

import os
import statistics
import tempfile
import time

from absl import app, flags

flags.DEFINE_string("config", "configs/wconv.py", "Config file.")
flags.DEFINE_string("variant", "tiny", "Config variant.")
flags.DEFINE_integer("repeats", 3, "Runs of each kind.")
FLAGS = flags.FLAGS


def main(argv):
  del argv
  os.environ.setdefault("JAX_PLATFORMS", "cpu")
  os.environ["XLA_FLAGS"] = os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=8"
  import json

  from jaxinpaint import configs_lib, sharding, train, xla_flags

  xla_flags.set_cpu_flags()
  wait = sharding.RunAhead.after
  seconds = {"with_wait": [], "without_wait": []}
  for _ in range(FLAGS.repeats):
    for kind in seconds:
      sharding.RunAhead.after = wait if kind == "with_wait" else (lambda self, output: None)
      config = configs_lib.load_config_file(FLAGS.config, FLAGS.variant)
      with tempfile.TemporaryDirectory() as workdir:
        t0 = time.perf_counter()
        train.train_and_evaluate(config, workdir)
        seconds[kind].append(round(time.perf_counter() - t0, 3))
  sharding.RunAhead.after = wait
  medians = {k: statistics.median(v) for k, v in seconds.items()}
  print(json.dumps({"config": FLAGS.config, "variant": FLAGS.variant, "seconds": seconds, "median": medians}))


if __name__ == "__main__":
  app.run(main)
