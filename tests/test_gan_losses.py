"""GAN objectives against their formulas in numpy; the gradient penalty against finite differences."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxinpaint import gan_losses as gl

RNG = np.random.default_rng(0)
REAL = RNG.normal(size=(6, 4, 4, 1)).astype(np.float32) * 3
FAKE = RNG.normal(size=(6, 4, 4, 1)).astype(np.float32) * 3


def sigmoid(x):
  return 1 / (1 + np.exp(-x.astype(np.float64)))


def test_hinge():
  d = 0.5 * np.maximum(0, 1 - REAL).mean() + 0.5 * np.maximum(0, 1 + FAKE).mean()
  assert float(gl.d_hinge(REAL, FAKE)) == pytest.approx(d, rel=1e-6)
  assert float(gl.g_hinge(FAKE)) == pytest.approx(-FAKE.mean(), rel=1e-6)


def test_sigmoid_cross_entropy():
  d = -np.log(sigmoid(REAL)).mean() - np.log(1 - sigmoid(FAKE)).mean()
  assert float(gl.d_sigmoid_ce(REAL, FAKE)) == pytest.approx(d, rel=1e-5)
  assert float(gl.g_sigmoid_ce(FAKE)) == pytest.approx(-np.log(sigmoid(FAKE)).mean(), rel=1e-5)
  # stable where a naive log(sigmoid) is not
  assert np.isfinite(float(gl.d_sigmoid_ce(jnp.array([-200.0]), jnp.array([200.0]))))


def test_softmax_cross_entropy_two_logits_and_one():
  real2 = RNG.normal(size=(5, 2)).astype(np.float32)
  fake2 = RNG.normal(size=(5, 2)).astype(np.float32)

  def log_softmax(x):
    x = x.astype(np.float64)
    return x - np.log(np.exp(x).sum(-1, keepdims=True))

  d = -log_softmax(real2)[:, 0].mean() - log_softmax(fake2)[:, 1].mean()
  assert float(gl.d_softmax_ce(real2, fake2)) == pytest.approx(d, rel=1e-5)
  assert float(gl.g_softmax_ce(fake2)) == pytest.approx(-log_softmax(fake2)[:, 0].mean(), rel=1e-5)
  # one logit per example: softmax over (l, 0) is the sigmoid loss
  assert float(gl.d_softmax_ce(REAL, FAKE)) == pytest.approx(float(gl.d_sigmoid_ce(REAL, FAKE)), rel=1e-5)


def test_least_squares():
  pr, pf = sigmoid(REAL), sigmoid(FAKE)
  assert float(gl.d_mse(REAL, FAKE)) == pytest.approx(((pr - 1) ** 2).mean() + (pf**2).mean(), rel=1e-5)
  assert float(gl.g_mse(FAKE)) == pytest.approx(((pf - 1) ** 2).mean(), rel=1e-5)
  raw = ((REAL - 1.0) ** 2).mean() + (FAKE**2).mean()
  assert float(gl.d_mse(REAL, FAKE, on_probabilities=False)) == pytest.approx(raw, rel=1e-5)


def test_wgan_and_registry():
  assert float(gl.d_wgan(REAL, FAKE)) == pytest.approx(FAKE.mean() - REAL.mean(), rel=1e-5, abs=1e-6)
  assert float(gl.g_wgan(FAKE)) == pytest.approx(-FAKE.mean(), rel=1e-5)
  for name in gl.GAN_LOSSES:
    d, g = gl.get_gan_loss(name)
    assert np.isfinite(float(d(REAL, FAKE))) and np.isfinite(float(g(FAKE)))
  with pytest.raises(ValueError, match="unknown GAN loss 'relativistic'"):
    gl.get_gan_loss("relativistic")


def test_gradient_penalty_matches_finite_differences():
  rng = np.random.default_rng(1)
  w1 = rng.normal(size=(12, 5)) / 3
  w2 = rng.normal(size=(5,))

  def critic_np(x):  # x: [B, 2, 2, 3] -> [B]
    return np.tanh(x.reshape(x.shape[0], -1) @ w1) @ w2

  def critic(x):
    return jnp.tanh(x.reshape(x.shape[0], -1) @ jnp.asarray(w1, x.dtype)) @ jnp.asarray(w2, x.dtype)

  real = rng.normal(size=(3, 2, 2, 3))
  fake = rng.normal(size=(3, 2, 2, 3))
  key = jax.random.key(7)
  with jax.enable_x64(True):
    gp = float(gl.gradient_penalty(critic, jnp.asarray(real), jnp.asarray(fake), key, weight=10.0))
    eps = np.asarray(jax.random.uniform(key, (3, 1, 1, 1), dtype=jnp.float64))
  x_hat = eps * real + (1 - eps) * fake
  h, norms = 1e-6, []
  for i in range(3):
    grad = np.zeros(12)
    for j in range(12):
      up, down = x_hat[i : i + 1].copy().reshape(1, -1), x_hat[i : i + 1].copy().reshape(1, -1)
      up[0, j] += h
      down[0, j] -= h
      grad[j] = (critic_np(up.reshape(1, 2, 2, 3)) - critic_np(down.reshape(1, 2, 2, 3)))[0] / (2 * h)
    norms.append(np.linalg.norm(grad))
  expected = 10.0 * np.mean((np.asarray(norms) - 1.0) ** 2)
  assert gp == pytest.approx(expected, rel=1e-5)
  with pytest.raises(ValueError, match="one shape"):
    gl.gradient_penalty(critic, jnp.zeros((2, 2, 2, 3)), jnp.zeros((3, 2, 2, 3)), key)
