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
import os
import signal
import threading
import time
from typing import Callable, Iterator

import grain
import numpy as np
from PIL import Image

from jaxinpaint.data import sources, synthetic

MaskFn = Callable[[np.random.Generator, int, int], np.ndarray]

EVAL_SEED = 0  # Fixed, not config.seed: runs with different seeds (and methods) are scored on the same eval set.
# Elements are whole batches here; the default 500-element buffer would hold gigabytes of them.
READ_OPTIONS = grain.ReadOptions(num_threads=4, prefetch_buffer_size=8)


def resize_image(image: np.ndarray, height: int, width: int) -> np.ndarray:
  """uint8[H, W, 3] -> uint8[height, width, 3], bicubic (PIL antialiases when shrinking)."""
  if image.shape[:2] == (height, width):
    return image
  return np.asarray(Image.fromarray(image).resize((width, height), Image.BICUBIC))


def fit_image(image: np.ndarray, size: int, resize: tuple[int, int] | None = None, shorter_side: int = 0) -> np.ndarray:
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
  return image[top : top + size, left : left + size]


def centre_crop(image: np.ndarray, size: int) -> np.ndarray:
  """The central size x size crop of uint8[H, W, 3] (H, W >= size)."""
  top, left = (image.shape[0] - size) // 2, (image.shape[1] - size) // 2
  return image[top : top + size, left : left + size]


def draw_valid(mask_fn: MaskFn, rng: np.random.Generator, size: int) -> np.ndarray:
  """f32[size, size, 1] valid map (1 = known) from a mask generator `mask_fn(rng, h, w) -> f32[h, w]`."""
  valid = np.asarray(mask_fn(rng, size, size), np.float32)
  if valid.shape != (size, size):
    raise ValueError(f"mask generator returned shape {valid.shape}, expected ({size}, {size})")
  return valid[..., None]


def to_example(image: np.ndarray, valid: np.ndarray) -> dict[str, np.ndarray]:
  """uint8[S, S, 3] image and f32[S, S, 1] valid -> {'image': f32 in [-1, 1], 'valid': f32}."""
  return {"image": image.astype(np.float32) / 127.5 - 1.0, "valid": valid}


def random_scaled_crop(
  image: np.ndarray, size: int, scale_range: tuple[int, int], rng: np.random.Generator
) -> np.ndarray:
  """A size x size crop of uint8[H, W, 3] as if the shorter side were first scaled to s, log-uniform in
  `scale_range` (inclusive, both >= size): the crop's window is cut from the original and resized alone."""
  low, high = scale_range
  if not size <= low <= high:
    raise ValueError(
      f"config.data.scale_range={tuple(scale_range)} must be (low, high) with image_size={size} <= low <= high"
    )
  shorter = float(np.exp(rng.uniform(np.log(low), np.log(high))))
  height, width = image.shape[:2]
  side = min(height, width, max(1, round(size * min(height, width) / shorter)))
  top = int(rng.integers(0, height - side + 1))
  left = int(rng.integers(0, width - side + 1))
  return resize_image(np.ascontiguousarray(image[top : top + side, left : left + side]), size, size)


def color_jitter(image: np.ndarray, strength: float, rng: np.random.Generator) -> np.ndarray:
  """Brightness, contrast, saturation and per-channel gain, each a factor in [1 - strength, 1 + strength]
  (the gains in half that range), on uint8[H, W, 3]; rounded back to uint8."""
  x = image.astype(np.float32)
  brightness, contrast, saturation = rng.uniform(1.0 - strength, 1.0 + strength, 3)
  gains = rng.uniform(1.0 - strength / 2, 1.0 + strength / 2, 3).astype(np.float32)
  grey = x.mean(axis=-1, keepdims=True)
  x = grey + saturation * (x - grey)
  x = x.mean() + contrast * (x - x.mean())
  x = x * brightness * gains
  return np.clip(np.round(x), 0, 255).astype(np.uint8)


def train_example(
  image: np.ndarray,
  rng: np.random.Generator,
  *,
  size: int,
  resize: tuple[int, int] | None,
  random_flip: bool,
  mask_fn: MaskFn,
  shorter_side: int = 0,
  scale_range: tuple[int, int] = (),
  rot90: bool = False,
  jitter: float = 0.0,
  dead_leaves: float = 0.0,
) -> dict[str, np.ndarray]:
  """One training example, all drawn from `rng`: resize and random crop (or a random-scale crop when
  `scale_range` is set), random horizontal flip, random 90-degree rotation, colour jitter, then a mask.

  With probability `dead_leaves` the crop is replaced by a procedural dead-leaves image (`synthetic`); at 0 the
  stream is the one it was before that option existed (no draw is spent on it)."""
  if dead_leaves and rng.random() < dead_leaves:
    image = synthetic.dead_leaves(rng, size)
  elif scale_range:
    image = random_scaled_crop(image, size, scale_range, rng)
  else:
    image = random_crop(fit_image(image, size, resize, shorter_side), size, rng)
  if random_flip and rng.random() < 0.5:
    image = image[:, ::-1]
  if rot90:
    image = np.rot90(image, int(rng.integers(4)))
  if jitter:
    image = color_jitter(image, jitter, rng)
  return to_example(np.ascontiguousarray(image), draw_valid(mask_fn, rng, size))


def eval_example(
  index: int, *, source, size: int, resize: tuple[int, int] | None, mask_fn: MaskFn, shorter_side: int = 0
) -> dict[str, np.ndarray]:
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


def _scale_range_option(data_config) -> tuple[int, int] | tuple[()]:
  """config.data.scale_range as (low, high) with image_size <= low <= high, or () when off."""
  scale = tuple(data_config.get("scale_range", ()) or ())
  if scale and not (len(scale) == 2 and data_config.image_size <= scale[0] <= scale[1]):
    raise ValueError(
      f"config.data.scale_range={scale} must be () or (low, high) with image_size="
      f"{data_config.image_size} <= low <= high"
    )
  return scale


def _dead_leaves_option(data_config) -> float:
  """config.data.dead_leaves, the fraction of training crops that are dead-leaves images, checked."""
  fraction = float(data_config.get("dead_leaves", 0.0) or 0.0)
  if not 0.0 <= fraction <= 1.0:
    raise ValueError(f"config.data.dead_leaves={fraction} must be a fraction in [0, 1]")
  return fraction


def _check_process(process_index: int, process_count: int) -> None:
  if not 0 <= process_index < process_count:
    raise ValueError(f"process_index={process_index} must be in [0, process_count={process_count})")


def make_train_dataset(
  config, process_index: int = 0, process_count: int = 1, *, source=None, mask_fn: MaskFn | None = None
) -> grain.IterDataset:
  """This process's infinite training stream of batches (see the module docstring).

  `source` and `mask_fn` default to `make_source(config.data, 'train')` and `config.masks.kind`'s generator.
  """
  dataset = train_batches(config, process_index, process_count, source=source, mask_fn=mask_fn)
  dataset = dataset.to_iter_dataset(READ_OPTIONS)
  if config.data.num_workers > 0:
    dataset = dataset.mp_prefetch(
      grain.MultiprocessingOptions(num_workers=config.data.num_workers),
      worker_init_fn=functools.partial(die_with_parent, parent_pid=os.getpid()),
    )
  return dataset


def train_batches(
  config, process_index: int = 0, process_count: int = 1, *, source=None, mask_fn: MaskFn | None = None
) -> grain.MapDataset:
  """The random-access dataset of this process's training batches, before the iterator and its workers."""
  _check_process(process_index, process_count)
  batch = per_process_batch(config.batch_size, process_count)
  source = sources.make_source(config.data, "train") if source is None else source
  if len(source) == 0:
    raise ValueError(f"training source {source!r} is empty")
  mask_fn = configured_mask_fn(config.masks, config.masks.kind) if mask_fn is None else mask_fn
  augment = functools.partial(
    train_example,
    size=config.data.image_size,
    resize=_resize_option(config.data),
    random_flip=config.data.random_flip,
    mask_fn=mask_fn,
    shorter_side=config.data.get("shorter_side", 0),
    scale_range=_scale_range_option(config.data),
    rot90=config.data.get("rot90", False),
    jitter=config.data.get("color_jitter", 0.0),
    dead_leaves=_dead_leaves_option(config.data),
  )
  return (
    grain.MapDataset.source(source)
    .seed(config.seed)
    .shuffle()
    .repeat()
    .random_map(augment)[process_index::process_count]
    .batch(batch, drop_remainder=True)
  )


def check_train_data(config, process_index: int = 0, process_count: int = 1) -> None:
  """Builds this process's first training batch in-process, so bad data (an empty folder, images or masks of the
  wrong size) fail before a run writes anything or builds its model; the iterator itself stays untouched."""
  train_batches(config, process_index, process_count)[0]


def _process_alive(pid: int) -> bool:
  """False once `pid` has exited (a zombie, dead but not yet reaped, counts as exited)."""
  try:
    with open(f"/proc/{pid}/stat") as f:
      return f.read().rsplit(")", 1)[1].split()[0] != "Z"
  except (OSError, IndexError):
    try:
      os.kill(pid, 0)
    except ProcessLookupError:
      return False
    except PermissionError:
      pass
    return True


def die_with_parent(worker_index: int, worker_count: int, *, parent_pid: int, poll_seconds: float = 0.5) -> None:
  """grain worker init: a daemon thread kills this worker once the trainer `parent_pid` is gone.

  A SIGKILLed trainer runs no clean-up, and its workers (hundreds of MB each, holding its stdout) would live
  on. A watchdog on the pid, not PR_SET_PDEATHSIG: that signal fires when the *thread* that started the worker
  exits, and grain starts workers from helper threads.
  """
  del worker_index, worker_count

  def watch():
    while _process_alive(parent_pid):
      time.sleep(poll_seconds)
    os.kill(os.getpid(), signal.SIGKILL)

  threading.Thread(target=watch, name="jaxinpaint-parent-watchdog", daemon=True).start()


def make_train_iterator(
  config, process_index: int = 0, process_count: int = 1, *, source=None, mask_fn: MaskFn | None = None
) -> grain.DatasetIterator:
  """Iterator over `make_train_dataset(...)`; `get_state()`/`set_state()` resume it exactly."""
  return iter(make_train_dataset(config, process_index, process_count, source=source, mask_fn=mask_fn))


def make_eval_batches(
  config, process_index: int = 0, process_count: int = 1, *, source=None, mask_fn: MaskFn | None = None
) -> list[dict[str, np.ndarray]]:
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
    raise ValueError(
      f"config.data.eval_examples={config.data.eval_examples} is smaller than the global batch "
      f"{config.batch_size}; no full eval batch"
    )
  source = sources.make_source(config.data, "eval") if source is None else source
  if len(source) == 0:
    raise ValueError(f"eval source {source!r} is empty")
  mask_fn = configured_mask_fn(config.masks, config.masks.eval_kind) if mask_fn is None else mask_fn
  indices = [k * config.batch_size + process_index * batch + j for k in range(num_batches) for j in range(batch)]
  prepare = functools.partial(
    eval_example,
    source=source,
    size=config.data.image_size,
    resize=_resize_option(config.data),
    mask_fn=mask_fn,
    shorter_side=config.data.get("shorter_side", 0),
  )
  dataset = grain.MapDataset.source(indices).map(prepare).batch(batch, drop_remainder=True)
  return list(dataset.to_iter_dataset(READ_OPTIONS))


def iterate_images(source, size: int, resize: tuple[int, int] | None = None) -> Iterator[np.ndarray]:
  """Every image of `source` once, in order, as a uint8[size, size, 3] centre crop after `fit_image`."""
  for index in range(len(source)):
    yield centre_crop(fit_image(source[index], size, resize), size)
