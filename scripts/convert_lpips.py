"""Converts LPIPS-VGG weights to the `.npz` read by `jaxinpaint.eval.perceptual` (LPIPS).

  python scripts/convert_lpips.py --vgg vgg16-397923af.pth --lin vgg.pth --output lpips_vgg.npz
  python -m jaxinpaint.evaluate --workdir=RUN --config.eval.lpips_weights=lpips_vgg.npz

Inputs (bring them yourself; nothing is downloaded; reading them needs torch, CPU wheels are enough):
- `--vgg`: torchvision's ImageNet `vgg16` state dict (`features.{0,2,5,...,28}.weight/bias`), the backbone
  LPIPS uses; a full lpips checkpoint with `net.slice*.N.weight` keys works too.
- `--lin`: the lpips package's `lpips/weights/v0.1/vgg.pth` (`lin0.model.1.weight` ... `lin4`, f32[1, C, 1, 1]).
Convs OIHW -> HWIO (`lpips_from_torch`); the arrays are checked against `Lpips`'s shapes before anything is
written, and the npz is written whole or not at all.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Mapping

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[:0] = [HERE, os.path.dirname(HERE)]  # the shared converter helper, and the package without installing it

import _torch_npz  # noqa: E402

LPIPS_LAYERS = 5  # lin0 .. lin4, one per VGG16 block (relu1_2 ... relu5_3)


def lpips_from_torch(vgg_state_dict: Mapping[str, object], lin_state_dict: Mapping[str, object]) -> dict:
  """torchvision `vgg16` state dict + lpips `weights/v0.1/vgg.pth` -> flat npz arrays for `Lpips`.

  The VGG may also come inside a full lpips checkpoint (`net.slice{k}.{i}.weight` keys, i = the torchvision
  `features` index). Kernels OIHW -> HWIO; `lin{l}.model.1.weight` f32[1, C, 1, 1] -> params/lin{l}/kernel.
  """
  vgg = _torch_npz.vgg16_from_torch(vgg_state_dict, _torch_npz.VGG16_TORCH_INDEX)
  out = {f"params/{key}": value for key, value in vgg.items()}
  for i in range(LPIPS_LAYERS):
    key = f"lin{i}.model.1.weight"
    if key not in lin_state_dict:
      raise ValueError(f"not an lpips vgg.pth: missing {key!r} (found {sorted(lin_state_dict)[:5]})")
    out[f"params/lin{i}/kernel"] = _torch_npz.oihw_to_hwio(lin_state_dict[key], key)
  return out


def convert(vgg_path: str, lin_path: str, output_path: str) -> dict[str, np.ndarray]:
  """Reads both .pth files, checks the arrays against `Lpips` and writes the npz; returns the arrays."""
  from jaxinpaint.eval import perceptual  # jax: imported once the cheap checks have passed

  for path in (vgg_path, lin_path):
    if not os.path.isfile(path):
      raise FileNotFoundError(f"{path} does not exist")
  arrays = lpips_from_torch(_torch_npz.read_state_dict(vgg_path), _torch_npz.read_state_dict(lin_path))
  perceptual.variables_from_arrays("lpips", arrays, f"{vgg_path} + {lin_path}")  # every key and shape
  _torch_npz.save_npz(arrays, output_path)
  return arrays


def main(argv: list[str] | None = None) -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--vgg", required=True, help="torchvision vgg16 .pth (or a full lpips checkpoint)")
  parser.add_argument("--lin", required=True, help="lpips weights/v0.1/vgg.pth")
  parser.add_argument("--output", required=True, help="npz to write")
  args = parser.parse_args(argv)
  try:
    arrays = convert(args.vgg, args.lin, args.output)
  except (FileNotFoundError, ValueError) as error:
    sys.exit(f"error: {error}")
  print(f"wrote {args.output}: {len(arrays)} arrays", file=sys.stderr)


if __name__ == "__main__":
  main()
