"""Converts pytorch-fid's Inception weights to the `.npz` read by `jaxinpaint.perceptual_metrics` (FID).

  python scripts/convert_inception.py --input pt_inception-2015-12-05-6726825d.pth --output inception_fid.npz
  python -m jaxinpaint.evaluate --workdir=RUN --config.eval.inception_weights=inception_fid.npz

The input is the file pytorch-fid publishes as `FID_WEIGHTS_URL` (the TF-slim Inception of the original FID
code, ported to PyTorch; bring it yourself, nothing is downloaded). Needs torch to unpickle it (CPU wheels:
`pip install torch --index-url https://download.pytorch.org/whl/cpu`). Keys map one to one onto
`InceptionV3Pool` (`perceptual_metrics.inception_from_torch`): convs OIHW -> HWIO, BatchNorm weight/bias ->
scale/bias, running mean/var -> batch_stats; the 1008-way classifier is dropped. The written file is read back
and checked against the network's shapes before the script reports success.
"""

from __future__ import annotations

import argparse
import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from jaxinpaint import perceptual_metrics  # noqa: E402


def convert(input_path: str, output_path: str) -> dict[str, np.ndarray]:
  if not os.path.isfile(input_path):
    raise FileNotFoundError(f"{input_path} does not exist")
  arrays = perceptual_metrics.inception_from_torch(perceptual_metrics.read_torch_state_dict(input_path))
  np.savez(output_path, **arrays)
  perceptual_metrics.load_variables("inception", output_path)  # every key and shape present
  return arrays


def main(argv: list[str] | None = None) -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--input", required=True, help="pytorch-fid pt_inception-2015-12-05-*.pth")
  parser.add_argument("--output", required=True, help="npz to write")
  args = parser.parse_args(argv)
  try:
    arrays = convert(args.input, args.output)
  except (FileNotFoundError, ValueError) as error:
    sys.exit(f"error: {error}")
  print(f"wrote {args.output}: {len(arrays)} arrays", file=sys.stderr)


if __name__ == "__main__":
  main()
