"""Spectral normalisation (Miyato et al. 2018) of a convolution kernel, by power iteration.

The kernel W (kh, kw, Cin, Cout) is read as the matrix W_mat (kh*kw*Cin, Cout). With a stored unit vector u
(Cout,), one power iteration per call gives

  v = W_mat u / ||W_mat u||,   u' = W_mat^T v / ||W_mat^T v||,   sigma = v^T W_mat u',

and the layer convolves with W / sigma, so the largest singular value of the kernel it uses is about 1. u and v
are constants for the gradient (stop_gradient), as in the paper and the DeepFill reference. u lives in the
`spectral` collection (part of the trainer's `model_state`, not a param) and is written back only when
`update_stats=True` (training); evaluation reuses it unchanged.

flax.linen.SpectralNorm does the same maths through `map_variables`; this layer keeps plain variable names
(`kernel`, `bias`, `spectral/u`) and exposes the pure `spectral_normalize` so tests can check it against SVD.
"""

from __future__ import annotations

from typing import Any, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
from jax import lax

SPECTRAL = "spectral"  # the collection holding the power-iteration vectors


def _l2_normalize(x: jax.Array, eps: float) -> jax.Array:
  return x * lax.rsqrt(jnp.sum(jnp.square(x)) + eps)


def spectral_normalize(
  matrix: jax.Array, u: jax.Array, n_iterations: int = 1, eps: float = 1e-12
) -> tuple[jax.Array, jax.Array, jax.Array]:
  """matrix f32[K, N], u f32[N] -> (matrix / sigma, new u f32[N], sigma f32[]) after `n_iterations` steps."""
  if matrix.ndim != 2 or u.shape != (matrix.shape[1],):
    raise ValueError(f"spectral_normalize needs matrix [K, N] and u [N]; got {matrix.shape} and {u.shape}")
  if n_iterations < 1:
    raise ValueError(f"n_iterations must be >= 1; got {n_iterations}")
  m = lax.stop_gradient(matrix)
  v = None
  for _ in range(n_iterations):
    v = _l2_normalize(m @ u, eps)
    u = _l2_normalize(m.T @ v, eps)
  u, v = lax.stop_gradient(u), lax.stop_gradient(v)
  sigma = v @ matrix @ u  # differentiable in the matrix, as in the paper
  return matrix / jnp.maximum(sigma, eps), u, sigma


class SpectralConv(nn.Module):
  """`y = conv(x, W / sigma(W)) + b`, 'SAME' padding; `update_stats` writes the new u to `spectral`.

  x: f32[B, H, W, Cin] -> f32[B, ceil(H / s), ceil(W / s), features].
  """

  features: int
  kernel_size: Sequence[int] = (5, 5)
  strides: Sequence[int] = (2, 2)
  use_bias: bool = True
  n_iterations: int = 1
  eps: float = 1e-12
  dtype: Any = None
  kernel_init: Any = nn.initializers.lecun_normal()

  @nn.compact
  def __call__(self, x: jax.Array, update_stats: bool) -> jax.Array:
    kh, kw = self.kernel_size
    kernel = self.param("kernel", self.kernel_init, (kh, kw, x.shape[-1], self.features), jnp.float32)
    u_var = self.variable(
      SPECTRAL,
      "u",
      lambda: _l2_normalize(jax.random.normal(self.make_rng("params"), (self.features,), jnp.float32), self.eps),
    )
    w, u, _ = spectral_normalize(kernel.reshape(-1, self.features), u_var.value, self.n_iterations, self.eps)
    if update_stats and not self.is_initializing():
      u_var.value = u
    dtype = self.dtype or x.dtype
    y = lax.conv_general_dilated(
      x.astype(dtype),
      w.reshape(kernel.shape).astype(dtype),
      self.strides,
      "SAME",
      dimension_numbers=("NHWC", "HWIO", "NHWC"),
    )
    if self.use_bias:
      y = y + self.param("bias", nn.initializers.zeros_init(), (self.features,), jnp.float32).astype(dtype)
    return y
