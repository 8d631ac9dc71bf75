"""The eval mask sets: which mask kinds `config.eval.masks` names, and `EvalSet`, the fixed examples every method
is scored on.

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
examples.
"""

from __future__ import annotations

import dataclasses
import functools
import math

import ml_collections
import numpy as np

from jaxinpaint import configs_lib
from jaxinpaint.data import mask_packs, pipeline

BUCKETS = mask_packs.BUCKETS  # config.eval.masks entry for all six hole-ratio buckets
PACK_PREFIX = "pack:"  # config.eval.masks entry 'pack:DIR'; its kind in tables and scalars is 'pack_<pack id>'
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
