"""Sample grids as in seed 002's figures: target | mask | input | output | composite | |error| heatmap."""

from __future__ import annotations

import os

import numpy as np
from matplotlib import colormaps
from PIL import Image

from jaxinpaint.imaging import to_uint8  # visualize.to_uint8: what its callers use

GRID_COLUMNS = ("target", "mask", "input", "output", "composite", "error")


def error_heatmap(target: np.ndarray, output: np.ndarray) -> np.ndarray:
  """|target - output| averaged over channels, scaled to the image's max error, coloured with 'inferno'.

  target, output: f32[H, W, 3] in [-1, 1] -> uint8[H, W, 3].
  """
  err = np.abs(np.asarray(target, np.float32) - np.asarray(output, np.float32)).mean(-1) / 2.0
  err = err / max(float(err.max()), 1e-6)
  return (colormaps["inferno"](err)[..., :3] * 255).round().astype(np.uint8)


def sample_grid(
  image: np.ndarray, valid: np.ndarray, output: np.ndarray, max_rows: int = 6, pad: int = 2
) -> np.ndarray:
  """One row per example, the columns of `GRID_COLUMNS`.

  image, output: f32[B, H, W, 3] in [-1, 1]; valid: f32[B, H, W, 1] (1 = known). Returns uint8[rows, cols, 3];
  holes show as white in the mask column and as grey in the input column.
  """
  image, valid, output = (np.asarray(a, np.float32) for a in (image, valid, output))
  rows = []
  for i in range(min(max_rows, image.shape[0])):
    m = valid[i]
    comp = m * image[i] + (1 - m) * output[i]
    tiles = [
      to_uint8(image[i]),
      np.repeat(to_uint8(1.0 - 2.0 * m), 3, axis=-1),
      to_uint8(m * image[i]),
      to_uint8(output[i]),
      to_uint8(comp),
      error_heatmap(image[i], comp),
    ]
    tiles = [np.pad(t, ((pad, pad), (pad, pad), (0, 0)), constant_values=255) for t in tiles]
    rows.append(np.concatenate(tiles, axis=1))
  return np.concatenate(rows, axis=0)


STAGE_ORDER = ("coarse", "output", "composite", "attention")  # columns of `stage_grid`, others after these


def stage_grid(
  image: np.ndarray, valid: np.ndarray, stages: dict[str, np.ndarray], max_rows: int = 6, pad: int = 2
) -> np.ndarray:
  """One row per example: target | input | each image of `stages` (e.g. coarse | output | composite | attention).

  image: f32[B, H, W, 3], stages: name -> f32[B, H, W, 3] in [-1, 1]; valid f32[B, H, W, 1]. A 'composite' of
  'output' and the known pixels is added when `stages` has an 'output' and no 'composite'. Columns follow
  STAGE_ORDER, then the remaining names alphabetically. Returns uint8[rows, cols, 3].
  """
  image, valid = np.asarray(image, np.float32), np.asarray(valid, np.float32)
  stages = {k: np.asarray(v, np.float32) for k, v in stages.items()}
  if "output" in stages and "composite" not in stages:
    stages["composite"] = valid * image + (1 - valid) * stages["output"]
  names = [k for k in STAGE_ORDER if k in stages] + sorted(k for k in stages if k not in STAGE_ORDER)
  rows = []
  for i in range(min(max_rows, image.shape[0])):
    tiles = [to_uint8(image[i]), to_uint8(valid[i] * image[i])] + [to_uint8(stages[k][i]) for k in names]
    tiles = [np.pad(t, ((pad, pad), (pad, pad), (0, 0)), constant_values=255) for t in tiles]
    rows.append(np.concatenate(tiles, axis=1))
  return np.concatenate(rows, axis=0)


def save_png(array: np.ndarray, path: str) -> str:
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  tmp = path + ".tmp.png"
  Image.fromarray(np.asarray(array, np.uint8)).save(tmp)
  os.replace(tmp, path)  # never leave a half-written image behind
  return path
