"""XLA CPU flags the project sets before JAX starts its CPU backend (`python -m jaxinpaint.main` and the benches).

Measured on a 2-core Sapphire Rapids VM with jax 0.10.2 (bench/vs_pytorch.py): routing convolutions to Eigen
instead of YNNPACK (`--xla_cpu_experimental_ynn_fusion_type=-individual_convolution`) makes the partial-conv
U-Net's train step ~1.6x faster (YNNPACK's kernel-gradient convolutions run at a fraction of its forward speed) and,
with the sub-pixel decoder of `layers.masked_conv`, its inference ~1.3x faster too. Flags only take effect when
set before the first JAX computation; GPU and TPU backends ignore them.
"""

from __future__ import annotations

import os

CPU_FLAGS = ("--xla_cpu_experimental_ynn_fusion_type=-individual_convolution",)


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
