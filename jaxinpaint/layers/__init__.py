"""Mask-aware layers: masked convolutions (partial, weighted, gated, plain) and weighted normalisation;
contextual attention and spectral normalisation for the DeepFill family; fast Fourier convolutions for LaMa."""

from jaxinpaint.layers.contextual_attention import ContextualAttention, contextual_attention, flow_to_rgb
from jaxinpaint.layers.ffc import FFC, FFCBNAct, FFCResnetBlock, FourierUnit, SpectralTransform
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
from jaxinpaint.layers.spectral_norm import SpectralConv, spectral_normalize
from jaxinpaint.layers.weighted_norm import (
  WeightedBatchNorm,
  WeightedGroupNorm,
  WeightedInstanceNorm,
  WeightedLayerNorm,
  weighted_moments,
)

__all__ = [
  "MASKED_CONVS",
  "FFC",
  "FFCBNAct",
  "FFCResnetBlock",
  "FourierUnit",
  "SpectralTransform",
  "ContextualAttention",
  "SpectralConv",
  "contextual_attention",
  "flow_to_rgb",
  "spectral_normalize",
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
