"""The LaMa task (Suvorov et al. 2022): FFC ResNet generator + pix2pixHD patch discriminator in the trainer's one
jitted step, with the losses of `advimman/lama` configs/training/lama-fourier.yaml and big-lama.yaml.

params = {'generator', 'discriminator'}; model_state = {'batch_stats': {'generator', 'discriminator'}}. As in the
reference the discriminator sees the generator's raw output (`image_to_discriminator: predicted_image`), images
in [0, 1]. With x_hat = G(x) and sg = stop_gradient:

  d_total = mean softplus(-D(x)) + mean[hole softplus(D(sg x_hat)) + (1 - hole) softplus(-D(sg x_hat))]
            + r1_weight mean_b ||d sum D(x) / d x_b||^2            (mask_as_fake_target, R1 on real images)
  g_total = adv_weight mean softplus(-sg(D)(x_hat)) + fm_weight FM(sg(D) features of x_hat, of x)
            + mean((l1_known valid + l1_missing hole) |x_hat - x|) [+ perceptual_weight sum_p mse(F_p)]

so each network gets exactly the gradient of its own loss (`jaxinpaint.tasks.deepfill` docstring); the hole is
resized to D's logit map nearest-neighbour. Reference weights: L1 known 10 / missing 0, adversarial 10, R1
0.001, feature matching 100, ResNet-PL 30. F_p is ResNet-PL's ADE20k ResNet-50-dilated (4 stage outputs,
`jaxinpaint.models.resnet_pl`) with `loss.resnet_pl_weights` (scripts/convert_resnet_pl.py); without it, with
`loss.vgg_weights` (scripts/convert_vgg16.py) the same weight goes to VGG16 pool1-3 instead, and with neither
there is no perceptual term; `loss_label` says which (and the weights file's sha256), in every table. Adam G
1e-3, D 1e-4, each clipped to global norm 1 (the reference trainer's gradient_clip_val). The two updates are
simultaneous. The generator's forward runs under `config.train.remat` (`tasks.base.remat`).

Batches: image f32[B, H, W, 3] in [-1, 1], valid f32[B, H, W, 1] (1 = known), H, W multiples of 2**n_downsampling.
"""

from __future__ import annotations

import dataclasses
import functools
import os
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import optax
from jax import lax

from jaxinpaint import configs_lib, losses
from jaxinpaint.imaging import to01
from jaxinpaint.losses import file_sha256
from jaxinpaint.models.lama import NLayerDiscriminator
from jaxinpaint.tasks import base, optim

PyTree = Any
NETWORKS = ("generator", "discriminator")


def loss_label(config: ml_collections.ConfigDict) -> str:
  """What trained a LaMa run, for tables: the perceptual term actually used and its weights file's sha256."""
  terms = "loss: non-saturating adversarial + R1 + known-pixel L1 + feature matching"
  resnet_pl = config.loss.get("resnet_pl_weights", "")
  if resnet_pl and os.path.isfile(resnet_pl):
    return f"{terms} + ResNet-PL (ADE20k ResNet-50-dilated weights sha256 {file_sha256(resnet_pl)})"
  missing = f"ResNet-PL weights {resnet_pl} not found" if resnet_pl else ""
  path = config.loss.get("vgg_weights", "")
  if not path:
    return f"{terms} (no perceptual term: {missing + ', no VGG weights' if missing else 'no ResNet-PL or VGG weights'})"
  if not os.path.isfile(path):
    return f"{terms} (no perceptual term: {missing + ', ' if missing else ''}VGG weights {path} not found)"
  note = f"; {missing}" if missing else ""
  return f"{terms} + VGG16 perceptual in place of ResNet-PL (VGG16 weights sha256 {file_sha256(path)}{note})"


def check_lama_config(config: ml_collections.ConfigDict) -> None:
  """One clear ValueError line for what the config's types cannot catch."""
  if config.model.name != "lama":
    raise ValueError(f"config.model.name must be 'lama' for task 'lama'; got {config.model.name!r}")
  if config.discriminator.name != "nlayer":
    raise ValueError(f"config.discriminator.name must be 'nlayer' for task 'lama'; got {config.discriminator.name!r}")
  if config.optim.schedule == "finetune":
    raise ValueError(
      "config.optim.schedule='finetune' is the U-Net's two-stage schedule; LaMa has no such stage "
      "(use constant, cosine or exponential)"
    )
  if not 0.0 <= config.model.ratio_g < 1.0:
    raise ValueError(f"config.model.ratio_g must be in [0, 1); got {config.model.ratio_g}")
  step = 2**config.model.n_downsampling
  configs_lib.check_image_size(
    config.data.image_size, step, f"{step} (LaMa downsamples {config.model.n_downsampling} times by 2)"
  )


@dataclasses.dataclass(frozen=True)
class LamaTask(base.SingleStage):
  """LaMa as a trainer task (see the module docstring)."""

  config: ml_collections.ConfigDict

  def __post_init__(self):
    check_lama_config(self.config)

  @functools.cached_property
  def generator(self):
    return base.generator_from_config(self.config)

  @functools.cached_property
  def discriminator(self):
    d = self.config.discriminator
    return NLayerDiscriminator(ndf=d.ndf, n_layers=d.n_layers, norm_momentum=self.config.model.norm_momentum)

  @functools.cached_property
  def vgg_fn(self):
    return losses.make_perceptual_fn(self.config.loss.vgg_weights or None)

  @functools.cached_property
  def resnet_pl_fn(self):
    return losses.make_resnet_pl_fn(self.config.loss.get("resnet_pl_weights") or None)

  @functools.cached_property
  def perceptual_fn(self):
    """ResNet-PL features with `loss.resnet_pl_weights`, else VGG16 pool1-3 with `loss.vgg_weights`, else None."""
    return self.resnet_pl_fn if self.resnet_pl_fn is not None else self.vgg_fn

  @property
  def metric_names(self) -> tuple[str, ...]:
    names = ("g_loss", "d_loss", "g_adv", "d_real", "d_fake", "r1", "l1_known", "feature_matching", "l1")
    return names + (("perceptual",) if self.perceptual_fn is not None else ())

  def init(self, rng: jax.Array, batch: dict[str, jax.Array]) -> dict[str, PyTree]:
    """Variables of both networks; shapes depend only on the batch's (the mask is taken as all known)."""
    # an RBG key: XLA:CPU compiles one threefry kernel per leaf shape (see DeepFillTask.init)
    rng = jax.random.wrap_key_data(jax.random.bits(rng, (4,), jnp.uint32), impl="rbg")
    k_gen, k_disc = jax.random.split(rng)
    image, valid = batch["image"], jnp.ones_like(batch["valid"])
    gen = self.generator.init(k_gen, image, valid)
    disc = self.discriminator.init(k_disc, to01(image))
    return {
      "params": {"generator": gen["params"], "discriminator": disc["params"]},
      "batch_stats": {"generator": gen["batch_stats"], "discriminator": disc["batch_stats"]},
    }

  def make_optimizer(self, num_steps: int) -> tuple[optax.GradientTransformation, optax.Schedule]:
    g_schedule = optim.make_schedule(self.config.optim, num_steps)
    g_tx = optim.make_adam(self.config.optim, g_schedule)
    d_tx = optim.make_adam(self.config.d_optim, optim.make_schedule(self.config.d_optim, num_steps))
    return optax.multi_transform({"generator": g_tx, "discriminator": d_tx}, optim.group_labels), g_schedule

  def _d_apply(self, params, stats, x):
    """D in training mode (batch statistics, as the reference): (logits, features, new batch_stats)."""
    (logits, feats), new = self.discriminator.apply(
      {"params": params, "batch_stats": stats}, x, train=True, mutable=["batch_stats"]
    )
    return logits, feats, new["batch_stats"]

  def losses(self, params: PyTree, model_state: PyTree, batch: dict[str, jax.Array]):
    """(g_total, d_total, new model_state, terms) with the stop_gradients of the module docstring."""
    loss = self.config.loss
    image, valid = batch["image"], batch["valid"]
    g_stats, d_stats = model_state["batch_stats"]["generator"], model_state["batch_stats"]["discriminator"]
    apply = functools.partial(self.generator.apply, train=True, mutable=["batch_stats"])
    output, g_new = base.remat(self.config, apply)(
      {"params": params["generator"], "batch_stats": g_stats}, image, valid
    )
    real, pred = to01(image), to01(output)
    d_params = params["discriminator"]

    def real_score(x):  # one D pass on the real images gives their logits, features and the R1 gradient
      logits, feats, stats = self._d_apply(d_params, d_stats, x)
      return jnp.sum(logits), (logits, feats, stats)

    real_grads, (real_logits, real_feats, stats) = jax.grad(real_score, has_aux=True)(real)
    fake_logits, _, stats = self._d_apply(d_params, stats, lax.stop_gradient(pred))
    hole = None
    if loss.mask_as_fake_target:
      hole = losses.resize_nearest(1.0 - valid, *fake_logits.shape[1:3])[..., 0]
    r1 = losses.r1_penalty(real_grads)
    d_total = losses.nonsaturating_d_loss(real_logits, fake_logits, hole) + loss.r1_weight * r1

    frozen = lax.stop_gradient(d_params)
    g_logits, g_feats, _ = self._d_apply(frozen, d_stats, pred)
    g_adv = losses.nonsaturating_g_loss(g_logits)
    fm = losses.feature_matching_loss(g_feats, [lax.stop_gradient(f) for f in real_feats])
    l1_known = losses.masked_l1(pred, real, valid, loss.l1_known, loss.l1_missing)
    g_total = loss.adversarial_weight * g_adv + loss.feature_matching_weight * fm + l1_known
    terms = {
      "g_adv": g_adv,
      "d_real": jnp.mean(real_logits),
      "d_fake": jnp.mean(fake_logits),
      "r1": r1,
      "l1_known": l1_known,
      "feature_matching": fm,
      "l1": jnp.mean(jnp.abs(output - image)),
    }
    if self.perceptual_fn is not None:
      b = image.shape[0]
      feats = self.perceptual_fn(jnp.concatenate([output, lax.stop_gradient(image)]))
      terms["perceptual"] = losses.feature_mse_sum([f[:b] for f in feats], [f[b:] for f in feats])
      g_total = g_total + loss.perceptual_weight * terms["perceptual"]
    new_state = {"batch_stats": {"generator": g_new["batch_stats"], "discriminator": stats}}
    return g_total, d_total, new_state, {"g_loss": g_total, "d_loss": d_total, **terms}

  def loss_fn(
    self, params: PyTree, model_state: PyTree, batch: dict[str, jax.Array], rng: jax.Array, step: jax.Array
  ) -> tuple[jax.Array, tuple[PyTree, dict[str, jax.Array]]]:
    del rng, step  # deterministic given the batch; masks are drawn in the input pipeline
    g_total, d_total, new_state, terms = self.losses(params, model_state, batch)
    return g_total + d_total, (new_state, terms)

  def predict(self, params: PyTree, model_state: PyTree, batch: dict[str, jax.Array]) -> dict[str, jax.Array]:
    """{'output': f32[B, H, W, 3] in [-1, 1]}: the generator with its running BatchNorm statistics."""
    variables = {"params": params["generator"], "batch_stats": model_state["batch_stats"]["generator"]}
    return {"output": self.generator.apply(variables, batch["image"], batch["valid"], train=False)}
