"""Discriminators of the DeepFill family.

- `SNPatchGAN` (DeepFill v2): six 5x5 stride-2 spectral-normalised convs, 64-128-256-256-256-256, each followed
  by LeakyReLU(0.2) (the reference's `dis_conv`, last layer included), on [image, hole mask]; the output map is
  flattened, one score per patch: f32[B, N]. Call with `update_stats=True, mutable=['spectral']` to train.
- `GlobalCritic` / `LocalCritic` (DeepFill v1, WGAN-GP): 5x5 stride-2 convs + LeakyReLU(0.2), 64-128-256-256
  on the whole image and 64-128-256-512 on a patch around the hole, flattened, then one linear unit: f32[B].
  `local_patch` cuts that patch per example from the hole's bounding box.
"""

from __future__ import annotations

from typing import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
from jax import lax

from jaxinpaint.layers.spectral_norm import SpectralConv


class SNPatchGAN(nn.Module):
  """image f32[B, H, W, 3] in [-1, 1], valid f32[B, H, W, 1] -> patch scores f32[B, N]."""

  features: Sequence[int] = (64, 128, 256, 256, 256, 256)
  kernel_size: int = 5

  @nn.compact
  def __call__(self, image: jax.Array, valid: jax.Array, update_stats: bool = False) -> jax.Array:
    h = jnp.concatenate([image, 1.0 - valid], axis=-1)
    for i, width in enumerate(self.features):
      h = SpectralConv(width, (self.kernel_size, self.kernel_size), (2, 2), name=f"conv{i + 1}")(h, update_stats)
      h = nn.leaky_relu(h, 0.2)
    return h.reshape(h.shape[0], -1)


class _Critic(nn.Module):
  """5x5 stride-2 convs + LeakyReLU(0.2), flatten, Dense(1): f32[B, H, W, C] -> f32[B]."""

  features: Sequence[int]
  kernel_size: int = 5

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    h = x
    for i, width in enumerate(self.features):
      h = nn.Conv(width, (self.kernel_size, self.kernel_size), (2, 2), padding="SAME", name=f"conv{i + 1}")(h)
      h = nn.leaky_relu(h, 0.2)
    return nn.Dense(1, name="score")(h.reshape(h.shape[0], -1))[:, 0]


class GlobalCritic(_Critic):
  """DeepFill v1's global WGAN critic on the whole image."""

  features: Sequence[int] = (64, 128, 256, 256)


class LocalCritic(_Critic):
  """DeepFill v1's local WGAN critic on the patch around the hole (`local_patch`)."""

  features: Sequence[int] = (64, 128, 256, 512)


def hole_box_origin(valid: jax.Array, size: int) -> jax.Array:
  """Top-left corners i32[B, 2] of size x size windows centred on each example's hole bounding box.

  valid: f32[B, H, W, 1]. The window is clamped inside the image; an example without a hole gets the centre.
  """
  b, h, w, _ = valid.shape
  if not 0 < size <= min(h, w):
    raise ValueError(f"local patch size {size} must be in [1, {min(h, w)}] for images {h}x{w}")
  hole = valid[..., 0] < 0.5
  corners = []
  for axis, length in ((2, h), (1, w)):  # rows: any hole along W; columns: any hole along H
    present = jnp.any(hole, axis=axis)
    index = jnp.arange(length)
    first = jnp.min(jnp.where(present, index, length), axis=1)
    last = jnp.max(jnp.where(present, index, -1), axis=1)
    centre = jnp.where(first <= last, (first + last + 1) // 2, length // 2)
    corners.append(jnp.clip(centre - size // 2, 0, length - size))
  return jnp.stack(corners, axis=-1).astype(jnp.int32)


def local_patch(x: jax.Array, origin: jax.Array, size: int) -> jax.Array:
  """x f32[B, H, W, C], origin i32[B, 2] (top, left) -> f32[B, size, size, C]."""

  def one(xi, oi):
    return lax.dynamic_slice(xi, (oi[0], oi[1], 0), (size, size, xi.shape[-1]))

  return jax.vmap(one)(x, origin)
