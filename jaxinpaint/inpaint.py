"""Inpaint your own photos with a trained run: a CLI and a Python API.

  python -m jaxinpaint.inpaint --workdir=RUN --image=photo.jpg --mask=mask.png --output=out.png [--grid]
  python -m jaxinpaint.inpaint --workdir=RUN --image_dir=photos/ --mask_dir=masks/ --output_dir=out/

  from jaxinpaint.inpaint import inpaint, load
  result = inpaint("runs/wconv_demo", image, mask)   # uint8[H, W, 3] in, uint8[H, W, 3] out
  model = load("runs/wconv_demo"); results = [inpaint(model, im, m) for im, m in pairs]   # restore once

Masks are white = hole (DeepFill / LaMa files); `invert_mask` takes black = hole. Any image size: 'pad' runs the
model once on the image mirror-padded to a multiple of the training size S (padding counts as known), 'tile'
runs it on overlapping S x S tiles that touch a hole and blends them with a tent window (for models that only
take S x S); 'auto' pads when the model accepts the padded size and tiles otherwise. The result is cropped back
to the input size and every known pixel is copied from the input, byte for byte (write PNG to keep it so).
Folder mode pairs `photo.jpg` with `<mask_dir>/photo.png` (or `photo_mask.png`, any image extension), or with
the one `--mask` for every photo.
"""

from __future__ import annotations

import dataclasses
import math
import os
import sys
import warnings
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from absl import logging
from PIL import Image, ImageOps

from jaxinpaint import evaluate, visualize
from jaxinpaint.data import sources

MODES = ("auto", "pad", "tile")
POLARITY_WARN_RATIO = 0.9  # a mask this much "hole" is more likely drawn with the other convention
TILE_BATCH = 8


class MaskPolarityWarning(UserWarning):
  """The mask marks almost the whole image as hole: it may use the other convention (black = hole)."""


@dataclasses.dataclass
class Inpainter:
  """A restored run ready for inference on one device; `size` is the side it was trained at."""

  run: evaluate.Run
  workdir: str = ""

  @property
  def size(self) -> int:
    return int(self.run.config.data.image_size)

  def __post_init__(self):
    task = self.run.task
    self._predict = jax.jit(lambda p, s, image, valid: task.predict(p, s, {"image": image, "valid": valid})["output"])
    self._accepts: dict[tuple[int, int], bool] = {}

  def predict(self, image: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """image f32[B, H, W, 3] in [-1, 1] (holes are zeroed here), valid f32[B, H, W, 1] -> f32[B, H, W, 3]."""
    out = self._predict(self.run.params, self.run.model_state, jnp.asarray(image * valid), jnp.asarray(valid))
    return np.asarray(out, np.float32)

  def accepts(self, height: int, width: int) -> bool:
    """Whether the model maps a height x width input to an output of the same size (traced, not run)."""
    if (height, width) not in self._accepts:
      image = jax.ShapeDtypeStruct((1, height, width, 3), jnp.float32)
      valid = jax.ShapeDtypeStruct((1, height, width, 1), jnp.float32)
      try:
        out = jax.eval_shape(self._predict, self.run.params, self.run.model_state, image, valid)
        ok = tuple(out.shape) == (1, height, width, 3)
      except Exception:  # any model-specific size error means "no"; tiling then serves it at its own size
        ok = False
      self._accepts[(height, width)] = ok
    return self._accepts[(height, width)]


def load(workdir: str) -> Inpainter:
  """Restores the run in `workdir` (its saved config and latest checkpoint) on the first device.

  FileNotFoundError naming the directory when it is not a run or has no checkpoint.
  """
  evaluate.quiet_orbax()
  return Inpainter(evaluate.restore_run(workdir, devices=jax.devices()[:1], batch_size=1), workdir)


# ------------------------------------------------------------------------------------------------ I/O


def read_image(path: str) -> np.ndarray:
  """An image file as uint8[H, W, 3] RGB, EXIF rotation applied; ValueError naming the file if unreadable."""
  try:
    with Image.open(path) as image:
      return sources.to_rgb(np.asarray(ImageOps.exif_transpose(image).convert("RGB")))
  except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as error:
    raise ValueError(f"cannot read image {path!r}: {error}") from None


def read_mask(path: str) -> np.ndarray:
  """A mask file as uint8[H, W] grey levels (EXIF rotation applied, like the photo's)."""
  try:
    with Image.open(path) as image:
      return np.asarray(ImageOps.exif_transpose(image).convert("L"))
  except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as error:
    raise ValueError(f"cannot read mask {path!r}: {error}") from None


def to_hole(mask: Any, invert: bool = False) -> np.ndarray:
  """A mask array -> bool[H, W], True = hole: white (> 127 for uint8, > 0.5 for floats, True for bool) marks a
  hole, or black with `invert`. Colour masks are averaged over channels."""
  mask = np.asarray(mask)
  if mask.ndim == 3 and mask.shape[-1] in (1, 3, 4):
    mask = mask[..., :3].astype(np.float64).mean(axis=-1) if mask.shape[-1] > 1 else mask[..., 0]
  if mask.ndim != 2:
    raise ValueError(f"mask must be [H, W] (or [H, W, 1|3|4]); got shape {mask.shape}")
  if mask.dtype == bool:
    hole = mask
  elif np.issubdtype(mask.dtype, np.floating) and mask.max(initial=0) <= 1.0:
    hole = mask > 0.5
  else:
    hole = mask.astype(np.float64) > 127.5
  return ~hole if invert else hole


def resize_hole(hole: np.ndarray, height: int, width: int) -> np.ndarray:
  """Nearest-neighbour resize of a bool mask (no grey edges to threshold)."""
  image = Image.fromarray(hole.astype(np.uint8) * 255).resize((width, height), Image.NEAREST)
  return np.asarray(image) > 127


def side_by_side(image: np.ndarray, hole: np.ndarray, result: np.ndarray, gap: int = 4) -> np.ndarray:
  """uint8[H, 3 W + 2 gap, 3]: the input with its holes white | the mask (white = hole) | the result."""
  shown = np.where(hole[..., None], 255, image).astype(np.uint8)
  mask = np.repeat((hole.astype(np.uint8) * 255)[..., None], 3, axis=-1)
  spacer = np.full((image.shape[0], gap, 3), 255, np.uint8)
  return np.concatenate([shown, spacer, mask, spacer, result], axis=1)


# ------------------------------------------------------------------------------------------------ core


def _pad_to(x: np.ndarray, height: int, width: int, mode: str = "symmetric") -> np.ndarray:
  return np.pad(x, ((0, height - x.shape[0]), (0, width - x.shape[1])) + ((0, 0),) * (x.ndim - 2), mode=mode)


def _tent(size: int) -> np.ndarray:
  """A separable tent window over a size x size tile: tile centres count most where tiles overlap."""
  ramp = 1.0 - np.abs((np.arange(size) + 0.5) / size * 2.0 - 1.0)
  ramp = np.maximum(ramp, 1e-3)
  return (ramp[:, None] * ramp[None, :])[..., None].astype(np.float32)


def _starts(length: int, size: int, stride: int) -> list[int]:
  starts = list(range(0, max(length - size, 0) + 1, stride))
  if starts[-1] != length - size:
    starts.append(length - size)
  return starts


def _fill_pad(model: Inpainter, x: np.ndarray, valid: np.ndarray) -> np.ndarray:
  s = model.size
  h, w = valid.shape[:2]
  ph, pw = math.ceil(h / s) * s, math.ceil(w / s) * s
  out = model.predict(_pad_to(x, ph, pw)[None], _pad_valid(valid, ph, pw)[None])
  return out[0, :h, :w]


def _pad_valid(valid: np.ndarray, height: int, width: int) -> np.ndarray:
  """The padding is mirrored known content, so it is marked known (1)."""
  return np.pad(valid, ((0, height - valid.shape[0]), (0, width - valid.shape[1]), (0, 0)), constant_values=1.0)


def _fill_tiles(model: Inpainter, x: np.ndarray, valid: np.ndarray) -> np.ndarray:
  s = model.size
  h, w = valid.shape[:2]
  ph, pw = max(h, s), max(w, s)
  x, valid = _pad_to(x, ph, pw), _pad_valid(valid, ph, pw)
  stride = max(s - s // 4, 1)  # a quarter of a tile of overlap to blend across
  tiles = [(t, l) for t in _starts(ph, s, stride) for l in _starts(pw, s, stride)
           if (valid[t:t + s, l:l + s] < 0.5).any()]
  window = _tent(s)
  total = np.zeros((ph, pw, 3), np.float32)
  weight = np.full((ph, pw, 1), 1e-12, np.float32)
  for i in range(0, len(tiles), TILE_BATCH):
    group = tiles[i:i + TILE_BATCH]
    batch = [(x[t:t + s, l:l + s], valid[t:t + s, l:l + s]) for t, l in group]
    batch += [batch[-1]] * (TILE_BATCH - len(batch))  # one compiled shape for every call
    out = model.predict(np.stack([b[0] for b in batch]), np.stack([b[1] for b in batch]))
    for (t, l), tile in zip(group, out):
      total[t:t + s, l:l + s] += window * tile
      weight[t:t + s, l:l + s] += window
  return (total / weight)[:h, :w]


def inpaint(model: Inpainter | str | os.PathLike, image: Any, mask: Any, *, invert_mask: bool = False,
            resize_mask: bool = False, mode: str = "auto") -> np.ndarray:
  """Fills the holes of `image` with a trained model; returns uint8[H, W, 3] of the input's size.

  Args:
    model: an `Inpainter` (`load(workdir)`) or a run directory (restored for this call).
    image: uint8[H, W, 3] (or gray / RGBA, or floats in [0, 1]) or an image file path.
    mask: [H, W] array or file, white / True / > 0.5 = hole (`invert_mask`: black = hole).
    resize_mask: resize a mask of another size to the image (nearest); otherwise that is a ValueError.
    mode: 'auto', 'pad' or 'tile' (module docstring).
  Warns `MaskPolarityWarning` when more than 90 % of the image is hole.
  """
  if mode not in MODES:
    raise ValueError(f"mode must be one of {MODES}; got {mode!r}")
  image = read_image(os.fspath(image)) if isinstance(image, (str, os.PathLike)) else sources.to_rgb(image)
  raw = read_mask(os.fspath(mask)) if isinstance(mask, (str, os.PathLike)) else mask
  hole = to_hole(raw, invert_mask)
  if hole.shape != image.shape[:2]:
    if not resize_mask:
      raise ValueError(f"mask is {hole.shape[0]}x{hole.shape[1]} but the image is {image.shape[0]}x{image.shape[1]} "
                       "(height x width); pass --resize_mask (resize_mask=True) to resize it to the image")
    hole = resize_hole(hole, *image.shape[:2])
  ratio = float(hole.mean())
  if ratio > POLARITY_WARN_RATIO:
    warnings.warn(MaskPolarityWarning(
        f"the mask marks {ratio:.0%} of the image as hole (white = hole); if white marks the pixels to keep, "
        "pass --invert_mask (invert_mask=True)"), stacklevel=2)
  if not hole.any():
    logging.info("the mask has no hole: the image is returned unchanged")
    return image.copy()
  if not isinstance(model, Inpainter):
    model = load(os.fspath(model))
  x = image.astype(np.float32) / 127.5 - 1.0
  valid = (~hole).astype(np.float32)[..., None]
  s = model.size
  if mode == "auto":
    mode = "pad" if model.accepts(math.ceil(image.shape[0] / s) * s, math.ceil(image.shape[1] / s) * s) else "tile"
  filled = _fill_pad(model, x, valid) if mode == "pad" else _fill_tiles(model, x, valid)
  return np.where(hole[..., None], visualize.to_uint8(filled), image)


# ------------------------------------------------------------------------------------------------ CLI


def find_mask(image_path: str, image_dir: str, mask_dir: str) -> str | None:
  """`<mask_dir>/<relative path stem>` + (''|'_mask') + any image extension, or None."""
  stem = os.path.splitext(os.path.relpath(image_path, image_dir))[0]
  for suffix in ("", "_mask"):
    for ext in sources.IMAGE_EXTENSIONS:
      for candidate in (stem + suffix + ext, stem + suffix + ext.upper()):
        path = os.path.join(mask_dir, candidate)
        if os.path.isfile(path):
          return path
  return None


def _save(array: np.ndarray, path: str) -> str:
  if os.path.splitext(path)[1].lower() in (".jpg", ".jpeg"):
    logging.warning("%s: JPEG is lossy, so the known pixels on disk will not be the input's exactly; use .png",
                    path)
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  Image.fromarray(array).save(path)
  return path


def _grid_path(output: str) -> str:
  return os.path.splitext(output)[0] + "_grid.png"


def run_files(model: Inpainter, jobs: list[tuple[str, str, str]], *, invert_mask: bool, resize_mask: bool,
              mode: str, grid: bool, progress: bool = True) -> list[str]:
  """Inpaints each (image, mask, output) path triple; returns the outputs written."""
  from tqdm import tqdm

  written = []
  for image_path, mask_path, output in tqdm(jobs, unit="image", disable=not progress or len(jobs) < 2,
                                            file=sys.stderr):
    image = read_image(image_path)
    mask = read_mask(mask_path)
    result = inpaint(model, image, mask, invert_mask=invert_mask, resize_mask=resize_mask, mode=mode)
    written.append(_save(result, output))
    if grid:
      hole = to_hole(mask, invert_mask)
      hole = hole if hole.shape == image.shape[:2] else resize_hole(hole, *image.shape[:2])
      written.append(_save(side_by_side(image, hole, result), _grid_path(output)))
  return written


def plan_jobs(*, image: str | None, mask: str | None, output: str | None, image_dir: str | None,
              mask_dir: str | None, output_dir: str | None) -> list[tuple[str, str, str]]:
  """(image, mask, output) triples for single-file or folder mode; ValueError for an incomplete request,
  before any work."""
  if image and image_dir:
    raise ValueError("give either --image or --image_dir, not both")
  if image:
    if not mask or not output:
      raise ValueError("--image needs --mask and --output")
    return [(image, mask, output)]
  if not image_dir:
    raise ValueError("give --image (with --mask, --output) or --image_dir (with --mask_dir or --mask, and "
                     "--output_dir)")
  if not os.path.isdir(image_dir):
    raise ValueError(f"--image_dir {image_dir!r} is not a directory")
  if not output_dir or not (mask_dir or mask):
    raise ValueError("--image_dir needs --output_dir and either --mask_dir or one --mask for every image")
  images = sources.list_images(image_dir)
  if not images:
    raise ValueError(f"--image_dir {image_dir!r} holds no {'/'.join(sources.IMAGE_EXTENSIONS)} files")
  jobs, missing = [], []
  for path in images:
    found = mask or find_mask(path, image_dir, mask_dir)
    if found is None:
      missing.append(os.path.relpath(path, image_dir))
    rel = os.path.splitext(os.path.relpath(path, image_dir))[0] + ".png"
    jobs.append((path, found, os.path.join(output_dir, rel)))
  if missing:
    raise ValueError(f"no mask in {mask_dir!r} for {len(missing)} of {len(images)} images (e.g. {missing[0]!r}; "
                     "looked for the same name, or name_mask, with any image extension)")
  return jobs


def main(argv=None) -> None:
  from absl import app, flags

  flags.DEFINE_string("workdir", None, "Trained run directory (config.json + checkpoints).")
  flags.DEFINE_string("image", None, "Photo to inpaint.")
  flags.DEFINE_string("mask", None, "Mask file, white = hole (or black with --invert_mask).")
  flags.DEFINE_string("output", None, "Where to write the result (PNG keeps known pixels exact).")
  flags.DEFINE_string("image_dir", None, "Folder mode: every image under this folder.")
  flags.DEFINE_string("mask_dir", None, "Folder mode: masks named like the images.")
  flags.DEFINE_string("output_dir", None, "Folder mode: results, as PNG, named like the images.")
  flags.DEFINE_bool("invert_mask", False, "Masks are black = hole.")
  flags.DEFINE_bool("resize_mask", False, "Resize masks of another size to the image (nearest).")
  flags.DEFINE_bool("grid", False, "Also write <output>_grid.png: input with holes | mask | result.")
  flags.DEFINE_enum("mode", "auto", list(MODES), "pad: whole image at once; tile: training-size tiles.")
  flags.mark_flags_as_required(["workdir"])
  FLAGS = flags.FLAGS

  def run(args):
    if len(args) > 1:
      raise app.UsageError(f"unexpected arguments: {args[1:]}")
    from jaxinpaint import xla_flags

    xla_flags.set_cpu_flags()  # as `jaxinpaint.main` does: the same numbers from every entry point
    try:
      jobs = plan_jobs(image=FLAGS.image, mask=FLAGS.mask, output=FLAGS.output, image_dir=FLAGS.image_dir,
                       mask_dir=FLAGS.mask_dir, output_dir=FLAGS.output_dir)
      model = load(FLAGS.workdir)
      with warnings.catch_warnings():
        warnings.simplefilter("always", MaskPolarityWarning)
        warnings.showwarning = lambda message, *a, **k: logging.warning("%s", message)
        written = run_files(model, jobs, invert_mask=FLAGS.invert_mask, resize_mask=FLAGS.resize_mask,
                            mode=FLAGS.mode, grid=FLAGS.grid)
    except (ValueError, FileNotFoundError) as e:
      if os.environ.get("JAXINPAINT_TRACEBACK"):
        raise
      sys.exit(f"error: {e}")
    print(f"wrote {len(written)} files: {', '.join(written[:4])}{' ...' if len(written) > 4 else ''}")

  app.run(run, argv)


if __name__ == "__main__":
  main()
