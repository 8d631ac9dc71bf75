"""Evaluation of a trained run, and the harness that scores any set of methods on the same images and masks.

  python -m jaxinpaint.evaluate --workdir=RUN [--config.eval.masks=centre,free_form,buckets]
  python -m jaxinpaint.main --config=configs/wconv.py:demo --workdir=RUN --mode=eval

Restores the run's latest checkpoint (EMA params when the run keeps them) and scores its held-out split under
fixed, seeded mask sets with seed 004's protocol (`metrics.inpainting_metrics`: L1, L2, TV and PSNR on the hole,
SSIM on the composite; L1/L2/TV x100), next to the classical peers of `baselines` and, when their weights are
given, LPIPS (composite vs target) and FID (composites vs targets). Writes `eval_results.{csv,json,md}` to the
workdir and the same numbers to TensorBoard (`eval_<kind>/<metric>` scalars at the checkpoint step, the table
as text).

Mask kinds (`config.eval.masks`, a comma list): 'centre' (the h/2 x w/2 box: 128 x 128 at 256 px, Table I's
centre mask), 'free_form' (DeepFill v2 strokes), any other `masks.MASK_GENERATORS` name or '+' union,
'hole_10-20' (free-form strokes with a hole ratio in [10 %, 20 %), `masks.mask_in_bucket`), 'buckets' for all
six `HOLE_RATIO_BUCKETS`, and 'pack:DIR' for a frozen mask pack (`data.mask_packs`; a folder of packs adds each
one): example i gets the pack's mask i mod N, the pack is verified against its manifest first, its masks must
have the eval image size (no resampling: the pack id then names exactly the masks scored), and the tables name
its pack id. A generated pack of kind K with seed 0 holds exactly the masks of kind K. Example i of every kind is
the same image crop (`pipeline.eval_example`, seeded by the example index alone), and its mask is seeded by the
index too, so every method and every run is scored on the same images and masks, and the same command gives the
same numbers. With the run's `masks.eval_kind`, the 'free_form' numbers equal the trainer's `eval/*` for the same
examples. Every method sees the image with its holes zeroed, never the ground truth there. Every table and
`eval_results.*` says which loss trained each run (`loss_label`: 'L1+TV only (no VGG weights)', or the sha256 of
the VGG16 weights file it used).
"""

from __future__ import annotations

import csv
import dataclasses
import functools
import json
import math
import os
import sys
from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from absl import logging

from jaxinpaint import baselines, configs_lib, metrics, runs, sharding
from jaxinpaint import progress as progress_lib
from jaxinpaint.eval import perceptual as perceptual_lib
from jaxinpaint.data import mask_packs, pipeline, sources
from jaxinpaint.imaging import composite, to01
from jaxinpaint.losses import file_sha256
from jaxinpaint.runs import load_run_config, with_defaults

# Metrics in table order; 'best' is the lowest for errors, the highest for similarities, and for TV the closest
# to the ground truth's own TV over the same pixel pairs (a flat fill has the lowest TV, not the best).
TABLE_METRICS = ("l1", "l2", "tv", "ssim", "psnr")
LOWER_IS_BETTER = {"l1", "l2", "lpips", "fid"}
HIGHER_IS_BETTER = {"ssim", "psnr", "psnr_full", "ssim_full"}
METRIC_LABELS = {
  "l1": "L1",
  "l2": "L2",
  "tv": "TV",
  "ssim": "SSIM",
  "psnr": "PSNR",
  "psnr_full": "PSNR full",
  "ssim_full": "SSIM full",
  "lpips": "LPIPS",
  "fid": "FID",
}
BUCKETS = "buckets"
PACK_PREFIX = "pack:"  # config.eval.masks entry 'pack:DIR'; its kind in tables and scalars is 'pack_<pack id>'
RESULT_FILES = ("eval_results.csv", "eval_results.json", "eval_results.md")
NO_VGG_LOSS = "loss: L1+TV only (no VGG weights)"
CLASSICAL_LOSS = "none (classical method)"

bucket_kind = mask_packs.bucket_kind
BUCKET_KINDS = mask_packs.BUCKET_KINDS


def pack_kind(pack: mask_packs.Pack) -> str:
  return f"pack_{pack.id}"


def kind_label(kind: str, packs: dict[str, dict] | None = None) -> str:
  """How tables name a kind; a pack kind shows its name and pack id (`packs`: kind -> `Pack.summary()`)."""
  if kind.startswith("hole_"):
    return f"holes {kind[5:]} %"
  if kind.startswith("pack_") and packs and kind in packs:
    return f"Pack {packs[kind]['name']} [{packs[kind]['pack_id']}]"
  return {"centre": "Centre", "free_form": "Free-form"}.get(kind, kind)


def mask_fn_for(kind: str, masks_config=None) -> pipeline.MaskFn:
  """The seeded generator fn(rng, h, w) -> valid for one mask kind (see the module docstring)."""
  if kind.startswith("hole_"):
    return mask_packs.generator_for(kind)
  masks_config = masks_config if masks_config is not None else configs_lib.base_config().masks
  return pipeline.configured_mask_fn(masks_config, kind)


def parse_mask_kinds(spec: str, masks_config=None, packs: dict | None = None) -> list[str]:
  """'centre,free_form,buckets,pack:DIR' -> ['centre', 'free_form', 'hole_0-10', ..., 'hole_50-60',
  'pack_<id>'], each checked; each pack is verified and stored in `packs` (kind -> `mask_packs.Pack`)."""
  kinds = []
  for name in (n.strip() for n in str(spec).split(",")):
    if name.startswith(PACK_PREFIX):
      for pack in mask_packs.open_packs(name[len(PACK_PREFIX) :]):
        if pack_kind(pack) not in kinds:
          kinds.append(pack_kind(pack))
          if packs is not None:
            packs[pack_kind(pack)] = pack
      continue
    for kind in BUCKET_KINDS if name == BUCKETS else [name] if name else []:
      if kind not in kinds:
        mask_fn_for(kind, masks_config)
        kinds.append(kind)
  if not kinds:
    raise ValueError(f"config.eval.masks={spec!r} names no mask kind; e.g. 'centre,free_form,buckets'")
  return kinds


def _pack_mask(rng, h: int, w: int, *, pack: mask_packs.Pack, index: int) -> np.ndarray:
  """Eval example `index`'s mask from a pack (mask index mod N), in the generators' (rng, h, w) form."""
  del rng
  if pack.size != (h, w):
    raise ValueError(f"mask pack {pack.path} holds {pack.size[0]}x{pack.size[1]} masks but the eval images are {h}x{w}")
  return pack.valid(index)


def loss_label(config: ml_collections.ConfigDict) -> str:
  """'loss: ...' naming what trained a run, so a table cannot hide that the VGG perceptual/style terms were off.

  The partial-conv loss (U-Nets): NO_VGG_LOSS without `loss.vgg_weights`, else the sha256 of that file. A named
  file that is missing now reads 'L1+TV only (VGG weights PATH not found)', as the trainer drops the two terms for
  a missing file (whether it existed at training time is not recorded). Other losses name themselves.
  """
  loss = config.get("loss", None) or ml_collections.ConfigDict()
  task = config.get("task", "inpainting")
  if task == "deepfill":
    gan = config.get("gan", None)
    return f"loss: {gan.loss if gan is not None else 'GAN'} adversarial + {loss.get('name', 'l1')} (no VGG term)"
  if task == "dcgan":
    return f"loss: {loss.get('gan_loss', 'GAN')} GAN loss (no VGG term)"
  if task == "lama":
    from jaxinpaint.tasks import lama  # its own terms (ResNet-PL or the VGG16 stand-in)

    return lama.loss_label(config)
  name = loss.get("name", "pconv")
  if name != "pconv":
    return f"loss: {name.upper()} (no VGG term)"
  path = loss.get("vgg_weights", "")
  if not path:
    return NO_VGG_LOSS
  if not os.path.isfile(path):
    return f"loss: L1+TV only (VGG weights {path} not found)"
  return f"loss: L1+TV+perceptual+style (VGG16 weights sha256 {file_sha256(path)})"


# ------------------------------------------------------------------------------------------------ eval set


@dataclasses.dataclass(frozen=True)
class EvalSet:
  """Which examples are scored: `num_examples` crops of the eval split at `image_size`, in global batches of
  `batch_size` (the last one padded with weight-0 copies), under each mask kind."""

  data: ml_collections.ConfigDict
  masks_config: ml_collections.ConfigDict
  kinds: tuple[str, ...]
  num_examples: int
  batch_size: int
  packs: dict[str, mask_packs.Pack] = dataclasses.field(default_factory=dict)  # kind 'pack_<id>' -> its pack

  @property
  def num_batches(self) -> int:
    return math.ceil(self.num_examples / self.batch_size)

  @classmethod
  def from_config(cls, config: ml_collections.ConfigDict, num_devices: int) -> "EvalSet":
    ev = config.eval
    num = ev.examples or config.data.eval_examples
    if num <= 0:
      raise ValueError(f"config.eval.examples must be positive (0 = data.eval_examples); got {num}")
    batch = ev.batch_size or config.batch_size
    if batch <= 0:
      raise ValueError(f"config.eval.batch_size must be positive (0 = batch_size); got {batch}")
    batch = math.ceil(batch / num_devices) * num_devices  # every device gets an equal share
    packs = {}
    kinds = tuple(parse_mask_kinds(ev.masks, config.masks, packs))
    size = config.data.image_size
    for pack in packs.values():
      if pack.size != (size, size):  # refused, not resampled: the pack id must name the masks that are scored
        raise ValueError(
          f"mask pack {pack.path} holds {pack.size[0]}x{pack.size[1]} masks but the eval images "
          f"are {size}x{size}; make a pack of that size (python -m jaxinpaint.masks pack ... "
          f"--size={size}, or --from=DIR --resize={size})"
        )
    return cls(config.data, config.masks, kinds, int(num), batch, packs)

  def batches(self, kind: str, source, process_index: int = 0, process_count: int = 1):
    """This process's share of each global batch: dicts image f32[b, S, S, 3] (ground truth), valid
    f32[b, S, S, 1], weight f32[b] (0 for padding), b = batch_size / process_count."""
    b = pipeline.per_process_batch(self.batch_size, process_count)
    prepare = functools.partial(
      pipeline.eval_example,
      source=source,
      size=self.data.image_size,
      resize=None if self.data.get("resize") is None else tuple(self.data.resize),
      shorter_side=self.data.get("shorter_side", 0),
    )
    pack = self.packs.get(kind)
    mask_fn = None if pack is not None else mask_fn_for(kind, self.masks_config)

    def example(i):
      return prepare(i, mask_fn=mask_fn or functools.partial(_pack_mask, pack=pack, index=i))

    for k in range(self.num_batches):
      indices = [k * self.batch_size + process_index * b + j for j in range(b)]
      examples = [example(i % self.num_examples) for i in indices]
      yield {
        "image": np.stack([e["image"] for e in examples]),
        "valid": np.stack([e["valid"] for e in examples]),
        "weight": np.asarray([i < self.num_examples for i in indices], np.float32),
      }


# ------------------------------------------------------------------------------------------------ methods


@dataclasses.dataclass(frozen=True)
class Method:
  """Something that inpaints: fn(image, valid) -> output f32[B, H, W, 3] in [-1, 1], where image has its holes
  zeroed. `on_host`: fn takes and returns this process's numpy arrays (classical peers); otherwise global jax
  arrays sharded over the batch (models)."""

  fn: Callable[[Any, Any], Any]
  on_host: bool = False
  classical: bool = False
  loss: str = ""  # `loss_label` of a trained model; CLASSICAL_LOSS for the classical peers


def model_method(task, params, model_state, loss: str = "") -> Method:
  """A trained model through the generic task protocol: `task.predict(params, model_state, batch)['output']`."""
  predict = jax.jit(lambda p, s, image, valid: task.predict(p, s, {"image": image, "valid": valid})["output"])
  return Method(lambda image, valid: predict(params, model_state, image, valid), loss=loss)


def baseline_methods(names: Sequence[str]) -> dict[str, Method]:
  """Classical peers by `baselines` name, labelled for tables."""
  return {
    baselines.LABELS[n]: Method(
      functools.partial(baselines.inpaint_batch, n), on_host=True, classical=True, loss=CLASSICAL_LOSS
    )
    for n in names
  }


# ------------------------------------------------------------------------------------------------ harness


@jax.jit
def _score(target, output, valid):
  """Per-example seed-004 metrics (f32[B] each) plus the target's own TV over the same pairs."""
  target01, output01 = to01(jnp.clip(target, -1.0, 1.0)), to01(jnp.clip(output, -1.0, 1.0))
  values = metrics.inpainting_metrics(target01, output01, valid)
  values["target_tv"] = 100.0 * metrics.tv(target01, 1.0 - valid)
  values["hole_ratio"] = jnp.mean(1.0 - valid, axis=(1, 2, 3))
  return values


@jax.jit
def _blank_holes(image, valid):
  return image * valid


@jax.jit
def _clipped_composite(image, output, valid):
  """The composite with the output clipped to the image range first, as every score sees it."""
  return composite(image, jnp.clip(output, -1.0, 1.0), valid)


@dataclasses.dataclass
class Results:
  """What `evaluate_methods` measured.

  rows: one dict per (method, kind): method, kind, classical, n, and the mean of every metric.
  kinds: per kind, the mean hole ratio and the ground truth's TV (x100) over the pairs touching the hole.
  samples: per kind, the first examples: image (ground truth), valid, and each method's composite, [-1, 1].
  """

  rows: list[dict[str, Any]]
  kinds: dict[str, dict[str, float]]
  samples: dict[str, dict[str, Any]]
  notes: list[str]
  info: dict[str, Any] = dataclasses.field(default_factory=dict)

  def value(self, method: str, kind: str, metric: str) -> float:
    return self.row(method, kind)[metric]

  def std(self, method: str, kind: str, metric: str) -> float | None:
    """The sample std over seeds of a row that averages several runs (`<metric>_std`, `seeds` > 1), else None."""
    row = self.row(method, kind)
    return row.get(f"{metric}_std") if row.get("seeds", 1) > 1 else None

  def row(self, method: str, kind: str) -> dict[str, Any]:
    """The row of one method under one mask kind (KeyError when there is none)."""
    for row in self.rows:
      if row["method"] == method and row["kind"] == kind:
        return row
    raise KeyError((method, kind))

  @property
  def methods(self) -> list[str]:
    return list(dict.fromkeys(r["method"] for r in self.rows))

  @property
  def metric_names(self) -> list[str]:
    extra = [m for m in ("lpips", "fid") if self.rows and m in self.rows[0]]
    return list(TABLE_METRICS) + ["psnr_full"] + extra


def evaluate_methods(
  methods: dict[str, Method],
  eval_set: EvalSet,
  *,
  mesh=None,
  source=None,
  perceptual: perceptual_lib.Perceptual | None = None,
  keep_samples: int = 4,
  progress: bool = True,
) -> Results:
  """Scores every method on every mask kind of `eval_set`, batch by batch on the same examples.

  Means are over the `eval_set.num_examples` real examples (padding weighs 0). FID, when available, compares
  each method's composites with the ground-truth images of the same kind (2048-d Inception pool features).
  """
  if not methods:
    raise ValueError("evaluate_methods needs at least one method")
  mesh = sharding.make_mesh() if mesh is None else mesh
  sharding.check_batch_size(eval_set.batch_size, mesh, "eval batch size")
  source = sources.make_source(eval_set.data, "eval") if source is None else source
  perceptual = perceptual or perceptual_lib.Perceptual()
  pidx, pcount = jax.process_index(), jax.process_count()
  rows, kinds, samples = [], {}, {}
  # Example i is the same crop under every mask kind, so the real images' statistics are gathered once.
  fid_real = perceptual_lib.GaussianStats(perceptual_lib.INCEPTION_DIM) if perceptual.fid_features else None
  bar = progress_lib.bar(
    len(eval_set.kinds) * eval_set.num_batches * len(methods),
    desc="eval",
    unit="batch",
    enabled=progress,
    process_index=pidx,
  )
  for kind in eval_set.kinds:
    values = {name: [] for name in methods}
    weights = []
    fid_fake = {name: perceptual_lib.GaussianStats(perceptual_lib.INCEPTION_DIM) for name in methods}
    for k, batch in enumerate(eval_set.batches(kind, source, pidx, pcount)):
      weight = batch.pop("weight")
      gbatch = sharding.to_global(batch, mesh)
      target, valid = gbatch["image"], gbatch["valid"]
      blanked = _blank_holes(target, valid)
      local_blanked = batch["image"] * batch["valid"]
      weights.append(sharding.gather(sharding.to_global({"w": weight}, mesh)["w"]))
      if fid_real is not None and kind == eval_set.kinds[0]:
        fid_real.add(sharding.gather(perceptual.fid_features(target))[weights[-1] > 0])
      if k == 0:
        samples[kind] = {
          "image": sharding.gather(target)[:keep_samples],
          "valid": sharding.gather(valid)[:keep_samples],
          "outputs": {},
        }
      for name, method in methods.items():
        bar.set_description(f"{kind}: {name}")
        if method.on_host:
          output = sharding.to_global({"o": np.asarray(method.fn(local_blanked, batch["valid"]), np.float32)}, mesh)[
            "o"
          ]
        else:
          output = method.fn(blanked, valid)
        scores = _score(target, output, valid)
        comp = _clipped_composite(target, output, valid)
        if perceptual.lpips is not None:
          scores["lpips"] = perceptual.lpips(comp, target)
        if perceptual.fid_features is not None:
          fid_fake[name].add(sharding.gather(perceptual.fid_features(comp))[weights[-1] > 0])
        values[name].append(sharding.gather(scores))
        if k == 0:
          samples[kind]["outputs"][name] = sharding.gather(comp)[:keep_samples]
        bar.update(1)
    w = np.concatenate(weights)

    def mean(v, w=w):  # over the real examples; padding weighs 0
      return float(np.sum(v * w) / w.sum())

    for name, method in methods.items():
      per_example = {m: np.concatenate([v[m] for v in values[name]]) for m in values[name][0]}
      row = {
        "method": name,
        "kind": kind,
        "classical": method.classical,
        "n": int(w.sum()),
        "loss": method.loss,
        "pack_id": eval_set.packs[kind].id if kind in eval_set.packs else "",
      }
      row.update({m: mean(v) for m, v in per_example.items() if m not in ("target_tv", "hole_ratio")})
      if fid_real is not None:
        row["fid"] = perceptual_lib.fid_from_stats(fid_real, fid_fake[name])
      rows.append(row)
    # the same for every method: properties of the examples, not of a fill
    kinds[kind] = {k: mean(per_example[k]) for k in ("hole_ratio", "target_tv")}
  bar.close()
  info = {
    "examples": eval_set.num_examples,
    "image_size": eval_set.data.image_size,
    "data": f"{eval_set.data.source}/{eval_set.data.name}",
    "kinds": list(eval_set.kinds),
    "packs": {k: p.summary() for k, p in eval_set.packs.items()},
    "losses": {name: method.loss for name, method in methods.items()},
  }
  return Results(rows, kinds, samples, list(perceptual.notes), info)


# ------------------------------------------------------------------------------------------------ output


def _best(results: Results, kind: str, metric: str, methods: Sequence[str]) -> set[str]:
  vals = {m: results.value(m, kind, metric) for m in methods}
  if metric == "tv":
    target = results.kinds[kind]["target_tv"]
    key = {m: abs(v - target) for m, v in vals.items()}
  elif metric in HIGHER_IS_BETTER:
    key = {m: -v for m, v in vals.items()}
  else:
    key = dict(vals)
  best = min(key.values())
  return {m for m, v in key.items() if v <= best + 1e-9 * max(1.0, abs(best))}


def _fmt(metric: str, value: float) -> str:
  if metric in ("ssim", "ssim_full", "lpips"):
    return f"{value:.3f}"
  return f"{value:.2f}" if metric in ("psnr", "psnr_full", "fid") else f"{value:.3f}"


def _std_note(info: dict[str, Any]) -> str:
  """The line under a table of `mean ± std` cells: how many seeds, and which (`info['seed_values']`)."""
  values = info.get("seed_values", {})
  spans = {method: f"{v[0]}..{v[-1]}" if len(v) > 1 else f"{v[0]}" for method, v in values.items() if v}
  if len(set(spans.values())) == 1:
    which = f" (seeds {next(iter(spans.values()))})"
  else:
    which = " (seeds " + ", ".join(f"{m} {s}" for m, s in spans.items()) + ")" if spans else ""
  return f"Model cells: mean ± sample std over {info.get('seeds', '')} seeds{which}; best in bold by the mean."


def _table(results: Results, kinds: Sequence[str], metrics_: Sequence[str], header) -> list[str]:
  """Markdown rows, best per column in bold; a row averaged over seeds reads `mean ± std` (`Results.std`)."""
  methods = results.methods
  cols = [(k, m) for k in kinds for m in metrics_]
  best = {c: _best(results, *c, methods) for c in cols}
  lines = ["| method | " + " | ".join(header(k, m) for k, m in cols) + " |", "|---|" + "---:|" * len(cols)]
  with_std = False
  for method in methods:
    cells = []
    for k, m in cols:
      text = _fmt(m, results.value(method, k, m))
      std = results.std(method, k, m)
      if std is not None:
        text, with_std = f"{text} ± {_fmt(m, std)}", True
      cells.append(f"**{text}**" if method in best[(k, m)] else text)
    lines.append(f"| {method_label(results, method)} | " + " | ".join(cells) + " |")
  return lines + (["", _std_note(results.info)] if with_std else [])


def method_label(results: Results, method: str) -> str:
  """A table's method cell: the name, and for a trained model the loss it was trained with."""
  loss = results.info.get("losses", {}).get(method, "")
  return f"{method} ({loss})" if loss and loss != CLASSICAL_LOSS else method


def _arrow(metric: str) -> str:
  return "↓" if metric in LOWER_IS_BETTER else "↑" if metric in HIGHER_IS_BETTER else "≈"


def markdown(results: Results, title: str = "Evaluation", footer: Sequence[str] = ()) -> str:
  """Table I's layout (methods x mask kind x L1/L2/TV/SSIM/PSNR, best per column in bold) for the non-bucket
  kinds, then the hole-ratio buckets as the partial-conv paper reports them (L1, PSNR, SSIM per bucket), then
  the `footer` lines (e.g. the ablation's orderings)."""
  info = results.info
  out = [f"## {title}", ""]
  step = f"Checkpoint step {info['step']}. " if "step" in info else ""
  out.append(
    f"{step}{info['examples']} held-out examples per mask kind ({info['data']}, {info['image_size']} px), the "
    "same images and masks for every method. L1, L2 (x100) and PSNR (dB, capped at 100) over the hole "
    "pixels of the output; TV (x100) of the composite over the pixel pairs touching the hole, best = "
    "closest to the ground truth's own TV; SSIM of the composite (seed 004's protocol)."
  )
  packs = info.get("packs", {})
  for kind, pack in packs.items():
    seed = "" if pack["seed"] is None else f", seed {pack['seed']}"
    out.append(
      f"Mask pack {pack['pack_id']} ({pack['name']}{seed}, {pack['count']} masks of {pack['size'][0]}x"
      f"{pack['size'][1]}, `{pack['path']}`): example i gets mask i mod {pack['count']}."
    )
  extra = [m for m in ("lpips", "fid") if m in results.metric_names]
  headline = [k for k in info["kinds"] if k not in BUCKET_KINDS]
  buckets = [k for k in info["kinds"] if k in BUCKET_KINDS]
  if headline:
    out += [
      "",
      *_table(
        results,
        headline,
        list(TABLE_METRICS) + extra,
        lambda k, m: f"{kind_label(k, packs)} {METRIC_LABELS[m]} {_arrow(m)}",
      ),
    ]
  if buckets:
    for metric in ("l1", "psnr", "ssim"):
      out += [
        "",
        f"{METRIC_LABELS[metric]} {_arrow(metric)} by hole ratio (free-form strokes):",
        "",
        *_table(results, buckets, [metric], lambda k, m: k[5:] + " %"),
      ]
  out += list(footer)
  gt = ", ".join(f"{kind_label(k, packs)} {v['target_tv']:.3f}" for k, v in results.kinds.items())
  ratio = ", ".join(f"{kind_label(k, packs)} {v['hole_ratio']:.3f}" for k, v in results.kinds.items())
  out += ["", f"Ground-truth TV over the same pairs: {gt}.", f"Mean hole ratio: {ratio}."]
  out += [f"Note: {n}" for n in results.notes]
  return "\n".join(out) + "\n"


def write_results(
  results: Results,
  directory: str,
  stem: str = "eval_results",
  title: str = "Evaluation",
  *,
  footer: Sequence[str] = (),
  extra: dict[str, Any] | None = None,
) -> dict[str, str]:
  """Writes `<stem>.csv` (one row per method x kind), `<stem>.json` (plus the `extra` keys) and `<stem>.md`
  (`markdown` with `footer`) to `directory`."""
  os.makedirs(directory, exist_ok=True)
  paths = {ext: os.path.join(directory, f"{stem}.{ext}") for ext in ("csv", "json", "md")}
  names = ["method", "kind", "classical", "n"] + [
    m for m in results.rows[0] if m not in ("method", "kind", "classical", "n")
  ]
  with open(paths["csv"], "w", newline="") as f:
    writer = csv.DictWriter(f, fieldnames=names)
    writer.writeheader()
    writer.writerows(results.rows)
  with open(paths["json"], "w") as f:
    json.dump(
      {"info": results.info, "kinds": results.kinds, "results": results.rows, "notes": results.notes, **(extra or {})},
      f,
      indent=2,
      allow_nan=False,
    )
  with open(paths["md"], "w") as f:
    f.write(markdown(results, title, footer))
  return paths


# ------------------------------------------------------------------------------------------------ runs


@dataclasses.dataclass
class Run(runs.Restored):
  """A restored run (`runs.Restored`: config, task, step, params with the EMA choice, ...) as a scored method."""

  def method(self) -> Method:
    return model_method(self.task, self.params, self.model_state, loss=loss_label(self.config))


def restore_run(
  workdir: str, config: ml_collections.ConfigDict | None = None, devices=None, batch_size: int | None = None
) -> Run:
  """Rebuilds the model of the run in `workdir` and restores its latest checkpoint.

  `config` defaults to the run's saved config. FileNotFoundError (naming the directory) when the run has no
  config or no checkpoint.
  """
  run = runs.restore(workdir, config, devices, batch_size)
  return Run(**{f.name: getattr(run, f.name) for f in dataclasses.fields(run)})  # asdict would deep-copy the arrays


def evaluate(config: ml_collections.ConfigDict, workdir: str, *, progress: bool = True) -> Results:
  """`main --mode=eval`: scores the run in `workdir` (built with `config`) and the classical peers."""
  from clu import metric_writers

  config = with_defaults(config)
  # the checkpoint means what its saved config says: another model config would score (or fail on) the wrong model
  runs.check_same_run(config, workdir, hint="pass the --config the run was trained with")
  devices = jax.devices()
  eval_set = EvalSet.from_config(config, len(devices))
  run = restore_run(workdir, config, devices, batch_size=eval_set.batch_size)
  label = os.path.basename(os.path.normpath(workdir))
  methods = {label: run.method(), **baseline_methods(baselines.parse_names(config.eval.baselines))}
  perceptual = perceptual_lib.Perceptual.from_config(config.eval)
  logging.info(
    "evaluating %s (step %d) and %d classical peers on %s, %d examples each",
    label,
    run.step,
    len(methods) - 1,
    ", ".join(eval_set.kinds),
    eval_set.num_examples,
  )
  results = evaluate_methods(methods, eval_set, mesh=run.mesh, perceptual=perceptual, progress=progress)
  results.info["step"] = run.step
  if jax.process_index() == 0:
    paths = write_results(results, workdir, title=f"Evaluation of {label}")
    logging.info("wrote %s", ", ".join(paths.values()))
  writer = metric_writers.create_default_writer(workdir, just_logging=jax.process_index() > 0)
  scalars = {f"eval_{r['kind']}/{m}": r[m] for r in results.rows if r["method"] == label for m in results.metric_names}
  writer.write_scalars(run.step, scalars)
  writer.write_texts(run.step, {"eval_table": markdown(results, f"Evaluation of {label}")})
  writer.flush()
  writer.close()
  for note in results.notes:
    logging.warning("%s", note)
  return results


# ------------------------------------------------------------------------------------------------ CLI


def _flag_value(argv: Sequence[str], name: str) -> str | None:
  for i, arg in enumerate(argv):
    if arg.startswith(f"--{name}="):
      return arg.split("=", 1)[1]
    if arg == f"--{name}" and i + 1 < len(argv):
      return argv[i + 1]
  return None


def main(argv: Sequence[str] | None = None) -> None:
  """`python -m jaxinpaint.evaluate --workdir=RUN [--config.eval.k=v ...]`: the run's saved config, with
  overrides, defines `--config` (so only keys that exist can be overridden)."""
  from absl import flags
  from ml_collections import config_flags

  from jaxinpaint import cli

  argv = list(sys.argv if argv is None else argv)
  workdir = _flag_value(argv, "workdir")
  # before any flag is defined or library started: a plain SystemExit, so it can be caught in-process
  config = cli.guarded(
    lambda: load_run_config(workdir) if workdir else configs_lib.base_config(), (FileNotFoundError,), hard=False
  )
  config_flags.DEFINE_config_dict("config", config, "The run's saved config; override keys with --config.k=v.")
  flags.DEFINE_string("workdir", None, "Run directory (checkpoints + config.json).")
  flags.mark_flags_as_required(["workdir"])

  def run() -> None:
    evaluate(flags.FLAGS.config, flags.FLAGS.workdir)

  cli.run_main(run, argv)


if __name__ == "__main__":
  main()
