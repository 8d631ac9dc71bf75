"""Seed 001's comparison: the MSE and SSIM of DCGAN completions for each GAN loss, on the offline demo data.

  python scripts/dcgan_loss_table.py --workdir=runs/dcgan_table

For each loss (sigmoid_ce, softmax_ce, mse) it trains `configs/dcgan.py:demo` in WORKDIR/<loss> (resuming what
is already there), completes the held-out faces as `--mode=complete` does (centre hole, 1000 Adam steps on z,
composite), and writes the table, seed 001's numbers beside ours, to WORKDIR/table.md and WORKDIR/table.json.
MSE is in 0..255 units and SSIM is scikit-image's default, both on 8-bit images, as the seed computed them.
"""

import json
import os
import sys
import time

from absl import app, flags

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

# Seed 001, "Quantitative Evaluation" (CelebA, 64x64, 20 epochs).
SEED_001 = {"mse": (441.68, 0.73), "softmax_ce": (125.10, 0.84), "sigmoid_ce": (105.76, 0.87)}
NAMES = {"mse": "Mean_Square_Error", "softmax_ce": "Softmax_cross_entropy", "sigmoid_ce": "Sigmoid_cross_entropy"}

_WORKDIR = flags.DEFINE_string("workdir", "runs/dcgan_table", "One run directory per GAN loss goes under here.")
_VARIANT = flags.DEFINE_string("variant", "demo", "configs/dcgan.py variant.")
_LOSSES = flags.DEFINE_list("losses", ["mse", "softmax_ce", "sigmoid_ce"], "GAN losses to compare.")
_STEPS = flags.DEFINE_integer("steps", None, "Training steps per DCGAN (default: the variant's).")
_ITERATIONS = flags.DEFINE_integer("iterations", None, "Completion iterations (default: the config's 1000).")
_D_STATS = flags.DEFINE_enum(
  "discriminator_stats",
  None,
  ["batch", "running"],
  "D's BatchNorm while completing (default: the config's 'batch', bamos' reference).",
)


def load_config(variant: str, gan_loss: str):
  from jaxinpaint import configs_lib

  config = configs_lib.load_config_file(os.path.join(ROOT, "configs", "dcgan.py"), variant)
  config.loss.gan_loss = gan_loss
  if _STEPS.value:
    config.num_train_steps = _STEPS.value
  if _ITERATIONS.value:
    config.completion.iterations = _ITERATIONS.value
  if _D_STATS.value:
    config.completion.discriminator_stats = _D_STATS.value
  return config


def markdown(rows: dict, baseline: dict, setup: str) -> str:
  lines = ["| GAN loss | MSE | SSIM | PSNR (dB) | seed 001 MSE | seed 001 SSIM |", "|---|---|---|---|---|---|"]
  for loss, r in rows.items():
    seed = SEED_001.get(loss, ("", ""))
    lines.append(
      f"| {NAMES.get(loss, loss)} (`{loss}`) | {r['mse']:.2f} | {r['ssim']:.3f} | {r['psnr']:.2f} | "
      f"{seed[0]} | {seed[1]} |"
    )
  lines.append(
    f"| masked input (hole grey, no completion) | {baseline['mse']:.2f} | {baseline['ssim']:.3f} | "
    f"{baseline['psnr']:.2f} | | |"
  )
  return "\n".join(lines) + f"\n\n{setup}\n"


def main(argv):
  del argv
  from jaxinpaint import complete, train

  start = time.perf_counter()
  rows, baseline, timings, config = {}, None, {}, None
  for loss in _LOSSES.value:
    config = load_config(_VARIANT.value, loss)
    workdir = os.path.join(_WORKDIR.value, loss)
    t0 = time.perf_counter()
    train.train_and_evaluate(config, workdir)
    t1 = time.perf_counter()
    result = complete.complete_run(config, workdir)
    timings[loss] = {"train_s": round(t1 - t0, 1), "complete_s": round(time.perf_counter() - t1, 1)}
    rows[loss], baseline = result, result["masked_input"]
    print(f"{loss}: MSE {result['mse']:.2f}, SSIM {result['ssim']:.3f} ({timings[loss]})", flush=True)
  total = time.perf_counter() - start
  c = config
  setup = (
    f"configs/dcgan.py:{_VARIANT.value}: {c.num_train_steps} steps of batch {c.batch_size} on "
    f"{c.data.source} ({c.data.image_size} px), G {tuple(c.model.generator_features)}, "
    f"D {tuple(c.model.discriminator_features)}; completion of {c.completion.num_images} held-out images, "
    f"{c.masks.eval_kind} hole, {c.completion.iterations} Adam steps on z (lr {c.completion.learning_rate}, "
    f"lambda {c.completion.lam}), {c.completion.blend}, D's BatchNorm on {c.completion.discriminator_stats} "
    f"statistics. Total {total / 60:.1f} min."
  )
  table = markdown(rows, baseline, setup)
  os.makedirs(_WORKDIR.value, exist_ok=True)
  with open(os.path.join(_WORKDIR.value, "table.md"), "w") as f:
    f.write(table)
  with open(os.path.join(_WORKDIR.value, "table.json"), "w") as f:
    json.dump(
      {
        "rows": {k: {m: v[m] for m in ("mse", "ssim", "psnr")} for k, v in rows.items()},
        "masked_input": baseline,
        "seed_001": SEED_001,
        "timings_s": timings,
        "total_s": round(total, 1),
      },
      f,
      indent=2,
    )
  print(table)


if __name__ == "__main__":
  app.run(main)
