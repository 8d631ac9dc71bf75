"""Fast Fourier convolution (Chi et al. 2020) as LaMa uses it (Suvorov et al. 2022, `advimman/lama` ffc.py).

Channels are split into a local part x_l and a global part x_g (`ratio` of the channels, int-rounded down as the
reference's `int(channels * ratio)`); an FFC has four paths

  y_l = conv_l2l(x_l) + conv_g2l(x_g)          y_g = conv_l2g(x_l) + SpectralTransform(x_g)

with k x k convolutions (no bias, reflection padding) for the first three. The spectral transform is
1x1 conv -> BN -> ReLU -> FourierUnit, plus that unit's input (a residual), -> 1x1 conv; the Fourier unit is

  F = rfft2(x) over (H, W), orthonormal; [Re F, Im F] as 2C channels; 1x1 conv -> BN -> ReLU; irfft2 to H x W.

LaMa's local Fourier unit (LFU) is off in every LaMa config and is not offered here. The Fourier unit runs in
float32 whatever the activation dtype (LaMa's FFT diverged in half precision, lama#47). A missing global part
(ratio 0) is `None`. Arrays are NHWC: x_l f32[B, H, W, C_l], x_g f32[B, H, W, C_g] or None.
"""

from __future__ import annotations

from typing import Any, Callable

import flax.linen as nn
import jax
import jax.numpy as jnp

Dtype = Any


def split_channels(channels: int, ratio: float) -> tuple[int, int]:
  """(local, global) channel counts of an FFC tensor: global = int(channels * ratio), as the reference."""
  if not 0.0 <= ratio < 1.0:
    raise ValueError(f"FFC global ratio must be in [0, 1); got {ratio}")
  global_channels = int(channels * ratio)
  return channels - global_channels, global_channels


def reflect_pad(x: jax.Array, pad: int) -> jax.Array:
  """Mirror padding without repeating the edge (PyTorch 'reflect') of H and W by `pad`: f32[B, H, W, C]."""
  if pad == 0:
    return x
  if min(x.shape[1:3]) <= pad:
    raise ValueError(f"reflection padding by {pad} needs H and W > {pad}; got {x.shape[1]}x{x.shape[2]}")
  return jnp.pad(x, ((0, 0), (pad, pad), (pad, pad), (0, 0)), mode="reflect")


def batch_norm(train: bool, momentum: float, epsilon: float, dtype: Dtype, name: str) -> nn.BatchNorm:
  # momentum 0.9 is PyTorch's BatchNorm2d momentum 0.1; epsilon 1e-5 its default
  return nn.BatchNorm(use_running_average=not train, momentum=momentum, epsilon=epsilon, dtype=dtype, name=name)


class FourierUnit(nn.Module):
  """x f32[B, H, W, C] -> f32[B, H, W, features]: a 1x1 conv + BN + ReLU on the orthonormal 2-D real spectrum.

  The spectrum's channels are interleaved (Re c0, Im c0, Re c1, ...), the reference's layout, so its weights map
  one to one. Everything inside runs in float32; the output is cast to `dtype`.
  """

  features: int
  norm_momentum: float = 0.9
  norm_epsilon: float = 1e-5
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
    b, h, w, c = x.shape
    spectrum = jnp.fft.rfft2(x.astype(jnp.float32), axes=(1, 2), norm="ortho")  # c64[B, H, W//2+1, C]
    z = jnp.stack([spectrum.real, spectrum.imag], axis=-1).reshape(b, h, w // 2 + 1, 2 * c)
    z = nn.Conv(2 * self.features, (1, 1), use_bias=False, dtype=jnp.float32, name="conv")(z)
    z = batch_norm(train, self.norm_momentum, self.norm_epsilon, jnp.float32, "bn")(z)
    z = nn.relu(z).reshape(b, h, w // 2 + 1, self.features, 2)
    out = jnp.fft.irfft2(jax.lax.complex(z[..., 0], z[..., 1]), s=(h, w), axes=(1, 2), norm="ortho")
    return out.astype(self.dtype)


class SpectralTransform(nn.Module):
  """The g->g path: [2x2 avg-pool if stride 2] -> 1x1 conv (features/2) + BN + ReLU -> u + FourierUnit(u)
  -> 1x1 conv (features). f32[B, H, W, C] -> f32[B, H / stride, W / stride, features]."""

  features: int
  stride: int = 1
  norm_momentum: float = 0.9
  norm_epsilon: float = 1e-5
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
    if self.stride == 2:
      x = nn.avg_pool(x, (2, 2), (2, 2))
    half = self.features // 2
    u = nn.Conv(half, (1, 1), use_bias=False, dtype=self.dtype, name="conv1")(x)
    u = nn.relu(batch_norm(train, self.norm_momentum, self.norm_epsilon, self.dtype, "bn1")(u))
    fu = FourierUnit(half, self.norm_momentum, self.norm_epsilon, self.dtype, name="fu")(u, train)
    return nn.Conv(self.features, (1, 1), use_bias=False, dtype=self.dtype, name="conv2")(u + fu)


class FFC(nn.Module):
  """(x_l, x_g) -> (y_l, y_g): the four paths of the module docstring; `features` output channels in all.

  `padding` is applied by mirroring (`padding_mode='reflect'`, the reference's) or zeros ('zeros') before each
  k x k conv; output side = floor((side + 2 padding - dilation (k - 1) - 1) / stride) + 1 as in PyTorch.
  """

  features: int
  kernel_size: int
  ratio_gout: float
  stride: int = 1
  padding: int = 0
  dilation: int = 1
  padding_mode: str = "reflect"
  norm_momentum: float = 0.9
  norm_epsilon: float = 1e-5
  dtype: Dtype = jnp.float32

  def _conv(self, x: jax.Array, features: int, name: str) -> jax.Array:
    if self.padding_mode == "reflect":
      x = reflect_pad(x, self.padding)
    elif self.padding_mode == "zeros":
      x = jnp.pad(x, ((0, 0), (self.padding,) * 2, (self.padding,) * 2, (0, 0)))
    else:
      raise ValueError(f"FFC padding_mode must be 'reflect' or 'zeros'; got {self.padding_mode!r}")
    k = self.kernel_size
    return nn.Conv(
      features,
      (k, k),
      strides=(self.stride, self.stride),
      padding="VALID",
      kernel_dilation=(self.dilation, self.dilation),
      use_bias=False,
      dtype=self.dtype,
      name=name,
    )(x)

  @nn.compact
  def __call__(self, x_l: jax.Array, x_g: jax.Array | None, train: bool = False):
    if self.stride not in (1, 2):
      raise ValueError(f"FFC stride must be 1 or 2; got {self.stride}")
    out_l, out_g = split_channels(self.features, self.ratio_gout)
    y_l = y_g = None
    if out_l:
      y_l = self._conv(x_l, out_l, "conv_l2l")
      if x_g is not None:
        y_l = y_l + self._conv(x_g, out_l, "conv_g2l")
    if out_g:
      y_g = self._conv(x_l, out_g, "conv_l2g")
      if x_g is not None:
        y_g = y_g + SpectralTransform(
          out_g, self.stride, self.norm_momentum, self.norm_epsilon, self.dtype, name="conv_g2g"
        )(x_g, train)
    return y_l, y_g


class FFCBNAct(nn.Module):
  """FFC, then BatchNorm and `activation` on each part (the reference's FFC_BN_ACT)."""

  features: int
  kernel_size: int
  ratio_gout: float
  stride: int = 1
  padding: int = 0
  dilation: int = 1
  padding_mode: str = "reflect"
  activation: Callable[[jax.Array], jax.Array] = nn.relu
  norm_momentum: float = 0.9
  norm_epsilon: float = 1e-5
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x_l: jax.Array, x_g: jax.Array | None, train: bool = False):
    y_l, y_g = FFC(
      self.features,
      self.kernel_size,
      self.ratio_gout,
      self.stride,
      self.padding,
      self.dilation,
      self.padding_mode,
      self.norm_momentum,
      self.norm_epsilon,
      self.dtype,
      name="ffc",
    )(x_l, x_g, train)
    bn = lambda name: batch_norm(train, self.norm_momentum, self.norm_epsilon, self.dtype, name)
    if y_l is not None:
      y_l = self.activation(bn("bn_l")(y_l))
    if y_g is not None:
      y_g = self.activation(bn("bn_g")(y_g))
    return y_l, y_g


class FFCResnetBlock(nn.Module):
  """(x_l, x_g) + two 3x3 FFCBNAct (ReLU, reflection padding = dilation), part by part: same shapes out."""

  ratio: float = 0.75
  dilation: int = 1
  norm_momentum: float = 0.9
  norm_epsilon: float = 1e-5
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x_l: jax.Array, x_g: jax.Array | None, train: bool = False):
    features = x_l.shape[-1] + (0 if x_g is None else x_g.shape[-1])
    if split_channels(features, self.ratio) != (x_l.shape[-1], 0 if x_g is None else x_g.shape[-1]):
      raise ValueError(
        f"FFCResnetBlock(ratio={self.ratio}) needs the input split "
        f"{split_channels(features, self.ratio)}; got {x_l.shape[-1]} + "
        f"{0 if x_g is None else x_g.shape[-1]}"
      )
    y_l, y_g = x_l, x_g
    for name in ("conv1", "conv2"):
      y_l, y_g = FFCBNAct(
        features,
        3,
        self.ratio,
        padding=self.dilation,
        dilation=self.dilation,
        norm_momentum=self.norm_momentum,
        norm_epsilon=self.norm_epsilon,
        dtype=self.dtype,
        name=name,
      )(y_l, y_g, train)
    return x_l + y_l, None if x_g is None else x_g + y_g
