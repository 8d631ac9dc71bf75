"""The FID network: Inception-v3 up to its final average pool (2048-d), as every FID implementation uses it.

The TF-slim Inception of the original FID code (pytorch-fid's `fid_inception_v3`: torchvision's Inception3 with
average pools that do not count padding and a max pool in the last block). Module names follow torchvision's
Inception3, so `scripts/convert_inception.py` maps pytorch-fid's state dict onto it one to one; the FID maths and
weight loading are in `jaxinpaint.eval.perceptual`.
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

INCEPTION_SIZE = 299
INCEPTION_DIM = 2048


def _same(kh: int, kw: int) -> tuple[tuple[int, int], tuple[int, int]]:
  return ((kh // 2, kh // 2), (kw // 2, kw // 2))


class BasicConv(nn.Module):
  """conv (no bias) -> BatchNorm (running statistics, eps 1e-3) -> ReLU: torchvision's BasicConv2d."""

  features: int
  kernel: tuple[int, int] = (1, 1)
  strides: tuple[int, int] = (1, 1)
  padding: str | tuple = "VALID"

  @nn.compact
  def __call__(self, x):
    x = nn.Conv(self.features, self.kernel, self.strides, padding=self.padding, use_bias=False, name="conv")(x)
    x = nn.BatchNorm(use_running_average=True, epsilon=1e-3, name="bn")(x)
    return nn.relu(x)


def _conv(name: str, features: int, kernel=(1, 1), strides=(1, 1), padded: bool = False) -> BasicConv:
  return BasicConv(features, kernel, strides, _same(*kernel) if padded else "VALID", name=name)


def _avg_pool_3x3(x):
  """3x3 stride-1 average pool that ignores the zero padding (TensorFlow's behaviour, kept by FID)."""
  return nn.avg_pool(x, (3, 3), strides=(1, 1), padding=((1, 1), (1, 1)), count_include_pad=False)


class InceptionA(nn.Module):
  pool_features: int

  @nn.compact
  def __call__(self, x):
    b1 = _conv("branch1x1", 64)(x)
    b5 = _conv("branch5x5_2", 64, (5, 5), padded=True)(_conv("branch5x5_1", 48)(x))
    b3 = _conv("branch3x3dbl_1", 64)(x)
    b3 = _conv("branch3x3dbl_3", 96, (3, 3), padded=True)(_conv("branch3x3dbl_2", 96, (3, 3), padded=True)(b3))
    bp = _conv("branch_pool", self.pool_features)(_avg_pool_3x3(x))
    return jnp.concatenate([b1, b5, b3, bp], axis=-1)


class InceptionB(nn.Module):
  @nn.compact
  def __call__(self, x):
    b3 = _conv("branch3x3", 384, (3, 3), (2, 2))(x)
    bd = _conv("branch3x3dbl_2", 96, (3, 3), padded=True)(_conv("branch3x3dbl_1", 64)(x))
    bd = _conv("branch3x3dbl_3", 96, (3, 3), (2, 2))(bd)
    bp = nn.max_pool(x, (3, 3), strides=(2, 2))
    return jnp.concatenate([b3, bd, bp], axis=-1)


class InceptionC(nn.Module):
  channels_7x7: int

  @nn.compact
  def __call__(self, x):
    c7 = self.channels_7x7
    b1 = _conv("branch1x1", 192)(x)
    b7 = _conv("branch7x7_1", c7)(x)
    b7 = _conv("branch7x7_3", 192, (7, 1), padded=True)(_conv("branch7x7_2", c7, (1, 7), padded=True)(b7))
    bd = _conv("branch7x7dbl_1", c7)(x)
    for i, (kernel, features) in enumerate((((7, 1), c7), ((1, 7), c7), ((7, 1), c7), ((1, 7), 192)), start=2):
      bd = _conv(f"branch7x7dbl_{i}", features, kernel, padded=True)(bd)
    bp = _conv("branch_pool", 192)(_avg_pool_3x3(x))
    return jnp.concatenate([b1, b7, bd, bp], axis=-1)


class InceptionD(nn.Module):
  @nn.compact
  def __call__(self, x):
    b3 = _conv("branch3x3_2", 320, (3, 3), (2, 2))(_conv("branch3x3_1", 192)(x))
    b7 = _conv("branch7x7x3_1", 192)(x)
    b7 = _conv("branch7x7x3_3", 192, (7, 1), padded=True)(_conv("branch7x7x3_2", 192, (1, 7), padded=True)(b7))
    b7 = _conv("branch7x7x3_4", 192, (3, 3), (2, 2))(b7)
    bp = nn.max_pool(x, (3, 3), strides=(2, 2))
    return jnp.concatenate([b3, b7, bp], axis=-1)


class InceptionE(nn.Module):
  """`pool='avg'` for Mixed_7b; 'max' for Mixed_7c (the FID network's max pool there)."""

  pool: str = "avg"

  @nn.compact
  def __call__(self, x):
    b1 = _conv("branch1x1", 320)(x)
    b3 = _conv("branch3x3_1", 384)(x)
    b3 = jnp.concatenate(
      [_conv("branch3x3_2a", 384, (1, 3), padded=True)(b3), _conv("branch3x3_2b", 384, (3, 1), padded=True)(b3)],
      axis=-1,
    )
    bd = _conv("branch3x3dbl_2", 384, (3, 3), padded=True)(_conv("branch3x3dbl_1", 448)(x))
    bd = jnp.concatenate(
      [_conv("branch3x3dbl_3a", 384, (1, 3), padded=True)(bd), _conv("branch3x3dbl_3b", 384, (3, 1), padded=True)(bd)],
      axis=-1,
    )
    if self.pool == "avg":
      pooled = _avg_pool_3x3(x)
    else:
      pooled = nn.max_pool(x, (3, 3), strides=(1, 1), padding=((1, 1), (1, 1)))
    bp = _conv("branch_pool", 192)(pooled)
    return jnp.concatenate([b1, b3, bd, bp], axis=-1)


class InceptionV3Pool(nn.Module):
  """FID Inception-v3 to the final average pool: f32[B, H, W, 3] in [-1, 1] -> f32[B, 2048].

  The input is first resized bilinearly (half-pixel centres, no antialiasing: torch's `interpolate(...,
  align_corners=False)`) to `size` x `size`; 299 is what FID numbers are quoted at. Module names follow
  torchvision's Inception3 so the converted state dict maps one to one.
  """

  size: int = INCEPTION_SIZE

  @nn.compact
  def __call__(self, x):
    if x.ndim != 4 or x.shape[-1] != 3:
      raise ValueError(f"InceptionV3Pool expects f32[B, H, W, 3]; got shape {x.shape}")
    x = jax.image.resize(x.astype(jnp.float32), (x.shape[0], self.size, self.size, 3), "bilinear", antialias=False)
    x = _conv("Conv2d_1a_3x3", 32, (3, 3), (2, 2))(x)
    x = _conv("Conv2d_2a_3x3", 32, (3, 3))(x)
    x = _conv("Conv2d_2b_3x3", 64, (3, 3), padded=True)(x)
    x = nn.max_pool(x, (3, 3), strides=(2, 2))
    x = _conv("Conv2d_3b_1x1", 80)(x)
    x = _conv("Conv2d_4a_3x3", 192, (3, 3))(x)
    x = nn.max_pool(x, (3, 3), strides=(2, 2))
    x = InceptionA(32, name="Mixed_5b")(x)
    x = InceptionA(64, name="Mixed_5c")(x)
    x = InceptionA(64, name="Mixed_5d")(x)
    x = InceptionB(name="Mixed_6a")(x)
    for name, c7 in (("Mixed_6b", 128), ("Mixed_6c", 160), ("Mixed_6d", 160), ("Mixed_6e", 192)):
      x = InceptionC(c7, name=name)(x)
    x = InceptionD(name="Mixed_7a")(x)
    x = InceptionE("avg", name="Mixed_7b")(x)
    x = InceptionE("max", name="Mixed_7c")(x)
    return x.mean(axis=(1, 2))
