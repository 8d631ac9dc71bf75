"""jaxinpaint: deep image inpainting in JAX/Flax — masked convolutions, U-Nets, GANs, one sharded trainer."""

import os as _os

from jaxinpaint import xla_flags as _xla_flags

# clu's metric writers import TensorFlow (CPU only, for TensorBoard files); keep its start-up chatter out of logs.
_os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
# The measured-faster XLA CPU flags for library users too (notebooks, own loops), not only the entry points; this
# imports no jax, and warns once when JAX's CPU backend already started without them (jaxinpaint/xla_flags.py).
_xla_flags.apply_on_import()
