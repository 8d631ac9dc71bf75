"""jaxinpaint: deep image inpainting in JAX/Flax — masked convolutions, U-Nets, GANs, one sharded trainer."""

import os as _os

# clu's metric writers import TensorFlow (CPU only, for TensorBoard files); keep its start-up chatter out of logs.
_os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
