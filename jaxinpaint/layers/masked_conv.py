"""Masked convolutions with one call signature: partial, weighted, gated and plain.

Every layer is called ``y, valid_out = layer(x, valid)``:

  x: f32[B, H, W, Cin]
  valid: f32[B, H, W, 1] or f32[B, H, W, Cin] in [0, 1], 1 = known pixel, 0 = hole.
  y: [B, H', W', features] in the computation dtype, H' = ceil(H / stride_h).
  valid_out: f32[B, H', W', 1], always one channel, at the output resolution.

Padding is exactly ``flax.linen.Conv``'s 'SAME' for the given strides and dilation, and the padded zeros count as
holes. Params are named like ``flax.linen.Conv``: ``kernel`` (kh, kw, Cin, Cout) and ``bias`` (Cout,). ``dtype`` is
the computation dtype of the convolution; the mask maths and the window sums stay in float32.

Cost: one convolution of X*M, one single-channel window sum of the mask, one fused elementwise tail. Strided
convs take their input gradient from `strided_conv` (sub-pixel phases: the forward's work, not s*s times it).

Decoder form, for U-Nets: ``y, valid_out = layer(x, valid, skip=(x_skip, valid_skip))`` with x at half the
resolution of x_skip computes exactly what ``layer(concat([upsample2(x), x_skip]), concat of the masks)`` computes
(per-channel masks for partial/weighted, the channel-wise union for gated/plain) without forming the upsampled or
the concatenated tensor: the conv splits over the two inputs, and the nearest-upsampled half runs as a 2x2
sub-pixel conv on the low-resolution input (4 instead of 9 taps per output pixel; see `upsampled_conv3x3`). 3x3,
stride 1, no dilation only.

CPU fast paths are named choices (`FAST_PATHS`), each defaulting to 'auto': the form measured fastest on the CPU
backend there, and XLA's plain form on GPU/TPU, where nothing has been measured yet (`resolve`). Both forms of each
choice compute the same values and gradients (tests/layers/test_backend_choices.py):
  strided_grad: 'subpixel' (the input gradient of `strided_conv`) or 'xla' (XLA's own conv gradient);
  pad_barrier: 'on' (pad, then an optimisation barrier, then the sub-pixel conv) or 'off' (the pad fuses freely);
  decoder (U-Net, models/unet.py): 'subpixel' (the fused skip form above) or 'concat' (upsample, concat, 3x3 conv).
"""

from __future__ import annotations

import functools
from typing import Any, Callable, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from flax.linen.dtypes import promote_dtype
from jax import lax

Initializer = Callable[..., jax.Array]

# choice -> (measured best on CPU, XLA's plain form): 'auto' picks the first on the CPU backend, else the second.
FAST_PATHS = {"strided_grad": ("subpixel", "xla"), "pad_barrier": ("on", "off"), "decoder": ("subpixel", "concat")}


def resolve(choice: str, value: str, backend: str | None = None) -> str:
  """The form `value` ('auto' or one of FAST_PATHS[choice]) stands for on `backend` (default: JAX's default)."""
  forms = FAST_PATHS[choice]
  if value == "auto":
    return forms[0] if (backend or jax.default_backend()) == "cpu" else forms[1]
  if value not in forms:
    raise ValueError(f"{choice} must be 'auto' or one of {forms}; got {value!r}")
  return value


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
    raise ValueError(f"valid {valid_shape} must be (B, H, W, 1) or (B, H, W, C) matching x {x_shape}")
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


_NHWC = ("NHWC", "HWIO", "NHWC")


def upsample2(x: jax.Array) -> jax.Array:
  """Nearest-neighbour x2 upsampling of [B, H, W, C] -> [B, 2H, 2W, C] (a broadcast, no gather)."""
  b, h, w, c = x.shape
  x = jnp.broadcast_to(x[:, :, None, :, None, :], (b, h, 2, w, 2, c))
  return x.reshape(b, 2 * h, 2 * w, c)


# Output row 2i+p of a 3x3 'SAME' conv of a nearest-x2-upsampled map reads low-res rows i-1+p and i+p; row tap
# T[p, a, ky] = 1 when the 3x3 tap ky lands on the a-th of those two rows: T[0] = [[1,0,0],[0,1,1]],
# T[1] = [[1,1,0],[0,0,1]] (`_phase_kernels` applies it with adds).


def _phase_kernels(kernel: jax.Array) -> jax.Array:
  """(3, 3, Ci, Co) -> the sub-pixel 2x2 kernels (a, b, Ci, p, q, Co) = sum T[p,a,ky] T[q,b,kx] K[ky, kx], as adds."""

  def fold(k, axis):  # taps along `axis` -> (phase, low tap) pairs: p=0: (k0, k1+k2), p=1: (k0+k1, k2)
    k0, k1, k2 = (lax.index_in_dim(k, i, axis, keepdims=False) for i in range(3))
    return jnp.stack([jnp.stack([k0, k1 + k2]), jnp.stack([k0 + k1, k2])])

  rows = fold(kernel, 0)  # (p, a, kx, Ci, Co)
  both = fold(rows, 2)  # (q, b, p, a, Ci, Co)
  return jnp.transpose(both, (3, 1, 4, 2, 0, 5))  # (a, b, Ci, p, q, Co)


def upsampled_conv3x3(x: jax.Array, kernel: jax.Array, pad_barrier: str = "auto") -> jax.Array:
  """conv3x3_same(upsample2(x), kernel) for x [B, H, W, Ci], kernel (3, 3, Ci, Co) -> [B, 2H, 2W, Co].

  Sub-pixel form: output pixel (2i+p, 2j+q) = sum_{a,b} x[i-1+p+a, j-1+q+b] K_pq[a, b] with the 2x2 kernel
  K_pq[a, b] = sum_{ky,kx} T[p,a,ky] T[q,b,kx] K[ky, kx]; all four phases come from one 2x2 conv with 4*Co outputs
  on x zero-padded by 1 (phase (p, q) sits at offset (p, q) of its (H+1) x (W+1) output), then interleave.
  pad_barrier: 'on' / 'off' / 'auto' (see `resolve`).
  """
  b, h, w, ci = x.shape
  co = kernel.shape[-1]
  phases = _phase_kernels(kernel).reshape(2, 2, ci, 4 * co)
  # Padding as its own op: with the padding inside the conv, XLA CPU lowers the kernel gradient to a reversed-
  # kernel convolution that runs ~100x slower. The barrier materialises the padded input once, for the forward
  # conv and the kernel gradient's transpose alike.
  x = jnp.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)))
  if resolve("pad_barrier", pad_barrier) == "on":
    x = lax.optimization_barrier(x)
  y = lax.conv_general_dilated(x, phases, (1, 1), "VALID", dimension_numbers=_NHWC)
  y = y.reshape(b, h + 1, w + 1, 2, 2, co)
  rows = [jnp.stack([y[:, p : p + h, q : q + w, p, q] for q in (0, 1)], axis=3) for p in (0, 1)]
  return jnp.stack(rows, axis=2).reshape(b, 2 * h, 2 * w, co)


@functools.partial(jax.custom_vjp, nondiff_argnums=(2, 3))
def strided_conv(x: jax.Array, kernel: jax.Array, strides: tuple[int, int], pads: tuple) -> jax.Array:
  """lax.conv_general_dilated(x, kernel, strides, pads) (NHWC, HWIO), with an input gradient that does only the
  forward's work: per output phase (e_y, e_x) of the stride, a stride-1 conv of dy with the sub-kernel
  K[e_y::s, e_x::s] (flipped), then interleave (the sub-pixel form of a transposed conv). XLA's own gradient
  convolves a zero-dilated dy (s*s times the work) and, for small maps, picks a reversed-kernel form that is slower
  still. The kernel gradient is XLA's."""
  return lax.conv_general_dilated(x, kernel, strides, pads, dimension_numbers=_NHWC)


def _strided_conv_fwd(x, kernel, strides, pads):
  return strided_conv(x, kernel, strides, pads), (x, kernel)


def _strided_conv_bwd(strides, pads, residuals, dy):
  x, kernel = residuals
  _, kernel_vjp = jax.vjp(lambda k: lax.conv_general_dilated(x, k, strides, pads, dimension_numbers=_NHWC), kernel)
  (dkernel,) = kernel_vjp(dy)
  sh, sw = strides
  b, h, w, cin = x.shape
  (lo_h, _), (lo_w, _) = pads
  uh, uw = -(-(lo_h + h) // sh), -(-(lo_w + w) // sw)  # phase rows/cols needed to cover the input
  oh, ow = dy.shape[1:3]
  phases = []
  for ey in range(sh):
    row = []
    for ex in range(sw):
      sub = kernel[ey::sh, ex::sw][::-1, ::-1]  # (Jy, Jx, Cin, Cout), flipped
      jy, jx = sub.shape[:2]
      z = lax.conv_general_dilated(
        dy,
        jnp.swapaxes(sub, 2, 3),
        (1, 1),
        ((jy - 1, max(uh - oh, 0)), (jx - 1, max(uw - ow, 0))),
        dimension_numbers=_NHWC,
      )
      row.append(z[:, :uh, :uw])
    phases.append(jnp.stack(row, axis=3))  # (B, Uh, Uw, sw, Cin)
  dx = jnp.stack(phases, axis=2).reshape(b, uh * sh, uw * sw, cin)  # padded-input coordinates
  return dx[:, lo_h : lo_h + h, lo_w : lo_w + w].astype(x.dtype), dkernel


strided_conv.defvjp(_strided_conv_fwd, _strided_conv_bwd)


def _channel_total(valid: jax.Array, channels: int) -> jax.Array:
  """Sum over channels of a mask broadcast to `channels` channels: f32[B, H, W, 1]."""
  valid = valid.astype(jnp.float32)
  if valid.shape[-1] == 1:
    return valid * float(channels)
  return jnp.sum(valid, axis=-1, keepdims=True)


def check_skip(x, valid, skip) -> None:
  """Raises ValueError unless skip = (x_skip, valid_skip) is a valid input at twice the resolution of x."""
  if not (isinstance(skip, (tuple, list)) and len(skip) == 2):
    raise ValueError("skip must be a pair (x_skip, valid_skip)")
  x_skip, valid_skip = skip
  check_shapes(x_skip, valid_skip)
  b, h, w, _ = jnp.shape(x)
  if tuple(jnp.shape(x_skip)[:3]) != (b, 2 * h, 2 * w):
    raise ValueError(f"skip input {tuple(jnp.shape(x_skip))} must be (B, 2H, 2W, C) for x {tuple(jnp.shape(x))}")


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
  strided_grad: str = "auto"  # FAST_PATHS: 'subpixel' (strided_conv's input gradient) or 'xla'
  pad_barrier: str = "auto"  # FAST_PATHS: barrier before the sub-pixel decoder conv's padded input, 'on' or 'off'

  def _geometry(self, x):
    """(kernel_size, strides, dilation, pads) as int pairs for input x (B, H, W, C)."""
    kernel_size = _pair(self.kernel_size, "kernel_size")
    strides = _pair(self.strides, "strides")
    dilation = _pair(self.kernel_dilation, "kernel_dilation")
    return kernel_size, strides, dilation, same_pads(x.shape[1:3], kernel_size, strides, dilation)

  def _conv(self, x, out_features: int, x_skip=None):
    """Conv of x without bias in the computation dtype; returns (y, bias param or None).

    With x_skip the conv input is concat([upsample2(x), x_skip]): one kernel over both, applied to each part.
    """
    kernel_size, strides, dilation, pads = self._geometry(x)
    cin = x.shape[-1] + (0 if x_skip is None else x_skip.shape[-1])
    kernel = self.param("kernel", self.kernel_init, (*kernel_size, cin, out_features), self.param_dtype)
    bias = self.param("bias", self.bias_init, (out_features,), self.param_dtype) if self.use_bias else None
    if x_skip is not None:
      if kernel_size != (3, 3) or strides != (1, 1) or dilation != (1, 1):
        raise ValueError(
          f"skip needs a 3x3 stride-1 undilated conv; got kernel {kernel_size}, strides {strides}, dilation {dilation}"
        )
      x, x_skip, kernel = promote_dtype(x, x_skip, kernel, dtype=self.dtype)
      cx = x.shape[-1]
      y_skip = lax.conv_general_dilated(x_skip, kernel[:, :, cx:], (1, 1), ((1, 1), (1, 1)), dimension_numbers=_NHWC)
      return upsampled_conv3x3(x, kernel[:, :, :cx], self.pad_barrier) + y_skip, bias
    x, kernel = promote_dtype(x, kernel, dtype=self.dtype)
    subpixel = resolve("strided_grad", self.strided_grad) == "subpixel"
    if subpixel and strides != (1, 1) and dilation == (1, 1) and all(k >= s for k, s in zip(kernel_size, strides)):
      return strided_conv(x, kernel, strides, tuple(tuple(p) for p in pads)), bias
    y = lax.conv_general_dilated(
      x, kernel, window_strides=strides, padding=pads, rhs_dilation=dilation, dimension_numbers=("NHWC", "HWIO", "NHWC")
    )
    return y, bias

  def _mask_window_sum(self, x, valid, skip=None):
    """(sum(M), sum(1)) per output pixel: the mask summed over channels, then one 1-channel window sum (f32).

    With skip = (x_skip, valid_skip), over the channels of concat([upsample2(x), x_skip]) with `valid` broadcast
    over x's channels and `valid_skip` over x_skip's (sum(1) = 9 * all of them).
    """
    if skip is not None:
      x_skip, valid_skip = skip
      kernel_size, strides, dilation, pads = self._geometry(x_skip)
      mask = upsample2(_channel_total(valid, x.shape[-1])) + _channel_total(valid_skip, x_skip.shape[-1])
      msum = window_sum(mask, kernel_size, strides, dilation, pads)
      return msum, float(kernel_size[0] * kernel_size[1] * (x.shape[-1] + x_skip.shape[-1]))
    kernel_size, strides, dilation, pads = self._geometry(x)
    mask = valid.astype(jnp.float32)
    if mask.shape[-1] > 1:
      mask = jnp.sum(mask, axis=-1, keepdims=True)
    msum = window_sum(mask, kernel_size, strides, dilation, pads)
    return msum, float(kernel_size[0] * kernel_size[1] * valid.shape[-1])


def _renormalized_conv(module: _MaskedConvBase, x, valid, skip=None):
  """Seed 004 eq. 1 / Liu et al.: W^T(X*M) * sum(1)/sum(M) + b where sum(M) > 0, else exactly 0.

  Shared by PartialConv and WeightedConv (they differ only in the mask update). Returns (y, msum, sum1) with
  msum f32[B, H', W', 1] and sum1 the window size counted over all channels of `valid` (and of the skip input).
  """
  check_shapes(x, valid)
  x_skip = None
  if skip is not None:
    check_skip(x, valid, skip)
    x_skip = skip[0] * skip[1].astype(skip[0].dtype)
  msum, sum1 = module._mask_window_sum(x, valid, skip)
  y, bias = module._conv(x * valid.astype(x.dtype), module.features, x_skip)
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
  def __call__(self, x, valid, skip=None):
    y, msum, _ = _renormalized_conv(self, x, valid, skip)
    return y, (msum > 0).astype(jnp.float32)


class WeightedConv(_MaskedConvBase):
  """Weighted mask convolution (seed 004 eqs. 1 and 3): PartialConv's normalisation with a real-valued mask.

  y as PartialConv; valid_out = sum(M)/sum(1), the window mean of the mask (not binarised).
  """

  @nn.compact
  def __call__(self, x, valid, skip=None):
    y, msum, sum1 = _renormalized_conv(self, x, valid, skip)
    return y, msum / sum1


def _touched(module: _MaskedConvBase, x, valid, skip=None):
  """PartialConv's mask update: 1 where the window touches any known pixel, else 0 -> f32[B, H', W', 1]."""
  msum, _ = module._mask_window_sum(x, valid, skip)
  return (msum > 0).astype(jnp.float32)


def _plain_conv(module: _MaskedConvBase, x, valid, skip, out_features: int):
  """Conv + bias of x (or of concat([upsample2(x), x_skip])) as is, and the touched mask."""
  check_shapes(x, valid)
  if skip is not None:
    check_skip(x, valid, skip)
  y, bias = module._conv(x, out_features, None if skip is None else skip[0])
  if bias is not None:
    y = y + bias.astype(y.dtype)
  return y, _touched(module, x, valid, skip)


class GatedConv(_MaskedConvBase):
  """Gated convolution (Yu et al. 2019, DeepFill v2): one conv to 2*features, y = activation(f) * sigmoid(g).

  The conv sees x as is (the caller zeroes holes and appends the mask channel). valid_out follows PartialConv's
  update (1 where the window touches a known pixel) so downstream code has a mask at every resolution; the
  gate itself does not read it. Params: one `kernel` (kh, kw, Cin, 2*features) and `bias` (2*features,).
  """

  activation: Callable | None = nn.elu

  @nn.compact
  def __call__(self, x, valid, skip=None):
    y, touched = _plain_conv(self, x, valid, skip, 2 * self.features)
    feature, gate = jnp.split(y, 2, axis=-1)
    if self.activation is not None:
      feature = self.activation(feature)
    return feature * nn.sigmoid(gate), touched


class PlainConv(_MaskedConvBase):
  """Ordinary convolution with the masked-conv signature (baselines); valid_out as GatedConv's."""

  @nn.compact
  def __call__(self, x, valid, skip=None):
    return _plain_conv(self, x, valid, skip, self.features)


MASKED_CONVS = {"partial": PartialConv, "weighted": WeightedConv, "gated": GatedConv, "plain": PlainConv}


def get_conv(name: str) -> type[_MaskedConvBase]:
  """The masked-conv class registered under `name` (see MASKED_CONVS)."""
  if name not in MASKED_CONVS:
    raise ValueError(f"unknown conv {name!r}; valid names: {sorted(MASKED_CONVS)}")
  return MASKED_CONVS[name]
