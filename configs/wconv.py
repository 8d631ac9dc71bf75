"""WConv (seed 004): the partial-conv U-Net with weighted mask convolutions and weighted BatchNorm.

Reproduces seed 004's training setup: weighted conv + weighted BatchNorm (eps 1e-8, decay 0.999), the
partial-conv loss (1, 6, 0.05, 120, 0.1), Adam (0.9, 0.999, eps 1e-8) at 5e-4 decaying gradually to 1e-5,
global batch 25, CelebA scaled to 256x313 then random 256x256 crops, free-form (DeepFill v2) masks.

  python -m jaxinpaint.main --config=configs/wconv.py --workdir=runs/wconv
  python -m jaxinpaint.main --config=configs/wconv.py:demo --workdir=runs/wconv_demo   # offline, minutes on CPU
  python -m jaxinpaint.main --config=configs/wconv.py:tiny --workdir=/tmp/t            # seconds, for tests
"""

from jaxinpaint.configs_lib import apply_variant, base_config


def get_config(arg=None):
  config = base_config()
  config.model.conv = "weighted"
  return apply_variant(config, arg)
