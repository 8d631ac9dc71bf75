"""The partial-convolution inpainting U-Net (Liu et al. 2018), with any masked convolution.

Encoder: 7x7/64, 5x5/128, 5x5/256, then 3x3/512 convolutions, all stride 2 (`depth` layers: 7 at 256 px, 8 at
512 px); ReLU, BatchNorm on every layer but the first. Decoder: nearest x2 upsampling of features *and* mask,
concatenation with the encoder skip (features and masks alike), 3x3 conv, BatchNorm, LeakyReLU(0.2); the last
layer sees the input image and its mask and has neither norm nor activation.

`conv` picks the layer (see `jaxinpaint.layers.MASKED_CONVS`):
- 'partial' (PConv) and 'weighted' (WConv, seed 004): the mask travels beside the features; the skip masks are
  concatenated per channel, so the window sums count every channel of the concatenated input.
- 'gated' and 'plain': the conv sees the holes zeroed with the mask appended as a fourth input channel (the usual
  baseline); the mask is still carried for shapes and the composite. A gated net's output layer is a plain conv
  (as DeepFill v2's output conv: ungated, no activation).
`norm` defaults to BatchNorm, and to the weighted BatchNorm of seed 004 (eqs. 4 and 6) for 'weighted'.
"""

from __future__ import annotations

from typing import Any, Sequence

import flax.linen as nn
import jax.numpy as jnp
from jax.ad_checkpoint import checkpoint_name

from jaxinpaint import layers
from jaxinpaint.imaging import composite  # noqa: F401 -- models.composite, for the tasks
from jaxinpaint.layers.biharmonic import biharmonic_fill
from jaxinpaint.layers.push_pull import push_pull_fill

NORMS = ("batch", "weighted_batch", "none")
FILLS = {"push_pull": push_pull_fill, "biharmonic": biharmonic_fill}  # parameter-free fills a net may correct
DECODERS = ("auto", "subpixel", "concat")
# jax.checkpoint name of every generator block's output (U-Net and DeepFill): what config.train.remat='blocks' keeps
BLOCK_OUTPUT = "generator_block"


upsample2 = layers.masked_conv.upsample2  # nearest x2, f32[B, H, W, C] -> f32[B, 2H, 2W, C]


def check_unet_input(image: jnp.ndarray, valid: jnp.ndarray, depth: int) -> None:
  """Raises ValueError naming the shapes when the U-Net cannot take `image`/`valid`."""
  if image.ndim != 4 or valid.ndim != 4:
    raise ValueError(
      f"InpaintingUNet expects image f32[B, H, W, C] and valid f32[B, H, W, 1]; got image {image.shape} and "
      f"valid {valid.shape}"
    )
  if valid.shape[:3] != image.shape[:3] or valid.shape[3] != 1:
    raise ValueError(f"valid must be f32[B, H, W, 1] matching image {image.shape}; got {valid.shape}")
  step = 2**depth
  h, w = image.shape[1:3]
  if h % step or w % step:
    raise ValueError(
      f"InpaintingUNet(depth={depth}) needs H and W divisible by 2**{depth} = {step}; got H={h}, W={w} "
      f"(image {image.shape}). Sizes that work: {step}, {2 * step}, {3 * step}, ... — pad or crop, or lower "
      f"`depth`."
    )


class InpaintingUNet(nn.Module):
  """Inpainting U-Net: `output = model(image, valid, train)`.

  image: f32[B, H, W, 3] in [-1, 1] (hole pixels may hold anything; they are masked out here);
  valid: f32[B, H, W, 1] (1 = known). H and W must be divisible by 2**depth. Returns f32[B, H, W, out_channels]
  (no output activation, as in the paper); use `composite` to paste back the known pixels.
  """

  conv: str = "partial"
  depth: int = 7
  features: Sequence[int] = (64, 128, 256, 512)
  kernel_sizes: Sequence[int] = (7, 5, 5, 3)
  norm: str | None = None  # None: 'weighted_batch' for conv='weighted', else 'batch'
  norm_momentum: float = 0.99
  norm_epsilon: float = 1e-5
  freeze_encoder_norm: bool = False  # the paper's fine-tuning stage: encoder norms use running statistics
  out_channels: int = 3
  # How a decoder conv sees concat([upsample2(h), skip]) (same params, same maths up to float rounding):
  # 'subpixel' forms neither tensor and runs the upsampled half as a 2x2 sub-pixel conv (fewer FLOPs; faster on
  # CPU); 'concat' forms both and runs one 3x3 conv (each kernel's gradient is all-reduced in its own shape:
  # ~20 % fewer gradient bytes under data parallelism, for communication-bound multi-GPU runs).
  # 'auto' (default): 'subpixel' on the CPU backend, where it was measured faster, else 'concat' (layers.resolve).
  decoder: str = "auto"
  strided_grad: str = "auto"  # encoder strided convs' input gradient: 'subpixel' / 'xla' (layers/masked_conv.py)
  pad_barrier: str = "auto"  # sub-pixel decoder: optimisation barrier after the pad, 'on' / 'off'
  # True: the output is a learned correction to a parameter-free fill of the holes (`fill`: push-pull's pyramid
  # interpolation or the biharmonic solve), rather than the whole image (out_channels must equal image channels).
  residual_fill: bool = False
  fill: str = "push_pull"  # the fill a residual_fill net corrects: 'push_pull' or 'biharmonic' (layers/biharmonic.py)
  # Stride-1 3x3 convs (width features[0]) at the input's resolution before the first strided conv; their output is
  # the full-resolution skip, and the decoder then ends in one more full-resolution conv before the output conv.
  # 0 (the paper's net): every feature lives at half resolution or below, and the output is one 3x3 conv of the
  # nearest-upsampled half-resolution features and the input, too coarse for a correction of a thin stroke.
  full_res: int = 0
  dtype: Any = jnp.float32  # activation dtype; params stay float32

  def _width(self, level: int) -> int:
    return self.features[min(level, len(self.features) - 1)]

  def _kernel(self, level: int) -> int:
    return self.kernel_sizes[min(level, len(self.kernel_sizes) - 1)]

  @nn.compact
  def __call__(self, image: jnp.ndarray, valid: jnp.ndarray, train: bool = False) -> jnp.ndarray:
    check_unet_input(image, valid, self.depth)
    conv_cls = layers.get_conv(self.conv)
    norm = self.norm or ("weighted_batch" if self.conv == "weighted" else "batch")
    if norm not in NORMS:
      raise ValueError(f"InpaintingUNet norm must be one of {NORMS}; got {norm!r}")
    if self.decoder not in DECODERS:
      raise ValueError(f"InpaintingUNet decoder must be one of {DECODERS}; got {self.decoder!r}")
    decoder = layers.masked_conv.resolve("decoder", self.decoder)
    paths = dict(strided_grad=self.strided_grad, pad_barrier=self.pad_barrier)
    carries_mask = self.conv in ("partial", "weighted")

    valid = valid.astype(jnp.float32)
    x = image.astype(self.dtype) * valid.astype(self.dtype)
    if self.fill not in FILLS:
      raise ValueError(f"InpaintingUNet fill must be one of {tuple(FILLS)}; got {self.fill!r}")
    fill = FILLS[self.fill](image, valid) if self.residual_fill else None
    if not carries_mask:
      if fill is not None:  # a mask-as-channel net can see the fill it corrects (masked convs cannot: they skip holes)
        x = x + (1.0 - valid.astype(self.dtype)) * fill.astype(self.dtype)
      x = jnp.concatenate([x, valid.astype(self.dtype)], axis=-1)

    def normalise(h, m, name, use_running_average):
      if norm == "none":
        return h
      if norm == "weighted_batch":
        return layers.WeightedBatchNorm(
          momentum=self.norm_momentum, epsilon=self.norm_epsilon, dtype=self.dtype, name=name
        )(h, m, use_running_average=use_running_average)
      return nn.BatchNorm(momentum=self.norm_momentum, epsilon=self.norm_epsilon, dtype=self.dtype, name=name)(
        h, use_running_average=use_running_average
      )

    h, m = x, valid
    for i in range(self.full_res):
      h, m = conv_cls(self._width(0), (3, 3), dtype=self.dtype, name=f"full{i + 1}", **paths)(h, m)
      if i > 0:
        h = normalise(h, m, f"full{i + 1}_norm", not train or self.freeze_encoder_norm)
      h = checkpoint_name(nn.relu(h), BLOCK_OUTPUT)
    skips = [(h, m)]
    for level in range(self.depth):
      k = self._kernel(level)
      h, m = conv_cls(self._width(level), (k, k), strides=(2, 2), dtype=self.dtype, name=f"enc{level + 1}", **paths)(
        h, m
      )
      if level > 0:
        h = normalise(h, m, f"enc{level + 1}_norm", not train or self.freeze_encoder_norm)
      h = checkpoint_name(nn.relu(h), BLOCK_OUTPUT)
      skips.append((h, m))

    h, m = skips.pop()
    for level in reversed(range(self.depth)):
      skip_h, skip_m = skips.pop()
      last = level == 0 and not self.full_res
      width = self.out_channels if last else self._width(max(level - 1, 0))
      # DeepFill's rule for gated nets: the output conv is a plain, ungated conv (no sigmoid gate on the image).
      dec_cls = layers.PlainConv if (last and self.conv == "gated") else conv_cls
      # The conv of concat([upsample2(h), skip]) with the masks concatenated per channel (partial/weighted: sum(1)
      # and sum(M) count every channel) or united (gated/plain).
      init = {"kernel_init": nn.initializers.zeros_init()} if (last and self.residual_fill) else {}
      dec = dec_cls(width, (3, 3), dtype=self.dtype, name=f"dec{level + 1}", **init, **paths)
      if decoder == "subpixel":  # fused: neither tensor is formed (layers/masked_conv.py)
        h, m = dec(h, m, skip=(skip_h.astype(h.dtype), skip_m))
      else:
        h, m = upsample2(h), upsample2(m)
        if carries_mask:
          cat_m = jnp.concatenate(
            [
              jnp.broadcast_to(m, h.shape[:3] + (h.shape[-1],)),
              jnp.broadcast_to(skip_m, skip_h.shape[:3] + (skip_h.shape[-1],)),
            ],
            axis=-1,
          )
        else:
          cat_m = jnp.maximum(m, skip_m)
        h, m = dec(jnp.concatenate([h, skip_h.astype(h.dtype)], axis=-1), cat_m)
      if not last:
        h = normalise(h, m, f"dec{level + 1}_norm", not train)
        h = checkpoint_name(nn.leaky_relu(h, 0.2), BLOCK_OUTPUT)
    if self.full_res:
      init = {"kernel_init": nn.initializers.zeros_init()} if self.residual_fill else {}
      out_cls = layers.PlainConv if self.conv == "gated" else conv_cls
      h, m = out_cls(self.out_channels, (3, 3), dtype=self.dtype, name="out", **init, **paths)(h, m)
    if self.residual_fill:  # the output conv starts at zero: training starts from the fill, not from noise on it
      h = h.astype(jnp.float32) + fill
    return h.astype(jnp.float32)
