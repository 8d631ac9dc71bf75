"""Mask-aware layers: masked convolutions (partial, weighted, gated, plain) and weighted normalisation."""

from jaxinpaint.layers.masked_conv import (
  MASKED_CONVS,
  GatedConv,
  PartialConv,
  PlainConv,
  WeightedConv,
  check_shapes,
  check_valid,
  get_conv,
  same_pads,
  window_sum,
)
from jaxinpaint.layers.weighted_norm import (
  WeightedBatchNorm,
  WeightedGroupNorm,
  WeightedInstanceNorm,
  WeightedLayerNorm,
  weighted_moments,
)

__all__ = [
  "MASKED_CONVS",
  "GatedConv",
  "PartialConv",
  "PlainConv",
  "WeightedBatchNorm",
  "WeightedConv",
  "WeightedGroupNorm",
  "WeightedInstanceNorm",
  "WeightedLayerNorm",
  "check_shapes",
  "check_valid",
  "get_conv",
  "same_pads",
  "weighted_moments",
  "window_sum",
]
