"""grain input pipeline: per-process training batches and the fixed held-out eval set.

Batches are dicts of per-process numpy arrays (the trainer makes them global with
`jax.make_array_from_process_local_data`):
  image: f32[b, S, S, 3] in [-1, 1]   (the whole ground-truth crop; holes are not zeroed here)
  valid: f32[b, S, S, 1] in {0, 1}    (1 = known pixel, 0 = hole)
with S = config.data.image_size and b = config.batch_size // process_count.

Train: source -> seed -> shuffle -> repeat -> random_map(resize, crop, flip, mask) -> [p::P] -> batch
-> to_iter_dataset -> mp_prefetch. Sharding: the shuffled, repeated, augmented element stream is the same on
every process (each element's randomness comes from its global index), and process p keeps elements p, p+P, ...
(`dataset[p::P]`, decoding only those). So process p's batch k holds global elements (k*b + j)*P + p, and the
union over processes of batch k is exactly the single-process global batch k: the data a run sees do not depend
on the number of processes, nor on the number of grain workers.
"""
from __future__ import annotations

import functools
from typing import Callable, Iterator

import grain
import numpy as np
from PIL import Image

from jaxinpaint.data import sources

MaskFn = Callable[[np.random.Generator, int, int], np.ndarray]

EVAL_SEED = 0  # Fixed, not config.seed: runs with different seeds (and methods) are scored on the same eval set.
# Elements are whole batches here; the default 500-element buffer would hold gigabytes of them.
READ_OPTIONS = grain.ReadOptions(num_threads=4, prefetch_buffer_size=8)


def resize_image(image: np.ndarray, height: int, width: int) -> np.ndarray:
  """uint8[H, W, 3] -> uint8[height, width, 3], bicubic (PIL antialiases when shrinking)."""
  if image.shape[:2] == (height, width):
    return image
  return np.asarray(Image.fromarray(image).resize((width, height), Image.BICUBIC))


def fit_image(image: np.ndarray, size: int, resize: tuple[int, int] | None = None,
              shorter_side: int = 0) -> np.ndarray:
  """Resize uint8[H, W, 3] so that a size x size crop fits.

  `resize=(h, w)` resizes to exactly h x w (e.g. CelebA 218x178 -> 313x256 before 256 crops);
  `shorter_side=n` scales the shorter side to n, aspect kept (so crops of big photos show whole objects, not
  details); with neither the image is kept if both sides are >= size, else its shorter side is scaled up to size.
  """
  if shorter_side:
    if shorter_side < size:
      raise ValueError(f"config.data.shorter_side={shorter_side} is smaller than image_size={size}")
    height, width = image.shape[:2]
    scale = shorter_side / min(height, width)
    return resize_image(image, max(shorter_side, round(height * scale)), max(shorter_side, round(width * scale)))
  if resize is not None:
    height, width = (int(v) for v in resize)
    if min(height, width) < size:
      raise ValueError(f"config.data.resize={tuple(resize)} is smaller than image_size={size}")
    return resize_image(image, height, width)
  height, width = image.shape[:2]
  if min(height, width) >= size:
    return image
  scale = size / min(height, width)
  return resize_image(image, max(size, round(height * scale)), max(size, round(width * scale)))


def random_crop(image: np.ndarray, size: int, rng: np.random.Generator) -> np.ndarray:
  """A uniformly placed size x size crop of uint8[H, W, 3] (H, W >= size)."""
  height, width = image.shape[:2]
  top = int(rng.integers(0, height - size + 1))
  left = int(rng.integers(0, width - size + 1))
  return image[top:top + size, left:left + size]


def centre_crop(image: np.ndarray, size: int) -> np.ndarray:
  """The central size x size crop of uint8[H, W, 3] (H, W >= size)."""
  top, left = (image.shape[0] - size) // 2, (image.shape[1] - size) // 2
  return image[top:top + size, left:left + size]


def draw_valid(mask_fn: MaskFn, rng: np.random.Generator, size: int) -> np.ndarray:
  """f32[size, size, 1] valid map (1 = known) from a mask generator `mask_fn(rng, h, w) -> f32[h, w]`."""
  valid = np.asarray(mask_fn(rng, size, size), np.float32)
  if valid.shape != (size, size):
    raise ValueError(f"mask generator returned shape {valid.shape}, expected ({size}, {size})")
  return valid[..., None]


def to_example(image: np.ndarray, valid: np.ndarray) -> dict[str, np.ndarray]:
  """uint8[S, S, 3] image and f32[S, S, 1] valid -> {'image': f32 in [-1, 1], 'valid': f32}."""
  return {"image": image.astype(np.float32) / 127.5 - 1.0, "valid": valid}


def train_example(image: np.ndarray, rng: np.random.Generator, *, size: int, resize: tuple[int, int] | None,
                  random_flip: bool, mask_fn: MaskFn, shorter_side: int = 0) -> dict[str, np.ndarray]:
  """One training example: resize, random crop, random horizontal flip, then a mask, all drawn from `rng`."""
  image = random_crop(fit_image(image, size, resize, shorter_side), size, rng)
  if random_flip and rng.random() < 0.5:
    image = image[:, ::-1]
  return to_example(image, draw_valid(mask_fn, rng, size))


def eval_example(index: int, *, source, size: int, resize: tuple[int, int] | None,
                 mask_fn: MaskFn, shorter_side: int = 0) -> dict[str, np.ndarray]:
  """Eval example `index`: image index % len(source), crop and mask seeded by (EVAL_SEED, index), no flip.

  Crop and mask use separate generators, so the eval images do not change with the mask kind.
  """
  image = fit_image(source[index % len(source)], size, resize, shorter_side)
  image = random_crop(image, size, np.random.default_rng([EVAL_SEED, 0, index]))
  return to_example(image, draw_valid(mask_fn, np.random.default_rng([EVAL_SEED, 1, index]), size))


def configured_mask_fn(masks_config, kind: str) -> MaskFn:
  """`masks.make_mask_fn(kind)`, passing `config.masks.folder` as the path of a 'folder' component.

  `kind` may be a '+'-joined union ('free_form+random_box'), whose kwargs are keyed by component name.
  """
  from jaxinpaint.data import masks  # Imported here so the pipeline module imports on its own.
  names = [name.strip() for name in str(kind).split("+")]
  if "folder" not in names:
    return masks.make_mask_fn(kind)
  if len(names) == 1:
    return masks.make_mask_fn(kind, path=masks_config.folder)
  return masks.make_mask_fn(kind, folder={"path": masks_config.folder})


def per_process_batch(global_batch: int, process_count: int) -> int:
  """config.batch_size // process_count, checked."""
  if global_batch <= 0 or global_batch % process_count:
    raise ValueError(f"global batch {global_batch} must be positive and divisible by process_count={process_count}")
  return global_batch // process_count


def _resize_option(data_config) -> tuple[int, int] | None:
  resize = data_config.get("resize", None)
  return None if resize is None else (int(resize[0]), int(resize[1]))


def _check_process(process_index: int, process_count: int) -> None:
  if not 0 <= process_index < process_count:
    raise ValueError(f"process_index={process_index} must be in [0, process_count={process_count})")


def make_train_dataset(config, process_index: int = 0, process_count: int = 1, *, source=None,
                       mask_fn: MaskFn | None = None) -> grain.IterDataset:
  """This process's infinite training stream of batches (see the module docstring).

  `source` and `mask_fn` default to `make_source(config.data, 'train')` and `config.masks.kind`'s generator.
  """
  _check_process(process_index, process_count)
  batch = per_process_batch(config.batch_size, process_count)
  source = sources.make_source(config.data, "train") if source is None else source
  if len(source) == 0:
    raise ValueError(f"training source {source!r} is empty")
  mask_fn = configured_mask_fn(config.masks, config.masks.kind) if mask_fn is None else mask_fn
  augment = functools.partial(train_example, size=config.data.image_size, resize=_resize_option(config.data),
                              random_flip=config.data.random_flip, mask_fn=mask_fn,
                              shorter_side=config.data.get("shorter_side", 0))
  dataset = (grain.MapDataset.source(source).seed(config.seed).shuffle().repeat().random_map(augment)
             [process_index::process_count].batch(batch, drop_remainder=True))
  dataset = dataset.to_iter_dataset(READ_OPTIONS)
  if config.data.num_workers > 0:
    dataset = dataset.mp_prefetch(grain.MultiprocessingOptions(num_workers=config.data.num_workers))
  return dataset


def make_train_iterator(config, process_index: int = 0, process_count: int = 1, *, source=None,
                        mask_fn: MaskFn | None = None) -> grain.DatasetIterator:
  """Iterator over `make_train_dataset(...)`; `get_state()`/`set_state()` resume it exactly."""
  return iter(make_train_dataset(config, process_index, process_count, source=source, mask_fn=mask_fn))


def make_eval_batches(config, process_index: int = 0, process_count: int = 1, *, source=None,
                      mask_fn: MaskFn | None = None) -> list[dict[str, np.ndarray]]:
  """The fixed held-out eval set, as this process's list of batches.

  Uses the largest multiple of the global batch G that is <= config.data.eval_examples (the rest is dropped, so
  every batch is full). Global eval batch k is examples k*G .. k*G + G - 1 in order; process p holds the slice
  k*G + p*b .. k*G + p*b + b - 1 of it, so the global batches do not depend on the process count. Images come
  from the eval split (`make_source(config.data, 'eval')`), masks from `config.masks.eval_kind`, both seeded by
  EVAL_SEED and the example index (see `eval_example`). Memory: about 16 * S * S bytes per example.
  """
  _check_process(process_index, process_count)
  batch = per_process_batch(config.batch_size, process_count)
  num_batches = config.data.eval_examples // config.batch_size
  if num_batches == 0:
    raise ValueError(f"config.data.eval_examples={config.data.eval_examples} is smaller than the global batch "
                     f"{config.batch_size}; no full eval batch")
  source = sources.make_source(config.data, "eval") if source is None else source
  if len(source) == 0:
    raise ValueError(f"eval source {source!r} is empty")
  mask_fn = configured_mask_fn(config.masks, config.masks.eval_kind) if mask_fn is None else mask_fn
  indices = [k * config.batch_size + process_index * batch + j for k in range(num_batches) for j in range(batch)]
  prepare = functools.partial(eval_example, source=source, size=config.data.image_size,
                              resize=_resize_option(config.data), mask_fn=mask_fn,
                              shorter_side=config.data.get("shorter_side", 0))
  dataset = grain.MapDataset.source(indices).map(prepare).batch(batch, drop_remainder=True)
  return list(dataset.to_iter_dataset(READ_OPTIONS))


def iterate_images(source, size: int, resize: tuple[int, int] | None = None) -> Iterator[np.ndarray]:
  """Every image of `source` once, in order, as a uint8[size, size, 3] centre crop after `fit_image`."""
  for index in range(len(source)):
    yield centre_crop(fit_image(source[index], size, resize), size)
