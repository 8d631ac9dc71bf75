"""Inpaint your own photos with a trained run: a CLI and a Python API.

  python -m jaxinpaint.inpaint --workdir=RUN --image=photo.jpg --mask=mask.png --output=out.png [--grid]
  python -m jaxinpaint.inpaint --workdir=RUN --image_dir=photos/ --mask_dir=masks/ --output_dir=out/

  from jaxinpaint.inpaint import inpaint, load
  result = inpaint("runs/wconv_demo", image, mask)   # uint8[H, W, 3] in, uint8[H, W, 3] out
  model = load("runs/wconv_demo"); results = [inpaint(model, im, m) for im, m in pairs]   # restore once

Masks are white = hole (DeepFill / LaMa files), grey or binary at 8 or 16 bits, read by the one mask reader
(`data.mask_files.read_hole`); a coloured mask is an error naming the file; `invert_mask` takes black = hole. Any
image size: 'pad' runs the
model once on the image mirror-padded to a multiple of the training size S, 'tile' runs it on overlapping S x S
tiles that touch a hole and blends them with a tent window (for models that only take S x S); 'auto' pads when
the model accepts the padded size and tiles otherwise. Holes are zeroed before any padding and the mask is
mirrored with the image, so no pixel under a hole reaches the model: the output does not depend on them, byte for
byte. The result is cropped back to the input size and every known pixel is copied from the input, byte for byte
(write PNG to keep it so).

Folder mode pairs `photo.jpg` with `<mask_dir>/photo.png` (or `photo_mask.png`, any image extension), or with
the one `--mask` for every photo. Before the model loads, every output is checked: one that cannot be written,
that would overwrite a photo or mask, or that two photos share (`x.jpg`, `x.png` -> `x.png`) is refused in one
line; masks (under --mask_dir, `x_mask.*` beside `x.*`) are never taken as photos. A photo that fails (no mask,
unreadable, coloured mask, wrong size) is skipped and the rest go on; the run ends with a summary and exits
non-zero when any was skipped. Files are written whole or not at all.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import os
import sys
import tempfile
import warnings
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from absl import logging
from PIL import Image

from jaxinpaint import cli, evaluate, visualize
from jaxinpaint.data import mask_files, sources

MODES = ("auto", "pad", "tile")
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
  cli.quiet_libraries()
  return Inpainter(evaluate.restore_run(workdir, devices=jax.devices()[:1], batch_size=1), workdir)


# ------------------------------------------------------------------------------------------------ I/O


def read_image(path: str) -> np.ndarray:
  """An image file as uint8[H, W, 3] RGB (EXIF rotation applied, 16-bit scaled); ValueError naming it if unreadable."""
  try:
    return sources.read_rgb(path)
  except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as error:
    raise ValueError(f"cannot read image {path!r}: {error}") from None


def read_hole(mask: Any, invert: bool = False) -> np.ndarray:
  """A mask file or array -> bool[H, W], True = hole, by the project's one mask rule (`data.mask_files.read_hole`):
  white = hole (black with `invert`), grey or binary at any bit depth; `MaskFileError` (a ValueError) naming the
  file for a coloured or unreadable mask."""
  return mask_files.read_hole(mask, polarity="black_hole" if invert else "white_hole")


def resize_hole(hole: np.ndarray, height: int, width: int) -> np.ndarray:
  """Nearest-neighbour resize of a bool mask (no grey edges to threshold)."""
  image = Image.fromarray(hole.astype(np.uint8) * 255).resize((width, height), Image.NEAREST)
  return np.asarray(image) > 127


def _fit_hole(hole: np.ndarray, image: np.ndarray, resize_mask: bool) -> np.ndarray:
  """The hole at the image's size: resized when asked, else ValueError for a mismatch."""
  if hole.shape == image.shape[:2]:
    return hole
  if not resize_mask:
    raise ValueError(
      f"mask is {hole.shape[0]}x{hole.shape[1]} but the image is {image.shape[0]}x{image.shape[1]} "
      "(height x width); pass --resize_mask (resize_mask=True) to resize it to the image"
    )
  return resize_hole(hole, *image.shape[:2])


def _warn_polarity(hole: np.ndarray, name: str, invert: bool) -> None:
  hint = mask_files.polarity_hint(hole, name, "black_hole" if invert else "white_hole")
  if hint:
    warnings.warn(MaskPolarityWarning(hint), stacklevel=3)


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


def _pad_known(x: np.ndarray, valid: np.ndarray, height: int, width: int) -> tuple[np.ndarray, np.ndarray]:
  """Mirror-pads x f32[H, W, 3] and valid f32[H, W, 1] to height x width alike, holes zeroed first: a hole
  mirrored into the padding stays a hole, so no pixel under a hole reaches the model."""
  return _pad_to(x * valid, height, width), _pad_to(valid, height, width)


def _fill_pad(model: Inpainter, x: np.ndarray, valid: np.ndarray) -> np.ndarray:
  s = model.size
  h, w = valid.shape[:2]
  x, valid = _pad_known(x, valid, math.ceil(h / s) * s, math.ceil(w / s) * s)
  return model.predict(x[None], valid[None])[0, :h, :w]


def _fill_tiles(model: Inpainter, x: np.ndarray, valid: np.ndarray) -> np.ndarray:
  s = model.size
  h, w = valid.shape[:2]
  ph, pw = max(h, s), max(w, s)
  x, valid = _pad_known(x, valid, ph, pw)
  stride = max(s - s // 4, 1)  # a quarter of a tile of overlap to blend across
  tiles = [
    (t, l) for t in _starts(ph, s, stride) for l in _starts(pw, s, stride) if (valid[t : t + s, l : l + s] < 0.5).any()
  ]
  window = _tent(s)
  total = np.zeros((ph, pw, 3), np.float32)
  weight = np.full((ph, pw, 1), 1e-12, np.float32)
  for i in range(0, len(tiles), TILE_BATCH):
    group = tiles[i : i + TILE_BATCH]
    batch = [(x[t : t + s, l : l + s], valid[t : t + s, l : l + s]) for t, l in group]
    batch += [batch[-1]] * (TILE_BATCH - len(batch))  # one compiled shape for every call
    out = model.predict(np.stack([b[0] for b in batch]), np.stack([b[1] for b in batch]))
    for (t, l), tile in zip(group, out):
      total[t : t + s, l : l + s] += window * tile
      weight[t : t + s, l : l + s] += window
  return (total / weight)[:h, :w]


def inpaint(
  model: Inpainter | str | os.PathLike,
  image: Any,
  mask: Any,
  *,
  invert_mask: bool = False,
  resize_mask: bool = False,
  mode: str = "auto",
) -> np.ndarray:
  """Fills the holes of `image` with a trained model; returns uint8[H, W, 3] of the input's size.

  Args:
    model: an `Inpainter` (`load(workdir)`) or a run directory (restored for this call).
    image: uint8[H, W, 3] (or gray / RGBA, uint16, or floats in [0, 1]) or an image file path.
    mask: [H, W] (or grey/LA/RGB/RGBA) array or file, white = hole (`invert_mask`: black = hole), read by
      `data.mask_files.read_hole`: 8/16-bit or float in [0, 1], edges cut at half scale; colour is a ValueError.
    resize_mask: resize a mask of another size to the image (nearest); otherwise that is a ValueError.
    mode: 'auto', 'pad' or 'tile' (module docstring).
  Warns `MaskPolarityWarning` when more than 90 % of the image is hole. The pixels of `image` under the hole are
  never read: the output is the same, byte for byte, whatever they hold.
  """
  if mode not in MODES:
    raise ValueError(f"mode must be one of {MODES}; got {mode!r}")
  image = read_image(os.fspath(image)) if isinstance(image, (str, os.PathLike)) else sources.to_rgb(image)
  hole = _fit_hole(read_hole(mask, invert_mask), image, resize_mask)
  _warn_polarity(hole, f"mask {os.fspath(mask)!r}" if isinstance(mask, (str, os.PathLike)) else "the mask", invert_mask)
  return _inpaint_hole(model, image, hole, mode)


def _inpaint_hole(model: Inpainter | str | os.PathLike, image: np.ndarray, hole: np.ndarray, mode: str) -> np.ndarray:
  """uint8[H, W, 3], bool hole[H, W] -> uint8[H, W, 3]: the model's fill in the holes, the input elsewhere."""
  if not hole.any():
    logging.info("the mask has no hole: the image is returned unchanged")
    return image.copy()
  if not isinstance(model, Inpainter):
    model = load(os.fspath(model))
  valid = (~hole).astype(np.float32)[..., None]
  x = (image.astype(np.float32) / 127.5 - 1.0) * valid  # holes zeroed here, before any padding or tiling
  s = model.size
  if mode == "auto":
    mode = "pad" if model.accepts(math.ceil(image.shape[0] / s) * s, math.ceil(image.shape[1] / s) * s) else "tile"
  filled = _fill_pad(model, x, valid) if mode == "pad" else _fill_tiles(model, x, valid)
  return np.where(hole[..., None], visualize.to_uint8(filled), image)


# ------------------------------------------------------------------------------------------------ CLI


def _same(a: str, b: str) -> bool:
  """Whether two paths name the same file or folder (symlinks resolved; neither need exist)."""
  return os.path.realpath(a) == os.path.realpath(b)


def _inside(path: str, folder: str) -> bool:
  """Whether `path` is `folder` or lies under it (symlinks resolved)."""
  path, folder = os.path.realpath(path), os.path.realpath(folder)
  return path == folder or path.startswith(folder.rstrip(os.sep) + os.sep)


def find_mask(image_path: str, image_dir: str, mask_dir: str) -> str | None:
  """`<mask_dir>/<relative path stem>` + (''|'_mask') + any image extension, or None. Never the photo itself, so
  with --mask_dir = --image_dir a photo's mask is `photo_mask.*` beside it."""
  stem = os.path.splitext(os.path.relpath(image_path, image_dir))[0]
  for suffix in ("", "_mask"):
    for ext in sources.IMAGE_EXTENSIONS:
      for candidate in (stem + suffix + ext, stem + suffix + ext.upper()):
        path = os.path.join(mask_dir, candidate)
        if os.path.isfile(path) and not _same(path, image_path):
          return path
  return None


def _beside_masks(paths: list[str]) -> set[str]:
  """The files named `<stem>_mask.<ext>` beside a file `<stem>.<ext>`: masks lying next to their photos."""
  stems = {os.path.splitext(p)[0] for p in paths}
  return {p for p in paths if os.path.splitext(p)[0].endswith("_mask") and os.path.splitext(p)[0][:-5] in stems}


def _grid_path(output: str) -> str:
  return os.path.splitext(output)[0] + "_grid.png"


def _check_writable(path: str, what: str, probed: dict[str, str] | None = None) -> None:
  """ValueError naming `path` when an image cannot be written there: an extension PIL cannot save, a folder in
  the way, a file where a folder must be, or a folder that refuses writes (probed once per folder in `probed`)."""
  if os.path.isdir(path):
    raise ValueError(f"{what} {path!r} is a directory; give a file path such as {os.path.join(path, 'out.png')!r}")
  ext = os.path.splitext(path)[1].lower()
  if Image.registered_extensions().get(ext) not in Image.SAVE:
    raise ValueError(f"{what} {path!r}: {ext or 'no extension'!r} is not an image format PIL can write; use .png")
  folder = os.path.dirname(os.path.abspath(path))
  while not os.path.exists(folder):  # folders still to be made: what matters is the nearest one that exists
    folder = os.path.dirname(folder)
  if not os.path.isdir(folder):
    raise ValueError(f"cannot write {what} {path!r}: {folder!r} is a file, not a folder")
  probed = {} if probed is None else probed
  if folder not in probed:
    try:
      with tempfile.TemporaryFile(dir=folder):  # os.access says yes to root, so try for real
        probed[folder] = ""
    except OSError as error:
      probed[folder] = error.strerror or str(error)
  if probed[folder]:
    raise ValueError(f"cannot write {what} {path!r}: folder {folder!r} is not writable ({probed[folder]})")


def _check_outputs(jobs: list[tuple[str, str | None, str]], grid: bool, inputs: list[str], what: str) -> None:
  """ValueError when two jobs would write one file, an output would overwrite an input, or cannot be written."""
  protected = {os.path.realpath(p) for p in inputs}
  owner: dict[str, str] = {}
  probed: dict[str, str] = {}
  for image, _, output in jobs:
    for path in [output] + ([_grid_path(output)] if grid else []):
      key = os.path.normcase(os.path.realpath(path))
      if key in owner:
        raise ValueError(
          f"{owner[key]!r} and {image!r} would both be written to {path!r}; rename one of them "
          "(results are named <photo name>.png)"
        )
      owner[key] = image
      if os.path.realpath(path) in protected:
        raise ValueError(f"{what} would overwrite the input {path!r}; write the results somewhere else")
      _check_writable(path, what, probed)


def plan_jobs(
  *,
  image: str | None,
  mask: str | None,
  output: str | None,
  image_dir: str | None,
  mask_dir: str | None,
  output_dir: str | None,
  grid: bool = False,
) -> list[tuple[str, str | None, str]]:
  """(image, mask, output) triples for single-file or folder mode, all checked before any model runs.

  ValueError for an incomplete request, outputs that cannot be written, that would overwrite an input (a photo
  or mask) or that collide (`x.jpg` and `x.png` -> `x.png`: refused, naming both). In folder mode a file that is a
  photo's mask (under --mask_dir, `x_mask.*` beside `x.*`, the one --mask) is never taken as a photo, nor is
  anything under an --output_dir inside --image_dir; a photo without a mask gets mask None and `run_files`
  skips it with that reason.
  """
  if image and image_dir:
    raise ValueError("give either --image or --image_dir, not both")
  if image:
    if not mask or not output:
      raise ValueError("--image needs --mask and --output")
    for path in [output] + ([_grid_path(output)] if grid else []):
      for flag, given in (("--image", image), ("--mask", mask)):
        if _same(path, given):
          raise ValueError(f"--output {path!r} is the {flag} file: writing it would destroy the input")
    jobs = [(image, mask, output)]
    _check_outputs(jobs, grid, [image, mask], "--output")
    return jobs
  if not image_dir:
    raise ValueError(
      "give --image (with --mask, --output) or --image_dir (with --mask_dir or --mask, and --output_dir)"
    )
  if not os.path.isdir(image_dir):
    raise ValueError(f"--image_dir {image_dir!r} is not a directory")
  if not output_dir or not (mask_dir or mask):
    raise ValueError("--image_dir needs --output_dir and either --mask_dir or one --mask for every image")
  if _same(output_dir, image_dir):
    raise ValueError(
      f"--output_dir {output_dir!r} is the --image_dir: results would overwrite or mix with the "
      "photos; choose another folder"
    )
  if mask_dir and not os.path.isdir(mask_dir):
    raise ValueError(f"--mask_dir {mask_dir!r} is not a directory")
  found = sources.list_images(image_dir)
  aside = [d for d in (output_dir, mask_dir) if d and _inside(d, image_dir) and not _same(d, image_dir)]
  photos = [p for p in found if not any(_inside(p, d) for d in aside) and not (mask and _same(p, mask))]
  photos = [p for p in photos if p not in _beside_masks(photos)]
  pairs = [(p, mask or find_mask(p, image_dir, mask_dir)) for p in photos]
  used = {os.path.realpath(m) for _, m in pairs if m}
  pairs = [(p, m) for p, m in pairs if os.path.realpath(p) not in used]  # some photo's mask is not a photo
  if not pairs:
    raise ValueError(
      f"--image_dir {image_dir!r} holds no photos ({len(found)} "
      f"{'/'.join(sources.IMAGE_EXTENSIONS)} files, all of them masks or results)"
      if found
      else f"--image_dir {image_dir!r} holds no {'/'.join(sources.IMAGE_EXTENSIONS)} files"
    )
  if len(found) > len(pairs):
    logging.info(
      "%d of the %d image files under %s are masks or results, not photos",
      len(found) - len(pairs),
      len(found),
      image_dir,
    )
  if all(m is None for _, m in pairs):
    raise ValueError(
      f"no mask in {mask_dir!r} for any of the {len(pairs)} images (e.g. "
      f"{os.path.relpath(pairs[0][0], image_dir)!r}; looked for the same name, or name_mask, with "
      "any image extension)"
    )
  jobs = [
    (p, m, os.path.join(output_dir, os.path.splitext(os.path.relpath(p, image_dir))[0] + ".png")) for p, m in pairs
  ]
  inputs = found + (sources.list_images(mask_dir) if mask_dir else [mask])
  _check_outputs(jobs, grid, inputs, f"--output_dir {output_dir!r}")
  return jobs


def _save(array: np.ndarray, path: str) -> str:
  """Writes uint8[H, W, 3] to `path` whole or not at all (a temporary file renamed into place)."""
  ext = os.path.splitext(path)[1].lower()
  if ext in (".jpg", ".jpeg"):
    logging.warning("%s: JPEG is lossy, so the known pixels on disk will not be the input's exactly; use .png", path)
  folder = os.path.dirname(os.path.abspath(path))
  os.makedirs(folder, exist_ok=True)
  partial = os.path.join(folder, f".{os.path.basename(path)}.{os.getpid()}.partial")
  try:
    with open(partial, "wb") as f:
      Image.fromarray(array).save(f, format=Image.registered_extensions()[ext])
    os.replace(partial, path)
  except BaseException:
    with contextlib.suppress(OSError):
      os.remove(partial)
    raise
  return path


@dataclasses.dataclass
class Report:
  """What `run_files` did: the files written, and each image skipped with its reason."""

  written: list[str] = dataclasses.field(default_factory=list)
  skipped: list[tuple[str, str]] = dataclasses.field(default_factory=list)


def run_files(
  model: Inpainter,
  jobs: list[tuple[str, str | None, str]],
  *,
  invert_mask: bool,
  resize_mask: bool,
  mode: str,
  grid: bool,
  progress: bool = True,
) -> Report:
  """Inpaints each (image, mask, output) path triple. A job that fails (no mask, an unreadable or coloured file,
  a mask of another size, a failed write) is skipped with its reason and the others go on."""
  from tqdm import tqdm

  report = Report()
  for image_path, mask_path, output in tqdm(jobs, unit="image", disable=not progress or len(jobs) < 2, file=sys.stderr):
    try:
      if mask_path is None:
        raise ValueError(
          "no mask for it in --mask_dir (looked for the same name, or name_mask, with any image extension)"
        )
      image = read_image(image_path)
      hole = _fit_hole(read_hole(mask_path, invert_mask), image, resize_mask)
      _warn_polarity(hole, f"mask {mask_path!r}", invert_mask)
      result = _inpaint_hole(model, image, hole, mode)
      report.written.append(_save(result, output))
      if grid:
        report.written.append(_save(side_by_side(image, hole, result), _grid_path(output)))
    except (ValueError, OSError) as error:
      report.skipped.append((image_path, str(error)))
      logging.warning("skipping %s: %s", image_path, error)
  return report


def main(argv=None) -> None:
  from absl import flags

  flags.DEFINE_string("workdir", None, "Trained run directory (config.json + checkpoints).")
  flags.DEFINE_string("image", None, "Photo to inpaint.")
  flags.DEFINE_string("mask", None, "Mask file, white = hole (or black with --invert_mask); grey or binary.")
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

  def run() -> None:
    jobs = plan_jobs(
      image=FLAGS.image,
      mask=FLAGS.mask,
      output=FLAGS.output,
      image_dir=FLAGS.image_dir,
      mask_dir=FLAGS.mask_dir,
      output_dir=FLAGS.output_dir,
      grid=FLAGS.grid,
    )
    model = load(FLAGS.workdir)
    with warnings.catch_warnings():
      warnings.simplefilter("always", MaskPolarityWarning)
      warnings.showwarning = lambda message, *a, **k: logging.warning("%s", message)
      report = run_files(
        model, jobs, invert_mask=FLAGS.invert_mask, resize_mask=FLAGS.resize_mask, mode=FLAGS.mode, grid=FLAGS.grid
      )
    if FLAGS.image and report.skipped:
      cli.fail(report.skipped[0][1])
    written = report.written
    done = len(jobs) - len(report.skipped)
    print(
      f"inpainted {done} of {len(jobs)} images, wrote {len(written)} files"
      f"{': ' if written else ''}{', '.join(written[:4])}{' ...' if len(written) > 4 else ''}"
    )
    if report.skipped:
      for path, reason in report.skipped:
        print(f"skipped {path}: {reason}", file=sys.stderr)
      cli.fail(f"skipped {len(report.skipped)} of {len(jobs)} images (reasons above)")

  cli.run_main(run, argv)


if __name__ == "__main__":
  main()
