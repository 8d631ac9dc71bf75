"""The one reader of mask files and mask arrays: white = hole, grey or binary, any bit depth.

  from jaxinpaint.data.mask_files import read_hole
  hole = read_hole("mask.png")                          # bool[H, W], True = hole (white = hole)
  hole = read_hole(array, polarity="black_hole")        # a mask set that draws holes in black

Rules, for files (any format PIL opens, EXIF rotation applied like the photo's) and arrays alike:
- Grey levels are scaled to [0, 1] by the sample's full scale: 255 for 8-bit, 65535 for 16-bit (uint16, PNG 'I;16'),
  1 for floats (which must lie in [0, 1]) and bools. A pixel is a hole where its level is above `threshold`
  (anti-aliased edges are cut at that fraction of full scale); `polarity="black_hole"` inverts the result.
- RGB(A) masks must be grey: a pixel whose channels differ by more than COLOUR_TOLERANCE of full scale (a red
  mask) raises `MaskFileError` naming the file and the expected form, rather than becoming "no hole" silently.
- Alpha is ignored (as every reader here always did); a mask whose holes live only in its alpha channel (uniform
  colour, varying transparency) raises, since transparency is not a hole marker here.
`hole_fraction` and `polarity_hint` flag a mask that is more than HOLE_WARNING_RATIO hole: it is more likely drawn
with the other polarity.
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np
from PIL import Image, ImageOps

POLARITIES = ("white_hole", "black_hole")
HOLE_WARNING_RATIO = 0.9  # a mask this much "hole" is more likely drawn with the other convention
COLOUR_TOLERANCE = 1 / 8  # JPEG leaves grey pixels' channels a few levels apart; a colour differs by far more
EXPECTED_FORM = "expected a grey or binary mask, white = hole"


class MaskFileError(ValueError):
  """A mask file or array that cannot be read as a mask (unreadable, coloured, out of range)."""


def _open(path: str) -> np.ndarray:
  """A mask file's samples as a numpy array, keeping its bit depth (PIL's convert('L') would clip 16-bit)."""
  try:
    with Image.open(path) as image:
      image = ImageOps.exif_transpose(image)
      if image.mode in ("P", "PA", "CMYK", "YCbCr", "LAB", "HSV", "La", "RGBa", "RGBX"):
        image = image.convert("RGBA" if "transparency" in image.info or image.mode in ("PA", "La", "RGBa") else "RGB")
      array = np.asarray(image)
  except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as error:
    raise MaskFileError(f"cannot read mask {path!r}: {error}") from None
  if array.dtype.kind in "ui" and array.dtype.itemsize > 1:  # 'I;16' (and 'I' from 16-bit files)
    if array.size and (array.min() < 0 or array.max() > 65535):
      raise MaskFileError(f"mask {path!r}: {array.dtype} samples outside 0..65535; {EXPECTED_FORM}")
    array = array.astype(np.uint16)
  return array


def _levels(array: np.ndarray, name: str) -> np.ndarray:
  """Samples of any supported dtype -> f64 in [0, 1] of full scale."""
  if array.dtype == bool:
    return array.astype(np.float64)
  if array.dtype == np.uint16:
    return array.astype(np.float64) / 65535.0
  if array.dtype.kind in "ui":
    if array.size and (array.min() < 0 or array.max() > 255):
      raise MaskFileError(f"{name}: {array.dtype} values outside 0..255 (use uint16 for 16-bit masks); {EXPECTED_FORM}")
    return array.astype(np.float64) / 255.0
  if array.dtype.kind == "f":
    if not np.isfinite(array).all() or (array.size and (array.min() < 0.0 or array.max() > 1.0)):
      raise MaskFileError(f"{name}: float values must be finite and in [0, 1]; {EXPECTED_FORM}")
    return array.astype(np.float64)
  raise MaskFileError(f"{name}: unsupported dtype {array.dtype}; expected bool, uint8, uint16 or float in [0, 1]")


def grey_levels(source: Any) -> np.ndarray:
  """A mask file or array -> f64[H, W] grey levels in [0, 1] of full scale (alpha dropped, colour refused)."""
  if isinstance(source, (str, os.PathLike)):
    name = f"mask {os.fspath(source)!r}"
    array = _open(os.fspath(source))
  else:
    name = "mask array"
    array = np.asarray(source)
  if array.ndim == 3 and array.shape[-1] in (1, 2, 3, 4):
    channels = _levels(array, name)
    n_colour = 1 if array.shape[-1] <= 2 else 3  # L, LA | RGB, RGBA
    colour = channels[..., :n_colour]
    alpha = channels[..., n_colour] if array.shape[-1] in (2, 4) else None
    spread = colour.max(axis=-1) - colour.min(axis=-1)
    if spread.size and spread.max() > COLOUR_TOLERANCE:
      y, x = np.unravel_index(int(np.argmax(spread)), spread.shape)
      shown = tuple(int(v) for v in array[y, x, :3])
      raise MaskFileError(
        f"{name} has colour (pixel y={y}, x={x} is RGB {shown}); {EXPECTED_FORM} (save it as greyscale)"
      )
    levels = colour.mean(axis=-1)
    if (
      alpha is not None
      and levels.size
      and levels.max() - levels.min() <= COLOUR_TOLERANCE
      and (alpha < 0.5).any()
      and (alpha >= 0.5).any()
    ):
      raise MaskFileError(
        f"{name} is one colour and draws its shape only in transparency, which is not read as "
        f"a hole; {EXPECTED_FORM} (alpha is ignored)"
      )
    return levels
  if array.ndim != 2:
    raise MaskFileError(f"{name}: shape {array.shape} is not [H, W] or [H, W, 1|2|3|4]; {EXPECTED_FORM}")
  return _levels(array, name)


def read_hole(source: Any, *, polarity: str = "white_hole", threshold: float = 0.5) -> np.ndarray:
  """A mask (file path or array: bool/uint8/uint16/float, grey, LA, RGB, RGBA) -> bool[H, W], True = hole.

  Args:
    source: a path (str / PathLike) or an array [H, W] or [H, W, 1|2|3|4].
    polarity: 'white_hole' (grey level > threshold is a hole) or 'black_hole' (the exact inverse).
    threshold: fraction of full scale in (0, 1) that splits anti-aliased edges.
  Raises MaskFileError (a ValueError) naming the file for an unreadable, coloured or out-of-range mask.
  """
  if polarity not in POLARITIES:
    raise ValueError(f"polarity must be one of {POLARITIES}; got {polarity!r}")
  if not 0.0 < threshold < 1.0:
    raise ValueError(f"threshold must be in (0, 1) of full scale; got {threshold}")
  hole = grey_levels(source) > threshold
  return ~hole if polarity == "black_hole" else hole


def hole_fraction(hole: np.ndarray) -> float:
  """Fraction of True (hole) entries of a bool hole mask; 0.0 for an empty one."""
  hole = np.asarray(hole, bool)
  return float(hole.mean()) if hole.size else 0.0


def polarity_hint(hole: np.ndarray, name: str = "the mask", polarity: str = "white_hole") -> str | None:
  """A warning line when more than HOLE_WARNING_RATIO of `hole` (read with `polarity`) is hole, else None: such a
  mask is more likely drawn with the other polarity."""
  ratio = hole_fraction(hole)
  if ratio <= HOLE_WARNING_RATIO:
    return None
  if polarity == "black_hole":
    return (
      f"{name} marks {ratio:.0%} of the image as hole (black = hole, as asked); if black marks the pixels to "
      "keep, drop --invert_mask (polarity='white_hole')"
    )
  return (
    f"{name} marks {ratio:.0%} of the image as hole (white = hole); if white marks the pixels to keep, "
    "pass --invert_mask (polarity='black_hole')"
  )
