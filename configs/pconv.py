"""PConv (Liu et al. 2018): the partial-conv U-Net with the paper's two-stage schedule.

Adam at 2e-4, then fine-tuning at 5e-5 with the encoder's BatchNorm statistics frozen (from `finetune_step`);
same data, masks and loss as configs/wconv.py so the two are a fair ablation (seed 004's PConv column).

  python -m jaxinpaint.main --config=configs/pconv.py --workdir=runs/pconv
  python -m jaxinpaint.main --config=configs/pconv.py:demo --workdir=runs/pconv_demo
"""

from jaxinpaint.configs_lib import apply_variant, base_config


def get_config(arg=None):
  config = base_config()
  config.model.conv = "partial"
  config.model.norm_momentum, config.model.norm_epsilon = 0.99, 1e-5
  config.optim.schedule = "finetune"
  config.optim.learning_rate = 2e-4
  config.optim.finetune_learning_rate = 5e-5
  config.optim.finetune_step = 200_000
  config = apply_variant(config, arg)
  if arg:
    config.optim.finetune_learning_rate = config.optim.learning_rate / 4
  return config
