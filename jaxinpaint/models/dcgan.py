"""DCGAN generator and discriminator (Radford et al. 2016) as tabulated in seed 001.

Generator: z f32[B, 100] -> dense -> 4x4x1024 -> 8x8x512 -> 16x16x256 -> 32x32x128 -> 64x64x3; BatchNorm + ReLU
after every layer but the last, tanh on the output. Discriminator: 5x5 stride-2 convs 64-128-256-512 (64 -> 4
px), LeakyReLU(0.2), BatchNorm on all but the first, dense to one logit (two for a two-class softmax loss).

Upsampling is a sub-pixel convolution: a 3x3 conv to 4C channels at the low resolution, then depth-to-space.
Every 5x5 stride-2 transposed conv (DCGAN's layer) is one of these — each of its four output phases reads at most
a 3x3 input window — so nothing is lost, and XLA runs it ~3x cheaper than nearest x2 + 5x5 conv and far cheaper
than `ConvTranspose` (whose gradient is slow on CPU). Kernels start ICNR-tiled (all four phases equal), so the
initial output has no checkerboard.
"""

from __future__ import annotations

from typing import Any, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
from jax.ad_checkpoint import checkpoint_name

from jaxinpaint.models.unet import BLOCK_OUTPUT

DCGAN_INIT = nn.initializers.normal(0.02)  # Radford et al.: weights ~ N(0, 0.02)
BASE = 4  # the generator's first feature map is BASE x BASE


def depth_to_space(x: jax.Array) -> jax.Array:
  """f32[B, H, W, 4C] -> f32[B, 2H, 2W, C]: out[b, 2h + i, 2w + j, c] = x[b, h, w, (2i + j) C + c]."""
  b, h, w, c4 = x.shape
  c = c4 // 4
  x = x.reshape(b, h, w, 2, 2, c).transpose(0, 1, 3, 2, 4, 5)
  return x.reshape(b, 2 * h, 2 * w, c)


def icnr_init(base_init=DCGAN_INIT):
  """Kernel init for a conv feeding `depth_to_space`: one kernel tiled over the four phases (Aitken et al.)."""

  def init(key, shape, dtype=jnp.float32):
    kh, kw, cin, c4 = shape
    return jnp.tile(base_init(key, (kh, kw, cin, c4 // 4), dtype), (1, 1, 1, 4))

  return init


class SubpixelUp(nn.Module):
  """x2 upsampling: 3x3 conv to 4 * features at the input resolution, then depth-to-space."""

  features: int
  use_bias: bool = True
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    x = nn.Conv(
      4 * self.features, (3, 3), padding="SAME", use_bias=self.use_bias, kernel_init=icnr_init(), dtype=self.dtype
    )(x)
    return depth_to_space(x)


def image_size_of(num_upsamplings: int) -> int:
  return BASE * 2**num_upsamplings


def check_image_size(image: jax.Array, size: int, who: str) -> None:
  """ValueError naming the size `who` needs when `image` is not f32[B, size, size, 3]."""
  if image.ndim != 4 or image.shape[1:3] != (size, size) or image.shape[3] != 3:
    raise ValueError(
      f"{who} works on {size}x{size} RGB images (f32[B, {size}, {size}, 3]); got shape "
      f"{tuple(image.shape)} — resize or crop to {size}x{size}"
    )


class DCGANGenerator(nn.Module):
  """z f32[B, latent_dim] -> image f32[B, S, S, out_channels] in [-1, 1], S = 4 * 2**len(features).

  `features` are the widths from the 4x4 map up (default 1024-512-256-128 -> 64 px); the last upsampling
  makes the RGB output. `train=True` uses batch statistics and updates `batch_stats`.
  """

  latent_dim: int = 100
  features: Sequence[int] = (1024, 512, 256, 128)
  out_channels: int = 3
  norm_momentum: float = 0.9
  norm_epsilon: float = 1e-5
  dtype: Any = jnp.float32

  @property
  def image_size(self) -> int:
    return image_size_of(len(self.features))

  @nn.compact
  def __call__(self, z: jax.Array, train: bool = False) -> jax.Array:
    if z.ndim != 2 or z.shape[-1] != self.latent_dim:
      raise ValueError(f"DCGANGenerator takes z of shape [B, {self.latent_dim}]; got {tuple(z.shape)}")
    norm = lambda name: nn.BatchNorm(
      use_running_average=not train, momentum=self.norm_momentum, epsilon=self.norm_epsilon, dtype=self.dtype, name=name
    )
    x = nn.Dense(
      BASE * BASE * self.features[0], kernel_init=DCGAN_INIT, use_bias=False, dtype=self.dtype, name="project"
    )(z.astype(self.dtype))
    # each stage's output is named BLOCK_OUTPUT: what config.train.remat='blocks' keeps (identity otherwise)
    x = checkpoint_name(nn.relu(norm("norm0")(x.reshape(z.shape[0], BASE, BASE, self.features[0]))), BLOCK_OUTPUT)
    for i, width in enumerate(self.features[1:], start=1):
      x = SubpixelUp(width, use_bias=False, dtype=self.dtype, name=f"up{i}")(x)  # bias is the norm's job
      x = checkpoint_name(nn.relu(norm(f"norm{i}")(x)), BLOCK_OUTPUT)
    x = checkpoint_name(
      SubpixelUp(self.out_channels, dtype=self.dtype, name=f"up{len(self.features)}")(x), BLOCK_OUTPUT
    )
    return jnp.tanh(x.astype(jnp.float32))


class DCGANDiscriminator(nn.Module):
  """image f32[B, S, S, 3] -> logits f32[B, num_logits]; S = image_size, halved by each of the `features` convs.

  num_logits = 1 for sigmoid / least-squares losses, 2 for a two-class softmax (real, fake).
  """

  features: Sequence[int] = (64, 128, 256, 512)
  image_size: int = 64
  num_logits: int = 1
  norm_momentum: float = 0.9
  norm_epsilon: float = 1e-5
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, image: jax.Array, train: bool = False) -> jax.Array:
    check_image_size(image, self.image_size, "DCGANDiscriminator")
    x = image.astype(self.dtype)
    for i, width in enumerate(self.features):
      x = nn.Conv(
        width,
        (5, 5),
        strides=(2, 2),
        padding="SAME",
        use_bias=i == 0,
        kernel_init=DCGAN_INIT,
        dtype=self.dtype,
        name=f"conv{i}",
      )(x)
      if i > 0:  # Radford et al.: no norm on the discriminator's input layer
        x = nn.BatchNorm(
          use_running_average=not train,
          momentum=self.norm_momentum,
          epsilon=self.norm_epsilon,
          dtype=self.dtype,
          name=f"norm{i}",
        )(x)
      x = nn.leaky_relu(x, 0.2)
    x = x.reshape(x.shape[0], -1)
    return nn.Dense(self.num_logits, kernel_init=DCGAN_INIT, dtype=self.dtype, name="logits")(x).astype(jnp.float32)
