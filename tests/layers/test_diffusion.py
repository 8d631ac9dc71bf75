"""The learned diffusion fill: each stage is exactly a gradient step on its energy (checked against an energy
written independently, with the RBF influence integrated in closed form), the untrained fill is the biharmonic
one, known pixels are kept and hole contents ignored at any size, and training lowers its loss; the combined
PSNR/SSIM loss against numpy and scikit-image."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from skimage.metrics import structural_similarity

from jaxinpaint import losses
from jaxinpaint.data import synthetic
from jaxinpaint.layers.biharmonic import biharmonic_fill
from jaxinpaint.layers.diffusion import DiffusionFill, DiffusionStage


def _batch(rng, n=2, h=20, w=24, c=3):
  image = rng.uniform(-1, 1, (n, h, w, c)).astype(np.float32)
  valid = (rng.uniform(size=(n, h, w, 1)) > 0.3).astype(np.float32)
  return jnp.asarray(image), jnp.asarray(valid)


def _random_weights(params, rng, scale=0.5):
  """Every leaf replaced by noise, so the stages are far from the identity they start at."""
  return jax.tree.map(lambda x: jnp.asarray(rng.normal(0.0, scale, x.shape), jnp.float32), params)


def _energy(u, filters, weights, radius):
  """sum_k sum_p rho_k((f_k * u)_p) per channel, rho = the integral of the RBF influence (erf), written with
  explicit shifts of the edge-padded image rather than a convolution."""
  k = filters.shape[0]
  p = k // 2
  f = filters[:, :, 0, :] - jnp.mean(filters[:, :, 0, :], axis=(0, 1))
  b, h, w, c = u.shape
  padded = jnp.pad(u, ((0, 0), (p, p), (p, p), (0, 0)), mode="edge")
  z = sum(padded[:, i : i + h, j : j + w, :, None] * f[i, j] for i in range(k) for j in range(k))  # [B,H,W,C,K]
  count = weights.shape[1]
  mu = jnp.linspace(-radius, radius, count)
  s = 2.0 * radius / (count - 1)
  rho = s * math.sqrt(math.pi / 2) * jax.scipy.special.erf((z[..., None] - mu) / (s * math.sqrt(2.0)))
  return jnp.sum(rho * weights)  # weights [K, J] broadcast over [..., K, J]


def test_stage_is_a_gradient_step_on_its_energy_restricted_to_holes():
  rng = np.random.default_rng(0)
  u, valid = _batch(rng, h=11, w=13)
  hole = 1.0 - valid
  stage = DiffusionStage(filters=3, kernel_size=5, centres=7, radius=1.5)
  params = _random_weights(stage.init(jax.random.PRNGKey(0), u, hole), rng)
  got = stage.apply(params, u, hole)
  f, w = params["params"]["filters"], params["params"]["influence"]
  want = u - hole * jax.grad(_energy)(u, f, w, 1.5)
  np.testing.assert_allclose(np.asarray(got), np.asarray(want), atol=2e-5)
  assert float(jnp.max(jnp.abs(got - u))) > 1e-2  # the step is not trivially zero


def test_untrained_fill_is_the_biharmonic_fill():
  rng = np.random.default_rng(1)
  image, valid = _batch(rng)
  model = DiffusionFill(stages=2, filters=4, kernel_size=3, centres=9, iterations=30)
  params = model.init(jax.random.PRNGKey(0), image, valid)
  np.testing.assert_array_equal(
    np.asarray(model.apply(params, image, valid)), np.asarray(biharmonic_fill(image, valid, 30))
  )


@pytest.mark.parametrize("shape", [(1, 13, 17, 3), (2, 32, 9, 1)])
def test_known_pixels_are_kept_and_hole_contents_ignored_at_odd_sizes(shape):
  rng = np.random.default_rng(2)
  image, valid = _batch(rng, *shape)
  model = DiffusionFill(stages=2, filters=4, kernel_size=3, centres=9, iterations=20)
  params = _random_weights(model.init(jax.random.PRNGKey(0), image, valid), rng)
  out = model.apply(params, image, valid)
  assert out.shape == shape and bool(jnp.all(jnp.isfinite(out)))
  np.testing.assert_array_equal(np.asarray(out * valid), np.asarray(image * valid))
  other = jnp.where(valid > 0.5, image, rng.uniform(-1, 1, shape).astype(np.float32))
  np.testing.assert_array_equal(np.asarray(model.apply(params, other, valid)), np.asarray(out))
  assert float(jnp.max(jnp.abs(out - biharmonic_fill(image, valid, 20)))) > 1e-3  # the stages did something


def test_even_kernel_is_refused():
  image, valid = _batch(np.random.default_rng(3))
  with pytest.raises(ValueError, match="kernel_size must be odd"):
    DiffusionFill(kernel_size=4).init(jax.random.PRNGKey(0), image, valid)


def test_training_on_dead_leaves_lowers_the_loss():
  rng = np.random.default_rng(4)
  image = jnp.asarray(np.stack([synthetic.dead_leaves(rng, 24) for _ in range(4)]).astype(np.float32) / 127.5 - 1.0)
  valid = np.ones((4, 24, 24, 1), np.float32)
  valid[:, 8:16, 4:20] = 0.0
  valid = jnp.asarray(valid)
  model = DiffusionFill(stages=2, filters=4, kernel_size=3, centres=9, iterations=20)
  params = model.init(jax.random.PRNGKey(0), image, valid)
  loss = lambda p: losses.hole_log_mse_ssim(model.apply(p, image, valid), image, valid, 100.0)
  opt = optax.adam(3e-3)
  state = opt.init(params)

  @jax.jit
  def step(p, s):
    value, grads = jax.value_and_grad(loss)(p)
    updates, s = opt.update(grads, s)
    return optax.apply_updates(p, updates), s, value

  first = None
  for _ in range(15):
    params, state, value = step(params, state)
    first = float(value) if first is None else first
  assert float(loss(params)) < first - 0.01


def test_hole_log_mse_ssim_against_numpy_and_skimage():
  rng = np.random.default_rng(5)
  target = rng.uniform(-1, 1, (2, 16, 16, 3)).astype(np.float32)
  output = np.clip(target + rng.normal(0, 0.3, target.shape), -1.5, 1.5).astype(np.float32)
  valid = (rng.uniform(size=(2, 16, 16, 1)) > 0.4).astype(np.float32)
  hole = 1.0 - valid
  mse = (hole * (output - target) ** 2).sum(axis=(1, 2, 3)) / (3 * hole.sum(axis=(1, 2, 3)))
  composite = valid * target + hole * np.clip(output, -1, 1)
  ssim = [
    structural_similarity(
      (t + 1) / 2,
      (o + 1) / 2,
      gaussian_weights=True,
      sigma=1.5,
      use_sample_covariance=False,
      data_range=1.0,
      channel_axis=-1,
    )
    for t, o in zip(target, composite)
  ]
  want = np.mean(np.log(mse + 1e-4)) + 7.0 * np.mean(1.0 - np.asarray(ssim))
  got = losses.hole_log_mse_ssim(jnp.asarray(output), jnp.asarray(target), jnp.asarray(valid), 7.0)
  np.testing.assert_allclose(float(got), want, rtol=1e-4)
