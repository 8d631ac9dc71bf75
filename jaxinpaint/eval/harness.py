"""The scoring harness: any set of methods (a trained model, the classical peers, a probe) scored on the same
images and masks of an `EvalSet`, with seed 004's protocol (`metrics.inpainting_metrics`: L1, L2, TV and PSNR on
the hole, SSIM on the composite; L1/L2/TV x100), plus, when their weights are given, LPIPS (composite vs target) and
FID (composites vs targets). Every method sees the image with its holes zeroed, never the ground truth there.
Every method carries the loss that trained it (`loss_label`: 'L1+TV only (no VGG weights)', or the sha256 of the
VGG16 weights file it used), so no table can hide it.
"""

from __future__ import annotations

import dataclasses
import functools
import os
from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from jaxinpaint import baselines, metrics, sharding
from jaxinpaint import progress as progress_lib
from jaxinpaint.data import sources
from jaxinpaint.eval import perceptual as perceptual_lib
from jaxinpaint.eval.mask_sets import EvalSet
from jaxinpaint.imaging import composite, to01
from jaxinpaint.losses import file_sha256

# The seed-004 metrics in table order; `Results.metric_names` starts with them.
TABLE_METRICS = ("l1", "l2", "tv", "ssim", "psnr")
NO_VGG_LOSS = "loss: L1+TV only (no VGG weights)"
CLASSICAL_LOSS = "none (classical method)"

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


def compiled_predict(task):
  """jit of (params, model_state, image, valid) -> `task.predict(...)['output']`: params are arguments, so one
  compile serves every checkpoint of a run."""
  return jax.jit(lambda p, s, image, valid: task.predict(p, s, {"image": image, "valid": valid})["output"])


def model_method(task, params, model_state, loss: str = "", predict=None) -> Method:
  """A trained model through the generic task protocol: `task.predict(params, model_state, batch)['output']`
  (`predict`: a `compiled_predict(task)` to share between methods of one task)."""
  predict = compiled_predict(task) if predict is None else predict
  return Method(lambda image, valid: predict(params, model_state, image, valid), loss=loss)


def baseline_methods(names: Sequence[str]) -> dict[str, Method]:
  """Classical peers by `baselines` name, labelled for tables."""
  return {
    baselines.LABELS[n]: Method(
      functools.partial(baselines.inpaint_batch, n), on_host=True, classical=True, loss=CLASSICAL_LOSS
    )
    for n in names
  }


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
  per_example: per (method, kind), each metric's values on the real examples in order (for paired comparisons
  of two methods on the same examples; not written to the eval_results files).
  """

  rows: list[dict[str, Any]]
  kinds: dict[str, dict[str, float]]
  samples: dict[str, dict[str, Any]]
  notes: list[str]
  info: dict[str, Any] = dataclasses.field(default_factory=dict)
  per_example: dict[tuple[str, str], dict[str, np.ndarray]] = dataclasses.field(default_factory=dict)

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
  rows, kinds, samples, per_examples = [], {}, {}, {}
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
      scores = {m: v for m, v in per_example.items() if m not in ("target_tv", "hole_ratio")}
      row.update({m: mean(v) for m, v in scores.items()})
      per_examples[(name, kind)] = {m: v[w > 0] for m, v in scores.items()}
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
  return Results(rows, kinds, samples, list(perceptual.notes), info, per_examples)
