"""Tasks: what the generic trainer needs to know about a model family.

The train step in `jaxinpaint.train` is written once. A task tells it how to initialise variables, what the loss
is (a pure function of params, non-param state, batch and key), which optimiser to use and how to predict for
evaluation. The U-Net family lives here; GAN and DCGAN tasks register themselves in `TASKS` the same way.

Batches are dicts: `image: f32[B, H, W, 3] in [-1, 1]`, `valid: f32[B, H, W, 1]` (1 = known).
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any, Callable

import jax
import jax.numpy as jnp
import ml_collections
import optax
from absl import logging

from jaxinpaint import losses, models

PyTree = Any
LossFn = Callable[..., tuple[jax.Array, tuple[PyTree, dict[str, jax.Array]]]]

DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}

# config.train.remat -> jax.checkpoint policy over the generator's forward ('none': no checkpoint). 'blocks' keeps
# each block's output (models.unet.BLOCK_OUTPUT) and recomputes what is inside a block; 'full' keeps nothing.
REMAT_POLICIES = {"none": None, "blocks": jax.checkpoint_policies.save_only_these_names(models.unet.BLOCK_OUTPUT),
                  "full": jax.checkpoint_policies.nothing_saveable}


def remat(config: ml_collections.ConfigDict, fn: Callable) -> Callable:
  """`fn` under jax.checkpoint with config.train.remat's policy (same values and gradients, less memory)."""
  name = config.train.get("remat", "none")
  if name not in REMAT_POLICIES:
    raise ValueError(f"config.train.remat must be one of {tuple(REMAT_POLICIES)}; got {name!r}")
  return fn if name == "none" else jax.checkpoint(fn, policy=REMAT_POLICIES[name])


def activation_dtype(config: ml_collections.ConfigDict):
  name = config.train.activation_dtype
  if name not in DTYPES:
    raise ValueError(f"config.train.activation_dtype must be one of {sorted(DTYPES)}; got {name!r}")
  return DTYPES[name]


def make_schedule(optim: ml_collections.ConfigDict, num_steps: int) -> optax.Schedule:
  """Learning-rate schedule from `config.optim`.

  constant; cosine / exponential decay from `learning_rate` to `end_learning_rate` over the run (seed 004:
  5e-4 "decreased gradually" to 1e-5); finetune: `learning_rate` until `finetune_step`, then
  `finetune_learning_rate` (the partial-conv paper's two stages). Optional linear warm-up.
  """
  lr, end = optim.learning_rate, optim.end_learning_rate
  decay_steps = max(1, num_steps - optim.warmup_steps)
  if optim.schedule == "constant":
    sched = optax.constant_schedule(lr)
  elif optim.schedule == "cosine":
    sched = optax.cosine_decay_schedule(lr, decay_steps, alpha=end / lr)
  elif optim.schedule == "exponential":
    sched = optax.exponential_decay(lr, transition_steps=decay_steps, decay_rate=end / lr, end_value=end)
  elif optim.schedule == "finetune":
    sched = optax.piecewise_constant_schedule(lr, {optim.finetune_step: optim.finetune_learning_rate / lr})
  else:
    raise ValueError(
        f"config.optim.schedule must be constant, cosine, exponential or finetune; got {optim.schedule!r}")
  if optim.warmup_steps:
    sched = optax.join_schedules(
        [optax.linear_schedule(0.0, lr, optim.warmup_steps), sched], [optim.warmup_steps])
  return sched


def make_adam(optim: ml_collections.ConfigDict, schedule: optax.Schedule) -> optax.GradientTransformation:
  """Adam (or AdamW when weight_decay > 0) behind optional global-norm gradient clipping."""
  if optim.name != "adam":
    raise ValueError(f"config.optim.name must be 'adam'; got {optim.name!r}")
  parts = []
  if optim.grad_clip_norm > 0:
    parts.append(optax.clip_by_global_norm(optim.grad_clip_norm))
  if optim.weight_decay > 0:
    parts.append(optax.adamw(schedule, b1=optim.b1, b2=optim.b2, eps=optim.eps, weight_decay=optim.weight_decay))
  else:
    parts.append(optax.adam(schedule, b1=optim.b1, b2=optim.b2, eps=optim.eps))
  return optax.chain(*parts)


@dataclasses.dataclass(frozen=True)
class InpaintingTask:
  """A generator trained by a reconstruction loss: the U-Net in any conv mode (PConv, WConv, gated, plain).

  `finetune=True` builds the partial-conv paper's second stage: encoder norms frozen at their running statistics.
  """

  config: ml_collections.ConfigDict
  finetune: bool = False

  # --- construction -------------------------------------------------------------------------------------------
  @functools.cached_property
  def model(self):
    kwargs = dict(self.config.model)
    name = kwargs.pop("name")
    if not kwargs.get("norm"):
      kwargs.pop("norm", None)
    kwargs["freeze_encoder_norm"] = bool(kwargs.get("freeze_encoder_norm")) or self.finetune
    return models.make_model(name, dtype=activation_dtype(self.config), **kwargs)

  @functools.cached_property
  def vgg_fn(self):
    return losses.make_perceptual_fn(self.config.loss.vgg_weights or None)

  @property
  def metric_names(self) -> tuple[str, ...]:
    if self.config.loss.name == "pconv":
      names = ["valid_l1", "hole_l1", "tv"] + (["perceptual", "style"] if self.vgg_fn is not None else [])
      return tuple(names)
    return (self.config.loss.name,)

  # --- the pieces the trainer calls ---------------------------------------------------------------------------
  def init(self, rng: jax.Array, batch: dict[str, jax.Array]) -> dict[str, PyTree]:
    return self.model.init(rng, batch["image"], batch["valid"], train=False)

  def make_optimizer(self, num_steps: int) -> tuple[optax.GradientTransformation, optax.Schedule]:
    schedule = make_schedule(self.config.optim, num_steps)
    return make_adam(self.config.optim, schedule), schedule

  def reconstruction_loss(self, output, target, valid) -> tuple[jax.Array, dict[str, jax.Array]]:
    name = self.config.loss.name
    if name == "pconv":
      w = self.config.loss.weights
      return losses.pconv_loss(
          output, target, valid, vgg_fn=self.vgg_fn,
          weights=(w.valid, w.hole, w.perceptual, w.style, w.tv))
    if name == "mse":
      value = losses.mse_loss(output, target)
      return value, {"mse": value}
    if name == "l1":
      value = jnp.mean(jnp.abs(output - target))
      return value, {"l1": value}
    if name == "hole_log_mse":
      value = losses.hole_log_mse(output, target, valid)
      return value, {"hole_log_mse": value}
    raise ValueError(f"config.loss.name must be pconv, mse, l1 or hole_log_mse; got {name!r}")

  def loss_fn(self, params: PyTree, model_state: PyTree, batch: dict[str, jax.Array], rng: jax.Array,
              step: jax.Array) -> tuple[jax.Array, tuple[PyTree, dict[str, jax.Array]]]:
    del rng, step  # the U-Net is deterministic; masks are drawn in the input pipeline
    apply = functools.partial(self.model.apply, train=True, mutable=list(model_state.keys()))
    output, new_state = remat(self.config, apply)({"params": params, **model_state}, batch["image"], batch["valid"])
    loss, terms = self.reconstruction_loss(output, batch["image"], batch["valid"])
    return loss, (dict(new_state), terms)

  def predict(self, params: PyTree, model_state: PyTree, batch: dict[str, jax.Array]) -> dict[str, jax.Array]:
    """Returns {'output': f32[B, H, W, 3]} in [-1, 1] (clipped) for evaluation and sample grids."""
    output = self.model.apply({"params": params, **model_state}, batch["image"], batch["valid"], train=False)
    return {"output": jnp.clip(output, -1.0, 1.0)}


TASKS: dict[str, Callable[..., Any]] = {"inpainting": InpaintingTask}


def _dcgan_task(config: ml_collections.ConfigDict, **kwargs):
  from jaxinpaint.dcgan_task import DCGANTask  # imported on use: it builds on this module

  return DCGANTask(config, **kwargs)


TASKS["dcgan"] = _dcgan_task


def _deepfill_task(config: ml_collections.ConfigDict, **kwargs):
  from jaxinpaint.gan_tasks import DeepFillTask  # imported on use: it builds on this module

  return DeepFillTask(config, **kwargs)


TASKS["deepfill"] = _deepfill_task


def _lama_task(config: ml_collections.ConfigDict, **kwargs):
  from jaxinpaint.lama_task import LamaTask  # imported on use: it builds on this module

  return LamaTask(config, **kwargs)


TASKS["lama"] = _lama_task


def make_task(config: ml_collections.ConfigDict, **kwargs):
  if config.task not in TASKS:
    raise ValueError(f"unknown config.task {config.task!r}; known tasks: {sorted(TASKS)}")
  task = TASKS[config.task](config, **kwargs)
  logging.info("task %s: model %s", config.task, config.model.name)
  return task
