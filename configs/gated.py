"""DeepFill v2 (Yu et al. 2019, seed 003): gated-convolution coarse-to-fine generator with contextual attention,
SN-PatchGAN on [image, hole] with the hinge loss, L1 on both stages.

The reference setup: cnum 48 (~4.1M generator parameters), free-form brush + box training masks (`deepfill_v2`),
Adam 1e-4, betas (0.5, 0.999) for G and D, batch 16, 256x256 crops. Evaluated on the same data, held-out set,
masks (`free_form`) and metrics as the U-Nets, on the refined output.

  python -m jaxinpaint.main --config=configs/gated.py --workdir=runs/gated
  python -m jaxinpaint.main --config=configs/gated.py:demo --workdir=runs/gated_demo   # offline, minutes on CPU
  python -m jaxinpaint.main --config=configs/gated.py:tiny --workdir=/tmp/t            # seconds, for tests
"""

import ml_collections

from jaxinpaint.configs_lib import apply_variant, base_config


def deepfill_config(arg, *, generator: str, cnum: int):
  """The DeepFill sections shared by configs/gated.py and configs/deepfill_v1.py (v2 values)."""
  config = apply_variant(base_config(), arg)  # data and logging of the variant; model sections replaced below
  config.task = "deepfill"
  config.model = ml_collections.ConfigDict(
    dict(name=generator, cnum=cnum, softmax_scale=10.0, attention_similarity="reference", strided_grad="auto")
  )  # layers/masked_conv.FAST_PATHS
  # local_*: v1's local critic; its window is local_fraction of the image side (160 at 256 px: the largest hole
  # `random_box` draws, so the window always holds the whole hole, as the reference's local patch = hole box)
  config.discriminator = ml_collections.ConfigDict(
    dict(
      name="sn_patchgan",
      features=(64, 128, 256, 256, 256, 256),
      local_features=(64, 128, 256, 512),
      local_fraction=160 / 256,
    )
  )
  config.gan = ml_collections.ConfigDict(dict(loss="hinge", weight=1.0, n_critic=1, gp_weight=0.0))
  config.loss = ml_collections.ConfigDict(dict(name="l1", l1_weight=1.0, coarse_weight=1.0, discount_gamma=0.9))
  config.optim.update(learning_rate=1e-4, end_learning_rate=1e-4, schedule="constant", b1=0.5, b2=0.999)
  config.d_optim = ml_collections.ConfigDict(config.optim.to_dict())
  config.masks.kind = "deepfill_v2"  # training: box + brush; evaluation keeps the U-Nets' free_form
  if not arg:
    config.batch_size = 16
    config.num_train_steps = 500_000
    config.train.update(log_every=100, eval_every=5000, checkpoint_every=5000)
  elif arg == "demo":  # about 0.5-1.3 s a step on 2 CPU cores
    config.model.cnum = 16
    config.discriminator.features = (16, 32, 64, 64, 64, 64)
    config.discriminator.local_features = (16, 32, 64, 128)
    config.batch_size = 8
    config.num_train_steps = 480
    for optim in (config.optim, config.d_optim):
      optim.update(learning_rate=4e-4, end_learning_rate=4e-4)
    config.train.update(log_every=40, eval_every=160, checkpoint_every=160)
  else:
    config.model.cnum = 8
    config.discriminator.features = (8, 16, 16, 16, 16, 16)
    config.discriminator.local_features = (8, 16, 16, 16)
    for optim in (config.optim, config.d_optim):
      optim.update(learning_rate=2e-3, end_learning_rate=2e-3)
  return config


def get_config(arg=None):
  return deepfill_config(arg, generator="deepfill_v2", cnum=48)
