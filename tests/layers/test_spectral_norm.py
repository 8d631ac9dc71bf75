"""Spectral normalisation: power iteration brings the kernel's largest singular value (numpy SVD) to 1; u lives in
the `spectral` collection and moves only in training; u and v are constants for the gradient."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxinpaint.layers import SpectralConv, spectral_normalize


def numpy_step(w_mat, u):
  """One power iteration in float64: (sigma, new u)."""
  v = w_mat @ u
  v /= np.linalg.norm(v)
  u = w_mat.T @ v
  u /= np.linalg.norm(u)
  return float(v @ w_mat @ u), u


@pytest.fixture(scope="module")
def layer():
  x = jnp.asarray(np.random.default_rng(0).normal(size=(2, 9, 7, 4)), jnp.float32)
  conv = SpectralConv(features=6, kernel_size=(3, 3), strides=(2, 2))
  variables = conv.init(jax.random.key(0), x, update_stats=False)
  return conv, variables, x


def test_power_iteration_brings_the_largest_singular_value_to_one(layer):
  conv, variables, x = layer
  kernel = np.asarray(variables["params"]["kernel"], np.float64)
  w_mat = kernel.reshape(-1, 6)
  sigma_max = np.linalg.svd(w_mat, compute_uv=False)[0]
  step = jax.jit(lambda v: conv.apply(v, x, update_stats=True, mutable=["spectral"])[1])
  state = dict(variables)
  for _ in range(30):
    state = {**state, **step(state)}
  u = state["spectral"]["u"]
  normalised, _, sigma = spectral_normalize(jnp.asarray(w_mat, jnp.float32), u)
  assert float(sigma) == pytest.approx(sigma_max, rel=1e-4)
  assert np.linalg.svd(np.asarray(normalised, np.float64), compute_uv=False)[0] == pytest.approx(1.0, rel=1e-4)
  assert float(sigma) != pytest.approx(1.0, rel=1e-2)  # the raw kernel was not already normalised


def test_output_is_the_conv_with_the_numpy_normalised_kernel(layer):
  conv, variables, x = layer
  kernel = np.asarray(variables["params"]["kernel"], np.float64)
  sigma, _ = numpy_step(kernel.reshape(-1, 6), np.asarray(variables["spectral"]["u"], np.float64))
  expected = jax.lax.conv_general_dilated(
    x, jnp.asarray(kernel / sigma, jnp.float32), (2, 2), "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC")
  )
  y = conv.apply(variables, x, update_stats=False)
  assert y.shape == (2, 5, 4, 6)
  np.testing.assert_allclose(np.asarray(y), np.asarray(expected), rtol=1e-5, atol=1e-5)


def test_u_is_state_updated_only_in_training(layer):
  conv, variables, x = layer
  assert "u" not in variables["params"] and variables["spectral"]["u"].shape == (6,)
  u0 = np.asarray(variables["spectral"]["u"])
  _, frozen = conv.apply(variables, x, update_stats=False, mutable=["spectral"])
  np.testing.assert_array_equal(np.asarray(frozen["spectral"]["u"]), u0)
  _, trained = conv.apply(variables, x, update_stats=True, mutable=["spectral"])
  _, u1 = numpy_step(np.asarray(variables["params"]["kernel"], np.float64).reshape(-1, 6), u0.astype(np.float64))
  np.testing.assert_allclose(np.asarray(trained["spectral"]["u"]), u1, rtol=1e-5, atol=1e-6)


def test_gradient_holds_u_and_v_constant(layer):
  conv, variables, x = layer
  kernel = variables["params"]["kernel"]
  u0 = variables["spectral"]["u"]
  w = kernel.reshape(-1, 6)
  v = w @ u0 / jnp.linalg.norm(w @ u0)
  u = w.T @ v / jnp.linalg.norm(w.T @ v)

  def by_hand(k):  # sigma(W) = v^T W u with u, v fixed numbers (Miyato et al., eq. 7's gradient)
    sigma = v @ k.reshape(-1, 6) @ u
    return jnp.sum(
      jnp.sin(jax.lax.conv_general_dilated(x, k / sigma, (2, 2), "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC")))
    )

  def by_layer(k):
    params = {**variables["params"], "kernel": k}
    return jnp.sum(jnp.sin(conv.apply({"params": params, "spectral": variables["spectral"]}, x, update_stats=False)))

  expected = np.asarray(jax.grad(by_hand)(kernel))
  # float32: each gradient entry sums many products of size ~max|grad|, so an entry near 0 carries round-off of
  # about 1e-7 x max|grad| (XLA versions differ in summation order; 1.2e-6 on 0.0019 was seen with max 5.5).
  np.testing.assert_allclose(
    np.asarray(jax.grad(by_layer)(kernel)), expected, rtol=1e-4, atol=1e-6 * np.abs(expected).max()
  )


def test_bad_shapes_raise():
  with pytest.raises(ValueError, match="matrix"):
    spectral_normalize(jnp.ones((4, 3)), jnp.ones((4,)))
