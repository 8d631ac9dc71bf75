"""The ADE20k ResNet-50-dilated encoder behind LaMa's high-receptive-field perceptual loss (ResNet-PL).

LaMa (`advimman/lama` losses/perceptual.py `ResNetPL`) runs the encoder of the CSAIL scene-parsing model
`ade20k-resnet50dilated-ppm` (`models/ade20k/base.py` `ResnetDilated(resnet50, dilate_scale=8)`) in eval mode on
ImageNet-normalised [0, 1] images and returns the outputs of its four stages. The network:

- deep stem: 3x3 convs 3 -> 64 (stride 2) -> 64 -> 128, each + BN + ReLU, then a 3x3 stride-2 max-pool (pad 1);
- four stages of bottlenecks (1x1, 3x3, 1x1 convs, expansion 4, stride on the 3x3, a 1x1 conv + BN shortcut on
  each stage's first block), 3, 4, 6, 3 blocks of widths 64, 128, 256, 512 -> 256, 512, 1024, 2048 channels;
- dilate_scale 8: stage 3's and 4's strides become 1; their first block's 3x3 conv gets dilation 1 and 2, the
  others 2 and 4 (the reference's `_nostride_dilate`). Output strides 4, 8, 8, 8.

No conv has a bias; BN is torch's (eps 1e-5) with frozen running statistics. Flax names mirror the PyTorch state
dict: `conv1`, `bn1`, ..., `layer3_2/conv2`, `layer1_0/downsample_conv`, `layer1_0/downsample_bn`.

Weights file (`.npz`, written by `scripts/convert_resnet_pl.py`): keys `<flax path>/kernel` (HWIO) for convs and
`<flax path>/{scale,bias,mean,var}` for BN, e.g. `layer2_0/downsample_bn/var`. `load_resnet_pl` reads the widths
and block counts from the file, so a smaller file of the same design also loads (the tests use one).
"""

from __future__ import annotations

import os
from collections.abc import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

BLOCKS = (3, 4, 6, 3)  # ResNet-50
STEM_WIDTH = 64  # stem convs 64, 64, 128
BASE_WIDTH = 64  # bottleneck widths 64, 128, 256, 512
EXPANSION = 4
BN_EPSILON = 1e-5  # torch.nn.BatchNorm2d's default
BN_KEYS = ("scale", "bias", "mean", "var")


def stage_plan(stage: int) -> tuple[int, int, int]:
  """(stride of the first block, dilation of the first block's 3x3, dilation of the other 3x3s), dilate_scale 8."""
  return ((1, 1, 1), (2, 1, 1), (1, 1, 2), (1, 2, 4))[stage]


def _conv_bn(
  module: nn.Module, x: jax.Array, index: str, features: int, kernel: int, stride: int = 1, dilation: int = 1
) -> jax.Array:
  """conv{index} + bn{index} as direct children of `module` (so the names match the state dict)."""
  pad = dilation * (kernel // 2)
  x = nn.Conv(
    features,
    (kernel, kernel),
    strides=stride,
    padding=((pad, pad), (pad, pad)),
    kernel_dilation=dilation,
    use_bias=False,
    name=f"conv{index}",
  )(x)
  return nn.BatchNorm(use_running_average=True, epsilon=BN_EPSILON, name=f"bn{index}")(x)


class Bottleneck(nn.Module):
  """mit_semseg's Bottleneck: relu(bn3(conv3(relu(bn2(conv2(relu(bn1(conv1(x))))))) + shortcut(x)).

  x: f32[B, H, W, Cin] -> f32[B, H / stride, W / stride, 4 planes]; the 3x3 conv carries stride and dilation.
  """

  planes: int
  stride: int = 1
  dilation: int = 1
  downsample: bool = False

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    y = nn.relu(_conv_bn(self, x, "1", self.planes, 1))
    y = nn.relu(_conv_bn(self, y, "2", self.planes, 3, self.stride, self.dilation))
    y = _conv_bn(self, y, "3", self.planes * EXPANSION, 1)
    if self.downsample:
      x = nn.Conv(
        self.planes * EXPANSION, (1, 1), strides=self.stride, padding="VALID", use_bias=False, name="downsample_conv"
      )(x)
      x = nn.BatchNorm(use_running_average=True, epsilon=BN_EPSILON, name="downsample_bn")(x)
    return nn.relu(y + x)


class ResNetDilated(nn.Module):
  """ResNet-50-dilated (output stride 8) encoder: f32[B, H, W, 3] ImageNet-normalised -> its 4 stage outputs.

  Returns [f32[B, H/4, W/4, 4w], f32[B, H/8, W/8, 8w], f32[B, H/8, W/8, 16w], f32[B, H/8, W/8, 32w]] with
  w = base_width (64: 256, 512, 1024, 2048 channels); sizes round up like torch's padded convs and pools.
  Eval mode only: BN uses the stored statistics (`batch_stats`), which nothing updates.
  """

  blocks: Sequence[int] = BLOCKS
  stem_width: int = STEM_WIDTH
  base_width: int = BASE_WIDTH

  @nn.compact
  def __call__(self, x: jax.Array) -> list[jax.Array]:
    if x.ndim != 4 or x.shape[-1] != 3:
      raise ValueError(f"ResNetDilated expects f32[B, H, W, 3]; got shape {x.shape}")
    w = self.stem_width
    x = nn.relu(_conv_bn(self, x, "1", w, 3, stride=2))
    x = nn.relu(_conv_bn(self, x, "2", w, 3))
    x = nn.relu(_conv_bn(self, x, "3", 2 * w, 3))
    x = nn.max_pool(x, (3, 3), strides=(2, 2), padding=((1, 1), (1, 1)))  # pads with -inf, as torch
    features = []
    for stage, count in enumerate(self.blocks):
      stride, first_dilation, dilation = stage_plan(stage)
      planes = self.base_width * 2**stage
      for i in range(count):
        x = Bottleneck(
          planes,
          stride if i == 0 else 1,
          first_dilation if i == 0 else dilation,
          downsample=i == 0,
          name=f"layer{stage + 1}_{i}",
        )(x)
      features.append(x)
    return features


def expected_shapes(
  blocks: Sequence[int] = BLOCKS, stem_width: int = STEM_WIDTH, base_width: int = BASE_WIDTH
) -> dict[str, tuple[int, ...]]:
  """{npz key: shape} of every array `ResNetDilated(blocks, stem_width, base_width)` needs, in network order."""
  shapes = {}

  def conv_bn(prefix: str, conv: str, bn: str, cin: int, cout: int, k: int) -> None:
    shapes[f"{prefix}{conv}/kernel"] = (k, k, cin, cout)
    shapes.update({f"{prefix}{bn}/{key}": (cout,) for key in BN_KEYS})

  w = stem_width
  for i, (cin, cout) in enumerate(((3, w), (w, w), (w, 2 * w)), start=1):
    conv_bn("", f"conv{i}", f"bn{i}", cin, cout, 3)
  cin = 2 * w
  for stage, count in enumerate(blocks):
    planes = base_width * 2**stage
    for i in range(count):
      prefix = f"layer{stage + 1}_{i}/"
      conv_bn(prefix, "conv1", "bn1", cin, planes, 1)
      conv_bn(prefix, "conv2", "bn2", planes, planes, 3)
      conv_bn(prefix, "conv3", "bn3", planes, planes * EXPANSION, 1)
      if i == 0:
        conv_bn(prefix, "downsample_conv", "downsample_bn", cin, planes * EXPANSION, 1)
      cin = planes * EXPANSION
  return shapes


def architecture_of(arrays: dict[str, np.ndarray]) -> tuple[tuple[int, ...], int, int]:
  """(blocks, stem_width, base_width) read off a weights dict; ValueError when the stem or a stage is absent."""
  try:
    stem_width = int(arrays["conv1/kernel"].shape[3])
    base_width = int(arrays["layer1_0/conv1/kernel"].shape[3])
  except KeyError as error:
    raise ValueError(f"missing {error.args[0]}") from None
  blocks = []
  for stage in range(1, 5):
    count = 0
    while f"layer{stage}_{count}/conv1/kernel" in arrays:
      count += 1
    if not count:
      raise ValueError(f"missing layer{stage}_0/conv1/kernel")
    blocks.append(count)
  return tuple(blocks), stem_width, base_width


def arrays_to_variables(arrays: dict[str, np.ndarray]) -> tuple[ResNetDilated, dict]:
  """(model, {'params', 'batch_stats'}) from npz arrays, using each array exactly once.

  ValueError (listing the problems) on a missing, unexpected or wrongly shaped key.
  """
  blocks, stem_width, base_width = architecture_of(arrays)
  expected = expected_shapes(blocks, stem_width, base_width)
  problems = [f"missing {k}" for k in expected if k not in arrays]
  problems += [f"unexpected {k}" for k in arrays if k not in expected]
  problems += [
    f"{k} has shape {arrays[k].shape}, expected {s}"
    for k, s in expected.items()
    if k in arrays and tuple(arrays[k].shape) != s
  ]
  if problems:
    raise ValueError("; ".join(problems[:6]) + (f" (and {len(problems) - 6} more)" if len(problems) > 6 else ""))
  variables = {"params": {}, "batch_stats": {}}
  for key in expected:
    *path, leaf = key.split("/")
    collection = "batch_stats" if leaf in ("mean", "var") else "params"
    node = variables[collection]
    for part in path:
      node = node.setdefault(part, {})
    node[leaf] = jnp.asarray(arrays[key], jnp.float32)
  return ResNetDilated(blocks, stem_width, base_width), variables


def load_resnet_pl(path: str | os.PathLike) -> tuple[ResNetDilated, dict]:
  """Reads a ResNet-PL weights `.npz` (scripts/convert_resnet_pl.py) into (model, variables) for `model.apply`.

  FileNotFoundError when the file is missing; ValueError naming the file when it is not a readable npz of a
  dilated ResNet (see `arrays_to_variables`).
  """
  path = os.fspath(path)
  if not os.path.isfile(path):
    raise FileNotFoundError(
      f"ResNet-PL weights file {path!r} does not exist; make it with scripts/convert_resnet_pl.py"
    )
  try:
    with np.load(path, allow_pickle=False) as archive:
      arrays = {key: np.asarray(archive[key]) for key in archive.files}
  except (OSError, ValueError) as error:
    raise ValueError(f"ResNet-PL weights file {path!r} is not a readable .npz: {error}") from error
  try:
    return arrays_to_variables(arrays)
  except ValueError as error:
    raise ValueError(f"ResNet-PL weights file {path!r} is not a ResNet-50-dilated npz: {error}") from None
