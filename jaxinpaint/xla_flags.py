"""XLA CPU flags the project sets before JAX starts its CPU backend: on `import jaxinpaint`, and again in every
entry point (`python -m jaxinpaint.main`, the benches), so library users get them too.

Measured on a 2-core Sapphire Rapids VM with jax 0.10.2 (bench/vs_pytorch.py): routing convolutions to Eigen
instead of YNNPACK (`--xla_cpu_experimental_ynn_fusion_type=-individual_convolution`) makes the partial-conv
U-Net's train step ~1.6x faster (YNNPACK's kernel-gradient convolutions run at a fraction of its forward speed) and,
with the sub-pixel decoder of `layers.masked_conv`, its inference ~1.3x faster too. Flags only take effect when
set before the JAX backends start; GPU and TPU backends ignore them. `JAXINPAINT_CPU_FLAGS=0` leaves XLA_FLAGS
alone (to measure JAX's defaults).
"""

from __future__ import annotations

import os
import sys
import warnings

CPU_FLAGS = ("--xla_cpu_experimental_ynn_fusion_type=-individual_convolution",)
OPT_OUT = "JAXINPAINT_CPU_FLAGS"  # "0": neither set the flags on import nor warn about them


def set_cpu_flags(extra: str = "") -> str:
  """Appends CPU_FLAGS and `extra` to XLA_FLAGS; returns XLA_FLAGS.

  Flags the user already set win: a flag whose name is already in XLA_FLAGS is not added again.
  """
  current = os.environ.get("XLA_FLAGS", "").split()
  names = {f.split("=")[0] for f in current}
  for flag in (*CPU_FLAGS, *extra.split()):
    if flag.split("=")[0] not in names:
      current.append(flag)
      names.add(flag.split("=")[0])
  os.environ["XLA_FLAGS"] = " ".join(current)
  return os.environ["XLA_FLAGS"]


def unset_cpu_flags() -> str:
  """Removes CPU_FLAGS (by name) from XLA_FLAGS, for measuring JAX's defaults; returns XLA_FLAGS."""
  names = {f.split("=")[0] for f in CPU_FLAGS}
  os.environ["XLA_FLAGS"] = " ".join(f for f in os.environ.get("XLA_FLAGS", "").split() if f.split("=")[0] not in names)
  return os.environ["XLA_FLAGS"]


def backends_started() -> bool:
  """Whether JAX has started its backends (after which XLA_FLAGS is no longer read). Imports no jax itself."""
  if "jax" not in sys.modules:
    return False
  from jax._src import xla_bridge

  return xla_bridge.backends_are_initialized()


def apply_on_import() -> bool:
  """`import jaxinpaint`'s hook: sets CPU_FLAGS while the backends have not started (returns True); when they
  already started on the CPU without them, warns once, naming the flags (returns False)."""
  if os.environ.get(OPT_OUT, "1") == "0":
    return False
  if not backends_started():
    set_cpu_flags()
    return True
  names = {f.split("=")[0] for f in os.environ.get("XLA_FLAGS", "").split()}
  missing = [f for f in CPU_FLAGS if f.split("=")[0] not in names]
  import jax

  if missing and jax.default_backend() == "cpu":
    warnings.warn(
      f"JAX's CPU backend started before `import jaxinpaint`, without {' '.join(missing)}: the U-Net "
      f"train step runs ~1.6x slower. Import jaxinpaint before running any JAX code, or set "
      f"XLA_FLAGS={' '.join(missing)} before starting Python.",
      RuntimeWarning,
      stacklevel=3,
    )
  return False
