"""Converts pytorch-fid's Inception weights to the `.npz` read by `jaxinpaint.eval.perceptual` (FID).

  python scripts/convert_inception.py --input pt_inception-2015-12-05-6726825d.pth --output inception_fid.npz
  python -m jaxinpaint.evaluate --workdir=RUN --config.eval.inception_weights=inception_fid.npz

The input is the file pytorch-fid publishes as `FID_WEIGHTS_URL` (the TF-slim Inception of the original FID
code, ported to PyTorch; bring it yourself, nothing is downloaded). Needs torch to unpickle it (CPU wheels:
`pip install torch --index-url https://download.pytorch.org/whl/cpu`). Keys map one to one onto
`jaxinpaint.models.inception.InceptionV3Pool` (`inception_from_torch`): convs OIHW -> HWIO, BatchNorm
weight/bias -> scale/bias, running mean/var -> batch_stats; the 1008-way classifier is dropped. The arrays are
checked against the network's shapes before anything is written; the npz is written whole or not at all.
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

# torch `<module>.<layer>.<leaf>` -> (flax collection, `<layer>/<name>`)
RENAMES = {
  "conv.weight": ("params", "conv/kernel"),
  "bn.weight": ("params", "bn/scale"),
  "bn.bias": ("params", "bn/bias"),
  "bn.running_mean": ("batch_stats", "bn/mean"),
  "bn.running_var": ("batch_stats", "bn/var"),
}


def inception_from_torch(state_dict: Mapping[str, object]) -> dict[str, np.ndarray]:
  """pytorch-fid `pt_inception-2015-12-05-*.pth` state dict -> flat npz arrays for `InceptionV3Pool`.

  `X.conv.weight` (OIHW) -> params/X/conv/kernel (HWIO); `X.bn.{weight, bias}` -> params/X/bn/{scale, bias};
  `X.bn.running_{mean, var}` -> batch_stats/X/bn/{mean, var}; module paths keep their names ('.' -> '/').
  The classifier (`fc.*`) and BatchNorm step counters are dropped.
  """
  out = {}
  for key, value in state_dict.items():
    if key.startswith(("fc.", "AuxLogits.")) or key.endswith("num_batches_tracked"):
      continue
    module, _, leaf = key.rpartition(".")
    module, _, layer = module.rpartition(".")
    if f"{layer}.{leaf}" not in RENAMES:
      raise ValueError(f"unexpected key {key!r}: not a pytorch-fid Inception state dict")
    collection, name = RENAMES[f"{layer}.{leaf}"]
    array = _torch_npz.oihw_to_hwio(value, key) if layer == "conv" else _torch_npz.to_numpy(value)
    out[f"{collection}/{module.replace('.', '/')}/{name}"] = array
  return out


def convert(input_path: str, output_path: str) -> dict[str, np.ndarray]:
  """Reads the .pth, checks the arrays against `InceptionV3Pool` and writes the npz; returns the arrays."""
  from jaxinpaint.eval import perceptual  # jax: imported once the cheap checks have passed

  if not os.path.isfile(input_path):
    raise FileNotFoundError(f"{input_path} does not exist")
  arrays = inception_from_torch(_torch_npz.read_state_dict(input_path))
  perceptual.variables_from_arrays("inception", arrays, input_path)  # every key and shape, before writing
  _torch_npz.save_npz(arrays, output_path)
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
