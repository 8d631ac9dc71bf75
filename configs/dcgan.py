"""DCGAN semantic inpainting (seed 001): a 64x64 DCGAN, then completion by latent optimisation (Yeh et al.).

Seed 001's setup: CelebA faces at 64x64 in [-1, 1], the DCGAN of its tables (G: 100 -> 4x4x1024 -> ... ->
64x64x3, D: 5x5 stride-2 convs 64-128-256-512 -> 1 logit), Adam (2e-4, b1 0.5), 20 epochs, batch 64; the GAN
loss is `config.loss.gan_loss` = 'sigmoid_ce' | 'softmax_ce' | 'mse' (also 'hinge', 'wgan'). Completion: centre
hole (a quarter of the image), z optimised by Adam (lr 0.01) for 1000 iterations, lambda 0.1, D's BatchNorm on
the statistics of the batch being completed (bamos' reference; `--config.completion.discriminator_stats=running`
for the running averages).

  python -m jaxinpaint.main --config=configs/dcgan.py --workdir=runs/dcgan                    # train (CelebA, TFDS)
  python -m jaxinpaint.main --config=configs/dcgan.py --workdir=runs/dcgan --mode=complete    # complete, score
  python -m jaxinpaint.main --config=configs/dcgan.py:demo --workdir=runs/dcgan_demo \\
      --config.loss.gan_loss=mse                                                               # offline, CPU minutes
  python -m jaxinpaint.main --config=configs/dcgan.py:tiny --workdir=/tmp/t                   # seconds, for tests
  python scripts/dcgan_loss_table.py --workdir=runs/dcgan_table                               # seed 001's table

GAN losses (`jaxinpaint.gan_losses`): sigmoid_ce = BCE on D's one logit (G non-saturating, -log D(G(z)));
mse = least squares on D's sigmoid probability; softmax_ce = a two-class (real, fake) softmax CE, for which D
gets two logits. Seed 001 (a TF DCGAN with one logit) most likely called TF's `softmax_cross_entropy` on that
single logit: a softmax over one class is 1, so that loss would be identically 0 and train nothing. We train the
two-class softmax it presumably meant (with one logit l read as (l, 0) it would equal sigmoid_ce exactly).

`:demo` trains a DCGAN of an eighth of the width on scikit-image's 100 LFW faces (80 train / 20 held out,
grayscale, 25x25 upscaled to 64x64) — the offline face data that trains in CPU minutes; `:tiny` is 32 px.
"""

import ml_collections

from jaxinpaint.configs_lib import apply_variant, base_config


def get_config(arg=None):
  config = apply_variant(base_config(), arg)  # validates `arg`; the sections below are replaced per variant
  config.task = "dcgan"
  config.model = ml_collections.ConfigDict(
    dict(
      name="dcgan",
      latent_dim=100,
      generator_features=(1024, 512, 256, 128),
      discriminator_features=(64, 128, 256, 512),
      norm_momentum=0.9,
    )
  )
  config.loss = ml_collections.ConfigDict(dict(gan_loss="sigmoid_ce"))
  config.optim.update(learning_rate=2e-4, end_learning_rate=2e-4, schedule="constant", b1=0.5, b2=0.999)
  config.optim.discriminator_learning_rate = 2e-4
  config.batch_size = 64
  config.num_train_steps = 63_300  # 20 epochs of CelebA's 162,770 training images
  config.data.update(source="tfds", name="celeb_a", image_size=64, shorter_side=0, eval_examples=64)
  config.data.resize = (78, 64)  # 178x218 -> 64x78 (aspect kept), then 64x64 crops
  config.masks.update(kind="centre", eval_kind="centre")  # GAN training ignores masks; eval fills the centre
  config.train.update(log_every=100, eval_every=5000, checkpoint_every=5000)
  config.completion = ml_collections.ConfigDict(
    dict(
      iterations=1000,
      learning_rate=0.01,
      b1=0.9,
      b2=0.999,
      lam=0.1,
      weighted=False,
      window=7,
      blend="composite",
      poisson_iterations=2000,
      eval_iterations=100,
      num_images=64,
      seed=0,
      discriminator_stats="batch",
    )
  )  # D's BatchNorm while completing: this batch's statistics (bamos) or "running"

  if arg in ("demo", "tiny"):
    config.data.update(source="lfw", name="lfw", train_split="train", eval_split="eval", shorter_side=0)
    config.data.resize = None
  if arg == "demo":
    config.model.update(generator_features=(128, 64, 32, 16), discriminator_features=(16, 32, 64, 128))
    config.data.update(resize=(64, 64), eval_examples=32, num_workers=0)  # 80 tiny images: no workers needed
    config.batch_size = 32
    config.num_train_steps = 1000
    config.train.update(log_every=50, eval_every=500, checkpoint_every=500)
    config.completion.update(eval_iterations=20, num_images=20)
  elif arg == "tiny":
    config.model.update(latent_dim=16, generator_features=(16, 8, 8), discriminator_features=(8, 16, 16))
    config.data.update(image_size=32, resize=(32, 32), eval_examples=8, num_workers=0)
    config.batch_size = 8
    config.num_train_steps = 10
    config.train.update(log_every=5, eval_every=10, checkpoint_every=10, async_checkpointing=False)
    config.completion.update(iterations=20, eval_iterations=5, num_images=8, poisson_iterations=500)
  return config
