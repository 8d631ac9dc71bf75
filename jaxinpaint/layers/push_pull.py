"""Push-pull hole filling: a parameter-free pyramid interpolation (the classical fill the demo U-Net corrects).

Push: halve the known pixels and their weight by 2x2 sums, `x_{l+1} = sum(x_l * m_l) / sum(m_l)`,
`m_{l+1} = min(sum(m_l), 1)`, while both sides are even. Pull: from the coarsest level down, each pixel keeps its
own value where it is known and takes the coarser level's fill (nearest x2, then a 3x3 mean) where it is not;
a partly known pixel blends the two by its weight. Known pixels come back exactly.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np


def _window_counts(n: int) -> np.ndarray:
  """How many of the 3 taps of a centred window lie inside a length-n axis, per position."""
  return np.minimum(np.arange(n), 1) + 1 + np.minimum(n - 1 - np.arange(n), 1)


def _box3(x: jnp.ndarray) -> jnp.ndarray:
  """3x3 mean over the pixels inside the image (border windows average fewer pixels): f32[B, H, W, C]."""
  total = jax.lax.reduce_window(x, 0.0, jax.lax.add, (1, 3, 3, 1), (1, 1, 1, 1), "SAME")
  # Counts from numpy at trace time: XLA would spend seconds constant-folding a window sum of ones.
  count = np.outer(_window_counts(x.shape[1]), _window_counts(x.shape[2])).astype(np.float32)
  return total / count[None, :, :, None]


def push_pull_fill(image: jnp.ndarray, valid: jnp.ndarray) -> jnp.ndarray:
  """image f32[B, H, W, C] (holes may hold anything), valid f32[B, H, W, 1] in [0, 1] (1 = known) ->
  f32[B, H, W, C]: known pixels unchanged, holes interpolated from the known ones. An image with no known pixel
  comes back as zeros."""
  image = jnp.asarray(image, jnp.float32)
  valid = jnp.asarray(valid, jnp.float32)
  if not all(isinstance(d, int) for d in image.shape[1:3]):  # a symbolic H or W would silently end the pyramid
    raise ValueError(
      f"push_pull_fill needs concrete image sizes (its pyramid depth depends on them); got {image.shape}"
    )
  levels = []
  x, m = image, valid  # x: the level's mean value where m > 0 (anything where m = 0)
  while x.shape[1] % 2 == 0 and x.shape[2] % 2 == 0 and min(x.shape[1:3]) > 1:
    levels.append((x, m))
    b, h, w, c = x.shape
    xs = (x * m).reshape(b, h // 2, 2, w // 2, 2, c).sum((2, 4))
    ms = m.reshape(b, h // 2, 2, w // 2, 2, 1).sum((2, 4))
    x, m = xs / jnp.maximum(ms, 1e-8), jnp.minimum(ms, 1.0)
  fill = jnp.where(m > 0, x, 0.0)
  for x, m in reversed(levels):
    coarse = _box3(jnp.repeat(jnp.repeat(fill, 2, axis=1), 2, axis=2))
    fill = m * x + (1.0 - m) * coarse
  return fill
