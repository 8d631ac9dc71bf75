"""The DeepFill task: a two-stage generator and its discriminator(s) trained in the trainer's one jitted step.

params = {'generator': ..., 'discriminator': ...}; `make_optimizer` gives each group its own Adam through
`optax.multi_transform`. `loss_fn` returns g_total + d_total, built so that each network receives exactly the
gradient of its own loss:

  d_total = L_D(D(x), D(sg(x_hat)))          + GP      (G's output enters D's loss through stop_gradient)
  g_total = w_gan L_G(sg(D)(x_hat)) + L_rec             (D's params enter G's loss through stop_gradient)

with x_hat = valid * x + (1 - valid) * G(x)_refined the composite (the reference's `batch_complete`). So
d(total)/d(D) = d(d_total)/d(D) and d(total)/d(G) = d(g_total)/d(G) (tested).

- v2 (Yu et al. 2019): SN-PatchGAN on [image, hole], hinge loss, L1 on both stages (weight 1), Adam 1e-4
  (0.5, 0.999) for both.
- v1 (Yu et al. 2018): global + local WGAN critics (the local one on a fixed window, `discriminator.local_fraction`
  of the image, centred on the hole's box and big enough for the largest `random_box` hole), gradient penalty
  (lambda 10), G adversarial weight 0.001, spatially discounted L1 (gamma 0.9) in the hole + L1 on the known
  pixels, 1.2 x (1.2 x coarse + refined) (reference L1_LOSS_ALPHA = AE_LOSS_ALPHA = COARSE_L1_ALPHA = 1.2), Adam
  1e-4 (0.5, 0.9); `gan.n_critic` = 5 critic updates per generator update, done by `optim.update_every`, which
  leaves G's params and Adam moments untouched except on steps where `step % n_critic == 0` (D updates on every
  step). The G backward pass still runs on the other steps (one step function, no second loop).

Batches: image f32[B, H, W, 3] in [-1, 1], valid f32[B, H, W, 1] (1 = known), H, W multiples of 8.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import optax
from jax import lax

from jaxinpaint import configs_lib, gan_losses, models
from jaxinpaint.layers.contextual_attention import flow_to_rgb
from jaxinpaint.layers.spectral_norm import SPECTRAL
from jaxinpaint.models import discriminators
from jaxinpaint.models.deepfill import DOWNSAMPLE
from jaxinpaint.tasks import base, optim

PyTree = Any

GENERATORS = ("deepfill_v2", "deepfill_v1")
DISCRIMINATORS = ("sn_patchgan", "global_local")
RECONSTRUCTIONS = ("l1", "discounted_l1")


# ------------------------------------------------------------------------------------------- losses


def spatial_discount(valid: jax.Array, gamma: float, floor: float = 1e-4) -> jax.Array:
  """DeepFill v1's spatial discount: gamma^(d - 1) in the hole, d its chessboard distance to the nearest known
  pixel (1 on the hole's rim), 1 on known pixels -> f32[B, H, W, 1].

  The reference computes it for one rectangle, max(gamma^min(i, h - i), gamma^min(j, w - j)); the distance
  form is the same idea for any hole shape. Distances past log(floor) / log(gamma) get gamma^that (~floor).
  """
  if not 0.0 < gamma <= 1.0:
    raise ValueError(f"spatial discount gamma must be in (0, 1]; got {gamma}")
  steps = (
    max(valid.shape[1:3]) if gamma == 1.0 else min(max(valid.shape[1:3]), math.ceil(math.log(floor) / math.log(gamma)))
  )

  def grow(_, carry):
    covered, distance = carry
    distance = distance + (1.0 - covered)
    covered = lax.reduce_window(covered, -jnp.inf, lax.max, (1, 3, 3, 1), (1, 1, 1, 1), "SAME")
    return covered, distance

  covered = (valid > 0.5).astype(jnp.float32)
  _, distance = lax.fori_loop(0, steps, grow, (covered, jnp.zeros_like(covered)))
  return gamma ** jnp.maximum(distance - 1.0, 0.0)


def _mean_l1(x, y):
  return jnp.mean(jnp.abs(x - y))


# ------------------------------------------------------------------------------------------- adversaries


@dataclasses.dataclass(frozen=True)
class PatchGANAdversary:
  """SN-PatchGAN on [image, hole] with any `gan_losses` objective (DeepFill v2: hinge)."""

  config: ml_collections.ConfigDict

  @functools.cached_property
  def net(self):
    return discriminators.SNPatchGAN(features=tuple(self.config.discriminator.features))

  @property
  def uses_gp(self) -> bool:
    return self.config.gan.gp_weight > 0

  def init(self, rng, image, valid):
    return self.net.init(rng, image, valid)

  def d_loss(self, params, state, real, fake, valid, rng):
    d_fn, _ = gan_losses.get_gan_loss(self.config.gan.loss)
    both, new_state = self.net.apply(
      {"params": params, **state},
      jnp.concatenate([real, fake]),
      jnp.concatenate([valid, valid]),
      update_stats=True,
      mutable=[SPECTRAL],
    )
    real_s, fake_s = jnp.split(both, 2)
    loss = d_fn(real_s, fake_s)
    terms = {"d_real": jnp.mean(real_s), "d_fake": jnp.mean(fake_s)}
    if self.uses_gp:
      critic = lambda x: self.net.apply({"params": params, **state}, x, valid)
      terms["gp"] = gan_losses.gradient_penalty(critic, real, fake, rng, self.config.gan.gp_weight)
      loss = loss + terms["gp"]
    return loss, dict(new_state), terms

  def g_loss(self, params, state, fake, valid):
    _, g_fn = gan_losses.get_gan_loss(self.config.gan.loss)
    return g_fn(self.net.apply({"params": params, **state}, fake, valid))


@dataclasses.dataclass(frozen=True)
class GlobalLocalAdversary:
  """DeepFill v1's WGAN critics: one on the whole image, one on a fixed-size window around the hole.

  The reference's local patch is the hole's bounding box; static shapes under jit need one size, so the window is
  ceil(local_fraction * image_size) px square (160 at 256: the largest hole `random_box` draws) centred on each
  example's hole box and clamped inside the image, which then holds the whole hole (tested). A hole wider than
  the window (another mask kind) is seen only in part.
  """

  config: ml_collections.ConfigDict

  @functools.cached_property
  def nets(self):
    d = self.config.discriminator
    return {
      "global": discriminators.GlobalCritic(features=tuple(d.features)),
      "local": discriminators.LocalCritic(features=tuple(d.local_features)),
    }

  @property
  def uses_gp(self) -> bool:
    return self.config.gan.gp_weight > 0

  @property
  def size(self) -> int:
    size = self.config.data.image_size
    return min(size, math.ceil(self.config.discriminator.local_fraction * size - 1e-9))

  def init(self, rng, image, valid):
    k_global, k_local = jax.random.split(rng)
    patch = image[:, : self.size, : self.size]
    return {
      "params": {
        "global": self.nets["global"].init(k_global, image)["params"],
        "local": self.nets["local"].init(k_local, patch)["params"],
      }
    }

  def _inputs(self, image, valid):
    origin = discriminators.hole_box_origin(valid, self.size)
    return {"global": image, "local": discriminators.local_patch(image, origin, self.size)}

  def d_loss(self, params, state, real, fake, valid, rng):
    d_fn, _ = gan_losses.get_gan_loss(self.config.gan.loss)
    real_in, fake_in = self._inputs(real, valid), self._inputs(fake, valid)
    loss, gp, real_means, fake_means = 0.0, 0.0, [], []
    for i, name in enumerate(("global", "local")):
      apply = functools.partial(self.nets[name].apply, {"params": params[name]})
      real_s, fake_s = jnp.split(apply(jnp.concatenate([real_in[name], fake_in[name]])), 2)
      loss = loss + d_fn(real_s, fake_s)
      real_means.append(jnp.mean(real_s))
      fake_means.append(jnp.mean(fake_s))
      if self.uses_gp:
        gp = gp + gan_losses.gradient_penalty(
          apply, real_in[name], fake_in[name], jax.random.fold_in(rng, i), self.config.gan.gp_weight
        )
    terms = {"d_real": sum(real_means) / 2, "d_fake": sum(fake_means) / 2}
    if self.uses_gp:
      terms["gp"] = gp
    return loss + gp, state, terms

  def g_loss(self, params, state, fake, valid):
    _, g_fn = gan_losses.get_gan_loss(self.config.gan.loss)
    fake_in = self._inputs(fake, valid)
    return sum(g_fn(self.nets[n].apply({"params": params[n]}, fake_in[n])) for n in ("global", "local"))


ADVERSARIES = {"sn_patchgan": PatchGANAdversary, "global_local": GlobalLocalAdversary}


# ------------------------------------------------------------------------------------------- the task


def check_gan_config(config: ml_collections.ConfigDict) -> None:
  """One clear ValueError line for what the GAN configs' types cannot catch."""
  if config.model.name not in GENERATORS:
    raise ValueError(f"config.model.name must be one of {GENERATORS} for task 'deepfill'; got {config.model.name!r}")
  if config.discriminator.name not in ADVERSARIES:
    raise ValueError(f"config.discriminator.name must be one of {DISCRIMINATORS}; got {config.discriminator.name!r}")
  gan_losses.get_gan_loss(config.gan.loss)
  if config.loss.name not in RECONSTRUCTIONS:
    raise ValueError(f"config.loss.name must be one of {RECONSTRUCTIONS} for task 'deepfill'; got {config.loss.name!r}")
  if config.optim.schedule == "finetune":
    raise ValueError(
      "config.optim.schedule='finetune' is the U-Net's two-stage schedule; DeepFill has no such "
      "stage (use constant, cosine or exponential)"
    )
  if config.discriminator.name == "global_local" and not 0.0 < config.discriminator.local_fraction <= 1.0:
    raise ValueError(
      f"config.discriminator.local_fraction must be in (0, 1] (the local critic's window over the "
      f"image side); got {config.discriminator.local_fraction}"
    )
  if config.gan.n_critic < 1:
    raise ValueError(f"config.gan.n_critic must be >= 1; got {config.gan.n_critic}")
  configs_lib.check_image_size(
    config.data.image_size, DOWNSAMPLE, f"{DOWNSAMPLE} (DeepFill downsamples by 4, then attention by 2)"
  )


@dataclasses.dataclass(frozen=True)
class DeepFillTask(base.SingleStage):
  """DeepFill v1/v2 as a trainer task (see the module docstring)."""

  config: ml_collections.ConfigDict

  def __post_init__(self):
    check_gan_config(self.config)

  @functools.cached_property
  def generator(self):
    return base.generator_from_config(self.config)

  @functools.cached_property
  def adversary(self):
    return ADVERSARIES[self.config.discriminator.name](self.config)

  @property
  def metric_names(self) -> tuple[str, ...]:
    names = ("g_loss", "d_loss", "g_adv", "d_real", "d_fake", "l1_coarse", "l1_refined")
    return names + (("gp",) if self.adversary.uses_gp else ())

  def init(self, rng: jax.Array, batch: dict[str, jax.Array]) -> dict[str, PyTree]:
    """Variables for both networks. Shapes only depend on the batch's; the mask is taken as all known."""
    # Draw the ~100 parameter leaves from an RBG key: XLA:CPU compiles one threefry kernel per leaf shape,
    # which made this init compile 4x longer than the train step itself.
    rng = jax.random.wrap_key_data(jax.random.bits(rng, (4,), jnp.uint32), impl="rbg")
    k_gen, k_disc = jax.random.split(rng)
    image, valid = batch["image"], jnp.ones_like(batch["valid"])
    generator = self.generator.init(k_gen, image, valid)
    disc = dict(self.adversary.init(k_disc, image, valid))
    return {"params": {"generator": generator["params"], "discriminator": disc.pop("params")}, **disc}

  def make_optimizer(self, num_steps: int) -> tuple[optax.GradientTransformation, optax.Schedule]:
    g_schedule = optim.make_schedule(self.config.optim, num_steps)
    g_tx = optim.make_adam(self.config.optim, g_schedule)
    if self.config.gan.n_critic > 1:
      g_tx = optim.update_every(g_tx, self.config.gan.n_critic)
    d_tx = optim.make_adam(self.config.d_optim, optim.make_schedule(self.config.d_optim, num_steps))
    return optax.multi_transform({"generator": g_tx, "discriminator": d_tx}, optim.group_labels), g_schedule

  def reconstruction_loss(self, coarse, refined, image, valid) -> jax.Array:
    """L1 of both stages: plain means (v2), or v1's discounted hole L1 + known-pixel L1."""
    loss = self.config.loss
    if loss.name == "l1":
      per_stage = lambda x: _mean_l1(x, image)
    else:
      hole = 1.0 - valid
      weight = hole * spatial_discount(valid, loss.discount_gamma)

      def per_stage(x):
        err = jnp.mean(jnp.abs(x - image), axis=-1, keepdims=True)
        return jnp.sum(err * weight) / jnp.maximum(jnp.sum(hole), 1.0) + jnp.sum(err * valid) / jnp.maximum(
          jnp.sum(valid), 1.0
        )

    return loss.l1_weight * (loss.coarse_weight * per_stage(coarse) + per_stage(refined))

  def losses(self, params: PyTree, model_state: PyTree, batch: dict[str, jax.Array], rng: jax.Array):
    """(g_total, d_total, new model_state, terms) with the stop_gradients described in the module docstring."""
    image, valid = batch["image"], batch["valid"]
    apply = functools.partial(self.generator.apply, train=True)
    out = base.remat(self.config, apply)({"params": params["generator"]}, image, valid)
    composite = models.composite(image, out["refined"], valid)
    d_params = params["discriminator"]
    d_total, new_state, terms = self.adversary.d_loss(
      d_params, model_state, image, lax.stop_gradient(composite), valid, rng
    )
    g_adv = self.adversary.g_loss(lax.stop_gradient(d_params), model_state, composite, valid)
    g_total = self.config.gan.weight * g_adv + self.reconstruction_loss(out["coarse"], out["refined"], image, valid)
    terms = {
      "g_loss": g_total,
      "d_loss": d_total,
      "g_adv": g_adv,
      **terms,
      "l1_coarse": _mean_l1(out["coarse"], image),
      "l1_refined": _mean_l1(out["refined"], image),
    }
    return g_total, d_total, new_state, terms

  def loss_fn(
    self, params: PyTree, model_state: PyTree, batch: dict[str, jax.Array], rng: jax.Array, step: jax.Array
  ) -> tuple[jax.Array, tuple[PyTree, dict[str, jax.Array]]]:
    del step  # the n_critic schedule lives in the optimiser state
    g_total, d_total, new_state, terms = self.losses(params, model_state, batch, rng)
    return g_total + d_total, (new_state, terms)

  def predict(self, params: PyTree, model_state: PyTree, batch: dict[str, jax.Array]) -> dict[str, jax.Array]:
    """{'output': refined, 'coarse': stage 1, 'attention': offset colours} f32[B, H, W, 3] in [-1, 1]."""
    del model_state  # the generator has no state; the discriminator's is not needed to inpaint
    out = self.generator.apply({"params": params["generator"]}, batch["image"], batch["valid"])
    factor = batch["image"].shape[1] // out["offsets"].shape[1]
    flow = flow_to_rgb(out["offsets"])
    flow = jnp.repeat(jnp.repeat(flow, factor, axis=1), factor, axis=2)
    return {
      "output": jnp.clip(out["refined"], -1.0, 1.0),
      "coarse": jnp.clip(out["coarse"], -1.0, 1.0),
      "attention": flow,
    }
