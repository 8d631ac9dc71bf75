"""Shared by the bench scripts: configs at bench sizes, and copying JAX U-Net weights into the PyTorch net."""

from __future__ import annotations

import os

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def median_time(fn, steps: int, warmup: int) -> float:
  """Median wall seconds of `fn()` (blocked until its result is ready) over `steps` calls after `warmup` calls."""
  import time

  import jax

  for _ in range(warmup):
    jax.block_until_ready(fn())
  times = []
  for _ in range(steps):
    t = time.perf_counter()
    jax.block_until_ready(fn())
    times.append(time.perf_counter() - t)
  return float(np.median(times))


def load_config(name: str, arg: str | None = None):
  """configs/<name>.py's get_config(arg)."""
  from jaxinpaint import configs_lib

  return configs_lib.load_config_file(os.path.join(ROOT, "configs", f"{name}.py"), arg)


def depth_for(size: int) -> int:
  """U-Net depth at `size` px: the papers' 7 at 256 px and above, fewer levels for smaller images."""
  return 7 if size >= 256 else max(1, int(np.log2(size)) - 2)


def bench_config(name: str, size: int, batch: int, overrides: dict | None = None, variant: str | None = None):
  """configs/<name>.py (full model, or its `variant`: 'tiny' for CI-size runs) at `size` px, global batch
  `batch`, U-Net depth `depth_for(size)`, then `overrides` ({dotted key: value})."""
  config = load_config(name, variant)
  config.data.image_size, config.batch_size = size, batch
  if config.model.name == "unet":
    config.model.depth = depth_for(size)
  config.optim.schedule = "constant"  # one compiled step: no fine-tuning switch mid-bench
  for key, value in (overrides or {}).items():
    section, _, leaf = key.rpartition(".")
    (config[section] if section else config)[leaf] = value
  return config


# bench/cost_model.py and bench/device_check.py families -> (configs/<file>.py, overrides setting the GPU forms of
# the fast paths, whether config.train.remat reaches the generator)
GPU_FORMS_UNET = {"model.decoder": "concat", "model.strided_grad": "xla", "model.pad_barrier": "off"}
FAMILIES = {
  "unet_wconv": ("wconv", GPU_FORMS_UNET, True),
  "unet_pconv": ("pconv", GPU_FORMS_UNET, True),
  "unet_plain": ("plain", GPU_FORMS_UNET, True),
  "deepfill_v2": ("gated", {"model.strided_grad": "xla"}, True),
  "deepfill_v1": ("deepfill_v1", {"model.strided_grad": "xla"}, True),
  "lama": ("lama", {}, True),
  "dcgan": ("dcgan", {}, True),
}


def family_config(
  family: str,
  size: int,
  batch: int,
  dtype: str = "float32",
  remat: str = "none",
  variant: str = "",
  gpu_forms: bool = True,
):
  """configs/<file>.py for `family` at `size` px, batch `batch`, dtype and remat; with `gpu_forms` the fast paths
  are set to their GPU forms, else left at the config's ('auto')."""
  file, overrides, _ = FAMILIES[family]
  overrides = {**(overrides if gpu_forms else {}), "train.activation_dtype": dtype, "train.remat": remat}
  if family == "dcgan":  # DCGAN is a 64 px model: one more 2x level per doubling (not a published configuration)
    levels = max(1, (size // 4).bit_length() - 1)
    scale = 16 if variant else 1  # CI-size: a sixteenth of the widths
    gen = tuple(max((1024 >> i) // scale, 4) for i in range(levels))
    disc = tuple(min(64 << i, 512) // scale for i in range(levels))
    overrides.update({"model.generator_features": gen, "model.discriminator_features": disc})
  config = bench_config(file, size, batch, overrides, variant=variant or None)
  if config.model.name == "unet" and variant:
    config.model.depth = min(config.model.depth, depth_for(size))
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
