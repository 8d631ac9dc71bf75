"""Learned diffusion fill (jaxinpaint/layers/diffusion.py): five trainable nonlinear diffusion steps (after TNRD,
Chen & Pock 2017) on the holes, from the biharmonic fill; 2240 parameters, trained on minus PSNR-hole plus SSIM.

The demo trains it on procedural dead-leaves images only (`data.dead_leaves=1.0`: no photograph is seen in
training) and scores it on the held-out photos against the classical peers (README, "Results").

  python -m jaxinpaint.main --config=configs/diffusion.py:demo --workdir=runs/diffusion_demo   # offline, CPU
  python -m jaxinpaint.main --config=configs/diffusion.py:cpu --workdir=runs/diffusion_cpu     # 4x the demo's steps
  python -m jaxinpaint.main --config=configs/diffusion.py --workdir=runs/diffusion               # scored on CelebA
  python -m jaxinpaint.main --config=configs/diffusion.py:tiny --workdir=/tmp/t                  # seconds, for tests
"""

import ml_collections

from jaxinpaint.configs_lib import apply_variant, base_config


def get_config(arg=None):
  config = apply_variant(base_config(), "demo" if arg == "cpu" else arg)
  config.model = ml_collections.ConfigDict(
    dict(name="diffusion", stages=5, filters=8, kernel_size=5, centres=31, radius=1.0, iterations=100)
  )
  # minus the mean per-example PSNR on the hole (up to scale) + 100 (1 - SSIM of the composite): at 64 px a
  # change of 0.001 SSIM weighs about as much as 0.4 dB
  config.loss = ml_collections.ConfigDict(dict(name="hole_log_mse_ssim", ssim_weight=100.0))
  config.optim.update(learning_rate=1e-3, end_learning_rate=1e-5, schedule="cosine")
  config.data.dead_leaves = 1.0  # every training crop procedural: what it learns cannot be a photo
  if arg in ("demo", "cpu"):
    config.num_train_steps = 400 if arg == "demo" else 1600  # 9 and about 37 minutes on 2 CPU cores
    config.train.update(log_every=50, eval_every=config.num_train_steps, checkpoint_every=200)
    config.eval.masks = "centre,free_form"
    config.eval.after_train = True
  elif arg == "tiny":
    config.model.update(stages=2, filters=4, kernel_size=3, centres=9, iterations=20)
  return config
