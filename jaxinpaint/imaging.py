"""Image conversions shared by models, losses, metrics and writers: the composite and the range changes.

Images are f32 in [-1, 1] inside models, [0, 1] for metrics and uint8 in files; `valid` is f32[B, H, W, 1],
1 = known pixel, 0 = hole. `composite` and `to01` are plain arithmetic: they take jax or numpy arrays, and this
module imports no jax (numpy-only callers such as `baselines` stay light).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Union

import numpy as np

if TYPE_CHECKING:
  import jax

Array = Union["jax.Array", np.ndarray]


def composite(image: Array, output: Array, valid: Array) -> Array:
  """Known pixels from `image`, holes from `output`: valid * image + (1 - valid) * output (x = M * y + (1 - M) * G(z)
  in the DCGAN completion paper).

  image, output: f32[B, H, W, C]; valid: f32[B, H, W, 1] (1 = known).
  """
  return valid * image + (1.0 - valid) * output


def to01(x: Array) -> Array:
  """[-1, 1] -> [0, 1], not clipped (losses need its gradient everywhere; clip first for metrics)."""
  return (x + 1.0) / 2.0


def to_uint8(x: np.ndarray) -> np.ndarray:
  """f32 in [-1, 1] -> uint8, clipped (exact for values that came from uint8 / 127.5 - 1)."""
  return np.round((np.clip(np.asarray(x, np.float32), -1.0, 1.0) + 1.0) * 127.5).astype(np.uint8)
