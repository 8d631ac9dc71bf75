"""DeepFill v1 (Yu et al. 2018, seed 004's "DF1"): plain-convolution coarse-to-fine generator with contextual
attention, global + local WGAN-GP critics.

The reference setup: cnum 32, critics 64-128-256-256 (global) and 64-128-256-512 (local, on the image_size/2
patch around the hole), gradient penalty lambda 10, generator adversarial weight 0.001, spatially discounted L1
(gamma 0.9) + known-pixel L1 on both stages, weight 1.2, 5 critic updates per generator update, Adam 1e-4 with
betas (0.5, 0.9), square-box training masks (`random_box`, 128 +- 32 at 256 px).

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
  config.loss.update(name="discounted_l1", l1_weight=1.2)
  for optim in (config.optim, config.d_optim):
    optim.b2 = 0.9
  config.masks.kind = "random_box"
  return config
