"""Weighted normalisation layers (seed 004, eqs. 4 and 6): statistics weighted by the validity mask.

Every layer is called ``y = norm(x, valid)`` with

  x: f32[B, H, W, C]
  valid: f32[B, H, W, 1] or f32[B, H, W, C] in [0, 1] (a 1-channel mask is broadcast over channels).
  y: [B, H, W, C] = (x - mu) / sqrt(var + eps) * scale + bias, at every pixel (holes included).

with, over the layer's reduction scope, the weighted mean (eq. 4) mu = sum(X*M) / sum(M) and the simplified
weighted variance (eq. 6) var = sum((X - mu)^2 * M) / sum(M). Eqs. 4-6 are 0 / 0 where sum(M) == 0 (a group
that is all hole, e.g. deep in a large hole for instance norm): such a group falls back to identity statistics,
mu = 0 and var = 1, so y = x / sqrt(1 + eps) * scale + bias, bounded by |x| (mu = var = 0 would give
x / sqrt(eps): x316 at eps 1e-5, x10^4 at the WConv config's 1e-8). Param and variable names and defaults follow
flax (`scale`, `bias`; `batch_stats` `mean`, `var`), and with valid all ones each layer equals its flax
counterpart. Statistics are computed in float32.
"""

from __future__ import annotations

from typing import Any, Callable, ClassVar, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
from flax.linen import dtypes

from jaxinpaint.layers.masked_conv import check_shapes

Initializer = Callable[..., jax.Array]


def weighted_moments(x, mask, axes: Sequence[int]):
  """Weighted mean (eq. 4), variance (eq. 6) and mask total over `axes`, keepdims; mask broadcasts to x.

  Returns (mu, var, total) in float32; where total == 0 (eqs. 4-6 undefined), mu = 0 and var = 1.
  """
  x = x.astype(jnp.promote_types(x.dtype, jnp.float32))
  mask = jnp.broadcast_to(mask.astype(x.dtype), x.shape)
  total = jnp.sum(mask, axis=axes, keepdims=True)
  known = total > 0
  safe_total = jnp.where(known, total, 1.0)
  mu = jnp.where(known, jnp.sum(x * mask, axis=axes, keepdims=True) / safe_total, 0.0)
  # identity statistics, not var = 0: normalising by sqrt(0 + eps) would scale an all-hole group by 1/sqrt(eps)
  var = jnp.where(known, jnp.sum(jnp.square(x - mu) * mask, axis=axes, keepdims=True) / safe_total, 1.0)
  return mu, var, total


def _scale_shift(module: nn.Module, x, mu, var):
  """(x - mu) * rsqrt(var + eps) * scale + bias with flax's `scale`/`bias` params of shape (C,)."""
  features = x.shape[-1]
  y = x.astype(mu.dtype) - mu
  mul = jax.lax.rsqrt(var + module.epsilon)
  args = [x]
  if module.use_scale:
    scale = module.param("scale", module.scale_init, (features,), module.param_dtype)
    mul = mul * scale
    args.append(scale)
  y = y * mul
  if module.use_bias:
    bias = module.param("bias", module.bias_init, (features,), module.param_dtype)
    y = y + bias
    args.append(bias)
  return jnp.asarray(y, dtypes.canonicalize_dtype(*args, dtype=module.dtype))


class WeightedBatchNorm(nn.Module):
  """Weighted batch norm: per-channel statistics over (B, H, W) weighted by the mask (eqs. 4, 6).

  Running `mean`/`var` in `batch_stats` are updated like flax: ra = momentum * ra + (1 - momentum) * batch_stat,
  except that a channel with no valid pixel in the batch keeps its running values. Not updated during init.
  Under jit with a batch sharded over a mesh the plain sums are global, so no axis_name is needed.
  """

  use_running_average: bool | None = None
  momentum: float = 0.99
  epsilon: float = 1e-5
  dtype: Any = None
  param_dtype: Any = jnp.float32
  use_bias: bool = True
  use_scale: bool = True
  bias_init: Initializer = nn.initializers.zeros
  scale_init: Initializer = nn.initializers.ones

  @nn.compact
  def __call__(self, x, valid, use_running_average: bool | None = None):
    check_shapes(x, valid)
    use_running_average = nn.merge_param("use_running_average", self.use_running_average, use_running_average)
    features = x.shape[-1]
    ra_mean = self.variable("batch_stats", "mean", lambda s: jnp.zeros(s, jnp.float32), (features,))
    ra_var = self.variable("batch_stats", "var", lambda s: jnp.ones(s, jnp.float32), (features,))
    if use_running_average:
      mu, var = ra_mean.value, ra_var.value
    else:
      mu, var, total = weighted_moments(x, valid, (0, 1, 2))
      mu, var, known = mu.reshape(-1), var.reshape(-1), total.reshape(-1) > 0
      if not self.is_initializing():
        new_mean = self.momentum * ra_mean.value + (1 - self.momentum) * mu
        new_var = self.momentum * ra_var.value + (1 - self.momentum) * var
        # A channel with no valid pixel carries no statistic: keep its running values.
        ra_mean.value = jnp.where(known, new_mean, ra_mean.value)
        ra_var.value = jnp.where(known, new_var, ra_var.value)
    return _scale_shift(self, x, mu, var)


class _WeightedPerExampleNorm(nn.Module):
  """Per-example weighted normalisation over `_axes` (eqs. 4, 6), `scale`/`bias` per channel (C,)."""

  epsilon: float = 1e-6
  dtype: Any = None
  param_dtype: Any = jnp.float32
  use_bias: bool = True
  use_scale: bool = True
  bias_init: Initializer = nn.initializers.zeros
  scale_init: Initializer = nn.initializers.ones
  _axes: ClassVar[tuple[int, ...]] = (1, 2)

  @nn.compact
  def __call__(self, x, valid):
    check_shapes(x, valid)
    mu, var, _ = weighted_moments(x, valid, self._axes)
    return _scale_shift(self, x, mu, var)


class WeightedInstanceNorm(_WeightedPerExampleNorm):
  """Weighted instance norm: per example, per channel over (H, W) (eqs. 4, 6); flax `nn.InstanceNorm` at M = 1."""

  _axes: ClassVar[tuple[int, ...]] = (1, 2)


class WeightedGroupNorm(nn.Module):
  """Weighted group norm: per example, per group of C/num_groups channels over (H, W, C/num_groups) (eqs. 4, 6).

  Equals flax `nn.GroupNorm(num_groups)` at M = 1.
  """

  num_groups: int = 32
  epsilon: float = 1e-6
  dtype: Any = None
  param_dtype: Any = jnp.float32
  use_bias: bool = True
  use_scale: bool = True
  bias_init: Initializer = nn.initializers.zeros
  scale_init: Initializer = nn.initializers.ones

  @nn.compact
  def __call__(self, x, valid):
    check_shapes(x, valid)
    batch, height, width, features = x.shape
    if self.num_groups <= 0 or features % self.num_groups:
      raise ValueError(f"num_groups {self.num_groups} must divide the channels of x {x.shape}")
    group_shape = (batch, height, width, self.num_groups, features // self.num_groups)
    mask = jnp.broadcast_to(valid, x.shape).reshape(group_shape)
    mu, var, _ = weighted_moments(x.reshape(group_shape), mask, (1, 2, 4))
    mu = jnp.repeat(mu.reshape(batch, 1, 1, self.num_groups), features // self.num_groups, axis=-1)
    var = jnp.repeat(var.reshape(batch, 1, 1, self.num_groups), features // self.num_groups, axis=-1)
    return _scale_shift(self, x, mu, var)


class WeightedLayerNorm(_WeightedPerExampleNorm):
  """Weighted layer norm: per example over (H, W, C) together (eqs. 4, 6), `scale`/`bias` per channel (C,).

  Equals flax `nn.LayerNorm(reduction_axes=(1, 2, 3), feature_axes=-1)` at M = 1 (not flax's default, which
  normalises each pixel over C only).
  """

  _axes: ClassVar[tuple[int, ...]] = (1, 2, 3)
