"""DeepFill v1 (Yu et al. 2018, seed 004's "DF1"): plain-convolution coarse-to-fine generator with contextual
attention, global + local WGAN-GP critics.

The reference setup: cnum 32, critics 64-128-256-256 (global) and 64-128-256-512 (local, on a window around the
hole), gradient penalty lambda 10, generator adversarial weight 0.001, spatially discounted L1 (gamma 0.9) +
known-pixel L1, each COARSE_L1_ALPHA 1.2 x coarse + refined and weighted 1.2 (L1_LOSS_ALPHA = AE_LOSS_ALPHA), 5
critic updates per generator update, Adam 1e-4 with betas (0.5, 0.9), square-box training masks (`random_box`,
128 +- 32 at 256 px). The reference's local patch is the hole's box (128 px, holding a hole shrunk inside it); here
holes reach 160 px, so the local window is a fixed 160 x 160 at 256 px (`discriminator.local_fraction`, static
shapes under jit) centred on the hole's box: it always holds the whole hole of a `random_box` mask.

  python -m jaxinpaint.main --config=configs/deepfill_v1.py --workdir=runs/deepfill_v1
  python -m jaxinpaint.main --config=configs/deepfill_v1.py:demo --workdir=runs/deepfill_v1_demo
  python -m jaxinpaint.main --config=configs/deepfill_v1.py:tiny --workdir=/tmp/t
"""

import os

from jaxinpaint.configs_lib import load_config_module


def get_config(arg=None):
  # Config files are loaded by path (config_flags), so the sibling is loaded the same way.
  gated = load_config_module(os.path.join(os.path.dirname(__file__), "gated.py"))
  config = gated.deepfill_config(arg, generator="deepfill_v1", cnum=32)
  config.discriminator.name = "global_local"
  config.discriminator.features = (64, 128, 256, 256)
  if arg == "demo":
    config.discriminator.features = (32, 64, 128, 128)
  elif arg == "tiny":
    config.discriminator.features = (8, 16, 16, 16)
  config.gan.update(loss="wgan", weight=0.001, n_critic=5, gp_weight=10.0)
  config.loss.update(name="discounted_l1", l1_weight=1.2, coarse_weight=1.2)  # reference COARSE_L1_ALPHA
  for optim in (config.optim, config.d_optim):
    optim.b2 = 0.9
  config.masks.kind = "random_box"
  return config
