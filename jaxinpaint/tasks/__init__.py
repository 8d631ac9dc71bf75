"""Model families as trainer tasks, and the registry `make_task` reads `config.task` from.

`base.Task` is the contract; `unet` (config.task 'inpainting'), `deepfill`, `dcgan` and `lama` implement it;
`optim` holds the optimiser and schedule helpers they share. A new family adds a module here and one `TASKS` entry.
"""

from __future__ import annotations

from typing import Callable

import ml_collections
from absl import logging

from jaxinpaint.tasks.base import Task
from jaxinpaint.tasks.dcgan import DCGANTask
from jaxinpaint.tasks.deepfill import DeepFillTask
from jaxinpaint.tasks.lama import LamaTask
from jaxinpaint.tasks.unet import InpaintingTask

TASKS: dict[str, Callable[..., Task]] = {
  "inpainting": InpaintingTask,
  "dcgan": DCGANTask,
  "deepfill": DeepFillTask,
  "lama": LamaTask,
}


def make_task(config: ml_collections.ConfigDict, **kwargs) -> Task:
  """The task `config.task` names, built from `config` (kwargs go to its constructor)."""
  if config.task not in TASKS:
    raise ValueError(f"unknown config.task {config.task!r}; known tasks: {sorted(TASKS)}")
  task = TASKS[config.task](config, **kwargs)
  logging.info("task %s: model %s", config.task, config.model.name)
  return task
