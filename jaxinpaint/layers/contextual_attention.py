"""Contextual attention (Yu et al. 2018, "Generative Image Inpainting with Contextual Attention", sec. 3.2).

Every position of the foreground f borrows features from the known part of the background b:

  1. match at 1/rate resolution (nearest downsampling): 3x3 patches f_p, b_q,
     s[p, q] = < f_p, b_q / ||b_q|| >               (similarity='reference', the default: JiahuiYu's
                                                     `inpaint_ops.py` normalises only the background patches,
                                                     so the softmax temperature grows with ||f_p||), or
     s[p, q] = < f_p / ||f_p||, b_q / ||b_q|| >     (similarity='cosine': the paper's eq. 1);
     ||p|| is sqrt(sum p^2 + eps^2) (eps 1e-4; the reference floors with max(||p||, eps)): the same value
     whenever ||p|| >> eps, and a gradient that stays finite on an all-zero (dead-ReLU) patch;
  2. fuse (propagation): s, zero for the q that are not candidates (step 3), is convolved with a fuse_k x fuse_k
     identity kernel along the width pairs (p_w, q_w) and then along the height pairs (p_h, q_h), so
     neighbouring matches that agree reinforce;
  3. attend: a[p, :] = softmax_q(softmax_scale * s[p, q]) over the candidates q whose whole 3x3 window is known
     (eq. 2; scale 10), zero for the others;
  4. paste: each position p adds sum_q a[p, q] * B_q, B_q the full-resolution (2 rate)x(2 rate) patch of b
     around q, at stride rate (a transposed convolution); overlaps are averaged (4 per pixel inside, fewer at
     the border, where the reference divides by 4 regardless).

Masks are per example (the reference takes batch element 0's for the whole batch, JiahuiYu issues #233/#379).
A candidate is usable only if its whole window is known, so nothing from a hole is ever copied (and, with the
zeroing before the fusion, the output does not depend on what the hole of b holds). Windows at the border extend
the image by replicating its edge (the reference pads with zeros), so border candidates copy real pixels rather
than black. An example without any usable candidate (an all-hole image) gets zeros, finite, and a warning is
logged from inside the jitted computation (`jax.debug.callback` under `lax.cond`: only when it happens).
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from absl import logging
from jax import lax


_NHWC = ("NHWC", "HWIO", "NHWC")


def _patches(x: jax.Array, size: int, stride: int, pad: tuple[int, int]) -> jax.Array:
  """x [B, H, W, C] -> [B, H', W', C*size*size]: the size x size windows at `stride`, edge padded by `pad`.

  One `conv_general_dilated_patches` (feature order: channel, then window row and column); a single op, so its
  gradient is one op too (stacked slices compiled ~8x slower on XLA:CPU).
  """
  xp = jnp.pad(x, ((0, 0), pad, pad, (0, 0)), mode="edge")
  return lax.conv_general_dilated_patches(xp, (size, size), (stride, stride), "VALID", dimension_numbers=_NHWC)


def _fold(values: jax.Array, size: int, stride: int, pad: tuple[int, int], out_shape) -> jax.Array:
  """Sums windows back into place: [B, h, w, C*size*size] -> out_shape [B, H, W, C] (a transposed convolution).

  The transpose of extracting zero-padded windows, so window pixels that fall in the padding are dropped.
  """

  def extract(z):
    zp = jnp.pad(z, ((0, 0), pad, pad, (0, 0)))
    return lax.conv_general_dilated_patches(zp, (size, size), (stride, stride), "VALID", dimension_numbers=_NHWC)

  _, transpose = jax.vjp(extract, jnp.zeros(out_shape, values.dtype))
  return transpose(values)[0]


def _diagonal_sum(s: jax.Array, axis_p: int, axis_q: int, k: int) -> jax.Array:
  """sum_{d=-k//2..k//2} s[.., p + d, .., q + d, ..] with zeros outside: an identity-kernel conv on (p, q)."""
  r = k // 2
  pads = [(0, 0)] * s.ndim
  pads[axis_p] = pads[axis_q] = (r, r)
  sp = jnp.pad(s, pads)
  n_p, n_q = s.shape[axis_p], s.shape[axis_q]
  total = 0.0
  for d in range(k):
    total = total + lax.slice_in_dim(lax.slice_in_dim(sp, d, d + n_p, axis=axis_p), d, d + n_q, axis=axis_q)
  return total


def block_min(valid: jax.Array, factor: int) -> jax.Array:
  """[B, H, W, 1] -> [B, H / factor, W / factor, 1]: a block is known only if all its pixels are."""
  b, h, w, c = valid.shape
  if h % factor or w % factor:
    raise ValueError(f"mask {valid.shape} cannot be reduced by {factor}: H and W must be multiples of it")
  return valid.reshape(b, h // factor, factor, w // factor, factor, c).min(axis=(2, 4))


WARN_EVERY_SECONDS = 10.0  # the warning below repeats at most this often (it runs inside every train step)


def _warn_no_candidates(count, total):
  logging.log_every_n_seconds(
    logging.WARNING,
    "contextual attention: %d of %d examples have no known 3x3 patch to copy from (the hole "
    "covers everything it could draw from); their attention output is 0.",
    WARN_EVERY_SECONDS,
    int(count),
    int(total),
  )


SIMILARITIES = ("reference", "cosine")


def safe_norm(p: jax.Array, eps: float) -> jax.Array:
  """sqrt(sum_k p^2 + eps^2) over the last axis, keepdims: >= eps, and its gradient p / norm is 0 at p = 0."""
  return jnp.sqrt(jnp.sum(jnp.square(p), axis=-1, keepdims=True) + eps * eps)


def contextual_attention(
  f: jax.Array,
  b: jax.Array,
  valid: jax.Array,
  *,
  ksize: int = 3,
  rate: int = 2,
  fuse_k: int = 3,
  softmax_scale: float = 10.0,
  eps: float = 1e-4,
  similarity: str = "reference",
  warn: bool = True,
) -> tuple[jax.Array, jax.Array, jax.Array]:
  """The contextual-attention layer (see the module docstring for the equations).

  `similarity`: 'reference' (logit = softmax_scale * <f_p, b_q / ||b_q||>) or 'cosine' (both normalised).

  Args:
    f: f32[B, H, W, C] foreground features (the positions to fill).
    b: f32[B, H, W, C] background features (where patches are copied from); DeepFill passes f = b.
    valid: f32[B, H, W, 1], 1 = known pixel of b, at the features' resolution. H, W multiples of `rate`.
  Returns:
    y: f32[B, H, W, C], the pasted features;
    offsets: i32[B, H / rate, W / rate, 2], (dy, dx) from each position to its best match at 1/rate
      resolution (0 where an example has no candidate), for the attention visualisation;
    num_candidates: i32[B], usable background patches per example.
  """
  if f.ndim != 4 or f.shape != b.shape or valid.shape != f.shape[:3] + (1,):
    raise ValueError(
      f"contextual_attention needs f, b [B, H, W, C] of one shape and valid [B, H, W, 1]; got "
      f"{f.shape}, {b.shape}, {valid.shape}"
    )
  if similarity not in SIMILARITIES:
    raise ValueError(f"contextual_attention similarity must be one of {SIMILARITIES}; got {similarity!r}")
  if rate < 1 or ksize % 2 == 0 or fuse_k % 2 == 0:
    raise ValueError(f"contextual_attention needs rate >= 1 and odd ksize, fuse_k; got {rate}, {ksize}, {fuse_k}")
  batch, height, width, channels = f.shape
  if height % rate or width % rate:
    raise ValueError(f"contextual_attention: features {height}x{width} must be multiples of rate={rate}")
  hh, wh = height // rate, width // rate
  dtype = f.dtype

  raw_pad = (rate // 2, rate - rate // 2)  # 'SAME' for a 2*rate kernel at stride rate
  raw = _patches(b, 2 * rate, rate, raw_pad).reshape(batch, hh * wh, -1)

  fs, bs = f[:, ::rate, ::rate], b[:, ::rate, ::rate]
  known = block_min(valid.astype(jnp.float32), rate) > 0.5
  r = ksize // 2
  candidate = (_patches(known.astype(jnp.float32), ksize, 1, (r, r)).min(axis=-1) > 0.5).reshape(batch, hh * wh)
  num_candidates = jnp.sum(candidate, axis=1, dtype=jnp.int32)

  def flat(p):
    return p.reshape(batch, hh * wh, -1).astype(jnp.float32)

  def unit(p):
    return p / safe_norm(p, eps)

  fp, bp = flat(_patches(fs, ksize, 1, (r, r))), flat(_patches(bs, ksize, 1, (r, r)))
  scores = jnp.einsum("bpk,bqk->bpq", unit(fp) if similarity == "cosine" else fp, unit(bp))
  # zeroed before fusing too, so a candidate's fused score never sums matches of patches that overlap a hole
  scores = scores * candidate[:, None, :]
  if fuse_k > 1:
    s = scores.reshape(batch, hh, wh, hh, wh)
    s = _diagonal_sum(_diagonal_sum(s, 2, 4, fuse_k), 1, 3, fuse_k)
    scores = s.reshape(batch, hh * wh, hh * wh)

  mask = candidate[:, None, :]
  logits = jnp.where(mask, softmax_scale * scores, -1e9)
  attention = jax.nn.softmax(logits, axis=-1) * mask  # all zero for an example without candidates

  pasted = jnp.einsum("bpq,bqk->bpk", attention, raw.astype(jnp.float32)).reshape(batch, hh, wh, -1)
  y = _fold(pasted, 2 * rate, rate, raw_pad, (batch, height, width, channels))
  overlap = _fold(jnp.ones((1, hh, wh, 4 * rate * rate), jnp.float32), 2 * rate, rate, raw_pad, (1, height, width, 1))
  y = (y / overlap).astype(dtype)

  best = jnp.argmax(attention, axis=-1).reshape(batch, hh, wh)
  grid_h, grid_w = jnp.meshgrid(jnp.arange(hh), jnp.arange(wh), indexing="ij")  # jnp: hh, wh may be symbolic
  offsets = jnp.stack([best // wh - grid_h, best % wh - grid_w], axis=-1).astype(jnp.int32)
  offsets = jnp.where((num_candidates > 0)[:, None, None, None], offsets, 0)

  if warn:
    empty = jnp.sum(num_candidates == 0)
    lax.cond(empty > 0, lambda: jax.debug.callback(_warn_no_candidates, empty, batch), lambda: None)
  return y, offsets, num_candidates


class ContextualAttention(nn.Module):
  """`y, offsets = ContextualAttention()(f, b, valid)`: `contextual_attention` as a (parameter-free) layer."""

  ksize: int = 3
  rate: int = 2
  fuse_k: int = 3
  softmax_scale: float = 10.0
  similarity: str = "reference"  # 'reference' (only background patches normalised) or 'cosine' (paper eq. 1)

  @nn.compact
  def __call__(self, f: jax.Array, b: jax.Array, valid: jax.Array) -> tuple[jax.Array, jax.Array]:
    y, offsets, _ = contextual_attention(
      f,
      b,
      valid,
      ksize=self.ksize,
      rate=self.rate,
      fuse_k=self.fuse_k,
      softmax_scale=self.softmax_scale,
      similarity=self.similarity,
    )
    return y, offsets


def flow_to_rgb(offsets: jax.Array) -> jax.Array:
  """Attention offsets i32[B, h, w, 2] -> colour image f32[B, h, w, 3] in [-1, 1].

  Hue = direction of the offset, saturation = its length over the example's longest offset, value 1 (the
  optical-flow colour coding the reference uses to show where each position copies from; white = in place).
  """
  dy, dx = offsets[..., 0].astype(jnp.float32), offsets[..., 1].astype(jnp.float32)
  radius = jnp.sqrt(dy * dy + dx * dx)
  saturation = radius / jnp.maximum(radius.max(axis=(1, 2), keepdims=True), 1.0)
  hue = (jnp.arctan2(-dy, -dx) / np.pi + 1.0) / 2.0  # [0, 1]
  # HSV -> RGB with value 1: each channel is 1 - s * clip(...) of a shifted hue ramp.
  k = (jnp.stack([5.0, 3.0, 1.0], axis=-1) + 6.0 * hue[..., None]) % 6.0
  rgb = 1.0 - saturation[..., None] * jnp.clip(jnp.minimum(k, 4.0 - k), 0.0, 1.0)
  return 2.0 * rgb - 1.0
