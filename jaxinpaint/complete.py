"""`--mode=complete`: restores a trained DCGAN run and writes completed held-out images with seed 001's scores.

The latent optimisation itself is `jaxinpaint.completion` (which the DCGAN task's eval also uses); this module
opens the run (`jaxinpaint.runs`) and writes `workdir/completion/`.
"""

from __future__ import annotations

import json
import os
from typing import Any

import jax
import ml_collections
import numpy as np
from absl import logging

from jaxinpaint import metrics, runs, visualize
from jaxinpaint.completion import completion_images, initial_latents, seed001_scores, tile


def _run_config(config, workdir: str):
  """The trained run's own config (model, data, masks) with this invocation's `completion` section."""
  if not os.path.isfile(os.path.join(workdir, runs.CONFIG_FILE)):
    return config
  run_config = runs.load_config(workdir)
  run_config.completion = ml_collections.ConfigDict(config.completion.to_dict())
  return run_config


def complete_run(config, workdir: str) -> dict[str, Any]:
  """`--mode=complete`: restores the DCGAN in `workdir`, completes `config.completion.num_images` held-out images
  and writes `workdir/completion/{metrics.json, completions.png, samples.png}`. Returns the metrics dict.

  completions.png: target | mask | input | G(z*) | completed | |error| per image; samples.png: G(z) for random z.
  metrics.json: seed 001's MSE / SSIM (and PSNR) of the completed images against the originals, mean and per
  image, the project's seed-004 metrics, the same numbers for the masked input (holes grey), and the mean
  context loss along the optimisation.
  """
  config = _run_config(config, workdir)
  if config.task != "dcgan":
    raise ValueError(f"--mode=complete needs a DCGAN run (config.task='dcgan'); {workdir} is a {config.task!r} run")
  run = runs.restore(workdir, config)
  task, c, step = run.task, config.completion, run.step
  variables = task.network_variables(run.params, run.model_state)
  image, valid = completion_images(config, c.num_images)
  z0 = initial_latents(c.seed, len(image), task.latent_dim)
  logging.info("completing %d images: %d iterations of Adam on z, blend %s", len(image), c.iterations, c.blend)
  out = task.completer().run(variables, image, valid, z0, mesh=run.mesh)

  scores = seed001_scores(image, out["output"])
  baseline = seed001_scores(image, image * valid)
  project = metrics.inpainting_metrics((image + 1) / 2, (np.clip(out["generated"], -1, 1) + 1) / 2, valid)
  checkpoints = sorted({0, 1, 10, 100, c.iterations} & set(range(c.iterations + 1)))
  result = {
    "step": int(step),
    "gan_loss": config.loss.gan_loss,
    "num_images": len(image),
    "iterations": c.iterations,
    "blend": c.blend,
    "weighted_context": bool(c.weighted),
    "lam": c.lam,
    "discriminator_stats": c.discriminator_stats,
    **{k: float(v.mean()) for k, v in scores.items()},
    "per_image": {k: v.tolist() for k, v in scores.items()},
    "masked_input": {k: float(v.mean()) for k, v in baseline.items()},
    "project_metrics": {k: float(np.mean(v)) for k, v in project.items()},
    "context_loss": {str(t): float(out["context"][t].mean()) for t in checkpoints},
    "perceptual_loss": {str(t): float(out["perceptual"][t].mean()) for t in checkpoints},
  }
  if jax.process_index() == 0:
    folder = os.path.join(workdir, "completion")
    os.makedirs(folder, exist_ok=True)
    grid = visualize.sample_grid(image, valid, out["generated"], max_rows=len(image))
    visualize.save_png(grid, os.path.join(folder, "completions.png"))
    samples = task.generator.apply(variables["generator"], initial_latents(c.seed + 1, 64, task.latent_dim))
    visualize.save_png(tile(visualize.to_uint8(np.asarray(samples))), os.path.join(folder, "samples.png"))
    if c.blend != "composite":  # the grid's composite column is the plain composite; show the blend too
      visualize.save_png(tile(visualize.to_uint8(out["output"])), os.path.join(folder, f"{c.blend}.png"))
    with open(os.path.join(folder, "metrics.json"), "w") as f:
      json.dump(result, f, indent=2)
    logging.info(
      "completion of step %d: MSE %.2f, SSIM %.4f, PSNR %.2f dB (masked input: MSE %.2f, SSIM %.4f); written to %s",
      step,
      result["mse"],
      result["ssim"],
      result["psnr"],
      result["masked_input"]["mse"],
      result["masked_input"]["ssim"],
      folder,
    )
  return result
