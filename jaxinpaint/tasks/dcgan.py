"""The DCGAN task (seed 001): generator and discriminator trained together by the generic train step.

params = {'generator': ..., 'discriminator': ...}; model_state = {'batch_stats': {'generator': ...,
'discriminator': ...}}. One step draws z ~ U(-1, 1)^100 from the step's key and returns

  loss = L_D(D(x), D(sg[G(z)])) + L_G(sg[D](G(z)))           (sg = jax.lax.stop_gradient)

so the single `jax.value_and_grad` of the trainer gives the discriminator exactly the gradient of its loss and
the generator exactly the gradient of its own (simultaneous updates); `make_optimizer` applies a separate Adam
(2e-4, b1 0.5, Radford et al.) to each network via `optax.multi_transform`. L_D and L_G are the pair of
`config.loss.gan_loss` from `jaxinpaint.gan_losses`. The generator's training forward runs under
`config.train.remat` (`tasks.base.remat`); completion and `predict` call it plainly.

Evaluation (`predict`) is a cheap completion: `config.completion.eval_iterations` steps of latent optimisation
(not the ~1000 of `--mode=complete`) from a fixed z_0, so the periodic eval metrics track how well the GAN can
fill the eval holes, at a few percent of the training time.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import optax

from jaxinpaint import completion, gan_losses, models
from jaxinpaint.tasks import base, optim

PyTree = Any
NETWORKS = ("generator", "discriminator")


def num_logits(gan_loss: str) -> int:
  """A two-class softmax gets two logits (real, fake); every other loss one."""
  return 2 if gan_loss == "softmax_ce" else 1


def prob_real(logits: jax.Array) -> jax.Array:
  """D's probability that an image is real, f32[B], from one logit (sigmoid) or two (softmax class 0)."""
  if logits.shape[-1] == 2:
    return jax.nn.softmax(logits, axis=-1)[..., 0]
  return jax.nn.sigmoid(logits[..., 0])


@dataclasses.dataclass(frozen=True)
class DCGANTask(base.SingleStage):
  """Seed 001's DCGAN (one training stage)."""

  config: ml_collections.ConfigDict

  def __post_init__(self):
    gan_losses.get_gan_loss(self.config.loss.gan_loss)
    size, wanted = self.generator.image_size, self.config.data.image_size
    if size != wanted:
      raise ValueError(
        f"config.data.image_size={wanted}, but a DCGAN generator with {len(self.generator.features)} feature "
        f"levels makes {size}x{size} images; set image_size={size} or change model.generator_features"
      )

  # --- construction -------------------------------------------------------------------------------------------
  @functools.cached_property
  def generator(self):
    m = self.config.model
    return models.make_model(
      "dcgan_generator",
      latent_dim=m.latent_dim,
      features=tuple(m.generator_features),
      norm_momentum=m.norm_momentum,
      dtype=base.activation_dtype(self.config),
    )

  @functools.cached_property
  def discriminator(self):
    m = self.config.model
    return models.make_model(
      "dcgan_discriminator",
      features=tuple(m.discriminator_features),
      image_size=self.config.data.image_size,
      num_logits=num_logits(self.config.loss.gan_loss),
      norm_momentum=m.norm_momentum,
      dtype=base.activation_dtype(self.config),
    )

  @property
  def latent_dim(self) -> int:
    return self.config.model.latent_dim

  @property
  def metric_names(self) -> tuple[str, ...]:
    return ("g_loss", "d_loss", "d_real", "d_fake")

  def completer(self, **overrides) -> completion.Completion:
    """The latent-optimisation completer for this GAN, set from `config.completion` (overridable)."""
    c = self.config.completion
    kwargs = dict(
      gan_loss=self.config.loss.gan_loss,
      iterations=c.iterations,
      learning_rate=c.learning_rate,
      b1=c.b1,
      b2=c.b2,
      lam=c.lam,
      weighted=c.weighted,
      window=c.window,
      blend=c.blend,
      poisson_iterations=c.poisson_iterations,
      discriminator_stats=c.discriminator_stats,
    )
    kwargs.update(overrides)
    return completion.Completion(self.generator, self.discriminator, **kwargs)

  @staticmethod
  def network_variables(params: PyTree, model_state: PyTree) -> dict[str, dict[str, PyTree]]:
    """{'generator': flax variables, 'discriminator': flax variables} from the trainer's params and state."""
    return {n: {"params": params[n], **{k: v[n] for k, v in model_state.items()}} for n in NETWORKS}

  # --- the pieces the trainer calls ---------------------------------------------------------------------------
  def init(self, rng: jax.Array, batch: dict[str, jax.Array]) -> dict[str, PyTree]:
    kg, kd = jax.random.split(rng)
    z = jnp.zeros((batch["image"].shape[0], self.latent_dim), jnp.float32)
    variables = {
      "generator": self.generator.init(kg, z, train=False),
      "discriminator": self.discriminator.init(kd, batch["image"], train=False),
    }
    collections = {k for v in variables.values() for k in v}
    return {c: {n: variables[n][c] for n in NETWORKS} for c in collections}

  def make_optimizer(self, num_steps: int) -> tuple[optax.GradientTransformation, optax.Schedule]:
    """Adam per network; the discriminator's rate is the generator's schedule x (d_lr / g_lr)."""
    o = self.config.optim
    schedule = optim.make_schedule(o, num_steps)
    ratio = o.get("discriminator_learning_rate", o.learning_rate) / o.learning_rate
    transforms = {
      "generator": optim.make_adam(o, schedule),
      "discriminator": optim.make_adam(o, lambda step: schedule(step) * ratio),
    }
    labels = lambda params: {n: jax.tree.map(lambda _: n, params[n]) for n in NETWORKS}
    return optax.multi_transform(transforms, labels), schedule

  def adversarial_losses(
    self, params: PyTree, model_state: PyTree, real: jax.Array, rng: jax.Array
  ) -> tuple[jax.Array, jax.Array, PyTree, dict[str, jax.Array]]:
    """(d_loss, g_loss, new model_state, terms), each loss seeing only its own network's parameters."""
    d_loss_fn, g_loss_fn = gan_losses.get_gan_loss(self.config.loss.gan_loss)
    stats = model_state["batch_stats"]
    z = jax.random.uniform(rng, (real.shape[0], self.latent_dim), minval=-1.0, maxval=1.0)
    apply = functools.partial(self.generator.apply, train=True, mutable=["batch_stats"])
    fake, g_new = base.remat(self.config, apply)({"params": params["generator"], "batch_stats": stats["generator"]}, z)

    def critic(d_params, d_stats, images):
      return self.discriminator.apply(
        {"params": d_params, "batch_stats": d_stats}, images, train=True, mutable=["batch_stats"]
      )

    d_params = params["discriminator"]
    # Real and fake batches go through D separately (their own batch statistics), as in Radford et al.
    real_logits, d_new = critic(d_params, stats["discriminator"], real)
    fake_logits, d_new = critic(d_params, d_new["batch_stats"], jax.lax.stop_gradient(fake))
    d_loss = d_loss_fn(real_logits, fake_logits)
    gen_logits, _ = critic(jax.lax.stop_gradient(d_params), stats["discriminator"], fake)
    g_loss = g_loss_fn(gen_logits)
    new_state = {"batch_stats": {"generator": g_new["batch_stats"], "discriminator": d_new["batch_stats"]}}
    terms = {
      "g_loss": g_loss,
      "d_loss": d_loss,
      "d_real": jnp.mean(prob_real(real_logits)),
      "d_fake": jnp.mean(prob_real(fake_logits)),
    }
    return d_loss, g_loss, new_state, terms

  def loss_fn(
    self, params: PyTree, model_state: PyTree, batch: dict[str, jax.Array], rng: jax.Array, step: jax.Array
  ) -> tuple[jax.Array, tuple[PyTree, dict[str, jax.Array]]]:
    del step
    d_loss, g_loss, new_state, terms = self.adversarial_losses(params, model_state, batch["image"], rng)
    return d_loss + g_loss, (new_state, terms)

  def predict(self, params: PyTree, model_state: PyTree, batch: dict[str, jax.Array]) -> dict[str, jax.Array]:
    """A short completion (`config.completion.eval_iterations` steps) of the batch's holes from a fixed z_0.

    Returns {'output': G(z*) f32[B, H, W, 3] in [-1, 1], 'composite': known pixels + G(z*) in the hole}.
    """
    image, valid = batch["image"], batch["valid"]
    c = self.config.completion
    completer = self.completer(iterations=c.eval_iterations, blend="composite")
    z0 = completion.initial_latents(c.seed, image.shape[0], self.latent_dim)
    out = completer(self.network_variables(params, model_state), image, valid, z0)
    return {"output": out["generated"], "composite": out["output"]}
