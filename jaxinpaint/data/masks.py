"""Seeded numpy mask generators: boxes, DeepFill v2 brush strokes, LaMa masks, lines, folders of mask files.

Every generator takes `rng: np.random.Generator` and the size and returns `valid: f32[H, W]` with 1 = known
pixel, 0 = hole (the project's convention; mask files on disk are white = hole and are inverted on read).
The same generator state gives the same mask; nothing here touches numpy's global RNG.

Size scaling. The papers give their parameters at 256 x 256. Here:
- lengths along one axis (box heights/widths, box margins) scale by that axis: `h / 256` or `w / 256`, so a
  box keeps its share of the image on non-square sizes;
- isotropic lengths (stroke widths, stroke segment lengths, circle radii) scale by `sqrt(h * w) / 256`;
- the DeepFill v2 stroke length keeps the reference's own scale `R = sqrt(h^2 + w^2) / 8`.

Strokes are drawn as capsules (a thick segment with round ends: all pixel centres within width / 2 of the
segment), which is exactly the reference's "line plus a filled circle at every vertex", without OpenCV.

All `*_range` count and size arguments are inclusive `(low, high)`.

Hole ratios measured over 200 draws per generator (seeds 0..199), `hole_ratio`, mean [min, max]:

    generator        64 x 64               256 x 256
    centre           0.25 exactly          0.25 exactly
    random_box       0.26 [0.14, 0.39]     0.26 [0.14, 0.39]    (0.251 over 5000 draws)
    random_boxes     0.13 [0.02, 0.30]     0.13 [0.02, 0.29]
    free_form        0.16 [0.02, 0.44]     0.16 [0.02, 0.44]
    deepfill_v2      0.31 [0.16, 0.52]     0.31 [0.17, 0.52]    (box alone: 0.19 [0.14, 0.25])
    lines_circles    0.17 [0.01, 0.35]     0.16 [0.01, 0.34]
    random_lines     0.15 [0.01, 0.31]     0.15 [0.01, 0.31]
    lama_thin        0.28 [0.04, 0.49]     0.28 [0.04, 0.49]
    lama_medium      0.23 [0.00, 0.46]     0.23 [0.01, 0.45]
    lama_thick       0.26 [0.00, 0.50]     0.26 [0.01, 0.50]
    lama (training)  0.36 [0.01, 0.89]     0.35 [0.01, 0.89]    (never rejected, as LaMa's training generator)

(tests/data/test_masks.py checks looser bounds around these.)
"""

from __future__ import annotations

import functools
import inspect
import math
import os
from collections.abc import Callable, Sequence

import numpy as np
from absl import logging
from PIL import Image

from jaxinpaint.data import mask_files

__all__ = [
  "HOLE_RATIO_BUCKETS",
  "LAMA_SETTINGS",
  "MASK_EXTENSIONS",
  "MASK_GENERATORS",
  "MaskFolder",
  "bucket_of",
  "centre_box",
  "deepfill_v2_box",
  "deepfill_v2_mask",
  "folder_mask",
  "free_form",
  "hole_ratio",
  "lama_mask",
  "lines_and_circles",
  "make_mask_fn",
  "mask_in_bucket",
  "random_box",
  "random_boxes",
  "random_lines",
  "union",
]

MaskFn = Callable[[np.random.Generator, int, int], np.ndarray]

# Evaluation buckets by hole ratio, as in the partial-convolution paper's test masks (half-open [low, high)).
HOLE_RATIO_BUCKETS = [(0.0, 0.1), (0.1, 0.2), (0.2, 0.3), (0.3, 0.4), (0.4, 0.5), (0.5, 0.6)]

MASK_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp")

# LaMa's eval mask settings at 256 px (configs random_{thin,medium,thick}_256): strokes (count, max width,
# max segment length) and, with weight `box_weight` against strokes' 1, boxes (count, side, margin).
LAMA_SETTINGS = {
  "thin": dict(strokes=(4, 50), max_width=10, max_len=40, box_weight=0.0),
  "medium": dict(
    strokes=(4, 5), max_width=50, max_len=100, box_weight=0.3, boxes=(1, 5), box_side=(10, 50), box_margin=0
  ),
  "thick": dict(
    strokes=(1, 5), max_width=100, max_len=200, box_weight=0.3, boxes=(1, 3), box_side=(30, 150), box_margin=10
  ),
  # LaMa's training mix (abl-04-256-mh-dist.yaml as released): irregular and box generators at proba 1 each
  "train": dict(
    strokes=(1, 5), max_width=100, max_len=200, box_weight=1.0, boxes=(1, 4), box_side=(30, 150), box_margin=10
  ),
}


# ----------------------------------------------------------------------------------------------- helpers


def _check(rng: np.random.Generator | None, h: int, w: int, need_rng: bool = True) -> None:
  """Raises ValueError for a non-positive size or a missing/legacy RNG."""
  if not all(isinstance(v, (int, np.integer)) and not isinstance(v, bool) and v >= 1 for v in (h, w)):
    raise ValueError(f"mask size must be positive integers, got h={h}, w={w}")
  if need_rng and not isinstance(rng, np.random.Generator):
    raise ValueError(f"rng must be a np.random.Generator (np.random.default_rng(seed)), got {type(rng)}")


def _iso_scale(h: int, w: int) -> float:
  """Scale for isotropic lengths given at 256 px: the geometric-mean side over 256."""
  return math.sqrt(h * w) / 256.0


def _randint(rng: np.random.Generator, low_high: Sequence[int]) -> int:
  """Uniform integer in the inclusive range (low, high)."""
  low, high = int(low_high[0]), int(low_high[1])
  if high < low:
    raise ValueError(f"range must be (low, high) with low <= high, got {tuple(low_high)}")
  return int(rng.integers(low, high + 1))


def _to_valid(hole: np.ndarray) -> np.ndarray:
  """bool hole[H, W] -> f32 valid[H, W] (1 = known, 0 = hole)."""
  return np.logical_not(hole).astype(np.float32)


def _stamp_segment(hole: np.ndarray, y0: float, x0: float, y1: float, x1: float, width: float) -> None:
  """Marks in place every pixel whose centre lies within width / 2 of segment (y0, x0)-(y1, x1).

  The capsule is a thick line with round caps; with y0, x0 == y1, x1 it is a filled disk. Coordinates are
  (row, column) with pixel centres at integers. Half-width is at least 0.5 so thin lines stay connected.
  """
  h, w = hole.shape
  r = max(0.5 * float(width), 0.5)
  top = max(int(math.floor(min(y0, y1) - r)), 0)
  bottom = min(int(math.ceil(max(y0, y1) + r)) + 1, h)
  left = max(int(math.floor(min(x0, x1) - r)), 0)
  right = min(int(math.ceil(max(x0, x1) + r)) + 1, w)
  if top >= bottom or left >= right:
    return
  yy = np.arange(top, bottom, dtype=np.float64)[:, None] - y0
  xx = np.arange(left, right, dtype=np.float64)[None, :] - x0
  dy, dx = y1 - y0, x1 - x0
  length2 = dy * dy + dx * dx
  # Closest point on the segment: projection parameter t clipped to [0, 1].
  t = np.clip((yy * dy + xx * dx) / length2, 0.0, 1.0) if length2 > 0 else 0.0
  dist2 = (yy - t * dy) ** 2 + (xx - t * dx) ** 2
  hole[top:bottom, left:right] |= dist2 <= r * r


def _stamp_polyline(hole: np.ndarray, points: Sequence[tuple[float, float]], width: float) -> None:
  """Capsules along consecutive (row, col) points: a brush stroke with round joints."""
  if len(points) == 1:
    _stamp_segment(hole, *points[0], *points[0], width)
  for (y0, x0), (y1, x1) in zip(points[:-1], points[1:]):
    _stamp_segment(hole, y0, x0, y1, x1, width)


def _box_hole(
  rng: np.random.Generator, h: int, w: int, size_range: Sequence[float], margin: float = 0.0
) -> tuple[int, int, int, int]:
  """A box (top, left, height, width), sides drawn as fractions of each axis, fully inside the margins."""
  lo, hi = float(size_range[0]), float(size_range[1])
  if not 0.0 < lo <= hi <= 1.0:
    raise ValueError(f"size_range must be fractions 0 < low <= high <= 1, got {tuple(size_range)}")
  m_h, m_w = int(round(margin * h)), int(round(margin * w))
  room_h, room_w = max(h - 2 * m_h, 1), max(w - 2 * m_w, 1)
  bh = min(max(_randint(rng, (round(lo * h), round(hi * h))), 1), room_h)
  bw = min(max(_randint(rng, (round(lo * w), round(hi * w))), 1), room_w)
  top = min(m_h, h - bh) + int(rng.integers(0, room_h - bh + 1))
  left = min(m_w, w - bw) + int(rng.integers(0, room_w - bw + 1))
  return top, left, bh, bw


# -------------------------------------------------------------------------------------------- boxes


def centre_box(h: int, w: int, box: Sequence[int] | None = None, rng: np.random.Generator | None = None) -> np.ndarray:
  """Centred rectangular hole. valid: f32[h, w].

  Args:
    h, w: mask size.
    box: hole (height, width) in pixels; default (h // 2, w // 2), i.e. 128 x 128 at 256 px (25 % hole).
    rng: unused (deterministic); accepted so the signature matches the random generators.
  """
  del rng
  _check(None, h, w, need_rng=False)
  bh, bw = (h // 2, w // 2) if box is None else (int(box[0]), int(box[1]))
  if not (0 < bh <= h and 0 < bw <= w):
    raise ValueError(f"centre box {(bh, bw)} must be positive and fit in the mask {(h, w)}")
  hole = np.zeros((h, w), bool)
  top, left = (h - bh) // 2, (w - bw) // 2
  hole[top : top + bh, left : left + bw] = True
  return _to_valid(hole)


def _centre(rng: np.random.Generator, h: int, w: int, box: Sequence[int] | None = None) -> np.ndarray:
  """`centre_box` with the registry's (rng, h, w) signature."""
  return centre_box(h, w, box=box, rng=rng)


def random_box(
  rng: np.random.Generator, h: int, w: int, size_range: Sequence[float] = (96 / 256, 160 / 256)
) -> np.ndarray:
  """One box of random size at a random position fully inside the image. valid: f32[h, w].

  Height and width are drawn independently as fractions of h and w; the default is seed 003's
  128 +- 32 px at 256 px (hole ratio 0.14..0.39, mean 0.25).
  """
  _check(rng, h, w)
  top, left, bh, bw = _box_hole(rng, h, w, size_range)
  hole = np.zeros((h, w), bool)
  hole[top : top + bh, left : left + bw] = True
  return _to_valid(hole)


def random_boxes(
  rng: np.random.Generator,
  h: int,
  w: int,
  n_range: Sequence[int] = (1, 3),
  size_range: Sequence[float] = (32 / 256, 96 / 256),
) -> np.ndarray:
  """Union of n ~ U{n_range} random boxes, sides as fractions of each axis. valid: f32[h, w]."""
  _check(rng, h, w)
  hole = np.zeros((h, w), bool)
  for _ in range(_randint(rng, n_range)):
    top, left, bh, bw = _box_hole(rng, h, w, size_range)
    hole[top : top + bh, left : left + bw] = True
  return _to_valid(hole)


# ---------------------------------------------------------------------------------------- strokes


def free_form(
  rng: np.random.Generator,
  h: int,
  w: int,
  strokes: Sequence[int] = (1, 3),
  vertices: Sequence[int] = (4, 11),
  width: Sequence[float] = (12.0, 40.0),
  mean_angle: float = 2 * math.pi / 5,
  angle_range: float = 2 * math.pi / 15,
) -> np.ndarray:
  """DeepFill v2 free-form brush strokes (Yu et al. 2019, `brush_stroke_mask`). valid: f32[h, w].

  Per stroke: vertices ~ U{vertices} (reference randint(4, 12)); angle bounds
  mean_angle -+ U(0, angle_range); each segment's direction a ~ U(bounds), every other one 2 pi - a;
  segment length ~ N(R, R / 2) clipped to [0, 2R], R = sqrt(h^2 + w^2) / 8; vertices clipped to the image
  (x to w, y to h); brush width ~ U(width) * sqrt(h w) / 256; a filled disk at every vertex.
  Strokes ~ U{strokes} (reference randint(1, 4)). Then a left-right and an up-down flip, each with
  probability 1/2 (the reference's flips are no-ops; here they are applied).
  """
  _check(rng, h, w)
  radius = math.sqrt(h * h + w * w) / 8
  scale = _iso_scale(h, w)
  hole = np.zeros((h, w), bool)
  for _ in range(_randint(rng, strokes)):
    n_vertex = _randint(rng, vertices)
    angle_min = mean_angle - rng.uniform(0, angle_range)
    angle_max = mean_angle + rng.uniform(0, angle_range)
    angles = rng.uniform(angle_min, angle_max, size=n_vertex)
    angles[0::2] = 2 * math.pi - angles[0::2]
    y, x = rng.uniform(0, h), rng.uniform(0, w)
    points = [(y, x)]
    for angle in angles:
      length = float(np.clip(rng.normal(radius, radius / 2), 0, 2 * radius))
      # x moves with cos, y with sin, as the reference; each clipped to its own axis.
      x = float(np.clip(x + length * math.cos(angle), 0, w - 1))
      y = float(np.clip(y + length * math.sin(angle), 0, h - 1))
      points.append((y, x))
    _stamp_polyline(hole, points, rng.uniform(width[0], width[1]) * scale)
  if rng.random() < 0.5:
    hole = hole[:, ::-1]
  if rng.random() < 0.5:
    hole = hole[::-1, :]
  return _to_valid(hole)


def deepfill_v2_box(
  rng: np.random.Generator, h: int, w: int, box_fraction: float = 0.5, max_delta: float = 0.25
) -> tuple[int, int, int, int]:
  """The shrunk box of DeepFill v2's training mask as (top, left, height, width).

  Reference (JiahuiYu `inpaint.yml` + `bbox2mask`): a HEIGHT = WIDTH = 128 box at 256 px at a random position
  (margins 0), then each side pair shrinks symmetrically by d ~ randint(MAX_DELTA // 2 + 1) pixels per side,
  MAX_DELTA = 32: sides 96..128, mean box area 112^2 = 0.19 of the image. Both scale with the image: the box
  is box_fraction of each axis and MAX_DELTA is max_delta of the box's side (32 / 128).
  """
  bh, bw = max(int(box_fraction * h), 1), max(int(box_fraction * w), 1)
  top, left = int(rng.integers(0, h - bh + 1)), int(rng.integers(0, w - bw + 1))
  dh = int(rng.integers(0, int(max_delta * bh) // 2 + 1))
  dw = int(rng.integers(0, int(max_delta * bw) // 2 + 1))
  return top + dh, left + dw, bh - 2 * dh, bw - 2 * dw


def deepfill_v2_mask(
  rng: np.random.Generator, h: int, w: int, box_fraction: float = 0.5, max_delta: float = 0.25
) -> np.ndarray:
  """DeepFill v2 training mask: holes of a shrunk random box (`deepfill_v2_box`) OR free-form strokes
  (`free_form`). valid: f32[h, w]."""
  _check(rng, h, w)
  top, left, bh, bw = deepfill_v2_box(rng, h, w, box_fraction, max_delta)
  hole = np.zeros((h, w), bool)
  hole[top : top + bh, left : left + bw] = True
  return np.minimum(_to_valid(hole), free_form(rng, h, w))


def lines_and_circles(
  rng: np.random.Generator, h: int, w: int, n_range: Sequence[int] = (1, 10), width_range: Sequence[float] | None = None
) -> np.ndarray:
  """Seed 003's line / circle / curve masks. valid: f32[h, w].

  n ~ U{n_range} of each: straight lines between two uniform points, filled circles, and elliptical arcs
  (semi-axes up to w / 4, h / 4, random tilt, arc span up to half the ellipse). Line widths and circle radii
  ~ U(width_range); default (3 * s, 0.03 (h + w)) with s = sqrt(h w) / 256, i.e. 3..15 px at 256 px.
  """
  _check(rng, h, w)
  scale = _iso_scale(h, w)
  if width_range is None:
    low = max(3.0 * scale, 1.0)
    width_range = (low, max(low, 0.03 * (h + w)))
  hole = np.zeros((h, w), bool)
  n = _randint(rng, n_range)
  for _ in range(n):
    y0, y1 = rng.uniform(0, h, size=2)
    x0, x1 = rng.uniform(0, w, size=2)
    _stamp_segment(hole, y0, x0, y1, x1, rng.uniform(*width_range))
  for _ in range(n):
    y, x = rng.uniform(0, h), rng.uniform(0, w)
    _stamp_segment(hole, y, x, y, x, 2 * rng.uniform(*width_range))
  for _ in range(n):
    cy, cx = rng.uniform(0, h), rng.uniform(0, w)
    semi_x, semi_y = rng.uniform(1, max(w / 4, 1)), rng.uniform(1, max(h / 4, 1))
    tilt, start = rng.uniform(0, math.pi), rng.uniform(0, 2 * math.pi)
    span = rng.uniform(0, math.pi)
    # Enough points that chords stay within a pixel of the arc.
    t = start + np.linspace(0, span, max(int(span * max(semi_x, semi_y)) + 2, 2))
    ex, ey = semi_x * np.cos(t), semi_y * np.sin(t)
    xs = cx + ex * math.cos(tilt) - ey * math.sin(tilt)
    ys = cy + ex * math.sin(tilt) + ey * math.cos(tilt)
    _stamp_polyline(hole, list(zip(ys, xs)), rng.uniform(*width_range))
  return _to_valid(hole)


def random_lines(
  rng: np.random.Generator, h: int, w: int, n_range: Sequence[int] = (1, 9), width_range: Sequence[float] = (8.0, 20.0)
) -> np.ndarray:
  """Seed 002's random-line masks: n ~ U{n_range} thick segments between uniform points. valid: f32[h, w].

  The seed's recipe draws 1..9 lines of 1..2 px on 32 px images; width_range is given at 256 px (8..20 px)
  and scales by sqrt(h w) / 256.
  """
  _check(rng, h, w)
  scale = _iso_scale(h, w)
  hole = np.zeros((h, w), bool)
  for _ in range(_randint(rng, n_range)):
    y0, y1 = rng.uniform(0, h, size=2)
    x0, x1 = rng.uniform(0, w, size=2)
    _stamp_segment(hole, y0, x0, y1, x1, rng.uniform(*width_range) * scale)
  return _to_valid(hole)


# --------------------------------------------------------------------------------------------- LaMa


def _lama_strokes(
  rng: np.random.Generator, h: int, w: int, strokes: Sequence[int], max_width: int, max_len: int, max_angle: int = 4
) -> np.ndarray:
  """LaMa irregular strokes: per stroke 1..5 segments, turn 0.01 + U{0..max_angle-1} rad (mirrored on odd
  strokes), length 10 + U{0..max_len-1}, width 5 + U{0..max_width-1} (both at 256 px), clipped inside."""
  scale = _iso_scale(h, w)
  hole = np.zeros((h, w), bool)
  for i in range(_randint(rng, strokes)):
    y, x = rng.uniform(0, h), rng.uniform(0, w)
    for _ in range(1 + int(rng.integers(0, 5))):
      angle = 0.01 + int(rng.integers(0, max_angle))
      if i % 2 == 0:
        angle = 2 * math.pi - angle
      length = (10 + int(rng.integers(0, max_len))) * scale
      width = (5 + int(rng.integers(0, max_width))) * scale
      y1 = float(np.clip(y + length * math.cos(angle), 0, h - 1))
      x1 = float(np.clip(x + length * math.sin(angle), 0, w - 1))
      _stamp_segment(hole, y, x, y1, x1, width)
      y, x = y1, x1
  return hole


def lama_mask(
  rng: np.random.Generator, h: int, w: int, kind: str = "thin", max_hole: float = 0.5, max_tries: int = 100
) -> np.ndarray:
  """LaMa-style mask (Suvorov et al. 2022, eval sets random_{thin,medium,thick}_256). valid: f32[h, w].

  Settings in LAMA_SETTINGS (given at 256 px, scaled). As LaMa's MixedMaskGenerator, each draw picks one
  family with weights strokes 1 : boxes `box_weight` (0.3 for medium/thick, so boxes 23 % of the time).
  A mask whose hole ratio exceeds `max_hole` is rejected and redrawn; RuntimeError after max_tries.
  """
  _check(rng, h, w)
  if kind not in LAMA_SETTINGS:
    raise ValueError(f"lama kind must be one of {sorted(LAMA_SETTINGS)}, got {kind!r}")
  cfg = LAMA_SETTINGS[kind]
  p_box = cfg["box_weight"] / (1.0 + cfg["box_weight"])
  ratio = float("nan")
  for _ in range(max_tries):
    if p_box > 0 and rng.random() < p_box:
      hole = np.zeros((h, w), bool)
      side = (cfg["box_side"][0] / 256, min(cfg["box_side"][1] / 256, 1.0))
      for _ in range(_randint(rng, cfg["boxes"])):
        top, left, bh, bw = _box_hole(rng, h, w, side, margin=cfg["box_margin"] / 256)
        hole[top : top + bh, left : left + bw] = True
    else:
      hole = _lama_strokes(rng, h, w, cfg["strokes"], cfg["max_width"], cfg["max_len"])
    ratio = float(hole.mean())
    if ratio <= max_hole:
      return _to_valid(hole)
  raise RuntimeError(
    f"lama_mask(kind={kind!r}, h={h}, w={w}): no mask with hole ratio <= {max_hole} "
    f"in {max_tries} tries (last {ratio:.3f})"
  )


# ------------------------------------------------------------------------------------------ folders


def _resize_nearest(hole: np.ndarray, h: int, w: int) -> np.ndarray:
  """Nearest-neighbour resize by pixel centres (same sampling as PIL NEAREST)."""
  src_h, src_w = hole.shape
  rows = np.minimum(((np.arange(h) + 0.5) * src_h / h).astype(np.int64), src_h - 1)
  cols = np.minimum(((np.arange(w) + 0.5) * src_w / w).astype(np.int64), src_w - 1)
  return hole[rows[:, None], cols[None, :]]


class MaskFolder:
  """Masks from a folder of image files (white = hole), one chosen at random per call.

  Files with extensions MASK_EXTENSIONS are found recursively and sorted by path, so the same seed picks the
  same file on every machine. Files that fail to open are skipped with a warning and listed in `skipped`
  (`num_skipped`); a file that fails to decode at call time is skipped the same way and the next file in
  order is used, so the choice never depends on what this process has read before.

  Call: `folder(rng, h=None, w=None) -> valid: f32[h, w]` (size defaults to the constructor's). With
  `augment`, a random rotation by k * 90 degrees and random left-right / up-down flips come before resizing.
  """

  def __init__(self, path: str | os.PathLike, h: int | None = None, w: int | None = None, augment: bool = True):
    self.path = os.fspath(path)
    self.h, self.w, self.augment = h, w, augment
    if not os.path.isdir(self.path):
      raise ValueError(f"mask folder {self.path!r} does not exist or is not a directory")
    found = []
    for root, dirs, files in os.walk(self.path):
      dirs.sort()
      found += [os.path.join(root, f) for f in files if f.lower().endswith(MASK_EXTENSIONS)]
    self.skipped: list[str] = []
    self.files: list[str] = []
    for f in sorted(found):
      try:
        with Image.open(f) as img:
          img.verify()
        self.files.append(f)
      except Exception as e:  # noqa: BLE001 - any unreadable file is skipped, not fatal
        self._skip(f, e)
    if not self.files:
      raise ValueError(
        f"mask folder {self.path!r} has no readable mask files with extensions "
        f"{MASK_EXTENSIONS} ({len(self.skipped)} unreadable)"
      )

  def _skip(self, path: str, error: Exception) -> None:
    if path not in self.skipped:
      self.skipped.append(path)
    logging.warning("Skipping unreadable mask file %s: %s", path, error)

  @property
  def num_skipped(self) -> int:
    return len(self.skipped)

  def __len__(self) -> int:
    return len(self.files)

  def __repr__(self) -> str:
    return f"MaskFolder(path={self.path!r}, h={self.h}, w={self.w}, augment={self.augment})"

  def __call__(self, rng: np.random.Generator, h: int | None = None, w: int | None = None) -> np.ndarray:
    h = self.h if h is None else h
    w = self.w if w is None else w
    if h is None or w is None:
      raise ValueError(f"{self!r}: give the mask size (h, w) to the constructor or the call")
    _check(rng, h, w)
    index = int(rng.integers(0, len(self.files)))
    if self.augment:
      k, flip_lr, flip_ud = int(rng.integers(0, 4)), rng.random() < 0.5, rng.random() < 0.5
    for offset in range(len(self.files)):
      path = self.files[(index + offset) % len(self.files)]
      try:
        hole = mask_files.read_hole(path)
        break
      except Exception as e:  # noqa: BLE001 - decode errors only show on a full read
        self._skip(path, e)
    else:
      raise ValueError(f"mask folder {self.path!r}: none of its {len(self.files)} files could be read")
    if self.augment:
      hole = np.rot90(hole, k)
      hole = hole[:, ::-1] if flip_lr else hole
      hole = hole[::-1, :] if flip_ud else hole
    return _to_valid(_resize_nearest(hole, h, w))


@functools.lru_cache(maxsize=8)
def _cached_folder(path: str, augment: bool) -> MaskFolder:
  return MaskFolder(path, augment=augment)


def folder_mask(rng: np.random.Generator, h: int, w: int, path: str, augment: bool = True) -> np.ndarray:
  """A random mask from the folder `path` (white = hole) resized to (h, w). valid: f32[h, w].

  The folder is scanned once per process (cached; files added later are not seen), so this picklable
  function suits grain workers.
  """
  return _cached_folder(os.fspath(path), bool(augment))(rng, h, w)


# ----------------------------------------------------------------------------------- ratios, buckets


def union(*valids: np.ndarray) -> np.ndarray:
  """Union of holes (a hole in any mask is a hole): valid = elementwise min. f32, same shape."""
  if not valids:
    raise ValueError("union needs at least one mask")
  shapes = {np.shape(v) for v in valids}
  if len(shapes) != 1:
    raise ValueError(f"union needs masks of one shape, got {sorted(shapes)}")
  return functools.reduce(np.minimum, [np.asarray(v, np.float32) for v in valids])


def hole_ratio(valid: np.ndarray) -> float:
  """Fraction of hole pixels (valid < 0.5) over all entries of `valid` (any shape)."""
  valid = np.asarray(valid)
  if valid.size == 0:
    raise ValueError("hole_ratio of an empty mask")
  return float(np.mean(valid < 0.5))


def bucket_of(ratio: float) -> int | None:
  """Index i with HOLE_RATIO_BUCKETS[i][0] <= ratio < HOLE_RATIO_BUCKETS[i][1]; None above the last."""
  if not 0.0 <= ratio <= 1.0:
    raise ValueError(f"hole ratio must be in [0, 1], got {ratio}")
  for i, (low, high) in enumerate(HOLE_RATIO_BUCKETS):
    if low <= ratio < high:
      return i
  return None


def mask_in_bucket(
  rng: np.random.Generator,
  h: int,
  w: int,
  bucket: int | Sequence[float],
  generator: MaskFn = free_form,
  max_tries: int = 1000,
) -> np.ndarray:
  """A mask whose hole ratio lies in a bucket [low, high), built from generator draws. valid: f32[h, w].

  Starts from one draw; while the ratio is below the bucket another draw's holes are added (more strokes);
  above it the last added draw is removed, or with a single draw the mask restarts from a fresh one. Each
  draw counts as a try; RuntimeError after max_tries.

  Args:
    bucket: an index into HOLE_RATIO_BUCKETS or a (low, high) pair.
    generator: fn(rng, h, w) -> valid; default free-form strokes.
  """
  _check(rng, h, w)
  if isinstance(bucket, (int, np.integer)):
    if not 0 <= bucket < len(HOLE_RATIO_BUCKETS):
      raise ValueError(f"bucket index must be in [0, {len(HOLE_RATIO_BUCKETS)}), got {bucket}")
    bucket = HOLE_RATIO_BUCKETS[bucket]
  low, high = bucket
  if not 0.0 <= low < high <= 1.0:
    raise ValueError(f"bucket must be 0 <= low < high <= 1, got {(low, high)}")
  parts = [generator(rng, h, w)]
  for _ in range(max_tries):
    valid = union(*parts)
    ratio = hole_ratio(valid)
    if low <= ratio < high:
      return valid
    if ratio < low:
      parts.append(generator(rng, h, w))
    elif len(parts) > 1:
      parts.pop()
    else:
      parts = [generator(rng, h, w)]
  raise RuntimeError(
    f"mask_in_bucket: no {h}x{w} mask with hole ratio in [{low}, {high}) after "
    f"{max_tries} tries (last {ratio:.3f}); the generator may not reach this bucket"
  )


# ----------------------------------------------------------------------------------------- registry


MASK_GENERATORS: dict[str, Callable[..., np.ndarray]] = {
  "centre": _centre,
  "random_box": random_box,
  "random_boxes": random_boxes,
  "free_form": free_form,
  "deepfill_v2": deepfill_v2_mask,
  "lines_circles": lines_and_circles,
  "random_lines": random_lines,
  "lama_thin": functools.partial(lama_mask, kind="thin"),
  "lama_medium": functools.partial(lama_mask, kind="medium"),
  "lama_thick": functools.partial(lama_mask, kind="thick"),
  "lama": functools.partial(lama_mask, kind="train", max_hole=1.0),  # training masks are never rejected
  "folder": folder_mask,
}


def _union_of(rng: np.random.Generator, h: int, w: int, fns: Sequence[MaskFn]) -> np.ndarray:
  """Draws each generator in order from the same rng and unions their holes."""
  return union(*[fn(rng, h, w) for fn in fns])


def _bind(name: str, kwargs: dict) -> MaskFn:
  """Registry entry `name` with kwargs bound, checked against its signature now rather than at call time."""
  fn = MASK_GENERATORS[name]
  try:
    inspect.signature(fn).bind_partial(None, 1, 1, **kwargs)
  except TypeError as e:
    raise ValueError(f"mask {name!r} does not accept {sorted(kwargs)}: {e}") from None
  if name == "folder":
    if "path" not in kwargs:
      raise ValueError("mask 'folder' needs path=<folder of mask images>")
    _cached_folder(os.fspath(kwargs["path"]), bool(kwargs.get("augment", True)))  # fail early if empty
  return functools.partial(fn, **kwargs) if kwargs else fn


def make_mask_fn(name: str, **kwargs) -> MaskFn:
  """Mask generator by name: fn(rng, h, w) -> valid f32[h, w]; picklable (functions + functools.partial).

  `name` is a key of MASK_GENERATORS, or several joined by '+' for the union of their holes
  ('free_form+random_box'). For a single name kwargs go to the generator; for a union, kwargs are keyed by
  component name, e.g. make_mask_fn('free_form+random_box', random_box={'size_range': (0.25, 0.5)}).
  """
  names = [n.strip() for n in str(name).split("+")]
  unknown = [n for n in names if n not in MASK_GENERATORS]
  if unknown or not names:
    raise ValueError(f"unknown mask kind {name!r}; valid: {sorted(MASK_GENERATORS)} or a '+'-joined union")
  if len(names) == 1:
    return _bind(names[0], kwargs)
  extra = set(kwargs) - set(names)
  if extra:
    raise ValueError(f"union mask {name!r} takes kwargs keyed by its components {names}, got {sorted(extra)}")
  fns = tuple(_bind(n, dict(kwargs.get(n, {}))) for n in names)
  return functools.partial(_union_of, fns=fns)
