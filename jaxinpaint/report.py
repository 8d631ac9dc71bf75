"""The model-versus-classical-peers margin table that `make demo` prints when it finishes (issue 12).

  python -m jaxinpaint.main --config=configs/wconv.py:demo --workdir=runs/wconv_demo   # trains, then prints it

For each mask kind the model was scored on, and each headline metric (PSNR on the hole, SSIM on the composite),
one row: the model, every classical peer, and the margin `model - best peer` (positive = the model wins).
"""

from __future__ import annotations

from collections.abc import Sequence

from jaxinpaint import baselines

MARGIN_METRICS = (("psnr", "PSNR hole (dB)"), ("ssim", "SSIM"))
FLOOR = baselines.LABELS["mean_fill"]  # not a peer: the floor every method must clear


def margins(results, model: str, metrics: Sequence[str] = ("psnr", "ssim")) -> dict[tuple[str, str], float]:
  """{(kind, metric): model - best classical peer} over the non-bucket kinds of `results` (`eval.harness.Results`);
  higher is better for both metrics."""
  peers = [r["method"] for r in results.rows if r["classical"] and r["method"] != FLOOR]
  out = {}
  for kind in dict.fromkeys(r["kind"] for r in results.rows):
    if kind.startswith("hole_"):
      continue
    for metric in metrics:
      best = max(results.value(p, kind, metric) for p in dict.fromkeys(peers))
      out[(kind, metric)] = results.value(model, kind, metric) - best
  return out


def margin_table(results, model: str, fill: str | None = None) -> str:
  """Markdown: per mask kind and metric, the model, each classical peer and the margin over the best peer; with
  `fill` (the method name of the parameter-free fill a `residual_fill` model corrects), also that fill and what
  the learning adds over it."""
  from jaxinpaint.eval.mask_sets import kind_label

  peers = list(dict.fromkeys(r["method"] for r in results.rows if r["classical"] and r["method"] != FLOOR))
  gaps = margins(results, model, [m for m, _ in MARGIN_METRICS])
  labels = dict(MARGIN_METRICS)
  shown = [model, *([fill] if fill else []), *peers]
  lines = [
    "| mask | metric | "
    + " | ".join(shown)
    + " | margin over best peer |"
    + (" learned (model - fill) |" if fill else ""),
    "|---|---|" + "---:|" * (len(shown) + 1 + bool(fill)),
  ]
  for (kind, metric), gap in gaps.items():
    digits = 2 if metric == "psnr" else 4
    cells = [f"{results.value(m, kind, metric):.{digits}f}" for m in shown] + [f"{gap:+.{digits}f}"]
    if fill:
      cells.append(f"{results.value(model, kind, metric) - results.value(fill, kind, metric):+.{digits}f}")
    lines.append(f"| {kind_label(kind)} | {labels[metric]} | " + " | ".join(cells) + " |")
  return "\n".join(lines)


FILLS = {"push_pull": "Push-pull fill (no learning)", "biharmonic": "JAX biharmonic fill (no learning)"}


def eval_set_label(data_config) -> str:
  """What the scored crops are cut from, in words (the demo source's `data.eval_split` sets included)."""
  split = data_config.get("eval_split", "")
  if data_config.source == "demo":
    return {
      "other_package": "the held-out photos from a package that ships no training photo",
      "training_photos": "the TRAINING photos (not held out: a diagnostic)",
      "dead_leaves": "procedural dead-leaves images (data.dead_leaves' distribution: a diagnostic)",
    }.get(split, "the held-out photos")
  return f"the held-out split {split!r}" if data_config.source == "tfds" else "the held-out images"


def evaluate_and_print(config, workdir: str) -> dict[tuple[str, str], float]:
  """`evaluate.evaluate` on the run in `workdir` (writes eval_results.*), then prints the margin table to stdout
  (for a `model.residual_fill` run, with the fill alone scored on the same examples); returns the margins."""
  import os

  import jax
  import numpy as np

  from jaxinpaint import evaluate, runs
  from jaxinpaint.eval import harness, mask_sets
  from jaxinpaint.models import unet

  results = evaluate.evaluate(config, workdir, progress=False)
  model = os.path.basename(os.path.normpath(workdir))
  fill = None
  if config.model.get("residual_fill", False):
    name = config.model.get("fill", "push_pull")
    fill_fn = jax.jit(unet.FILLS[name])  # the very fill the model adds its correction to
    method = harness.Method(lambda image, valid: np.asarray(fill_fn(image, valid)), on_host=True)
    eval_set = mask_sets.EvalSet.from_config(runs.with_defaults(config), jax.device_count())
    fill = FILLS[name]
    results.rows += harness.evaluate_methods({fill: method}, eval_set, progress=False).rows
  info = results.info
  print(
    f"\n{model} (step {info['step']}) against the classical peers: {info['examples']} crops per mask kind of "
    f"{eval_set_label(config.data)} ({info['data']}, {info['image_size']} px; PSNR on the hole, SSIM on the "
    "composite):\n"
  )
  print(margin_table(results, model, fill), flush=True)
  return margins(results, model)
