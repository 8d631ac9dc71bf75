"""Shared by the bench scripts: configs at bench sizes, and copying JAX U-Net weights into the PyTorch net."""

from __future__ import annotations

import os

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def load_config(name: str, arg: str | None = None):
  """configs/<name>.py's get_config(arg)."""
  from jaxinpaint import configs_lib

  return configs_lib.load_config_file(os.path.join(ROOT, "configs", f"{name}.py"), arg)


def depth_for(size: int) -> int:
  """U-Net depth at `size` px: the papers' 7 at 256 px and above, fewer levels for smaller images."""
  return 7 if size >= 256 else max(1, int(np.log2(size)) - 2)


def bench_config(name: str, size: int, batch: int, overrides: dict | None = None):
  """configs/<name>.py (full model) at `size` px, global batch `batch`, U-Net depth `depth_for(size)`, then
  `overrides` ({dotted key: value})."""
  config = load_config(name)
  config.data.image_size, config.batch_size = size, batch
  if config.model.name == "unet":
    config.model.depth = depth_for(size)
  config.optim.schedule = "constant"  # one compiled step: no fine-tuning switch mid-bench
  for key, value in (overrides or {}).items():
    section, _, leaf = key.rpartition(".")
    (config[section] if section else config)[leaf] = value
  return config


def pconv_config(size: int, batch: int):
  return bench_config("pconv", size, batch)


def package_version(package: str) -> str:
  from importlib.metadata import version

  return version(package)


def batch_arrays(size: int, batch: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
  """image f32[B, S, S, 3] in [-1, 1] (smooth random fields) and valid f32[B, S, S, 1] (free-form masks)."""
  from jaxinpaint.data import masks

  rng = np.random.default_rng(seed)
  low = rng.uniform(-1, 1, size=(batch, size // 8, size // 8, 3)).astype(np.float32)
  image = np.repeat(np.repeat(low, 8, axis=1), 8, axis=2)
  fn = masks.make_mask_fn("free_form")
  valid = np.stack([fn(rng, size, size) for _ in range(batch)])[..., None].astype(np.float32)
  return image, valid


def copy_params_to_torch(params, net) -> None:
  """InpaintingUNet(conv='partial') params -> bench/torch_pconv_unet.PConvUNet (HWIO -> OIHW kernels)."""
  import torch

  def put(tensor, value):
    with torch.no_grad():
      tensor.copy_(torch.from_numpy(np.array(value)))

  for prefix, convs, norms in (("enc", net.enc, net.enc_norm), ("dec", net.dec, net.dec_norm)):
    for level, conv in enumerate(convs):
      p = params[f"{prefix}{level + 1}"]
      put(conv.conv.weight, np.transpose(np.asarray(p["kernel"]), (3, 2, 0, 1)))
      put(conv.bias, p["bias"])
      name = f"{prefix}{level + 1}_norm"
      if name in params:
        put(norms[level].weight, params[name]["scale"])
        put(norms[level].bias, params[name]["bias"])
