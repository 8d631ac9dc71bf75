"""Reproduces the XLA CPU-client deadlock that `sharding.RunAhead` avoids, without any jaxinpaint code.

  .venv/bin/python bench/cpu_queue_deadlock.py --mode=queue    # deadlocks within minutes on 2 busy cores
  .venv/bin/python bench/cpu_queue_deadlock.py --mode=bounded  # the train loop's pattern: runs to the end

Each iteration dispatches a step with an all-reduce over 8 CPU devices and then `--ops` small programs on its
output (as an unjitted metric merge does). `queue` reads a value back only every `--sync` iterations, so dozens of
programs wait per device; `bounded` merges in one jitted program and waits for the previous iteration's merge
(`sharding.RunAhead`). XLA's CPU client admits at most 32 unfinished programs per device and its launch threads
take those slots in no fixed order: in `queue` mode later programs, waiting on an all-reduce, can take every slot
of one device while that all-reduce waits there for a launch. 7 of 8 devices then wait in the all-reduce, and
XLA aborts the process after `--abort_after` seconds ("Termination timeout for `all reduce ...`"). Seen here with
the other core busy: `queue` deadlocked 2 times in 2 runs (after 20 000 and 4 000 iterations, a few minutes
each), `bounded` ran 80 000 and 200 000 iterations. Prints one JSON line at the end (or XLA's abort message).
"""

import os
import sys

from absl import app, flags

flags.DEFINE_enum("mode", "bounded", ["queue", "bounded"], "queue: sync every --sync iterations; bounded: RunAhead.")
flags.DEFINE_integer("iterations", 100_000, "Iterations (step + ops).")
flags.DEFINE_integer("ops", 30, "Small programs per iteration (one jitted program in bounded mode).")
flags.DEFINE_integer("sync", 100, "queue mode: read a value back every this many iterations.")
flags.DEFINE_integer("size", 256, "The step's operand is f32[size, size], split over the devices.")
flags.DEFINE_integer("abort_after", 60, "XLA's CPU collective termination timeout, seconds.")
FLAGS = flags.FLAGS


def main(argv):
  del argv
  os.environ["JAX_PLATFORMS"] = "cpu"
  os.environ["XLA_FLAGS"] = (
    os.environ.get("XLA_FLAGS", "")
    + " --xla_force_host_platform_device_count=8 --xla_backend_optimization_level=0"
    + f" --xla_cpu_collective_call_terminate_timeout_seconds={FLAGS.abort_after}"
    + f" --xla_cpu_collective_call_warn_stuck_timeout_seconds={max(1, FLAGS.abort_after // 4)}"
  )
  import json
  import time

  import jax
  import jax.numpy as jnp
  import numpy as np
  from jax.sharding import NamedSharding, PartitionSpec as P

  from jaxinpaint import sharding

  mesh = jax.make_mesh((8,), ("data",))
  rng = np.random.default_rng(0)
  x = jax.device_put(rng.normal(size=(FLAGS.size, FLAGS.size)).astype(np.float32), NamedSharding(mesh, P("data")))
  total = jax.device_put(np.zeros((16,), np.float32), NamedSharding(mesh, P()))
  ops = FLAGS.ops

  @jax.jit
  def step(x):
    y = jnp.tanh(x - jnp.mean(x, axis=0, keepdims=True)) * 1.01  # the mean is an all-reduce over the devices
    y = jnp.tanh(y @ jnp.ones((y.shape[1], y.shape[1]), y.dtype) / y.shape[1] + y)
    return y, jnp.mean(y**2)

  @jax.jit
  def merge(total, loss):
    for _ in range(ops):
      total = total + loss
    return total

  ahead = sharding.RunAhead()
  t0 = time.perf_counter()
  for i in range(FLAGS.iterations):
    x, loss = step(x)
    if FLAGS.mode == "bounded":
      total = merge(total, loss)
      ahead.after(total)
    else:
      for _ in range(ops):
        total = total + loss
      if (i + 1) % FLAGS.sync == 0:
        jax.block_until_ready(total)
  jax.block_until_ready(total)
  print(json.dumps({"mode": FLAGS.mode, "iterations": FLAGS.iterations, "seconds": time.perf_counter() - t0}))
  sys.stdout.flush()


if __name__ == "__main__":
  app.run(main)
