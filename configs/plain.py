"""Plain-conv baseline: the same U-Net with ordinary convolutions, the mask given as a fourth input channel.

Same data, masks, loss and schedule as configs/wconv.py; what masked convolutions are measured against.
`--config.loss.name=mse` trains it with seed 002's plain MSE instead of the partial-conv loss.

  python -m jaxinpaint.main --config=configs/plain.py --workdir=runs/plain
  python -m jaxinpaint.main --config=configs/plain.py:demo --workdir=runs/plain_demo
"""

from jaxinpaint.configs_lib import apply_variant, base_config


def get_config(arg=None):
  config = base_config()
  config.model.conv = "plain"
  config.model.norm_momentum, config.model.norm_epsilon = 0.99, 1e-5
  return apply_variant(config, arg)
