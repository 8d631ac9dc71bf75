"""VGG16's conv stack (Simonyan & Zisserman 2015), defined once for the partial-conv loss and for LPIPS.

`VGG16Features(blocks, taps)` builds the first `blocks` conv blocks and returns one feature map per block:
- the partial-conv perceptual/style loss (Liu et al. 2018) uses pool1, pool2 and pool3: `VGG16Features()`
  (`blocks=3, taps='pool'`);
- LPIPS (Zhang et al. 2018) taps relu1_2, relu2_2, relu3_3, relu4_3 and relu5_3: `blocks=5, taps='relu'`; its
  head (unit-normalise, lin layers, sum) is `jaxinpaint.eval.perceptual.Lpips`, which shares this module's
  scope so both keep the flat params layout below.
Layer names follow the paper (`conv1_1` ... `conv5_3`), so the params are
`{'conv1_1': {'kernel': f32[3, 3, 3, 64], 'bias': f32[64]}, ...}` whichever taps are used.

Loss weights file (`.npz`, written by `scripts/convert_vgg16.py`): keys `<layer>/kernel` (HWIO) and
`<layer>/bias` for the seven layers in `VGG16_LAYERS` (blocks 1-3). The weights expect torchvision's input
convention: RGB in [0, 1], normalised with the ImageNet mean (0.485, 0.456, 0.406) and std (0.229, 0.224, 0.225);
`to_imagenet_input` maps this project's [-1, 1] images to it.
"""

from __future__ import annotations

import os

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

# (name, in channels, out channels) of all 13 convs, grouped by block; a 2x2 max-pool follows each block.
VGG16_BLOCKS = (
  (("conv1_1", 3, 64), ("conv1_2", 64, 64)),
  (("conv2_1", 64, 128), ("conv2_2", 128, 128)),
  (("conv3_1", 128, 256), ("conv3_2", 256, 256), ("conv3_3", 256, 256)),
  (("conv4_1", 256, 512), ("conv4_2", 512, 512), ("conv4_3", 512, 512)),
  (("conv5_1", 512, 512), ("conv5_2", 512, 512), ("conv5_3", 512, 512)),
)
LOSS_BLOCKS = 3  # the partial-conv loss stops at pool3
# The layers of the loss's weights file (`load_vgg16_params`): conv1_1 .. conv3_3.
VGG16_LAYERS = tuple(layer for block in VGG16_BLOCKS[:LOSS_BLOCKS] for layer in block)
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def to_imagenet_input(x: jax.Array) -> jax.Array:
  """f32[B, H, W, 3] in [-1, 1] -> torchvision's ImageNet-normalised input ((x01 - mean) / std)."""
  x01 = (jnp.asarray(x, jnp.float32) + 1.0) / 2.0
  return (x01 - jnp.asarray(IMAGENET_MEAN)) / jnp.asarray(IMAGENET_STD)


class VGG16Features(nn.Module):
  """VGG16 conv blocks 1..`blocks`: f32[B, H, W, 3] (normalised input) -> one feature map per block.

  3x3 convs with zero padding 1 and ReLU; a 2x2 stride-2 max-pool (floor division, as torch's) between blocks.
  `taps='pool'`: [pool1, ..., pool_blocks], pool_k f32[B, H / 2^k, W / 2^k, C_k] (C = 64, 128, 256, 512, 512).
  `taps='relu'`: each block's last ReLU before its pool, [relu1_2, relu2_2, relu3_3, relu4_3, relu5_3][:blocks],
  relu_k f32[B, H / 2^(k-1), W / 2^(k-1), C_k]; the last block's pool is then not computed.
  """

  blocks: int = LOSS_BLOCKS
  taps: str = "pool"

  @nn.compact
  def __call__(self, x: jax.Array) -> list[jax.Array]:
    if x.ndim != 4 or x.shape[-1] != 3:
      raise ValueError(f"VGG16Features expects f32[B, H, W, 3]; got shape {x.shape}")
    if self.taps not in ("pool", "relu") or not 1 <= self.blocks <= len(VGG16_BLOCKS):
      raise ValueError(f"VGG16Features: taps must be 'pool' or 'relu' and blocks 1-5; got {self.taps!r}, {self.blocks}")
    outputs = []
    for i, block in enumerate(VGG16_BLOCKS[: self.blocks]):
      for name, _, features in block:
        x = nn.relu(nn.Conv(features, (3, 3), padding=((1, 1), (1, 1)), name=name)(x))
      relu = x
      if self.taps == "pool" or i + 1 < self.blocks:  # relu taps need no pool after the last block
        x = nn.max_pool(x, (2, 2), strides=(2, 2), padding="VALID")
      outputs.append(x if self.taps == "pool" else relu)
    return outputs


def load_vgg16_params(path: str | os.PathLike) -> dict:
  """Reads a VGG16 (to pool3) weights `.npz` into Flax params for `VGG16Features` (`{'params': ...}` inner dict).

  Raises FileNotFoundError when the file is missing, ValueError (naming the file) when it is not a readable
  npz or lacks a `<layer>/kernel` / `<layer>/bias` key or has one of the wrong shape. Extra keys are ignored.
  """
  path = os.fspath(path)
  if not os.path.isfile(path):
    raise FileNotFoundError(f"VGG16 weights file {path!r} does not exist; make it with scripts/convert_vgg16.py")
  try:
    with np.load(path, allow_pickle=False) as archive:
      arrays = {key: np.asarray(archive[key]) for key in archive.files}
  except (OSError, ValueError) as error:
    raise ValueError(f"VGG16 weights file {path!r} is not a readable .npz: {error}") from error
  params, problems = {}, []
  for name, cin, cout in VGG16_LAYERS:
    expected = {"kernel": (3, 3, cin, cout), "bias": (cout,)}
    params[name] = {}
    for kind, shape in expected.items():
      key = f"{name}/{kind}"
      if key not in arrays:
        problems.append(f"missing {key}")
      elif arrays[key].shape != shape:
        problems.append(f"{key} has shape {arrays[key].shape}, expected {shape}")
      else:
        params[name][kind] = jnp.asarray(arrays[key], jnp.float32)
  if problems:
    raise ValueError(
      f"VGG16 weights file {path!r} is not a VGG16 pool3 npz: {'; '.join(problems)} "
      f"(found keys {sorted(arrays)[:8]}...)"
    )
  return params
