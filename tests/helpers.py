"""Shared by the tests: configs/<name>.py by name, a pytree's leaves as numpy, the sharded-vs-single-device run,
a run directory without training, real 16-bit PNGs, a jaxpr's equations by primitive."""

import os
import shutil
import struct
import zlib

import jax
import numpy as np

from jaxinpaint import checkpointing, configs_lib, runs, sharding, train
from jaxinpaint.data import pipeline

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def load_script(name: str):
  """scripts/<name>.py as a module (the weight converters live outside the package)."""
  import importlib.util

  spec = importlib.util.spec_from_file_location(name, os.path.join(ROOT, "scripts", f"{name}.py"))
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


def cli_env(**extra) -> dict:
  """The environment for a CLI subprocess: this process's (its XLA flags, hence 8 fake CPU devices), the CPU
  backend, no JAXINPAINT_TRACEBACK (error output as users see it), then `extra`."""
  env = dict(os.environ, JAX_PLATFORMS="cpu", **extra)
  env.pop("JAXINPAINT_TRACEBACK", None)
  return env


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


def straight_and_resumed(config, tmp_path_factory) -> dict:
  """`config` trained straight to its end on one device, and resumed to its end in a second workdir that holds only
  that run's config and its step-10 checkpoint: {'full', 'full_dir', 'second'} (`train.train_and_evaluate`'s results).

  What a family's resume must restore (its networks, optimisers and statistics, the data iterator) is in the
  checkpoint; the stop-and-save path that writes one mid-run (`stop_at`, preemption) is tested once, on the U-Net
  (tests/test_train.py), rather than trained again here for every family."""
  full_dir, split_dir = (str(tmp_path_factory.mktemp(n)) for n in ("full", "split"))
  one = jax.devices()[:1]
  full = train.train_and_evaluate(config, full_dir, devices=one)
  shutil.copy(os.path.join(full_dir, "config.json"), split_dir)
  shutil.copytree(os.path.join(full_dir, "checkpoints", "10"), os.path.join(split_dir, "checkpoints", "10"))
  second = train.train_and_evaluate(config, split_dir, devices=one)
  return dict(full=full, full_dir=full_dir, second=second)


def save_run(config, workdir):
  """`workdir` as a finished run of `config` leaves it (config.json + a checkpoint at its last step) holding the
  initial state: restoring and predicting are what is tested, so no train step is compiled. -> (trainer, state)."""
  trainer = train.Trainer(config)
  state = trainer.initial_state()
  train.save_config(config, workdir)
  ckpt = checkpointing.Checkpointer(workdir, async_save=False)
  ckpt.save(config.num_train_steps, state, None, force=True)
  ckpt.close()
  return trainer, state


def make_run(workdir, name="wconv", seed=0):
  """`save_run` of configs/<name>.py:tiny with eval defaults and `seed`."""
  config = runs.with_defaults(load_config(name))
  config.seed = seed
  return (config, *save_run(config, workdir))


def write_png16(path, array) -> None:
  """Writes uint16 [H, W] / [H, W, 2|3|4] as a real 16-bit PNG (grey, LA, RGB, RGBA), without PIL's 8-bit path."""
  a = np.asarray(array, np.uint16)
  a = a[..., None] if a.ndim == 2 else a
  h, w, c = a.shape
  raw = b"".join(b"\x00" + a[y].astype(">u2").tobytes() for y in range(h))  # filter type 0 per row

  def chunk(kind, data):
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

  header = struct.pack(">IIBBBBB", w, h, 16, {1: 0, 2: 4, 3: 2, 4: 6}[c], 0, 0, 0)
  with open(path, "wb") as f:
    f.write(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b""))


def eqns_named(jaxpr, name):
  """Every equation of primitive `name` in a jaxpr, sub-jaxprs (jit, custom_jvp, ...) included."""
  for eqn in jaxpr.eqns:
    if eqn.primitive.name == name:
      yield eqn
    for value in eqn.params.values():
      inner = getattr(value, "jaxpr", value)
      if hasattr(inner, "eqns"):
        yield from eqns_named(inner, name)


def lama_tiny_batch(n: int = 2, size: int = 32) -> dict:
  """A seeded LaMa test batch: random image in [-1, 1], one box hole per example."""
  import jax.numpy as jnp

  rng = np.random.default_rng(0)
  valid = np.ones((n, size, size, 1), np.float32)
  valid[:, 8:20, 6:18] = 0
  return {"image": jnp.asarray(rng.uniform(-1, 1, (n, size, size, 3)), jnp.float32), "valid": jnp.asarray(valid)}


def lama_losses_with_and_without(plain, other, batch):
  """One jitted LaMa loss evaluation of two tasks on the same init: (g_plain, d_plain, g_other, d_other,
  other's 'perceptual' term, the generator's raw output)."""
  variables = dict(runs.jit_init(plain.init)(jax.random.key(0), batch))
  params = variables.pop("params")

  @jax.jit
  def both(p):
    g_plain, d_plain, _, _ = plain.losses(p, variables, batch)
    g_other, d_other, _, terms = other.losses(p, variables, batch)
    out = plain.generator.apply(
      {"params": p["generator"], "batch_stats": variables["batch_stats"]["generator"]},
      batch["image"],
      batch["valid"],
      train=True,
      mutable=["batch_stats"],
    )[0]
    return g_plain, d_plain, g_other, d_other, terms["perceptual"], out

  return both(params)
