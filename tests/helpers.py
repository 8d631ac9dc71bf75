"""Shared by the tests: configs/<name>.py by name, a pytree's leaves as numpy, the sharded-vs-single-device run."""

import os

import jax
import numpy as np

from jaxinpaint import configs_lib, sharding, train
from jaxinpaint.data import pipeline

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def load_config(name: str = "wconv", variant: str | None = "tiny"):
  """configs/<name>.py's get_config(variant)."""
  return configs_lib.load_config_file(os.path.join(ROOT, "configs", f"{name}.py"), variant)


def leaves(tree) -> list[np.ndarray]:
  return [np.asarray(x) for x in jax.tree.leaves(tree)]


def sharded_and_single(config, num_batches: int = 2) -> dict[str, tuple[dict[str, float], list[np.ndarray]]]:
  """The same `num_batches` train steps on all 8 devices and on one: {'sharded'|'single': (last step's metrics,
  leaves of params and model_state)}."""
  batches = [next(it) for it in [pipeline.make_train_iterator(config)] for _ in range(num_batches)]
  out = {}
  for name, devices in (("sharded", jax.devices()), ("single", jax.devices()[:1])):
    trainer = train.Trainer(config, devices)
    assert trainer.mesh.devices.size == len(devices)
    state = trainer.initial_state()
    step = trainer.compile_step(trainer.task, state)
    for batch in batches:
      gbatch = sharding.to_global(batch, trainer.mesh)
      assert len(gbatch["image"].sharding.device_set) == len(devices)
      state, metrics = step(state, gbatch)
    out[name] = ({k: float(v) for k, v in metrics.compute().items()}, leaves((state.params, state.model_state)))
  return out
