"""The JAX biharmonic fill against a dense numpy solve of the same least-squares problem, against scikit-image's
`inpaint_biharmonic`, and its invariants (known pixels kept, hole contents ignored)."""

import jax
import numpy as np
from skimage import data
from skimage.restoration import inpaint_biharmonic

from jaxinpaint.layers.biharmonic import biharmonic_fill
from jaxinpaint.runs import jit_init


def _grid_laplacian(h: int, w: int) -> np.ndarray:
  """Dense 4-neighbour grid-graph Laplacian: (L u)_i = sum over the neighbours n of i of (u_n - u_i)."""
  n = h * w
  lap = np.zeros((n, n))
  for i in range(h):
    for j in range(w):
      k = i * w + j
      for di, dj in ((-1, 0), (1, 0), (0, -1), (0, 1)):
        a, b = i + di, j + dj
        if 0 <= a < h and 0 <= b < w:
          lap[k, a * w + b] += 1.0
          lap[k, k] -= 1.0
  return lap


def _numpy_fill(image: np.ndarray, hole: np.ndarray) -> np.ndarray:
  """argmin over hole pixels of ||L u||^2 per channel, by a dense solve."""
  h, w, c = image.shape
  lap = _grid_laplacian(h, w)
  m = lap.T @ lap
  holes, known = hole.ravel(), ~hole.ravel()
  out = image.reshape(h * w, c).astype(np.float64).copy()
  out[holes] = np.linalg.solve(m[np.ix_(holes, holes)], -m[np.ix_(holes, known)] @ out[known])
  return out.reshape(h, w, c)


def test_converged_fill_solves_the_biharmonic_least_squares_problem():
  rng = np.random.default_rng(0)
  h, w = 13, 11  # odd sizes: push-pull stops halving at once
  image = rng.uniform(-1, 1, (2, h, w, 3))
  hole = np.zeros((2, h, w), bool)
  hole[0, 3:9, 2:7] = True
  hole[1, 8:, 6:] = True  # touching the bottom-right border
  hole[1, 1:3, 1:10] = True
  valid = (~hole)[..., None].astype(np.float32)
  noisy = np.where(hole[..., None], rng.uniform(-50, 50, image.shape), image).astype(np.float32)
  out = np.asarray(jax.jit(biharmonic_fill, static_argnums=2)(noisy, valid, 400))
  for b in range(2):
    np.testing.assert_allclose(out[b], _numpy_fill(image[b], hole[b]), atol=2e-4)
  np.testing.assert_array_equal(out[~hole], image[~hole].astype(np.float32))  # known pixels come back exactly


def test_close_to_scikit_image_on_a_photo_and_blind_to_the_hole_contents():
  photo = data.astronaut()[100:164, 180:244].astype(np.float32) / 127.5 - 1.0
  hole = np.zeros((64, 64), bool)
  hole[20:30, 10:50] = True
  hole[40:60, 30:36] = True
  valid = (~hole)[None, ..., None].astype(np.float32)
  fill = jax.jit(biharmonic_fill, static_argnums=2)
  out = np.asarray(fill(np.where(hole[..., None], 1.0, photo)[None], valid, 800))[0]
  again = np.asarray(fill(np.where(hole[..., None], -1.0, photo)[None], valid, 800))[0]
  np.testing.assert_array_equal(out, again)
  reference = inpaint_biharmonic((photo + 1.0) / 2.0, hole, channel_axis=-1) * 2.0 - 1.0
  np.testing.assert_allclose(out[hole], reference[hole], atol=1e-4)  # holes off the border: the same problem


def test_unet_corrects_the_biharmonic_fill_when_asked():
  import jax.numpy as jnp
  import pytest

  from jaxinpaint.models import InpaintingUNet

  image = jax.random.uniform(jax.random.key(0), (2, 16, 16, 3), minval=-1, maxval=1)
  valid = (jax.random.uniform(jax.random.key(1), (2, 16, 16, 1)) > 0.3).astype(jnp.float32)
  net = InpaintingUNet(conv="plain", depth=3, features=(4, 8), residual_fill=True, fill="biharmonic")
  variables = jit_init(net.init)(jax.random.key(2), image, valid)
  # the zero-initialised output conv: the untrained net returns the biharmonic fill itself, not push-pull's
  out = jax.jit(net.apply)(variables, image, valid)
  np.testing.assert_allclose(out, jax.jit(biharmonic_fill)(image, valid), atol=1e-6)
  assert not np.allclose(out, jax.jit(net.clone(fill="push_pull").apply)(variables, image, valid))
  with pytest.raises(ValueError, match=r"fill must be one of \('push_pull', 'biharmonic'\); got 'telea'"):
    net.clone(fill="telea").init(jax.random.key(2), image, valid)
