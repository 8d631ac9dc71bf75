"""DeepFill generators: the coarse-to-fine network of Yu et al. (v1, 2018: plain convs; v2, 2019: gated convs).

Both follow the reference layer spec (JiahuiYu/generative_inpainting), widths in units of cnum (c):

  input: image with holes zeroed, a ones channel (marks the image border for 'SAME' padding) and the hole mask
  stage 1: 5x5 c; 3x3 s2 2c; 3x3 2c; 3x3 s2 4c; 3x3 4c x2; 3x3 4c dilated 2, 4, 8, 16; 3x3 4c x2;
           up + 3x3 2c; 3x3 2c; up + 3x3 c; 3x3 c/2; 3x3 -> 3 (no activation), then tanh (v2) / clip (v1)
  stage 2 input: x1 * hole + image * (1 - hole) (v1 also appends the ones and mask channels)
    dilated branch: 5x5 c; 3x3 s2 c; 3x3 2c; 3x3 s2 2c; 3x3 4c x2; 3x3 4c dilated 2, 4, 8, 16
    attention branch: 5x5 c; 3x3 s2 c; 3x3 2c; 3x3 s2 4c; 3x3 4c; 3x3 4c (ReLU); contextual attention
                      (matching at 1/8 of the image); 3x3 4c x2
    concatenated, then stage 1's decoder (3x3 4c x2; up + 3x3 2c; ...; 3x3 -> 3, tanh / clip).

"up" is nearest x2 upsampling then a conv (the reference's `gen_deconv`; no ConvTranspose). Activation ELU.
v2 convolutions are gated as the reference's `gen_conv`: a layer of width w convolves to w channels and returns
ELU(first half) * sigmoid(second half), i.e. w / 2 features (so cnum 48 gives the paper's ~4.1M parameters);
the 3-channel output conv is ungated. v1 convolutions are plain with ELU, width w.

Call: `out = model.apply(variables, image, valid)` with image f32[B, H, W, 3] in [-1, 1], valid f32[B, H, W, 1]
(1 = known), H and W multiples of 8. Returns {'coarse': f32[B, H, W, 3], 'refined': f32[B, H, W, 3]} in
[-1, 1] and 'offsets': i32[B, H/8, W/8, 2], the contextual attention's best match per position.
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
from jax.ad_checkpoint import checkpoint_name

from jaxinpaint import layers
from jaxinpaint.layers.contextual_attention import ContextualAttention, block_min
from jaxinpaint.models.unet import BLOCK_OUTPUT, upsample2

DOWNSAMPLE = 8  # two stride-2 convs, then contextual attention's rate 2


def check_generator_input(image: jax.Array, valid: jax.Array, name: str) -> None:
  """Raises ValueError naming the shapes when a DeepFill generator cannot take them."""
  if image.ndim != 4 or image.shape[-1] != 3 or valid.shape != image.shape[:3] + (1,):
    raise ValueError(
      f"{name} expects image f32[B, H, W, 3] and valid f32[B, H, W, 1]; got {image.shape} and {valid.shape}"
    )
  h, w = image.shape[1:3]
  if h % DOWNSAMPLE or w % DOWNSAMPLE:
    raise ValueError(
      f"{name} needs H and W divisible by {DOWNSAMPLE} (two stride-2 convs and attention at rate "
      f"2); got {h}x{w}. Pad or crop to e.g. {max(DOWNSAMPLE, h // DOWNSAMPLE * DOWNSAMPLE)}."
    )


class _TwoStageGenerator(nn.Module):
  """The shared layout; subclasses pick the convolution and the output squashing."""

  cnum: int = 48
  softmax_scale: float = 10.0
  attention_similarity: str = "reference"  # contextual attention: 'reference' (10 <f, b/|b|>) or 'cosine'
  dtype: Any = jnp.float32  # activation dtype; params and the attention maths stay float32
  strided_grad: str = "auto"  # stride-2 convs' input gradient: 'subpixel' / 'xla' (layers/masked_conv.py)

  gated = True
  squash = staticmethod(jnp.tanh)
  stage2_mask_input = False

  def _conv(self, width, kernel, name, stride=1, rate=1, activation=nn.elu):
    """One reference `gen_conv`: returns f(h, m) -> (h, m) at the new resolution."""

    def apply(h, m):
      common = dict(
        kernel_size=(kernel, kernel),
        strides=(stride, stride),
        kernel_dilation=(rate, rate),
        dtype=self.dtype,
        name=name,
        strided_grad=self.strided_grad,
      )
      if self.gated:
        h, m = layers.GatedConv(features=max(width // 2, 1), activation=activation, **common)(h, m)
        return checkpoint_name(h, BLOCK_OUTPUT), m
      h, m = layers.PlainConv(features=width, **common)(h, m)
      return checkpoint_name(activation(h), BLOCK_OUTPUT), m

    return apply

  def _output(self, h, m, name):
    h, _ = layers.PlainConv(features=3, kernel_size=(3, 3), dtype=self.dtype, name=name)(h, m)
    return self.squash(h.astype(jnp.float32))

  def _decoder(self, h, m, prefix):
    c = self.cnum
    h, m = self._conv(4 * c, 3, f"{prefix}11")(h, m)
    h, m = self._conv(4 * c, 3, f"{prefix}12")(h, m)
    h, m = self._conv(2 * c, 3, f"{prefix}13_upsample")(upsample2(h), upsample2(m))
    h, m = self._conv(2 * c, 3, f"{prefix}14")(h, m)
    h, m = self._conv(c, 3, f"{prefix}15_upsample")(upsample2(h), upsample2(m))
    h, m = self._conv(c // 2, 3, f"{prefix}16")(h, m)
    return self._output(h, m, f"{prefix}17")

  def _dilated(self, h, m, prefix):
    for rate in (2, 4, 8, 16):
      h, m = self._conv(4 * self.cnum, 3, f"{prefix}_atrous{rate}", rate=rate)(h, m)
    return h, m

  @nn.compact
  def __call__(self, image: jax.Array, valid: jax.Array, train: bool = False) -> dict[str, jax.Array]:
    del train  # no batch statistics or dropout: train and eval are the same function
    check_generator_input(image, valid, type(self).__name__)
    c, dt = self.cnum, self.dtype
    valid = valid.astype(jnp.float32)
    hole = 1.0 - valid
    ones = jnp.ones_like(valid)
    everywhere = ones  # the convs' own mask bookkeeping is not used by this network: every pixel counts

    # stage 1: coarse
    x = jnp.concatenate([image * valid, ones, hole], axis=-1).astype(dt)
    h, m = self._conv(c, 5, "conv1")(x, everywhere)
    h, m = self._conv(2 * c, 3, "conv2_downsample", stride=2)(h, m)
    h, m = self._conv(2 * c, 3, "conv3")(h, m)
    h, m = self._conv(4 * c, 3, "conv4_downsample", stride=2)(h, m)
    h, m = self._conv(4 * c, 3, "conv5")(h, m)
    h, m = self._conv(4 * c, 3, "conv6")(h, m)
    h, m = self._dilated(h, m, "conv")
    coarse = self._decoder(h, m, "conv")

    # stage 2: refine the composite of the coarse result and the known pixels
    x2 = coarse * hole + image * valid
    xnow = jnp.concatenate([x2, ones, hole], axis=-1) if self.stage2_mask_input else x2
    xnow = xnow.astype(dt)
    h, m = self._conv(c, 5, "xconv1")(xnow, everywhere)
    h, m = self._conv(c, 3, "xconv2_downsample", stride=2)(h, m)
    h, m = self._conv(2 * c, 3, "xconv3")(h, m)
    h, m = self._conv(2 * c, 3, "xconv4_downsample", stride=2)(h, m)
    h, m = self._conv(4 * c, 3, "xconv5")(h, m)
    h, m = self._conv(4 * c, 3, "xconv6")(h, m)
    hallucinated, _ = self._dilated(h, m, "xconv")

    h, m = self._conv(c, 5, "pmconv1")(xnow, everywhere)
    h, m = self._conv(c, 3, "pmconv2_downsample", stride=2)(h, m)
    h, m = self._conv(2 * c, 3, "pmconv3")(h, m)
    h, m = self._conv(4 * c, 3, "pmconv4_downsample", stride=2)(h, m)
    h, m = self._conv(4 * c, 3, "pmconv5")(h, m)
    h, m = self._conv(4 * c, 3, "pmconv6", activation=nn.relu)(h, m)
    # a feature pixel is known only if its whole 4x4 block of image pixels is
    known = block_min(valid, 4)
    h, offsets = ContextualAttention(
      rate=2, softmax_scale=self.softmax_scale, similarity=self.attention_similarity, name="attention"
    )(h.astype(jnp.float32), h.astype(jnp.float32), known)
    h, m = self._conv(4 * c, 3, "pmconv9")(h.astype(dt), m)
    h, m = self._conv(4 * c, 3, "pmconv10")(h, m)

    h = jnp.concatenate([hallucinated, h], axis=-1)
    refined = self._decoder(h, m, "allconv")
    return {"coarse": coarse, "refined": refined, "offsets": offsets}


class DeepFillV2Generator(_TwoStageGenerator):
  """DeepFill v2 (free-form inpainting with gated convolution): gated convs, cnum 48, tanh output."""

  cnum: int = 48
  gated = True
  squash = staticmethod(jnp.tanh)
  stage2_mask_input = False


def _clip(x):
  return jnp.clip(x, -1.0, 1.0)


class DeepFillV1Generator(_TwoStageGenerator):
  """DeepFill v1 (contextual attention): plain convs with ELU, cnum 32, output clipped to [-1, 1]."""

  cnum: int = 32
  gated = False
  squash = staticmethod(_clip)
  stage2_mask_input = True
