"""Converts LaMa's ResNet-PL encoder weights to the `.npz` read by `jaxinpaint.models.resnet_pl.load_resnet_pl`.

  python scripts/convert_resnet_pl.py --input ade20k/ade20k-resnet50dilated-ppm/encoder_epoch_20.pth \
      --output resnet_pl.npz

Source (bring the file yourself; nothing is downloaded): the CSAIL scene-parsing release that LaMa's
`ResNetPL` loads from `<weights_path>/ade20k/ade20k-resnet50dilated-ppm/encoder_epoch_20.pth`, a PyTorch state
dict of the `ResnetDilated` encoder: `conv{1,2,3}.weight`, `bn{1,2,3}.{weight,bias,running_mean,running_var}`,
`layer{s}.{i}.conv{1,2,3}.weight`, `layer{s}.{i}.bn{1,2,3}.*`, `layer{s}.0.downsample.{0,1}.*` (a `module.` or
`encoder.` prefix is stripped; `num_batches_tracked` is dropped). Conv weights OIHW -> HWIO; BN weight -> scale,
running_mean -> mean, running_var -> var. Reading the .pth needs torch (CPU is enough); the conversion does not.
"""

from __future__ import annotations

import argparse
import os
import re
import sys
from collections.abc import Mapping

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))  # the shared converter helper, also when loaded by path

import _torch_npz  # noqa: E402

BN_NAMES = {"weight": "scale", "bias": "bias", "running_mean": "mean", "running_var": "var"}
PREFIXES = ("module.", "encoder.")  # DataParallel / SegmentationModule saves


def flax_key(torch_key: str) -> tuple[str, bool] | None:
  """PyTorch key -> (npz key, is a conv kernel); None for `num_batches_tracked`. ValueError for anything else."""
  parts = torch_key.split(".")
  if parts[-1] == "num_batches_tracked":
    return None
  stem = re.fullmatch(r"(conv|bn)([123])\.(\w+)", torch_key)
  block = re.fullmatch(r"layer([1-4])\.(\d+)\.(conv[123]|bn[123]|downsample\.[01])\.(\w+)", torch_key)
  if stem:
    kind, index, leaf = stem.groups()
    module, prefix = f"{kind}{index}", ""
  elif block:
    stage, i, module, leaf = block.groups()
    prefix = f"layer{stage}_{i}/"
    module = {"downsample.0": "downsample_conv", "downsample.1": "downsample_bn"}.get(module, module)
    kind = "conv" if module.startswith(("conv", "downsample_conv")) else "bn"
  else:
    raise ValueError(f"not a ResnetDilated encoder key: {torch_key!r}")
  if kind == "conv":
    if leaf != "weight":
      raise ValueError(f"unexpected conv parameter {torch_key!r} (the encoder's convs have no bias)")
    return f"{prefix}{module}/kernel", True
  if leaf not in BN_NAMES:
    raise ValueError(f"unexpected BatchNorm entry {torch_key!r}")
  return f"{prefix}{module}/{BN_NAMES[leaf]}", False


def convert_state_dict(state_dict: Mapping[str, object]) -> dict[str, np.ndarray]:
  """ResnetDilated state dict (tensors or numpy arrays) -> {npz key: float32 array}; every entry used once."""
  out = {}
  for key, value in state_dict.items():
    for prefix in PREFIXES:
      key = key.removeprefix(prefix)
    mapped = flax_key(key)
    if mapped is None:
      continue
    name, is_kernel = mapped
    if name in out:
      raise ValueError(f"{key!r} maps to {name!r} twice (mixed prefixes?)")
    out[name] = _torch_npz.oihw_to_hwio(value, key) if is_kernel else _torch_npz.to_numpy(value)
  return out


def convert(input_path: str, output_path: str) -> dict[str, np.ndarray]:
  """Reads `input_path` (.pth / .pt, or an .npz of the raw state dict) and writes the checked npz."""
  from jaxinpaint.models.resnet_pl import arrays_to_variables

  if not os.path.isfile(input_path):
    raise FileNotFoundError(f"{input_path} does not exist")
  ext = os.path.splitext(input_path)[1].lower()
  if ext in (".pth", ".pt"):
    state_dict = _torch_npz.read_state_dict(input_path)
  elif ext == ".npz":
    try:
      with np.load(input_path, allow_pickle=False) as archive:
        state_dict = {key: archive[key] for key in archive.files}
    except (OSError, ValueError) as error:
      raise ValueError(f"{input_path} is not a readable .npz: {error}") from None
  else:
    raise ValueError(f"{input_path}: expected the encoder's .pth (or its state dict as .npz)")
  arrays = convert_state_dict(state_dict)
  arrays_to_variables(arrays)  # raises naming any missing, extra or misshapen array before anything is written
  _torch_npz.save_npz(arrays, output_path)  # no half-written file under the output name
  return arrays


def main(argv: list[str] | None = None) -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--input", required=True, help="ade20k-resnet50dilated-ppm/encoder_epoch_20.pth")
  parser.add_argument("--output", required=True, help="npz to write (pass it as --config.loss.resnet_pl_weights)")
  args = parser.parse_args(argv)
  try:
    arrays = convert(args.input, args.output)
  except (FileNotFoundError, ValueError) as error:
    raise SystemExit(f"error: {error}") from None
  count = sum(a.size for a in arrays.values())
  print(f"wrote {args.output}: {len(arrays)} arrays, {count:,} numbers", file=sys.stderr)


if __name__ == "__main__":
  main()
