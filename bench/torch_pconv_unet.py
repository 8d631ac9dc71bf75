"""An independently written PyTorch partial-conv U-Net and loss, the baseline `bench/vs_pytorch.py` races.

Same spec as `jaxinpaint.models.InpaintingUNet(conv='partial')` and the partial-conv loss without VGG terms
(Liu et al. 2018): encoder PConv 7x7/64, 5x5/128, 5x5/256, 3x3/512 (stride 2, TF 'SAME' padding, BatchNorm
from the second layer, ReLU); decoder nearest x2 + concat skip + 3x3 PConv + BatchNorm + LeakyReLU(0.2); the
last layer sees the masked image and has no norm or activation. Loss: valid L1 + 6 hole L1 + 0.1 TV on the
composite (dilated-hole pairs, divided by C*H*W).

Written the way one writes it for speed in PyTorch: NHWC (`channels_last`) tensors for oneDNN, masks kept as
one channel per part with their window sums under `no_grad` (not a full ones-kernel conv), and the per-channel
mask of a concatenated input expressed as channel counts: sum(M) = C_up * winsum(m_up) + C_skip * winsum(m_skip).
`vs_pytorch.py --check` compares this net's output and loss with the JAX one on shared weights (torch is an
optional extra, so the test suite does not import it).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def same_pads(size: int, k: int, stride: int) -> tuple[int, int]:
  """TF/flax 'SAME' (low, high) padding for one dimension."""
  out = -(-size // stride)
  total = max((out - 1) * stride + k - size, 0)
  return total // 2, total - total // 2


def window_sum(mask: torch.Tensor, k: int, stride: int, pads: tuple[int, int]) -> torch.Tensor:
  """Sum of a one-channel mask (B, 1, H, W) over each k x k window; padded zeros count as holes."""
  mask = F.pad(mask, (pads[0], pads[1], pads[0], pads[1]))
  return F.avg_pool2d(mask, k, stride) * float(k * k)


class PConv(nn.Module):
  """Partial conv over the concatenation of parts, each part (x_i, m_i) with a one-channel mask m_i.

  y = W^T(X*M) * sum(1)/sum(M) + b where sum(M) > 0 else 0; new mask = 1 where sum(M) > 0 (seed 004 eqs. 1-2).
  A single part with a one-channel mask counts sum(1) = k*k (the encoder); several parts count every channel.
  """

  def __init__(self, in_channels: int, out_channels: int, k: int, stride: int):
    super().__init__()
    self.k, self.stride = k, stride
    self.conv = nn.Conv2d(in_channels, out_channels, k, stride, padding=0, bias=False)
    self.bias = nn.Parameter(torch.zeros(out_channels))

  def forward(self, parts: list[tuple[torch.Tensor, torch.Tensor]]):
    h, w = parts[0][0].shape[-2:]
    pads = same_pads(h, self.k, self.stride)
    with torch.no_grad():
      if len(parts) == 1:
        msum = window_sum(parts[0][1], self.k, self.stride, pads)
        sum1 = float(self.k * self.k)
      else:
        msum = sum(x.shape[1] * window_sum(m, self.k, self.stride, pads) for x, m in parts)
        sum1 = float(self.k * self.k * sum(x.shape[1] for x, _ in parts))
      known = (msum > 0).to(msum.dtype)
      ratio = sum1 / msum.clamp(min=1.0) * known
    x = torch.cat([x * m for x, m in parts], dim=1) if len(parts) > 1 else parts[0][0] * parts[0][1]
    if pads[0] == pads[1]:  # symmetric (all stride-1 convs): the conv pads itself, no padded copy
      y = F.conv2d(x, self.conv.weight, None, self.stride, pads[0])
    else:
      y = self.conv(F.pad(x, (pads[0], pads[1], pads[0], pads[1])))
    y = y * ratio + self.bias.view(1, -1, 1, 1) * known
    return y, known


class PConvUNet(nn.Module):
  """The partial-conv inpainting U-Net (NCHW API, use channels_last tensors for speed)."""

  def __init__(
    self,
    depth: int = 7,
    features=(64, 128, 256, 512),
    kernel_sizes=(7, 5, 5, 3),
    momentum: float = 0.01,
    eps: float = 1e-5,
  ):
    super().__init__()
    self.depth = depth
    width = lambda level: features[min(level, len(features) - 1)]
    kernel = lambda level: kernel_sizes[min(level, len(kernel_sizes) - 1)]
    self.enc = nn.ModuleList()
    self.enc_norm = nn.ModuleList()
    cin = 3
    for level in range(depth):
      self.enc.append(PConv(cin, width(level), kernel(level), 2))
      self.enc_norm.append(nn.BatchNorm2d(width(level), eps=eps, momentum=momentum) if level else nn.Identity())
      cin = width(level)
    self.dec = nn.ModuleList()
    self.dec_norm = nn.ModuleList()
    for level in range(depth):  # dec[level] produces the resolution of encoder input `level`
      skip = 3 if level == 0 else width(level - 1)
      out = 3 if level == 0 else width(level - 1)
      self.dec.append(PConv(width(level) + skip, out, 3, 1))
      self.dec_norm.append(nn.BatchNorm2d(out, eps=eps, momentum=momentum) if level else nn.Identity())

  def forward(self, image: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    skips = [(image, valid)]
    h, m = image, valid
    for level in range(self.depth):
      h, m = self.enc[level]([(h, m)])
      h = F.relu(self.enc_norm[level](h))
      skips.append((h, m))
    h, m = skips.pop()
    for level in reversed(range(self.depth)):
      skip_h, skip_m = skips.pop()
      h = F.interpolate(h, scale_factor=2, mode="nearest")
      m = F.interpolate(m, scale_factor=2, mode="nearest")
      h, m = self.dec[level]([(h, m), (skip_h, skip_m)])
      if level:
        h = F.leaky_relu(self.dec_norm[level](h), 0.2)
    return h


def pconv_loss(output: torch.Tensor, target: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
  """valid L1 + 6 hole L1 + 0.1 TV(composite over the 1-px dilated hole), means over all elements."""
  diff = (output - target).abs()
  valid_l1 = (diff * valid).mean()
  hole_l1 = (diff * (1.0 - valid)).mean()
  comp = valid * target + (1.0 - valid) * output
  with torch.no_grad():
    p = F.max_pool2d(1.0 - valid, 3, 1, padding=1)
  dh = (comp[..., 1:] - comp[..., :-1]).abs() * (p[..., 1:] * p[..., :-1])
  dv = (comp[..., 1:, :] - comp[..., :-1, :]).abs() * (p[..., 1:, :] * p[..., :-1, :])
  tv = (dh.sum() + dv.sum()) / comp.numel()
  return valid_l1 + 6.0 * hole_l1 + 0.1 * tv
