"""Train-step and inference speed of every model, and the input pipeline's speed beside them; one JSON line each.

  .venv/bin/python bench/train_step.py                                  # 256 x 256, batch 4, every model
  .venv/bin/python bench/train_step.py --models=unet_partial --steps=3  # one model

Each model runs in its own process (so its peak RSS is its own) on one device, through the project's own
`train.Trainer` step (forward, loss, backward, optimiser, metrics) with the project's XLA CPU flags
(`jaxinpaint.xla_flags`). Per model: compile time of the step, median step time over `--steps` steps after
`--warmup` (each timed to `block_until_ready`), images/s = batch / median, XLA's memory for the compiled step
(arguments + outputs + temporaries - donated aliases, bytes) and the process's peak RSS; then inference
(`task.predict`, eval mode) images/s for batch `--infer_batch` at each of `--infer_sizes`. Finally the grain
input pipeline alone (offline photos, the config's masks and augmentation, `--pipeline_workers` processes) in
images/s, and its ratio to the fastest train step measured.

To add a model, add one entry to MODELS: (config file under configs/, overrides); a model whose process fails is
reported as {"model": ..., "failed": [last stderr line]} and the others still run.
"""

from __future__ import annotations

import json
import os
import platform
import resource
import subprocess
import sys
import time

import numpy as np
from absl import app, flags

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
sys.path.insert(0, os.path.join(ROOT, "bench"))

from common import median_time  # noqa: E402  (bench/common.py, shared with bench/device_check.py)

# name -> (configs/<file>.py, {dotted config key: value})
MODELS = {
  "unet_partial": ("pconv", {}),
  "unet_partial_concat": ("pconv", {"model.decoder": "concat"}),  # the unfused decoder form, for comparison
  "unet_weighted": ("wconv", {}),
  "unet_gated": ("wconv", {"model.conv": "gated"}),
  "unet_plain": ("plain", {}),
  "deepfill_v2_snpatchgan": ("gated", {}),
}

flags.DEFINE_list("models", list(MODELS), "Models to time (keys of MODELS).")
flags.DEFINE_integer("size", 256, "Training image height and width.")
flags.DEFINE_integer("batch", 4, "Training batch size.")
flags.DEFINE_integer("steps", 5, "Timed steps (median reported).")
flags.DEFINE_integer("warmup", 2, "Untimed steps after compilation.")
flags.DEFINE_list("infer_sizes", ["256", "512"], "Inference image sizes.")
flags.DEFINE_integer("infer_batch", 1, "Inference batch size.")
flags.DEFINE_integer("pipeline_batches", 20, "Timed input-pipeline batches (0: skip the pipeline).")
flags.DEFINE_integer("pipeline_workers", 2, "grain worker processes for the pipeline measurement.")
flags.DEFINE_string("child", "", "Internal: time this one model in this process.")
FLAGS = flags.FLAGS


def model_config(name: str, size: int, batch: int):
  from common import bench_config

  file, overrides = MODELS[name]
  return bench_config(file, size, batch, overrides)


def time_model(name: str) -> dict:
  """One model: compile, train-step and inference timings (runs in a child process)."""
  from jaxinpaint import xla_flags

  xla_flags.set_cpu_flags()
  import jax

  from jaxinpaint import sharding, train
  from common import batch_arrays

  config = model_config(name, FLAGS.size, FLAGS.batch)
  trainer = train.Trainer(config, jax.devices()[:1])
  image, valid = batch_arrays(FLAGS.size, FLAGS.batch)
  batch = sharding.to_global({"image": image, "valid": valid}, trainer.mesh)
  state = trainer.initial_state()
  t0 = time.perf_counter()
  step = trainer.compile_step(trainer.task, state)
  compile_s = time.perf_counter() - t0
  holder = {"state": state}

  def one_step():
    holder["state"], metrics = step(holder["state"], batch)
    return holder["state"].params, metrics

  step_s = median_time(one_step, FLAGS.steps, FLAGS.warmup)
  mem = trainer.memory or {}
  xla_bytes = sum(mem.get(k, 0) for k in ("argument_size_in_bytes", "output_size_in_bytes", "temp_size_in_bytes"))
  xla_bytes -= mem.get("alias_size_in_bytes", 0)
  state = holder["state"]
  predict = jax.jit(lambda p, s, b: trainer.task.predict(p, s, b)["output"])
  inference = {}
  for size in (int(s) for s in FLAGS.infer_sizes):
    im, va = batch_arrays(size, FLAGS.infer_batch, seed=1)
    b = {"image": jax.numpy.asarray(im), "valid": jax.numpy.asarray(va)}
    t0 = time.perf_counter()
    jax.block_until_ready(predict(state.params, state.model_state, b))
    first_s = time.perf_counter() - t0
    seconds = median_time(lambda: predict(state.params, state.model_state, b), FLAGS.steps, 1)
    inference[str(size)] = {
      "images_per_s": round(FLAGS.infer_batch / seconds, 3),
      "s_per_batch": round(seconds, 4),
      "compile_and_first_s": round(first_s, 1),
    }
  n_params = sum(int(np.prod(x.shape)) for x in jax.tree.leaves(state.params))
  return {
    "model": name,
    "config": MODELS[name][0],
    "task": config.task,
    "params": n_params,
    "size": FLAGS.size,
    "batch": FLAGS.batch,
    "compile_s": round(compile_s, 1),
    "step_s": round(step_s, 4),
    "images_per_s": round(FLAGS.batch / step_s, 3),
    "xla_step_memory_mb": round(xla_bytes / 2**20, 1),
    "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
    "inference_batch": FLAGS.infer_batch,
    "inference": inference,
  }


def pipeline_rate() -> dict:
  """images/s of the grain training pipeline alone at the bench size (offline photos, free-form masks)."""
  from jaxinpaint.data import pipeline

  config = model_config("unet_partial", FLAGS.size, FLAGS.batch)
  config.data.update(
    source="demo",
    name="demo",
    resize=None,
    shorter_side=2 * FLAGS.size,
    train_split="train",
    num_workers=FLAGS.pipeline_workers,
  )
  it = pipeline.make_train_iterator(config)
  for _ in range(3):
    next(it)
  t0 = time.perf_counter()
  for _ in range(FLAGS.pipeline_batches):
    next(it)
  seconds = time.perf_counter() - t0
  return {
    "pipeline": "grain demo source, free_form masks, resize + crop + flip",
    "size": FLAGS.size,
    "batch": FLAGS.batch,
    "workers": FLAGS.pipeline_workers,
    "images_per_s": round(FLAGS.pipeline_batches * FLAGS.batch / seconds, 1),
  }


def main(argv):
  del argv
  if FLAGS.child:
    print(json.dumps(time_model(FLAGS.child)), flush=True)
    return
  unknown = [m for m in FLAGS.models if m not in MODELS]
  if unknown:
    raise app.UsageError(f"unknown models {unknown}; known: {list(MODELS)}")
  machine = {
    "cpu": platform.processor() or platform.machine(),
    "cores": os.cpu_count(),
    "load": round(os.getloadavg()[0], 2),
  }
  from jaxinpaint import xla_flags

  from common import package_version

  print(json.dumps({"machine": machine, "jax": package_version("jax"), "xla_flags": xla_flags.set_cpu_flags()}))
  rates = []
  for name in FLAGS.models:
    args = [
      sys.executable,
      os.path.abspath(__file__),
      f"--child={name}",
      f"--size={FLAGS.size}",
      f"--batch={FLAGS.batch}",
      f"--steps={FLAGS.steps}",
      f"--warmup={FLAGS.warmup}",
      f"--infer_sizes={','.join(FLAGS.infer_sizes)}",
      f"--infer_batch={FLAGS.infer_batch}",
    ]
    proc = subprocess.run(args, capture_output=True, text=True)
    lines = [line for line in proc.stdout.splitlines() if line.startswith("{")]
    if proc.returncode or not lines:
      print(json.dumps({"model": name, "failed": proc.stderr.strip().splitlines()[-1:]}), flush=True)
      continue
    result = json.loads(lines[-1])
    result["load"] = round(os.getloadavg()[0], 2)
    rates.append(result["images_per_s"])
    print(json.dumps(result), flush=True)
  if FLAGS.pipeline_batches:
    result = pipeline_rate()
    if rates:
      result["fastest_train_step_images_per_s"] = max(rates)
      result["pipeline_over_train_step"] = round(result["images_per_s"] / max(rates), 1)
    print(json.dumps(result), flush=True)


if __name__ == "__main__":
  app.run(main)
