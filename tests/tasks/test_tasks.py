"""The task contract (jaxinpaint.tasks.base): the registry, and the per-step stage hook the trainer recompiles on."""

import jax
import pytest

from helpers import load_config
from jaxinpaint import runs, tasks
from jaxinpaint.tasks import base, unet


def test_registry_builds_every_family():
  expected = {"inpainting": "InpaintingTask", "deepfill": "DeepFillTask", "dcgan": "DCGANTask", "lama": "LamaTask"}
  assert {k: v.__name__ for k, v in tasks.TASKS.items()} == expected
  for name, config_name in (("deepfill", "deepfill_v1"), ("dcgan", "dcgan"), ("lama", "lama"), ("inpainting", "pconv")):
    task = tasks.make_task(load_config(config_name))
    assert type(task).__name__ == expected[name]
    assert isinstance(task.metric_names, tuple) and all(isinstance(n, str) for n in task.metric_names)


def test_unknown_task_is_one_error_line():
  config = load_config("wconv")
  config.task = "nope"
  with pytest.raises(ValueError, match="unknown config.task 'nope'; known tasks"):
    tasks.make_task(config)


def test_unet_finetune_stage_starts_at_finetune_step():
  config = load_config("pconv")
  assert config.optim.schedule == "finetune" and config.optim.finetune_step == 15
  task = tasks.make_task(config)
  assert [task.stage(s) for s in (0, 14, 15, 20)] == ["main", "main", "finetune", "finetune"]
  tuned = task.for_stage("finetune")
  assert tuned.finetune and tuned.model.freeze_encoder_norm and not task.model.freeze_encoder_norm
  assert task.for_stage("main") is task and tuned.for_stage("finetune") is tuned
  assert tuned.for_stage("main").finetune is False
  with pytest.raises(ValueError, match="stages are 'main' and 'finetune'"):
    task.for_stage("warmup")


def test_finetune_stage_keeps_the_state_tree():
  """Checkpoints of either stage restore into the other: the stage changes the loss, not the variables."""
  config = load_config("pconv")
  task = tasks.make_task(config)
  batch = runs.example_batch(config, 1)
  shapes = [jax.eval_shape(t.init, jax.random.key(0), batch) for t in (task, task.for_stage("finetune"))]
  assert jax.tree.structure(shapes[0]) == jax.tree.structure(shapes[1])
  assert [x.shape for x in jax.tree.leaves(shapes[0])] == [x.shape for x in jax.tree.leaves(shapes[1])]


def test_other_schedules_and_families_have_one_stage():
  wconv = tasks.make_task(load_config("wconv"))
  assert all(wconv.stage(s) == base.MAIN_STAGE for s in (0, 10**6)) and wconv.for_stage(base.MAIN_STAGE) is wconv
  dcgan = tasks.make_task(load_config("dcgan"))
  assert dcgan.stage(10**6) == base.MAIN_STAGE and dcgan.for_stage(base.MAIN_STAGE) is dcgan
  with pytest.raises(ValueError, match="one training stage"):
    dcgan.for_stage(unet.FINETUNE_STAGE)
  for name in ("dcgan", "lama"):
    with pytest.raises(TypeError):  # the unused `finetune` argument is gone
      tasks.TASKS[name](load_config(name), finetune=True)
