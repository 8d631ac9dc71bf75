"""The U-Net task: a generator trained by a reconstruction loss, in any conv mode (PConv, WConv, gated, plain), or
the learned diffusion fill (`models.MODELS['diffusion']`) by the same step.

Two stages with `optim.schedule='finetune'` (the partial-conv paper): 'main', then 'finetune' from
`optim.finetune_step` with the encoder's norms frozen at their running statistics.
"""

from __future__ import annotations

import dataclasses
import functools

import jax
import jax.numpy as jnp
import ml_collections
import optax

from jaxinpaint import losses, models
from jaxinpaint.tasks import base, optim
from jaxinpaint.tasks.base import PyTree

FINETUNE_STAGE = "finetune"


@dataclasses.dataclass(frozen=True)
class InpaintingTask:
  """A generator trained by a reconstruction loss: the U-Net in any conv mode (PConv, WConv, gated, plain).

  `finetune=True` builds the partial-conv paper's second stage: encoder norms frozen at their running statistics.
  With `optim.schedule='finetune'` that stage starts at `optim.finetune_step` (`stage`), and the trainer
  recompiles its step with `for_stage(FINETUNE_STAGE)` there; the state tree is the same in both stages.
  """

  config: ml_collections.ConfigDict
  finetune: bool = False

  # --- construction -------------------------------------------------------------------------------------------
  @functools.cached_property
  def model(self):
    kwargs = dict(self.config.model)
    name = kwargs.pop("name")
    if name != "unet":  # a model with no norms to freeze and no activation dtype: the learned diffusion fill
      return models.make_model(name, **kwargs)
    if not kwargs.get("norm"):
      kwargs.pop("norm", None)
    kwargs["freeze_encoder_norm"] = bool(kwargs.get("freeze_encoder_norm")) or self.finetune
    return models.make_model(name, dtype=base.activation_dtype(self.config), **kwargs)

  @functools.cached_property
  def vgg_fn(self):
    return losses.make_perceptual_fn(self.config.loss.vgg_weights or None)

  @property
  def metric_names(self) -> tuple[str, ...]:
    if self.config.loss.name == "pconv":
      names = ["valid_l1", "hole_l1", "tv"] + (["perceptual", "style"] if self.vgg_fn is not None else [])
      return tuple(names)
    return (self.config.loss.name,)

  def stage(self, step: int) -> str:
    o = self.config.optim
    return FINETUNE_STAGE if o.schedule == "finetune" and step >= o.finetune_step else base.MAIN_STAGE

  def for_stage(self, stage: str) -> "InpaintingTask":
    if stage not in (base.MAIN_STAGE, FINETUNE_STAGE):
      raise ValueError(f"the U-Net's stages are {base.MAIN_STAGE!r} and {FINETUNE_STAGE!r}; got {stage!r}")
    finetune = stage == FINETUNE_STAGE
    return self if finetune == self.finetune else InpaintingTask(self.config, finetune=finetune)

  # --- the pieces the trainer calls ---------------------------------------------------------------------------
  def init(self, rng: jax.Array, batch: dict[str, jax.Array]) -> dict[str, PyTree]:
    return self.model.init(rng, batch["image"], batch["valid"], train=False)

  def make_optimizer(self, num_steps: int) -> tuple[optax.GradientTransformation, optax.Schedule]:
    schedule = optim.make_schedule(self.config.optim, num_steps)
    return optim.make_adam(self.config.optim, schedule), schedule

  def reconstruction_loss(self, output, target, valid) -> tuple[jax.Array, dict[str, jax.Array]]:
    name = self.config.loss.name
    if name == "pconv":
      w = self.config.loss.weights
      return losses.pconv_loss(
        output, target, valid, vgg_fn=self.vgg_fn, weights=(w.valid, w.hole, w.perceptual, w.style, w.tv)
      )
    if name == "mse":
      value = losses.mse_loss(output, target)
      return value, {"mse": value}
    if name == "l1":
      value = jnp.mean(jnp.abs(output - target))
      return value, {"l1": value}
    if name == "hole_log_mse":
      value = losses.hole_log_mse(output, target, valid)
      return value, {"hole_log_mse": value}
    if name == "hole_log_mse_ssim":
      value = losses.hole_log_mse_ssim(output, target, valid, self.config.loss.ssim_weight)
      return value, {"hole_log_mse_ssim": value}
    raise ValueError(f"config.loss.name must be pconv, mse, l1, hole_log_mse or hole_log_mse_ssim; got {name!r}")

  def loss_fn(
    self, params: PyTree, model_state: PyTree, batch: dict[str, jax.Array], rng: jax.Array, step: jax.Array
  ) -> tuple[jax.Array, tuple[PyTree, dict[str, jax.Array]]]:
    del rng, step  # the U-Net is deterministic; masks are drawn in the input pipeline
    apply = functools.partial(self.model.apply, train=True, mutable=list(model_state.keys()))
    variables = {"params": params, **model_state}
    output, new_state = base.remat(self.config, apply)(variables, batch["image"], batch["valid"])
    loss, terms = self.reconstruction_loss(output, batch["image"], batch["valid"])
    return loss, (dict(new_state), terms)

  def predict(self, params: PyTree, model_state: PyTree, batch: dict[str, jax.Array]) -> dict[str, jax.Array]:
    """Returns {'output': f32[B, H, W, 3]} in [-1, 1] (clipped) for evaluation and sample grids."""
    output = self.model.apply({"params": params, **model_state}, batch["image"], batch["valid"], train=False)
    return {"output": jnp.clip(output, -1.0, 1.0)}
