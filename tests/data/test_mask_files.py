"""The one mask reader: white = hole at every bit depth and layout, anti-aliased edges cut at the threshold, colour
refused in one line naming the file, black_hole the exact inverse, and the training mask folder reading the same."""

import numpy as np
import pytest
from PIL import Image

from jaxinpaint.data import mask_files, masks
from jaxinpaint.data.mask_files import MaskFileError, read_hole
from helpers import write_png16  # tests/helpers.py


def soft_mask(h=24, w=40, seed=0):
  """Grey levels in [0, 1] with anti-aliased edges: a blurred free-form hole."""
  hole = masks.free_form(np.random.default_rng(seed), h, w) < 0.5
  level = hole.astype(np.float64)
  for axis in (0, 1):
    level = (np.roll(level, 1, axis) + 2 * level + np.roll(level, -1, axis)) / 4
  return 0.9 * level + 0.03  # no level sits on the 0.5 threshold, so 8/16-bit rounding cannot flip one


def test_every_dtype_and_layout_reads_the_same_hole():
  level = soft_mask()
  expected = level > 0.5
  u8 = np.round(level * 255).astype(np.uint8)
  u16 = np.round(level * 65535).astype(np.uint16)
  forms = {
    "float": level,
    "float32": level.astype(np.float32),
    "bool": expected,
    "uint8": u8,
    "uint16": u16,
    "grey1": u8[..., None],
    "LA": np.stack([u8, np.full_like(u8, 255)], -1),
    "RGB": np.stack([u8] * 3, -1),
    "RGBA": np.stack([u8] * 3 + [np.full_like(u8, 255)], -1),
    "RGB16": np.stack([u16] * 3, -1),
  }
  for name, form in forms.items():
    np.testing.assert_array_equal(read_hole(form), expected, err_msg=name)
    np.testing.assert_array_equal(read_hole(form, polarity="black_hole"), ~expected, err_msg=name)


def test_files_at_8_and_16_bits_read_like_the_array(tmp_path):
  level = soft_mask(seed=1)
  expected = level > 0.5
  u8, u16 = np.round(level * 255).astype(np.uint8), np.round(level * 65535).astype(np.uint16)
  Image.fromarray(u8).save(tmp_path / "grey.png")
  Image.fromarray(np.stack([u8] * 3, -1)).save(tmp_path / "rgb.png")
  Image.fromarray(u8).convert("P").save(tmp_path / "palette.png")
  Image.fromarray(u8 > 127).save(tmp_path / "binary.png")
  Image.fromarray(np.stack([u8] * 3, -1)).save(tmp_path / "grey_as_rgb.jpg", quality=75)  # chroma noise
  for c, name in ((1, "grey16.png"), (2, "la16.png"), (3, "rgb16.png"), (4, "rgba16.png")):
    channels = [u16] * (1 if c <= 2 else 3) + [np.full_like(u16, 65535)] * (c in (2, 4))
    write_png16(tmp_path / name, np.stack(channels, -1) if c > 1 else u16)
  with Image.open(tmp_path / "grey16.png") as image:
    assert image.mode == "I;16"  # the case PIL's convert('L') clips to all white
  for name in ("grey.png", "rgb.png", "palette.png", "binary.png", "grey16.png", "la16.png", "rgb16.png", "rgba16.png"):
    np.testing.assert_array_equal(read_hole(tmp_path / name), expected, err_msg=name)
    np.testing.assert_array_equal(read_hole(str(tmp_path / name), polarity="black_hole"), ~expected, err_msg=name)
  jpeg = read_hole(tmp_path / "grey_as_rgb.jpg")
  assert (jpeg != expected).mean() < 0.02  # JPEG moves a few edge pixels, nothing else


def test_threshold_cuts_anti_aliased_edges_at_that_fraction_of_full_scale():
  ramp = np.linspace(0.0, 1.0, 101)[None, :]
  for threshold in (0.1, 0.5, 0.9):
    np.testing.assert_array_equal(read_hole(ramp, threshold=threshold), ramp > threshold)
    u16 = np.round(ramp * 65535).astype(np.uint16)
    np.testing.assert_array_equal(read_hole(u16, threshold=threshold), u16 / 65535 > threshold)
  with pytest.raises(ValueError, match=r"threshold must be in \(0, 1\)"):
    read_hole(ramp, threshold=128)
  with pytest.raises(ValueError, match="polarity must be one of"):
    read_hole(ramp, polarity="white")


def test_coloured_and_malformed_masks_raise_one_line_naming_the_file(tmp_path):
  red = np.zeros((16, 16, 3), np.uint8)
  red[4:12, 4:12, 0] = 255
  Image.fromarray(red).save(tmp_path / "red.png")
  with pytest.raises(
    MaskFileError,
    match=r"mask '.*red.png' has colour .*RGB \(255, 0, 0\).*grey or binary.*"
    r"white = hole",
  ) as caught:
    read_hole(tmp_path / "red.png")
  assert isinstance(caught.value, ValueError) and "\n" not in str(caught.value)
  with pytest.raises(MaskFileError, match="mask array has colour"):
    read_hole(np.concatenate([red, np.full((16, 16, 1), 255, np.uint8)], -1))
  shape_in_alpha = np.zeros((16, 16, 4), np.uint8)
  shape_in_alpha[4:12, 4:12, 3] = 255
  Image.fromarray(shape_in_alpha).save(tmp_path / "alpha.png")
  with pytest.raises(MaskFileError, match="only in transparency"):
    read_hole(tmp_path / "alpha.png")
  (tmp_path / "broken.png").write_bytes(b"not a png")
  with pytest.raises(MaskFileError, match="cannot read mask '.*broken.png'"):
    read_hole(tmp_path / "broken.png")
  for bad, pattern in (
    (np.full((4, 4), 2.0), r"float values must be finite and in \[0, 1\]"),
    (np.full((4, 4), np.nan), "finite"),
    (np.full((4, 4), 300), "outside 0..255"),
    (np.zeros((2, 4, 4, 1)), "is not .H, W."),
  ):
    with pytest.raises(MaskFileError, match=pattern):
      read_hole(bad)


def test_hole_fraction_and_polarity_hint():
  hole = np.zeros((10, 10), bool)
  hole[:9, :] = True
  assert mask_files.hole_fraction(hole) == 0.9 and mask_files.polarity_hint(hole) is None  # 90 % is not more
  hole[9, :5] = True
  assert mask_files.hole_fraction(hole) == 0.95
  assert "95% of the image as hole" in mask_files.polarity_hint(hole, "mask 'm.png'")
  assert mask_files.HOLE_WARNING_RATIO == 0.9


def test_training_mask_folder_reads_with_the_same_rule(tmp_path):
  level = soft_mask(32, 32, seed=2)
  write_png16(tmp_path / "a16.png", np.round(level * 65535).astype(np.uint16))
  red = np.zeros((32, 32, 3), np.uint8)
  red[..., 0] = 255
  Image.fromarray(red).save(tmp_path / "b_red.png")
  folder = masks.MaskFolder(tmp_path, 32, 32, augment=False)
  valids = [folder(np.random.default_rng(seed)) for seed in range(6)]
  for valid in valids:  # the red file is skipped, the 16-bit one read at its true levels (not all hole)
    np.testing.assert_array_equal(valid < 0.5, level > 0.5)
  assert folder.skipped == [str(tmp_path / "b_red.png")]
