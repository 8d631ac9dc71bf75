"""Converts LPIPS-VGG weights to the `.npz` read by `jaxinpaint.perceptual_metrics` (LPIPS).

  python scripts/convert_lpips.py --vgg vgg16-397923af.pth --lin vgg.pth --output lpips_vgg.npz
  python -m jaxinpaint.evaluate --workdir=RUN --config.eval.lpips_weights=lpips_vgg.npz

Inputs (bring them yourself; nothing is downloaded; reading them needs torch, CPU wheels are enough):
- `--vgg`: torchvision's ImageNet `vgg16` state dict (`features.{0,2,5,...,28}.weight/bias`), the backbone
  LPIPS uses; a full lpips checkpoint with `net.slice*.N.weight` keys works too.
- `--lin`: the lpips package's `lpips/weights/v0.1/vgg.pth` (`lin0.model.1.weight` ... `lin4`, f32[1, C, 1, 1]).
Convs OIHW -> HWIO (`perceptual_metrics.lpips_from_torch`); the written file is read back and checked against
the network's shapes before the script reports success.
"""

from __future__ import annotations

import argparse
import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from jaxinpaint import perceptual_metrics  # noqa: E402


def convert(vgg_path: str, lin_path: str, output_path: str) -> dict[str, np.ndarray]:
  for path in (vgg_path, lin_path):
    if not os.path.isfile(path):
      raise FileNotFoundError(f"{path} does not exist")
  arrays = perceptual_metrics.lpips_from_torch(
    perceptual_metrics.read_torch_state_dict(vgg_path), perceptual_metrics.read_torch_state_dict(lin_path)
  )
  np.savez(output_path, **arrays)
  perceptual_metrics.load_variables("lpips", output_path)  # every key and shape present
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
