"""The model-versus-classical-peers margin table that `make demo` prints when it finishes (issue 12).

  python -m jaxinpaint.main --config=configs/diffusion.py:demo --workdir=runs/diffusion_demo   # trains, then prints it

For each mask kind the model was scored on, and each headline metric (PSNR on the hole, SSIM on the composite),
one row: the model, every classical peer, and the margin `model - best peer` (positive = the model wins).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

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
  `fill` (the method name of the parameter-free fill the model starts from, `start_fill`), also that fill and what
  the learning adds over it (`learned_cell`)."""
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
      cells.append(learned_cell(results, model, fill, kind, metric, digits))
    lines.append(f"| {kind_label(kind)} | {labels[metric]} | " + " | ".join(cells) + " |")
  return "\n".join(lines)


def learned_cell(results, model: str, fill: str, kind: str, metric: str, digits: int) -> str:
  """model - fill, and where both were scored per example on the same examples, `± s.e.` of that mean paired
  difference and on how many examples the model is ahead ("+0.14 ± 0.10 (21/32)")."""
  gain = results.value(model, kind, metric) - results.value(fill, kind, metric)
  a, b = (results.per_example.get((m, kind), {}).get(metric) for m in (model, fill))
  if a is None or b is None or len(a) != len(b) or len(a) < 2:
    return f"{gain:+.{digits}f}"
  d = np.asarray(a, np.float64) - np.asarray(b, np.float64)
  se = d.std(ddof=1) / np.sqrt(len(d))
  return f"{gain:+.{digits}f} ± {se:.{digits}f} ({int((d > 0).sum())}/{len(d)})"


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


def start_fill(model_config):
  """(FILLS key, fill function) of the parameter-free fill a model starts from and learns on top of: a
  `residual_fill` U-Net's `model.fill`, the diffusion model's biharmonic fill (its own iteration count); else None."""
  import functools

  from jaxinpaint.layers.biharmonic import biharmonic_fill
  from jaxinpaint.models import unet

  if model_config.get("name") == "diffusion":
    return "biharmonic", functools.partial(biharmonic_fill, iterations=model_config.iterations)
  if model_config.get("residual_fill", False):
    name = model_config.get("fill", "push_pull")
    return name, unet.FILLS[name]
  return None


def evaluate_and_print(config, workdir: str) -> dict[tuple[str, str], float]:
  """`evaluate.evaluate` on the run in `workdir` (writes eval_results.*), then prints the margin table to stdout
  (for a model that starts from a parameter-free fill, `start_fill`, with that fill alone scored on the same
  examples); returns the margins."""
  import os

  import jax

  from jaxinpaint import evaluate, runs
  from jaxinpaint.eval import harness, mask_sets

  results = evaluate.evaluate(config, workdir, progress=False)
  model = os.path.basename(os.path.normpath(workdir))
  fill = None
  start = start_fill(config.model)
  if start is not None:
    name, fill_fn = start
    fill_fn = jax.jit(fill_fn)  # the very fill the model adds its correction to
    method = harness.Method(lambda image, valid: np.asarray(fill_fn(image, valid)), on_host=True)
    eval_set = mask_sets.EvalSet.from_config(runs.with_defaults(config), jax.device_count())
    fill = FILLS[name]
    scored = harness.evaluate_methods({fill: method}, eval_set, progress=False)
    results.rows += scored.rows
    results.per_example.update(scored.per_example)
  info = results.info
  print(
    f"\n{model} (step {info['step']}) against the classical peers: {info['examples']} crops per mask kind of "
    f"{eval_set_label(config.data)} ({info['data']}, {info['image_size']} px; PSNR on the hole, SSIM on the "
    "composite):\n"
  )
  print(margin_table(results, model, fill), flush=True)
  if fill:
    print(
      "\nlearned: the model minus the fill it starts from, ± the standard error of that paired difference over the "
      "crops, and on how many crops the model is ahead.",
      flush=True,
    )
  return margins(results, model)
