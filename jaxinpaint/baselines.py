"""Classical inpainting peers: what a user would pick without a trained network, scored in the same harness.

- `telea`: OpenCV's fast-marching method (Telea 2004, "An image inpainting technique based on the fast
  marching method"): holes are filled from the boundary inwards, each pixel a weighted average of its known
  neighbours within `radius`.
- `navier_stokes`: OpenCV's fluid-dynamics method (Bertalmio et al. 2001): isophotes are continued into the
  hole by transporting image smoothness along them.
- `biharmonic`: scikit-image's biharmonic inpainting (Damelin & Hoang 2018): the fill solves the biharmonic
  equation Laplacian^2 u = 0 with the known pixels as boundary values (reproduces any linear gradient).
- `mean_fill`: every hole pixel set to the mean colour of the image's known pixels (the floor any method must
  clear; holes at mid-grey are what `train.Trainer.evaluate_baseline` scores).

Each takes `image: uint8[H, W, 3]` and `hole: bool[H, W]` (True = missing; pixels under it are never read) and
returns `uint8[H, W, 3]` whose known pixels are the input's, byte for byte. An image with no known pixel is filled
with mid-grey (128) by every method: there is nothing to propagate. `inpaint_batch` runs one on a model-style
batch (f32 in [-1, 1]).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from jaxinpaint.imaging import to_uint8

Baseline = Callable[[np.ndarray, np.ndarray], np.ndarray]

# Telea and NS use OpenCV's customary 3-px neighbourhood (the radius in the OpenCV inpainting tutorial).
OPENCV_RADIUS = 3.0


def _check(image: np.ndarray, hole: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
  image, hole = np.asarray(image), np.asarray(hole)
  if image.dtype != np.uint8 or image.ndim != 3 or image.shape[-1] != 3:
    raise ValueError(f"image must be uint8[H, W, 3]; got {image.dtype}{list(image.shape)}")
  if hole.shape != image.shape[:2]:
    raise ValueError(f"hole must be bool[{image.shape[0]}, {image.shape[1]}] like the image; got {hole.shape}")
  hole = hole.astype(bool)
  # OpenCV's methods read the pixels under the mask: blank them (mid-grey, as `inpaint_batch` always fed them).
  return np.ascontiguousarray(np.where(hole[..., None], 128, image).astype(np.uint8)), hole


def _keep_known(image: np.ndarray, hole: np.ndarray, filled: np.ndarray) -> np.ndarray:
  """Known pixels from `image`, holes from `filled` (guards against a method touching known pixels)."""
  return np.where(hole[..., None], filled, image).astype(np.uint8)


def _trivial(image: np.ndarray, hole: np.ndarray) -> np.ndarray | None:
  """The answer when there is nothing to do (no hole) or nothing to go on (no known pixel), else None."""
  if not hole.any():
    return image.copy()
  if hole.all():
    return np.full_like(image, 128)
  return None


def _opencv(image: np.ndarray, hole: np.ndarray, flag_name: str, radius: float) -> np.ndarray:
  import cv2  # Imported here so the package imports without OpenCV until a peer is used.

  image, hole = _check(image, hole)
  done = _trivial(image, hole)
  if done is not None:
    return done
  filled = cv2.inpaint(image, hole.astype(np.uint8) * 255, float(radius), getattr(cv2, flag_name))
  return _keep_known(image, hole, filled)


def telea(image: np.ndarray, hole: np.ndarray, radius: float = OPENCV_RADIUS) -> np.ndarray:
  """OpenCV fast-marching inpainting (`cv2.INPAINT_TELEA`). uint8[H, W, 3], bool[H, W] -> uint8[H, W, 3]."""
  return _opencv(image, hole, "INPAINT_TELEA", radius)


def navier_stokes(image: np.ndarray, hole: np.ndarray, radius: float = OPENCV_RADIUS) -> np.ndarray:
  """OpenCV Navier-Stokes inpainting (`cv2.INPAINT_NS`). uint8[H, W, 3], bool[H, W] -> uint8[H, W, 3]."""
  return _opencv(image, hole, "INPAINT_NS", radius)


def biharmonic(image: np.ndarray, hole: np.ndarray) -> np.ndarray:
  """scikit-image biharmonic inpainting, per channel. uint8[H, W, 3], bool[H, W] -> uint8[H, W, 3]."""
  from skimage.restoration import inpaint_biharmonic

  image, hole = _check(image, hole)
  done = _trivial(image, hole)
  if done is not None:
    return done
  filled = inpaint_biharmonic(image.astype(np.float64) / 255.0, hole, channel_axis=-1)
  return _keep_known(image, hole, np.clip(np.round(filled * 255.0), 0, 255))


def mean_fill(image: np.ndarray, hole: np.ndarray) -> np.ndarray:
  """Holes set to the mean RGB of the known pixels (rounded). uint8[H, W, 3], bool[H, W] -> uint8[H, W, 3]."""
  image, hole = _check(image, hole)
  done = _trivial(image, hole)
  if done is not None:
    return done
  mean = image[~hole].astype(np.float64).mean(axis=0)
  return _keep_known(image, hole, np.broadcast_to(np.round(mean), image.shape))


BASELINES: dict[str, Baseline] = {
  "telea": telea,
  "navier_stokes": navier_stokes,
  "biharmonic": biharmonic,
  "mean_fill": mean_fill,
}
# How tables name them.
LABELS = {
  "telea": "OpenCV Telea",
  "navier_stokes": "OpenCV Navier-Stokes",
  "biharmonic": "Biharmonic (skimage)",
  "mean_fill": "Mean colour fill",
}


def get_baseline(name: str) -> Baseline:
  if name not in BASELINES:
    raise ValueError(f"unknown classical baseline {name!r}; known: {', '.join(BASELINES)}")
  return BASELINES[name]


def parse_names(spec: str) -> list[str]:
  """'telea,biharmonic' -> ['telea', 'biharmonic'] (checked); '' or 'none' -> []; 'all' -> every peer."""
  spec = str(spec).strip()
  if spec in ("", "none"):
    return []
  if spec == "all":
    return list(BASELINES)
  names = [n.strip() for n in spec.split(",") if n.strip()]
  for name in names:
    get_baseline(name)
  return names


def inpaint_batch(name: str, image: np.ndarray, valid: np.ndarray) -> np.ndarray:
  """Runs baseline `name` on each example: image f32[B, H, W, 3] in [-1, 1], valid f32[B, H, W, 1]
  (1 = known) -> f32[B, H, W, 3] in [-1, 1]. Hole pixels of `image` are never read."""
  fn = get_baseline(name)
  image, valid = np.asarray(image, np.float32), np.asarray(valid, np.float32)
  if image.ndim != 4 or valid.shape != image.shape[:3] + (1,):
    raise ValueError(
      f"inpaint_batch needs image f32[B, H, W, 3] and valid f32[B, H, W, 1]; got {image.shape} and {valid.shape}"
    )
  hole = valid[..., 0] < 0.5
  known = to_uint8(np.where(hole[..., None], 0.0, image))  # holes blanked: a peer cannot see the answer
  out = np.stack([fn(known[i], hole[i]) for i in range(image.shape[0])])
  return out.astype(np.float32) / 127.5 - 1.0
