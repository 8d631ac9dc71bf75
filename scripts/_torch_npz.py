"""What the weight converters share: reading a PyTorch state dict, torch -> flax layouts, writing the `.npz`.

Used by `convert_vgg16.py`, `convert_lpips.py`, `convert_inception.py` and `convert_resnet_pl.py` (each puts this
folder on `sys.path`, so they also import when loaded by path, as the tests do). Imports neither jax nor torch;
torch is needed only to unpickle a `.pth`.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping

import numpy as np

TORCH_CPU_WHEELS = "pip install torch --index-url https://download.pytorch.org/whl/cpu"
# torchvision `vgg16().features` index of each conv (ReLU and max-pool layers sit between them).
VGG16_TORCH_INDEX = dict(
  zip(
    ("conv1_1", "conv1_2", "conv2_1", "conv2_2", "conv3_1", "conv3_2", "conv3_3")
    + ("conv4_1", "conv4_2", "conv4_3", "conv5_1", "conv5_2", "conv5_3"),
    (0, 2, 5, 7, 10, 12, 14, 17, 19, 21, 24, 26, 28),
  )
)


def read_state_dict(path: str, hint: str = "") -> dict:
  """A PyTorch `.pth` -> {name: tensor}; SystemExit asking for torch when it is missing (`hint` is appended).

  ValueError naming the file when torch cannot read it; a pickled module is reduced to its state dict.
  """
  try:
    import torch
  except ImportError:
    raise SystemExit(f"error: reading {path} needs PyTorch: {TORCH_CPU_WHEELS}{hint}") from None
  try:
    state_dict = torch.load(path, map_location="cpu", weights_only=True)
  except Exception as error:  # torch raises pickle, zip and runtime errors alike for a file that is not a .pth
    raise ValueError(f"{path} is not a readable PyTorch file: {error}") from None
  return state_dict.state_dict() if hasattr(state_dict, "state_dict") else state_dict


def to_numpy(value) -> np.ndarray:
  """A torch tensor or array-like -> float32 numpy."""
  return np.asarray(value.numpy() if hasattr(value, "numpy") else value, np.float32)


def oihw_to_hwio(value, name: str = "conv weight") -> np.ndarray:
  """torch conv weight f32[O, I, H, W] -> flax kernel f32[H, W, I, O]; both convs are cross-correlations."""
  array = to_numpy(value)
  if array.ndim != 4:
    raise ValueError(f"{name!r}: conv weight must be 4-D OIHW; got shape {array.shape}")
  return array.transpose(2, 3, 1, 0)


def vgg16_from_torch(state_dict: Mapping[str, object], layers: Iterable[str]) -> dict[str, np.ndarray]:
  """torchvision `vgg16` state dict -> {'conv1_1/kernel': HWIO, 'conv1_1/bias': ...} for the named `layers`.

  Reads `features.{i}.weight/bias` (i from `VGG16_TORCH_INDEX`), or a full lpips checkpoint's
  `net.slice{k}.{i}.weight/bias`. ValueError naming the first missing key.
  """
  by_index = {}
  for key, value in state_dict.items():
    parts = key.split(".")
    if parts[0] == "features" and len(parts) == 3 and parts[1].isdigit():
      by_index[(int(parts[1]), parts[2])] = value
    elif parts[0] == "net" and parts[1].startswith("slice") and len(parts) == 4 and parts[2].isdigit():
      by_index[(int(parts[2]), parts[3])] = value
  out = {}
  for name in layers:
    index = VGG16_TORCH_INDEX[name]
    for leaf in ("weight", "bias"):
      if (index, leaf) not in by_index:
        raise ValueError(f"not a torchvision vgg16 state dict: missing 'features.{index}.{leaf}' ({name})")
    out[f"{name}/kernel"] = oihw_to_hwio(by_index[(index, "weight")], f"features.{index}.weight")
    out[f"{name}/bias"] = to_numpy(by_index[(index, "bias")])
  return out


def save_npz(arrays: Mapping[str, np.ndarray], path: str) -> None:
  """Writes `arrays` (sorted keys) to exactly `path`, whole or not at all.

  The npz goes to `path + '.partial'` first and is renamed over `path`, so an interrupted or failed write leaves
  no half-written file under the output name; a name without `.npz` is kept as given (np.savez would append it).
  """
  folder = os.path.dirname(os.path.abspath(path))
  if not os.path.isdir(folder):
    raise FileNotFoundError(f"output folder {folder} does not exist")
  partial = f"{path}.partial"
  try:
    with open(partial, "wb") as f:
      np.savez(f, **{key: arrays[key] for key in sorted(arrays)})
    os.replace(partial, path)
  finally:
    if os.path.exists(partial):
      os.remove(partial)
