"""Masked convolutions with one call signature: partial, weighted, gated and plain.

Every layer is called ``y, valid_out = layer(x, valid)``:

  x: f32[B, H, W, Cin]
  valid: f32[B, H, W, 1] or f32[B, H, W, Cin] in [0, 1], 1 = known pixel, 0 = hole.
  y: [B, H', W', features] in the computation dtype, H' = ceil(H / stride_h).
  valid_out: f32[B, H', W', 1], always one channel, at the output resolution.

Padding is exactly ``flax.linen.Conv``'s 'SAME' for the given strides and dilation, and the padded zeros count as
holes. Params are named like ``flax.linen.Conv``: ``kernel`` (kh, kw, Cin, Cout) and ``bias`` (Cout,). ``dtype`` is
the computation dtype of the convolution; the mask maths and the window sums stay in float32.

Cost: one convolution of X*M, one single-channel window sum of the mask, one fused elementwise tail.
"""

from __future__ import annotations

from typing import Any, Callable, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from flax.linen.dtypes import promote_dtype
from jax import lax

Initializer = Callable[..., jax.Array]


def check_valid(valid) -> None:
  """Raises ValueError unless every value of a concrete `valid` array is finite and in [0, 1].

  Needs concrete values, so call it eagerly (outside jit); the layers call it only when `valid` is not a Tracer.
  """
  values = np.asarray(valid)
  if not np.all(np.isfinite(values)):
    raise ValueError(f"valid {values.shape} has non-finite values; expected values in [0, 1]")
  low, high = float(values.min(initial=0.0)), float(values.max(initial=0.0))
  if low < 0.0 or high > 1.0:
    raise ValueError(f"valid {values.shape} has values in [{low}, {high}]; expected values in [0, 1]")


def check_shapes(x, valid) -> None:
  """Raises ValueError unless x is (B, H, W, C) and valid (B, H, W, 1 or C); checks values when concrete."""
  x_shape, valid_shape = tuple(jnp.shape(x)), tuple(jnp.shape(valid))
  if len(x_shape) != 4 or len(valid_shape) != 4:
    raise ValueError(f"x {x_shape} and valid {valid_shape} must both be rank 4 (B, H, W, C)")
  if valid_shape[:3] != x_shape[:3] or valid_shape[3] not in (1, x_shape[3]):
    raise ValueError(
      f"valid {valid_shape} must be (B, H, W, 1) or (B, H, W, C) matching x {x_shape}"
    )
  if not isinstance(valid, jax.core.Tracer):
    check_valid(valid)


def _pair(value: int | Sequence[int], name: str) -> tuple[int, int]:
  """Normalises an int or a 2-sequence to a pair of ints."""
  if isinstance(value, int):
    return (value, value)
  value = tuple(int(v) for v in value)
  if len(value) != 2:
    raise ValueError(f"{name} must be an int or a pair of ints, got {value}")
  return value


def same_pads(
  spatial: Sequence[int], kernel_size: Sequence[int], strides: Sequence[int], dilation: Sequence[int]
) -> list[tuple[int, int]]:
  """(low, high) padding per spatial dim, identical to lax/flax 'SAME' (computed on the dilated kernel)."""
  dilated = [(k - 1) * d + 1 for k, d in zip(kernel_size, dilation)]
  return list(lax.padtype_to_pads(tuple(spatial), dilated, tuple(strides), "SAME"))


def window_sum(
  mask: jax.Array,
  kernel_size: Sequence[int],
  strides: Sequence[int],
  dilation: Sequence[int],
  pads: Sequence[tuple[int, int]],
) -> jax.Array:
  """Sum of a one-channel mask f32[B, H, W, 1] over each conv window -> f32[B, H', W', 1].

  A reduce_window rather than a ones-kernel conv: exact in f32 (no TF32) and no Cin x Cout work.
  """
  (kh, kw), (sh, sw), (dh, dw) = kernel_size, strides, dilation
  return lax.reduce_window(
    mask,
    0.0,
    lax.add,
    window_dimensions=(1, kh, kw, 1),
    window_strides=(1, sh, sw, 1),
    padding=((0, 0), *pads, (0, 0)),
    window_dilation=(1, dh, dw, 1),
  )


class _MaskedConvBase(nn.Module):
  """Shared attributes, params (`kernel`, `bias`) and window maths of the masked convolutions."""

  features: int
  kernel_size: int | Sequence[int]
  strides: int | Sequence[int] = (1, 1)
  kernel_dilation: int | Sequence[int] = (1, 1)
  use_bias: bool = True
  dtype: Any = None
  param_dtype: Any = jnp.float32
  kernel_init: Initializer = nn.initializers.lecun_normal()
  bias_init: Initializer = nn.initializers.zeros_init()

  def _geometry(self, x):
    """(kernel_size, strides, dilation, pads) as int pairs for input x (B, H, W, C)."""
    kernel_size = _pair(self.kernel_size, "kernel_size")
    strides = _pair(self.strides, "strides")
    dilation = _pair(self.kernel_dilation, "kernel_dilation")
    return kernel_size, strides, dilation, same_pads(x.shape[1:3], kernel_size, strides, dilation)

  def _conv(self, x, out_features: int):
    """Conv of x without bias in the computation dtype; returns (y, bias param or None)."""
    kernel_size, strides, dilation, pads = self._geometry(x)
    kernel = self.param("kernel", self.kernel_init, (*kernel_size, x.shape[-1], out_features), self.param_dtype)
    bias = self.param("bias", self.bias_init, (out_features,), self.param_dtype) if self.use_bias else None
    x, kernel = promote_dtype(x, kernel, dtype=self.dtype)
    y = lax.conv_general_dilated(
      x,
      kernel,
      window_strides=strides,
      padding=pads,
      rhs_dilation=dilation,
      dimension_numbers=("NHWC", "HWIO", "NHWC"),
    )
    return y, bias

  def _mask_window_sum(self, x, valid):
    """(sum(M), sum(1)) per output pixel: the mask summed over channels, then one 1-channel window sum (f32)."""
    kernel_size, strides, dilation, pads = self._geometry(x)
    mask = valid.astype(jnp.float32)
    if mask.shape[-1] > 1:
      mask = jnp.sum(mask, axis=-1, keepdims=True)
    msum = window_sum(mask, kernel_size, strides, dilation, pads)
    return msum, float(kernel_size[0] * kernel_size[1] * valid.shape[-1])


def _renormalized_conv(module: _MaskedConvBase, x, valid):
  """Seed 004 eq. 1 / Liu et al.: W^T(X*M) * sum(1)/sum(M) + b where sum(M) > 0, else exactly 0.

  Shared by PartialConv and WeightedConv (they differ only in the mask update). Returns (y, msum, sum1) with
  msum f32[B, H', W', 1] and sum1 the window size counted over all channels of `valid`.
  """
  check_shapes(x, valid)
  msum, sum1 = module._mask_window_sum(x, valid)
  y, bias = module._conv(x * valid.astype(x.dtype), module.features)
  out_dtype = y.dtype
  known = msum > 0
  # Safe division: the denominator is never 0, so no inf/NaN in values or gradients.
  ratio = jnp.where(known, sum1 / jnp.where(known, msum, 1.0), 0.0)
  y = y.astype(jnp.float32) * ratio
  if bias is not None:
    y = y + bias.astype(jnp.float32)
  y = jnp.where(known, y, 0.0)
  return y.astype(out_dtype), msum, sum1


class PartialConv(_MaskedConvBase):
  """Partial convolution (Liu et al. 2018; seed 004 eqs. 1-2).

  y = W^T(X*M) * sum(1)/sum(M) + b where sum(M) > 0 else 0; valid_out = 1 where sum(M) > 0 else 0.
  sum(1) = kh*kw for a 1-channel mask, kh*kw*Cin for a Cin-channel one.
  """

  @nn.compact
  def __call__(self, x, valid):
    y, msum, _ = _renormalized_conv(self, x, valid)
    return y, (msum > 0).astype(jnp.float32)


class WeightedConv(_MaskedConvBase):
  """Weighted mask convolution (seed 004 eqs. 1 and 3): PartialConv's normalisation with a real-valued mask.

  y as PartialConv; valid_out = sum(M)/sum(1), the window mean of the mask (not binarised).
  """

  @nn.compact
  def __call__(self, x, valid):
    y, msum, sum1 = _renormalized_conv(self, x, valid)
    return y, msum / sum1


def _touched(module: _MaskedConvBase, x, valid):
  """PartialConv's mask update: 1 where the window touches any known pixel, else 0 -> f32[B, H', W', 1]."""
  msum, _ = module._mask_window_sum(x, valid)
  return (msum > 0).astype(jnp.float32)


class GatedConv(_MaskedConvBase):
  """Gated convolution (Yu et al. 2019, DeepFill v2): one conv to 2*features, y = activation(f) * sigmoid(g).

  The conv sees x as is (the caller zeroes holes and appends the mask channel). valid_out follows PartialConv's
  update (1 where the window touches a known pixel) so downstream code has a mask at every resolution; the
  gate itself does not read it. Params: one `kernel` (kh, kw, Cin, 2*features) and `bias` (2*features,).
  """

  activation: Callable | None = nn.elu

  @nn.compact
  def __call__(self, x, valid):
    check_shapes(x, valid)
    y, bias = self._conv(x, 2 * self.features)
    if bias is not None:
      y = y + bias.astype(y.dtype)
    feature, gate = jnp.split(y, 2, axis=-1)
    if self.activation is not None:
      feature = self.activation(feature)
    return feature * nn.sigmoid(gate), _touched(self, x, valid)


class PlainConv(_MaskedConvBase):
  """Ordinary convolution with the masked-conv signature (baselines); valid_out as GatedConv's."""

  @nn.compact
  def __call__(self, x, valid):
    check_shapes(x, valid)
    y, bias = self._conv(x, self.features)
    if bias is not None:
      y = y + bias.astype(y.dtype)
    return y, _touched(self, x, valid)


MASKED_CONVS = {"partial": PartialConv, "weighted": WeightedConv, "gated": GatedConv, "plain": PlainConv}


def get_conv(name: str) -> type[_MaskedConvBase]:
  """The masked-conv class registered under `name` (see MASKED_CONVS)."""
  if name not in MASKED_CONVS:
    raise ValueError(f"unknown conv {name!r}; valid names: {sorted(MASKED_CONVS)}")
  return MASKED_CONVS[name]
