"""LaMa (Suvorov et al. 2022, `advimman/lama`): FFC ResNet generator + pix2pixHD patch discriminator.

The reference's configs/training/lama-fourier.yaml (default) or big-lama.yaml (`:big`, 18 blocks, ~51M params):
generator ffc_resnet_075 (ngf 64, 3 downsamplings, 9 FFC blocks, global ratio 0.75, no LFU, ~27M params),
discriminator pix2pixhd_nlayer (ndf 64, 4 layers); losses L1 known 10 / missing 0, non-saturating adversarial 10
with R1 0.001 and mask_as_fake_target, feature matching 100, ResNet-PL 30 (with `loss.resnet_pl_weights`; else
VGG16 with `loss.vgg_weights`, else off; see jaxinpaint/tasks/lama.py); Adam G 1e-3, D 1e-4, constant, gradient
norm clipped to 1; 256 px crops, LaMa's training masks (`lama`: irregular strokes or 1-4 boxes, half and half),
batch 10 per GPU (the release's data config), 40 epochs of 25,000 batches. Evaluated like every other method
(free-form eval masks).

  python -m jaxinpaint.main --config=configs/lama.py --workdir=runs/lama
  python -m jaxinpaint.main --config=configs/lama.py:big --workdir=runs/big_lama
  python -m jaxinpaint.main --config=configs/lama.py:demo --workdir=runs/lama_demo   # offline, minutes on CPU
  python -m jaxinpaint.main --config=configs/lama.py:tiny --workdir=/tmp/t           # seconds, for tests
"""

import ml_collections

from jaxinpaint.configs_lib import apply_variant, base_config


def get_config(arg=None):
  config = apply_variant(base_config(), None if arg == "big" else arg)
  config.task = "lama"
  config.model = ml_collections.ConfigDict(
    dict(
      name="lama",
      ngf=64,
      n_downsampling=3,
      n_blocks=18 if arg == "big" else 9,
      ratio_g=0.75,
      max_features=1024,
      norm_momentum=0.9,
    )
  )
  config.discriminator = ml_collections.ConfigDict(dict(name="nlayer", ndf=64, n_layers=4))
  config.loss = ml_collections.ConfigDict(
    dict(
      name="lama",
      l1_known=10.0,
      l1_missing=0.0,
      adversarial_weight=10.0,
      r1_weight=0.001,
      mask_as_fake_target=True,
      feature_matching_weight=100.0,
      perceptual_weight=30.0,  # ResNet-PL's weight (also given to the VGG16 stand-in)
      resnet_pl_weights="",  # local .npz from scripts/convert_resnet_pl.py; '' = try vgg_weights
      vgg_weights="",
    )
  )  # local .npz from scripts/convert_vgg16.py; both '' = no perceptual term (said in every table)
  config.optim.update(learning_rate=1e-3, end_learning_rate=1e-3, schedule="constant", grad_clip_norm=1.0)
  config.d_optim = ml_collections.ConfigDict(config.optim.to_dict())
  config.d_optim.update(learning_rate=1e-4, end_learning_rate=1e-4)
  config.masks.kind = "lama"  # training; evaluation keeps the U-Nets' free_form
  if arg in (None, "", "big"):
    config.batch_size = 10
    config.num_train_steps = 1_000_000
    config.train.update(log_every=250, eval_every=25_000, checkpoint_every=25_000)
  elif arg == "demo":
    config.model.update(ngf=16, n_blocks=3)
    config.discriminator.ndf = 16
    config.batch_size = 8
    config.num_train_steps = 480
    config.train.update(log_every=40, eval_every=160, checkpoint_every=160)
  else:
    config.model.update(ngf=8, n_blocks=1)
    config.discriminator.update(ndf=8, n_layers=3)
  return config
