"""VGG16 up to pool3 (Simonyan & Zisserman 2015), the feature extractor of the partial-conv perceptual loss.

Only conv blocks 1-3 are built: Liu et al. 2018 use pool1, pool2 and pool3. Layer names follow the paper
(`conv1_1` ... `conv3_3`), so the params are `{'conv1_1': {'kernel': f32[3, 3, 3, 64], 'bias': f32[64]}, ...}`.

Weights file (`.npz`, written by `scripts/convert_vgg16.py`): keys `<layer>/kernel` (HWIO) and
`<layer>/bias` for the seven layers in `VGG16_LAYERS`. The weights expect torchvision's input convention:
RGB in [0, 1], normalised with the ImageNet mean (0.485, 0.456, 0.406) and std (0.229, 0.224, 0.225);
`to_imagenet_input` maps this project's [-1, 1] images to it.
"""

from __future__ import annotations

import os

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

# (name, in channels, out channels) in order; a 2x2 max-pool ends each block.
VGG16_BLOCKS = (
  (("conv1_1", 3, 64), ("conv1_2", 64, 64)),
  (("conv2_1", 64, 128), ("conv2_2", 128, 128)),
  (("conv3_1", 128, 256), ("conv3_2", 256, 256), ("conv3_3", 256, 256)),
)
VGG16_LAYERS = tuple(layer for block in VGG16_BLOCKS for layer in block)
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def to_imagenet_input(x: jax.Array) -> jax.Array:
  """f32[B, H, W, 3] in [-1, 1] -> torchvision's ImageNet-normalised input ((x01 - mean) / std)."""
  x01 = (jnp.asarray(x, jnp.float32) + 1.0) / 2.0
  return (x01 - jnp.asarray(IMAGENET_MEAN)) / jnp.asarray(IMAGENET_STD)


class VGG16Features(nn.Module):
  """VGG16 conv blocks 1-3: f32[B, H, W, 3] (ImageNet-normalised) -> [pool1, pool2, pool3].

  pool_k is f32[B, H / 2^k, W / 2^k, C_k] with C = 64, 128, 256 (floor division, as torch's max-pool).
  3x3 convs with zero padding 1 and ReLU, 2x2 stride-2 max-pools.
  """

  @nn.compact
  def __call__(self, x: jax.Array) -> list[jax.Array]:
    if x.ndim != 4 or x.shape[-1] != 3:
      raise ValueError(f"VGG16Features expects f32[B, H, W, 3]; got shape {x.shape}")
    pools = []
    for block in VGG16_BLOCKS:
      for name, _, features in block:
        x = nn.relu(nn.Conv(features, (3, 3), padding=((1, 1), (1, 1)), name=name)(x))
      x = nn.max_pool(x, (2, 2), strides=(2, 2), padding="VALID")
      pools.append(x)
    return pools


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
