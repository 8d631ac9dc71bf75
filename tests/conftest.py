"""Test set-up: 8 fake CPU devices and parsed absl flags, before anything imports jax."""

import os

# 8 fake CPU devices. A device stuck in a collective (XLA's CPU client deadlocks when a loop queues many programs
# behind an all-reduce: see sharding.RunAhead) makes XLA abort the worker after 240 s with a line naming the
# collective; faulthandler has printed the Python stacks at 180 s (pyproject.toml), and the run then stops.
os.environ["XLA_FLAGS"] = (
  os.environ.get("XLA_FLAGS", "")
  + " --xla_force_host_platform_device_count=8"
  + " --xla_cpu_collective_call_terminate_timeout_seconds=240 --xla_cpu_collective_call_warn_stuck_timeout_seconds=60"
).strip()
os.environ.setdefault("JAX_PLATFORMS", "cpu")
# The XLA CPU flags `python -m jaxinpaint.main` sets, so in-process runs compute what the CLI computes; and XLA's
# LLVM -O0. The tests compile hundreds of small programs and run each a few times: at -O0 the suite takes 10-13 min
# instead of 15-17 (cold, 2 cores). Values differ from -O2 only by float rounding; every comparison a test makes
# (sharded vs single device, resumed vs straight) is between programs compiled alike. Like every flag set here, a
# level in the caller's XLA_FLAGS wins (`XLA_FLAGS=--xla_backend_optimization_level=2 pytest ...`: the users' path).
from jaxinpaint import xla_flags  # noqa: E402  (imports no jax)

xla_flags.set_cpu_flags("--xla_backend_optimization_level=0")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
# Several tests compile the same tiny train step; a persistent cache shared by the xdist workers compiles it once.
os.environ.setdefault(
  "JAX_COMPILATION_CACHE_DIR", os.path.join(os.path.dirname(__file__), "..", ".pytest_cache", "jax_cache")
)
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0.5")

from absl import flags  # noqa: E402

# grain worker processes and absl-using code read flags; tests never parse argv.
flags.FLAGS.mark_as_parsed()
