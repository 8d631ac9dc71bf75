"""LaMa (Suvorov et al. 2022): the FFC ResNet generator and the pix2pixHD patch discriminator.

`LamaGenerator` is the reference's `FFCResNetGenerator` as `configs/training/generator/ffc_resnet_075.yaml` sets
it: input [masked image, hole] (4 channels, `concat_mask`), reflection pad 3 + 7x7 FFC (all local) + BN + ReLU,
`n_downsampling` 3x3 stride-2 FFCs (local; the last one splits its output 0.25 local / 0.75 global),
`n_blocks` FFC residual blocks (global ratio 0.75), the parts concatenated, `n_downsampling` x (3x3 stride-2
transposed conv + BN + ReLU), reflection pad 3 + 7x7 conv, sigmoid. LaMa-Fourier: 9 blocks, 27,048,835
parameters; Big-LaMa: 18 blocks, 50,975,875 (tests/tasks/test_lama.py counts them from the reference's layer list).

The reference works on [0, 1] images; here image f32[B, H, W, 3] in [-1, 1] and valid f32[B, H, W, 1] (1 = known)
go in, the [0, 1] image times valid and the hole 1 - valid are the network's input, and the sigmoid output comes
back as 2 sigmoid - 1 in [-1, 1]. H and W must be multiples of 2**n_downsampling. Each down-sampling stage's,
residual block's and up-sampling stage's output is named `models.unet.BLOCK_OUTPUT` (config.train.remat='blocks'
keeps only these; an identity otherwise).

`NLayerDiscriminator` (pix2pixhd_nlayer, ndf 64, 4 layers): 4x4 convs, padding 2: stride 2 (ndf, no norm), then
n_layers - 1 stride-2 convs + BN doubling the width (max 512), a stride-1 conv + BN, each with LeakyReLU(0.2),
and a stride-1 conv to one logit per patch: (logits f32[B, h, w], [each block's activation]); 6,962,369
parameters at ndf 64.
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
from jax.ad_checkpoint import checkpoint_name

from jaxinpaint.layers.ffc import FFCBNAct, FFCResnetBlock, batch_norm, reflect_pad
from jaxinpaint.models.unet import BLOCK_OUTPUT

Dtype = Any


def _tag(x_l: jax.Array, x_g: jax.Array | None) -> tuple[jax.Array, jax.Array | None]:
  """An FFC stage's (local, global) outputs named BLOCK_OUTPUT: what config.train.remat='blocks' keeps."""
  return checkpoint_name(x_l, BLOCK_OUTPUT), None if x_g is None else checkpoint_name(x_g, BLOCK_OUTPUT)


class LamaGenerator(nn.Module):
  """image f32[B, H, W, 3] in [-1, 1], valid f32[B, H, W, 1] -> f32[B, H, W, 3] in (-1, 1)."""

  ngf: int = 64
  n_downsampling: int = 3
  n_blocks: int = 9
  ratio_g: float = 0.75
  max_features: int = 1024
  norm_momentum: float = 0.9
  norm_epsilon: float = 1e-5
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, image: jax.Array, valid: jax.Array, train: bool = False) -> jax.Array:
    step = 2**self.n_downsampling
    if image.shape[1] % step or image.shape[2] % step:
      raise ValueError(f"LaMa needs H and W divisible by {step}; got {image.shape[1]}x{image.shape[2]}")
    norm = dict(norm_momentum=self.norm_momentum, norm_epsilon=self.norm_epsilon, dtype=self.dtype)
    valid = valid.astype(jnp.float32)
    x = jnp.concatenate([(image.astype(jnp.float32) + 1.0) / 2.0 * valid, 1.0 - valid], axis=-1).astype(self.dtype)
    x_l, x_g = FFCBNAct(self.ngf, 7, 0.0, name="stem", **norm)(reflect_pad(x, 3), None, train)
    for i in range(self.n_downsampling):
      last = i == self.n_downsampling - 1
      width = min(self.max_features, self.ngf * 2 ** (i + 1))
      x_l, x_g = _tag(
        *FFCBNAct(width, 3, self.ratio_g if last else 0.0, stride=2, padding=1, name=f"down{i}", **norm)(
          x_l, x_g, train
        )
      )
    for i in range(self.n_blocks):
      x_l, x_g = _tag(*FFCResnetBlock(self.ratio_g, name=f"block{i}", **norm)(x_l, x_g, train))
    h = x_l if x_g is None else jnp.concatenate([x_l, x_g], axis=-1)
    for i in range(self.n_downsampling):
      width = min(self.max_features, self.ngf * 2 ** (self.n_downsampling - i - 1))
      # PyTorch ConvTranspose2d(k 3, stride 2, padding 1, output_padding 1): pads (k-1-p, k-1-p+op) = (1, 2)
      h = nn.ConvTranspose(width, (3, 3), strides=(2, 2), padding=((1, 2), (1, 2)), dtype=self.dtype, name=f"up{i}")(h)
      h = nn.relu(batch_norm(train, self.norm_momentum, self.norm_epsilon, self.dtype, f"up{i}_bn")(h))
      h = checkpoint_name(h, BLOCK_OUTPUT)
    h = nn.Conv(3, (7, 7), padding="VALID", dtype=self.dtype, name="out")(reflect_pad(h, 3))
    return 2.0 * jax.nn.sigmoid(h.astype(jnp.float32)) - 1.0


class NLayerDiscriminator(nn.Module):
  """x f32[B, H, W, C] -> (logits f32[B, h, w], features: list of f32[B, h_i, w_i, C_i], one per block)."""

  ndf: int = 64
  n_layers: int = 4
  max_features: int = 512
  norm_momentum: float = 0.9
  norm_epsilon: float = 1e-5

  @nn.compact
  def __call__(self, x: jax.Array, train: bool = False) -> tuple[jax.Array, list[jax.Array]]:
    conv = lambda width, stride, name: nn.Conv(
      width, (4, 4), strides=(stride, stride), padding=((2, 2), (2, 2)), name=name
    )
    features = []
    h = nn.leaky_relu(conv(self.ndf, 2, "conv0")(x), 0.2)
    features.append(h)
    width = self.ndf
    for i in range(1, self.n_layers + 1):
      width = min(width * 2, self.max_features)
      h = conv(width, 2 if i < self.n_layers else 1, f"conv{i}")(h)
      h = batch_norm(train, self.norm_momentum, self.norm_epsilon, jnp.float32, f"bn{i}")(h)
      h = nn.leaky_relu(h, 0.2)
      features.append(h)
    return conv(1, 1, "logits")(h)[..., 0], features
