"""Push-pull hole filling against a loop-by-loop numpy version, and the U-Net's `residual_fill` option that the
demo uses (the network learns a correction to the fill)."""

import jax
import jax.numpy as jnp
import numpy as np

from jaxinpaint.layers.push_pull import push_pull_fill
from jaxinpaint.models import InpaintingUNet
from jaxinpaint.runs import jit_init


def _reference(image, valid):
  """Push-pull for one f64[H, W, C] image and f64[H, W] weight, pixel by pixel."""
  levels = []
  x, m = image.copy(), valid.copy()
  while x.shape[0] % 2 == 0 and x.shape[1] % 2 == 0 and min(x.shape[:2]) > 1:
    levels.append((x, m))
    h, w = x.shape[0] // 2, x.shape[1] // 2
    xs, ms = np.zeros((h, w, x.shape[2])), np.zeros((h, w))
    for i in range(h):
      for j in range(w):
        block_m = m[2 * i : 2 * i + 2, 2 * j : 2 * j + 2]
        block_x = x[2 * i : 2 * i + 2, 2 * j : 2 * j + 2]
        total = block_m.sum()
        xs[i, j] = (block_x * block_m[..., None]).sum((0, 1)) / total if total > 0 else 0.0
        ms[i, j] = min(total, 1.0)
    x, m = xs, ms
  fill = np.where(m[..., None] > 0, x, 0.0)
  for x, m in reversed(levels):
    up = fill.repeat(2, 0).repeat(2, 1)
    h, w = up.shape[:2]
    coarse = np.zeros_like(up)
    for i in range(h):
      for j in range(w):
        coarse[i, j] = up[max(i - 1, 0) : i + 2, max(j - 1, 0) : j + 2].mean((0, 1))
    fill = m[..., None] * x + (1 - m[..., None]) * coarse
  return fill


def test_push_pull_matches_numpy_and_keeps_known_pixels():
  rng = np.random.default_rng(0)
  image = rng.uniform(-1, 1, (2, 8, 12, 3)).astype(np.float32)
  valid = (rng.uniform(size=(2, 8, 12, 1)) > 0.6).astype(np.float32)
  valid[1, :, :6] = 0.0  # a hole wider than one pyramid step
  image_with_junk = np.where(valid > 0, image, 1e3).astype(np.float32)  # hole content must not leak in
  out = np.asarray(push_pull_fill(image_with_junk, valid))
  for b in range(2):
    np.testing.assert_allclose(out[b], _reference(image[b].astype(np.float64), valid[b, ..., 0]), atol=1e-5)
  np.testing.assert_array_equal(out * valid, image * valid)
  # A smooth image is filled nearly exactly; an all-hole image gives zeros, not NaN.
  ramp = np.broadcast_to(np.linspace(-0.5, 0.5, 12)[None, :, None], (8, 12, 3))[None].astype(np.float32)
  assert np.abs(np.asarray(push_pull_fill(ramp, valid[:1])) - ramp).max() < 0.2
  np.testing.assert_array_equal(np.asarray(push_pull_fill(image, np.zeros_like(valid))), 0.0)


def test_unet_residual_fill_starts_at_the_fill_and_adds_the_plain_output():
  image = jax.random.uniform(jax.random.key(0), (2, 16, 16, 3), minval=-1, maxval=1)
  valid = (jax.random.uniform(jax.random.key(1), (2, 16, 16, 1)) > 0.3).astype(jnp.float32)
  residual = InpaintingUNet(conv="weighted", depth=3, features=(4, 8), residual_fill=True)
  variables = jit_init(residual.init)(jax.random.key(2), image, valid)
  fill = push_pull_fill(image, valid)
  apply = jax.jit(residual.apply)
  # The output conv starts at zero: the untrained model returns the fill itself.
  np.testing.assert_allclose(apply(variables, image, valid), fill, atol=1e-6)
  kernel = variables["params"]["dec1"]["kernel"]
  params = {
    **variables["params"],
    "dec1": {**variables["params"]["dec1"], "kernel": jax.random.normal(jax.random.key(3), kernel.shape) * 0.1},
  }
  moved = {**variables, "params": params}
  plain = residual.clone(residual_fill=False)
  np.testing.assert_allclose(apply(moved, image, valid), jax.jit(plain.apply)(moved, image, valid) + fill, atol=1e-5)
  grads = jax.jit(jax.grad(lambda p: jnp.mean((apply({**variables, "params": p}, image, valid) - image) ** 2)))(
    variables["params"]
  )
  assert all(np.all(np.isfinite(g)) for g in jax.tree.leaves(grads))
  assert np.abs(np.asarray(grads["dec1"]["kernel"])).sum() > 0  # the zero output conv still learns
