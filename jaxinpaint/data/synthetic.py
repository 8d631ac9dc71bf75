"""Procedural training images: the dead-leaves model (numpy, seeded by the caller's generator).

Dead leaves (Matheron 1968; Lee, Mumford & Huang 2001) stack opaque discs of random colour whose radii follow
a power law, density r^-alpha. With alpha = 3 every octave of radius covers the same area, so the images are
scale invariant with occlusion edges at every scale, the statistics that make natural photos hard to inpaint
beyond a smooth interpolation. Image restoration networks trained on them transfer to real photos (Achddou,
Gousseau & Ladjal, "Synthetic images as a regularity prior for image restoration neural networks", SSVM 2021);
here they are an unlimited supply of training crops for the offline demo, whose photos are few
(`config.data.dead_leaves`, the fraction of training crops drawn from this module).
"""

from __future__ import annotations

import numpy as np

ALPHA = 3.0  # radius density r^-alpha: scale invariant at 3
MAX_DISCS = 4000  # cap on the discs one image draws; what they leave uncovered gets a background colour
SUPERSAMPLE = 2  # drawn at twice the size and averaged 2x2: anti-aliased edges, as in a resized photo


def power_law_radius(rng: np.random.Generator, r_min: float, r_max: float, alpha: float = ALPHA) -> float:
  """A radius in [r_min, r_max] with density proportional to r^-alpha (alpha != 1), by inverting its CDF."""
  a = 1.0 - alpha
  u = rng.random()
  return float((r_min**a + u * (r_max**a - r_min**a)) ** (1.0 / a))


def leaf_colour(rng: np.random.Generator) -> np.ndarray:
  """An RGB colour in [0, 1]: uniform luma, small chroma (photos are mostly desaturated), clipped."""
  luma = rng.random()
  chroma = rng.normal(0.0, 0.08, 2)
  # BT.601 YCbCr to RGB, with Cb and Cr in [-0.5, 0.5].
  rgb = np.array(
    [luma + 1.402 * chroma[1], luma - 0.344136 * chroma[0] - 0.714136 * chroma[1], luma + 1.772 * chroma[0]]
  )
  return np.clip(rgb, 0.0, 1.0)


def dead_leaves(rng: np.random.Generator, size: int, *, r_min: float = 3.0, r_max: float | None = None) -> np.ndarray:
  """A size x size uint8 RGB dead-leaves image, all drawn from `rng`.

  Discs (radii in pixels of the output, power law on [r_min, r_max], r_max defaulting to 2 * `size`) are laid
  front to back, each covering only what the discs before it left open, until the image is covered or
  MAX_DISCS are laid. Each disc has a flat colour plus a linear shading ramp (a lit surface, not a poster);
  the image is drawn at SUPERSAMPLE times the size and box-filtered down.
  """
  if size <= 0:
    raise ValueError(f"dead_leaves size must be positive, got {size}")
  r_max = float(2 * size if r_max is None else r_max)
  if not 0.0 < r_min <= r_max:
    raise ValueError(f"dead_leaves needs 0 < r_min <= r_max, got r_min={r_min}, r_max={r_max}")
  side = size * SUPERSAMPLE
  canvas = np.zeros((side, side, 3), np.float32)
  open_ = np.ones((side, side), bool)
  remaining = side * side
  for _ in range(MAX_DISCS):
    radius = power_law_radius(rng, r_min, r_max) * SUPERSAMPLE
    cy, cx = rng.uniform(-radius, side + radius, 2)
    top, bottom = max(0, int(cy - radius)), min(side, int(np.ceil(cy + radius)) + 1)
    left, right = max(0, int(cx - radius)), min(side, int(np.ceil(cx + radius)) + 1)
    colour = leaf_colour(rng)
    ramp = rng.normal(0.0, 0.1, (2, 1)) / radius  # change of colour per pixel along y and x, up to ~ +-0.1
    if top >= bottom or left >= right:
      continue
    yy, xx = np.mgrid[top:bottom, left:right]
    dy, dx = yy - cy, xx - cx
    disc = (dy * dy + dx * dx <= radius * radius) & open_[top:bottom, left:right]
    if not disc.any():
      continue
    shade = (ramp[0] * dy[disc] + ramp[1] * dx[disc])[:, None]
    canvas[top:bottom, left:right][disc] = colour + shade
    open_[top:bottom, left:right][disc] = False
    remaining -= int(disc.sum())
    if remaining == 0:
      break
  if remaining:
    canvas[open_] = leaf_colour(rng)
  canvas = canvas.reshape(size, SUPERSAMPLE, size, SUPERSAMPLE, 3).mean(axis=(1, 3))
  return np.clip(np.round(canvas * 255.0), 0, 255).astype(np.uint8)


class DeadLeavesSource:
  """`count` fixed dead-leaves images of `size` px, image i drawn from its own generator (`seed`, i): the demo's
  `data.eval_split='dead_leaves'`, new images from the distribution `data.dead_leaves` trains on (a diagnostic of
  whether a net learns that distribution at all, apart from how it transfers to photos)."""

  def __init__(self, count: int, size: int, seed: int = 2024):
    if count <= 0 or size <= 0:
      raise ValueError(f"DeadLeavesSource needs a positive count and size; got count={count}, size={size}")
    self.count, self.size, self.seed = count, size, seed
    self._images = [dead_leaves(np.random.default_rng([seed, i]), size) for i in range(count)]

  def __len__(self) -> int:
    return self.count

  def __getitem__(self, index: int) -> np.ndarray:
    return self._images[index]

  def __repr__(self) -> str:
    return f"DeadLeavesSource(count={self.count}, size={self.size})"
