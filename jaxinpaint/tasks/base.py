"""The task contract: what the generic trainer (`jaxinpaint.train`) needs to know about a model family.

The train step is written once; a task supplies the rest. Batches are dicts: `image: f32[B, H, W, 3] in [-1, 1]`,
`valid: f32[B, H, W, 1]` (1 = known). Also here: the activation dtype and the remat policy every task's generator
forward uses.
"""

from __future__ import annotations

from typing import Any, Callable, Protocol

import jax
import jax.numpy as jnp
import ml_collections
import optax

from jaxinpaint import models
from jaxinpaint.models.unet import BLOCK_OUTPUT

PyTree = Any

# The one stage of a single-stage task (every family but the U-Net with the 'finetune' schedule).
MAIN_STAGE = "main"


class Task(Protocol):
  """A model family as the trainer sees it. Implementations are frozen dataclasses built from the run's config.

  The state tree the trainer checkpoints is {'params': init(...)['params'], model_state: the other collections},
  so `init` fixes what a checkpoint holds.
  """

  config: ml_collections.ConfigDict

  @property
  def metric_names(self) -> tuple[str, ...]:
    """The names of the `terms` loss_fn returns, logged beside 'loss', 'grad_norm' and 'learning_rate'."""

  def init(self, rng: jax.Array, batch: dict[str, jax.Array]) -> dict[str, PyTree]:
    """Flax variables {'params': ..., other collections} for a batch of this shape (values unused)."""

  def make_optimizer(self, num_steps: int) -> tuple[optax.GradientTransformation, optax.Schedule]:
    """(the optimiser over params, the schedule logged as learning_rate) for a run of `num_steps`."""

  def loss_fn(
    self, params: PyTree, model_state: PyTree, batch: dict[str, jax.Array], rng: jax.Array, step: jax.Array
  ) -> tuple[jax.Array, tuple[PyTree, dict[str, jax.Array]]]:
    """(scalar loss, (new model_state, {metric name: scalar})); differentiated w.r.t. params."""

  def predict(self, params: PyTree, model_state: PyTree, batch: dict[str, jax.Array]) -> dict[str, jax.Array]:
    """{'output': f32[B, H, W, 3] in [-1, 1], optional other f32[B, H, W, 3] stages} for eval and sample grids."""

  def stage(self, step: int) -> str:
    """The training stage at `step` (before its update). When it changes the trainer recompiles the step with
    `for_stage(new stage)`; the state tree is the same in every stage."""

  def for_stage(self, stage: str) -> "Task":
    """The task whose loss_fn trains `stage`."""


class SingleStage:
  """`stage` / `for_stage` of a task trained in one stage throughout."""

  def stage(self, step: int) -> str:
    del step
    return MAIN_STAGE

  def for_stage(self, stage: str):
    if stage != MAIN_STAGE:
      raise ValueError(f"{type(self).__name__} has one training stage ({MAIN_STAGE!r}); got {stage!r}")
    return self


DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}

# config.train.remat -> jax.checkpoint policy over the generator's forward ('none': no checkpoint). 'blocks' keeps
# each block's output (models.unet.BLOCK_OUTPUT) and recomputes what is inside a block; 'full' keeps nothing.
REMAT_POLICIES = {
  "none": None,
  "blocks": jax.checkpoint_policies.save_only_these_names(BLOCK_OUTPUT),
  "full": jax.checkpoint_policies.nothing_saveable,
}


def remat(config: ml_collections.ConfigDict, fn: Callable) -> Callable:
  """`fn` under jax.checkpoint with config.train.remat's policy (same values and gradients, less memory)."""
  name = config.train.get("remat", "none")
  if name not in REMAT_POLICIES:
    raise ValueError(f"config.train.remat must be one of {tuple(REMAT_POLICIES)}; got {name!r}")
  return fn if name == "none" else jax.checkpoint(fn, policy=REMAT_POLICIES[name])


def generator_from_config(config: ml_collections.ConfigDict):
  """`models.make_model(config.model.name, **the rest of config.model)` in the configured activation dtype."""
  kwargs = dict(config.model)
  return models.make_model(kwargs.pop("name"), dtype=activation_dtype(config), **kwargs)


def activation_dtype(config: ml_collections.ConfigDict):
  name = config.train.activation_dtype
  if name not in DTYPES:
    raise ValueError(f"config.train.activation_dtype must be one of {sorted(DTYPES)}; got {name!r}")
  return DTYPES[name]
