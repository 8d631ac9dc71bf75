"""Trainable nonlinear diffusion of the hole pixels (after Chen & Pock's TNRD, "Trainable Nonlinear Reaction
Diffusion", 2017): a few learned gradient steps on an image energy, from the biharmonic fill.

Stage t takes one step on E_t(u) = sum_k sum_p rho_tk((f_tk * u)_p), restricted to the holes:

    u <- u - H * grad E_t(u) = u - H * sum_k F_tk^T psi_tk(F_tk u)

f_tk: K zero-mean k x k filters (applied to each colour channel alike, edge-padded); F^T: the exact adjoint of
that padded correlation (its vector-Jacobian product, so each stage is exactly a gradient step); psi = rho':
an influence function, a sum of Gaussian radial basis functions on fixed centres in [-radius, radius] with learned
weights, so the net learns which filter responses to smooth away and which (edges) to keep or sharpen. H, the
hole indicator, keeps every known pixel exact. TNRD's data term is not needed: the known pixels are the data.

With all weights zero (the initialisation) every stage is the identity and the fill is `biharmonic_fill`'s, so
training starts at the best classical peer's fill. A few thousand parameters: what it learns is local image
statistics, not photos (the README's demo trains it on procedural dead-leaves images only).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from flax import linen as nn

from jaxinpaint.layers.biharmonic import ITERATIONS, biharmonic_fill


def correlate(u: jnp.ndarray, filters: jnp.ndarray) -> jnp.ndarray:
  """u f32[N, H, W, 1], filters f32[k, k, 1, K] (k odd) -> f32[N, H, W, K]: correlation with edge padding."""
  p = filters.shape[0] // 2
  padded = jnp.pad(u, ((0, 0), (p, p), (p, p), (0, 0)), mode="edge")
  return jax.lax.conv_general_dilated(padded, filters, (1, 1), "VALID", dimension_numbers=("NHWC", "HWIO", "NHWC"))


def rbf_influence(z: jnp.ndarray, weights: jnp.ndarray, radius: float) -> jnp.ndarray:
  """z f32[..., K], weights f32[K, J] -> psi(z) f32[..., K] = sum_j w_kj exp(-(z - mu_j)^2 / (2 s^2)), the J
  centres mu_j evenly spaced on [-radius, radius], s their spacing."""
  count = weights.shape[1]
  centres = np.linspace(-radius, radius, count, dtype=np.float32)
  scale = 2.0 * radius / (count - 1)
  basis = jnp.exp(-0.5 * jnp.square((z[..., None] - centres) / scale))
  return jnp.einsum("...kj,kj->...k", basis, weights)


def check_options(prefix: str, **options) -> None:
  """ValueError '<prefix><name> must be ...' for a size no stage can use: stages / iterations < 0, filters < 1,
  kernel_size < 1 or even, centres < 2 (the RBF spacing needs two), radius <= 0; names not given are not checked."""
  least = {"stages": 0, "filters": 1, "kernel_size": 1, "centres": 2, "iterations": 0}
  for key, value in options.items():
    if key in least and value < least[key]:
      raise ValueError(f"{prefix}{key} must be >= {least[key]}; got {value}")
  if "kernel_size" in options and options["kernel_size"] % 2 == 0:
    raise ValueError(f"{prefix}kernel_size must be odd; got {options['kernel_size']}")
  if "radius" in options and not options["radius"] > 0:
    raise ValueError(f"{prefix}radius must be positive; got {options['radius']}")


class DiffusionStage(nn.Module):
  """One gradient step of a learned energy on the hole pixels: u - hole * F^T psi(F u), per channel."""

  filters: int = 8
  kernel_size: int = 5
  centres: int = 31
  radius: float = 1.0

  @nn.compact
  def __call__(self, u: jnp.ndarray, hole: jnp.ndarray) -> jnp.ndarray:
    check_options(
      "DiffusionStage.", filters=self.filters, kernel_size=self.kernel_size, centres=self.centres, radius=self.radius
    )
    b, h, w, c = u.shape
    f = self.param("filters", nn.initializers.normal(0.1), (self.kernel_size, self.kernel_size, 1, self.filters))
    f = f - jnp.mean(f, axis=(0, 1), keepdims=True)  # zero-mean: a flat image has zero energy and stays flat
    weights = self.param("influence", nn.initializers.zeros_init(), (self.filters, self.centres))
    channels = u.transpose(0, 3, 1, 2).reshape(b * c, h, w, 1)
    z, adjoint = jax.vjp(lambda x: correlate(x, f), channels)
    (grad,) = adjoint(rbf_influence(z, weights, self.radius))
    return u - hole * grad.reshape(b, c, h, w).transpose(0, 2, 3, 1)


class DiffusionFill(nn.Module):
  """image f32[B, H, W, C] (holes may hold anything), valid f32[B, H, W, 1] (1 = known) -> f32[B, H, W, C]: the
  biharmonic fill (`iterations` conjugate-gradient steps) refined by `stages` learned diffusion steps; known pixels
  are returned exactly and nothing depends on what the holes held. `train` is accepted for the U-Net tasks'
  calling convention; the fill has no batch statistics."""

  stages: int = 5
  filters: int = 8
  kernel_size: int = 5
  centres: int = 31
  radius: float = 1.0
  iterations: int = ITERATIONS

  @nn.compact
  def __call__(self, image: jnp.ndarray, valid: jnp.ndarray, train: bool = False) -> jnp.ndarray:
    del train
    if image.ndim != 4 or valid.shape != image.shape[:3] + (1,):
      raise ValueError(
        f"DiffusionFill expects image [B, H, W, C] and valid [B, H, W, 1]; got {image.shape}, {valid.shape}"
      )
    known = (jnp.asarray(valid, jnp.float32) > 0.5).astype(jnp.float32)
    hole = 1.0 - known
    u = biharmonic_fill(image, known, self.iterations)
    for t in range(self.stages):
      u = DiffusionStage(self.filters, self.kernel_size, self.centres, self.radius, name=f"stage{t}")(u, hole)
    return known * jnp.asarray(image, jnp.float32) + hole * u
