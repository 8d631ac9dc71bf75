"""The device check bench/device_check.sh runs: train-step and inference speed of every family at 256 px, f32 and
bf16, each backend-aware fast path at its 'auto' form and at its alternative; JSON out, a summary table printed.

  bench/device_check.sh                                   # on a GPU machine: at most 5 minutes
  DEVICE_CHECK_TINY=1 bench/device_check.sh               # CI size on any backend (tests/test_cost_model.py)
  .venv/bin/python bench/device_check.py --families=unet_pconv --dtypes=float32 --choices=decoder

Cases run in priority order (every family's 'auto' form in f32, then bf16, then the alternatives of
`--alternatives_for` families) until `--budget_s` is spent; the rest are listed as skipped. Each case is one
`train.Trainer` on one device: compile time, median train-step time over `--steps` after `--warmup` (each timed
to `block_until_ready`), images/s, and the median inference (`task.predict`) time for the same batch. A flipped
choice that runs faster than 'auto' is flagged in the table: set `auto` for that backend from it
(layers/masked_conv.FAST_PATHS).
"""

from __future__ import annotations

import json
import os
import platform
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
sys.path.insert(0, os.path.join(ROOT, "bench"))

from absl import app, flags  # noqa: E402

from common import FAMILIES, median_time  # noqa: E402

CHOICES = {"unet": ("decoder", "strided_grad", "pad_barrier"), "deepfill": ("strided_grad",)}

flags.DEFINE_list("families", list(FAMILIES), "Families (bench/cost_model.FAMILIES).")
flags.DEFINE_list("dtypes", ["float32", "bfloat16"], "Activation dtypes.")
flags.DEFINE_list("choices", ["decoder", "strided_grad", "pad_barrier"], "Fast-path choices to flip.")
flags.DEFINE_list("alternatives_for", ["unet_pconv", "deepfill_v2"], "Families whose choices are flipped.")
flags.DEFINE_integer("size", 256, "Image height and width.")
flags.DEFINE_integer("batch", 4, "Batch size (one device).")
flags.DEFINE_integer("steps", 5, "Timed steps (median).")
flags.DEFINE_integer("warmup", 1, "Untimed steps after compiling.")
flags.DEFINE_float("budget_s", 240.0, "Start no case after this many seconds.")
flags.DEFINE_bool("tiny", False, "CI size: configs' ':tiny' variants at 32 px, 2 steps.")
flags.DEFINE_string("out", "", "JSON file (default bench/results/device_check_<backend>.json).")
FLAGS = flags.FLAGS


def cases() -> list[dict]:
  """(family, dtype, choice overrides) in priority order."""
  from jaxinpaint.layers.masked_conv import FAST_PATHS, resolve

  out = [{"family": f, "dtype": d, "flip": None, "overrides": {}} for d in FLAGS.dtypes for f in FLAGS.families]
  for dtype in FLAGS.dtypes:
    for family in FLAGS.families:
      kind = "unet" if family.startswith("unet") else "deepfill" if family.startswith("deepfill") else None
      if kind is None or family not in FLAGS.alternatives_for:
        continue
      for choice in CHOICES[kind]:
        if choice not in FLAGS.choices:
          continue
        other = next(f for f in FAST_PATHS[choice] if f != resolve(choice, "auto"))
        out.append(
          {"family": family, "dtype": dtype, "flip": f"{choice}={other}", "overrides": {f"model.{choice}": other}}
        )
  return out


def run_case(case: dict) -> dict:
  import jax

  from common import batch_arrays, family_config
  from jaxinpaint import sharding, train

  size = 32 if FLAGS.tiny else FLAGS.size
  config = family_config(
    case["family"], size, FLAGS.batch, case["dtype"], "none", "tiny" if FLAGS.tiny else "", gpu_forms=False
  )
  for key, value in case["overrides"].items():  # at most one choice flipped away from 'auto'
    config.model[key.split(".", 1)[1]] = value
  trainer = train.Trainer(config, jax.devices()[:1])
  image, valid = batch_arrays(size, FLAGS.batch)
  batch = sharding.to_global({"image": image, "valid": valid}, trainer.mesh)
  holder = {"state": trainer.initial_state()}
  t0 = time.perf_counter()
  step = trainer.compile_step(trainer.task, holder["state"])
  compile_s = time.perf_counter() - t0

  def one_step():
    holder["state"], metrics = step(holder["state"], batch)
    return holder["state"].params, metrics

  step_s = median_time(one_step, FLAGS.steps, FLAGS.warmup)
  state = holder["state"]
  predict = jax.jit(lambda p, s, b: trainer.task.predict(p, s, b)["output"])
  infer_s = median_time(lambda: predict(state.params, state.model_state, batch), FLAGS.steps, 1)
  return {
    **{k: case[k] for k in ("family", "dtype", "flip")},
    "size": size,
    "batch": FLAGS.batch,
    "compile_s": round(compile_s, 2),
    "step_s": round(step_s, 5),
    "images_per_s": round(FLAGS.batch / step_s, 2),
    "infer_s": round(infer_s, 5),
    "infer_images_per_s": round(FLAGS.batch / infer_s, 2),
  }


def table(rows: list[dict]) -> str:
  """Markdown: one line per case; a flip faster than its 'auto' row is marked."""
  auto = {(r["family"], r["dtype"]): r for r in rows if r.get("flip") is None and "step_s" in r}
  out = [
    "| family | dtype | form | train img/s | infer img/s | vs auto (train, infer) | compile s |",
    "|---|---|---|---|---|---|---|",
  ]
  for r in rows:
    if "step_s" not in r:
      out.append(
        f"| {r['family']} | {r['dtype']} | {r.get('flip') or 'auto'} | {r.get('skipped', r.get('failed'))} | | | |"
      )
      continue
    base = auto.get((r["family"], r["dtype"]))
    ratio = ""
    if r.get("flip") and base:
      t, i = base["step_s"] / r["step_s"], base["infer_s"] / r["infer_s"]
      ratio = f"{t:.2f}x, {i:.2f}x" + (" FASTER THAN AUTO" if max(t, i) > 1.05 else "")
    out.append(
      f"| {r['family']} | {r['dtype']} | {r.get('flip') or 'auto'} | {r['images_per_s']} | "
      f"{r['infer_images_per_s']} | {ratio} | {r['compile_s']} |"
    )
  return "\n".join(out)


def main(argv):
  del argv
  from jaxinpaint import xla_flags

  xla_flags.set_cpu_flags()
  import jax

  from common import package_version

  if FLAGS.tiny:
    FLAGS.steps, FLAGS.warmup = 2, 0
  unknown = [f for f in FLAGS.families if f not in FAMILIES]
  if unknown:
    raise app.UsageError(f"unknown families {unknown}; known: {list(FAMILIES)}")
  device = jax.devices()[0]
  header = {
    "backend": jax.default_backend(),
    "device": device.device_kind,
    "jax": package_version("jax"),
    "host": platform.node(),
    "tiny": FLAGS.tiny,
    "xla_flags": os.environ.get("XLA_FLAGS", ""),
  }
  print(json.dumps(header), flush=True)
  t0 = time.perf_counter()
  rows = []
  for case in cases():
    if time.perf_counter() - t0 > FLAGS.budget_s:
      row = {**{k: case[k] for k in ("family", "dtype", "flip")}, "skipped": "time budget spent"}
    else:
      try:
        row = run_case(case)
      except Exception as e:  # one failing case leaves the others
        row = {
          **{k: case[k] for k in ("family", "dtype", "flip")},
          "failed": f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}",
        }
    print(json.dumps(row), flush=True)
    rows.append(row)
  out = FLAGS.out or os.path.join(ROOT, "bench", "results", f"device_check_{jax.default_backend()}.json")
  os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
  with open(out + ".tmp", "w") as f:
    json.dump({**header, "seconds": round(time.perf_counter() - t0, 1), "rows": rows}, f, indent=1)
  os.replace(out + ".tmp", out)
  print(table(rows))
  print(f"wrote {out}")


if __name__ == "__main__":
  app.run(main)
