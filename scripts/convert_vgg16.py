"""Converts VGG16 weights to the `.npz` read by `jaxinpaint.models.vgg.load_vgg16_params` (conv1_1 .. conv3_3).

  python scripts/convert_vgg16.py --input vgg16-397923af.pth --output vgg16_pool3.npz
  python scripts/convert_vgg16.py --input vgg16_weights_tf_dim_ordering_tf_kernels_notop.h5 \
      --output vgg16_pool3.npz

Sources (bring the file yourself; nothing is downloaded):
- torchvision `vgg16` state dict (`.pth`): `features.{0,2,5,7,10,12,14}.weight` OIHW -> HWIO. Needs torch.
  These weights already use the project's convention: RGB in [0, 1], ImageNet mean/std normalised.
- Keras `vgg16_weights_tf_dim_ordering_tf_kernels_notop.h5` (`block{b}_conv{i}`, kernels already HWIO). Keras
  VGG16 is the Caffe model: BGR input in [0, 255] minus the BGR mean (103.939, 116.779, 123.68), no std. We
  fold that preprocessing into conv1_1 so the npz expects torchvision's input like the .pth does:
  flip the input channels to RGB, scale the kernel by 255*std, and move 255*mean_torch - mean_caffe into
  the bias. Exact away from the image border; at the border the two conventions zero-pad with colours that
  differ by under 0.003 of the range ((0.485, 0.458, 0.408) vs (0.485, 0.456, 0.406) in RGB [0, 1]).
"""

from __future__ import annotations

import argparse
import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))  # the shared converter helper, also when loaded by path

import _torch_npz  # noqa: E402

# conv1_1 .. conv3_3 with their Keras layer names (torchvision indices: `_torch_npz.VGG16_TORCH_INDEX`).
LAYERS = ("conv1_1", "conv1_2", "conv2_1", "conv2_2", "conv3_1", "conv3_2", "conv3_3")
KERAS_NAME = {name: f"block{name[4]}_conv{name[6]}" for name in LAYERS}
IMAGENET_MEAN = np.array([0.485, 0.456, 0.406])
IMAGENET_STD = np.array([0.229, 0.224, 0.225])
CAFFE_MEAN_BGR = np.array([103.939, 116.779, 123.68])


def convert_torch_state_dict(state_dict) -> dict[str, np.ndarray]:
  """torchvision vgg16 state dict (tensors or arrays) -> {'conv1_1/kernel': HWIO, 'conv1_1/bias': ...}."""
  return _torch_npz.vgg16_from_torch(state_dict, LAYERS)


def fold_caffe_preprocessing(kernel: np.ndarray, bias: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
  """conv1_1 for Caffe input (BGR, 0-255, mean-subtracted) -> the same conv for torchvision-normalised RGB.

  Caffe input x_c[bgr] = 255 * x01[rgb] - mean_caffe and x01 = std * x_t + mean_torch, so
  W_t[..., c, :] = 255 * std[c] * W_rgb[..., c, :] and b_t = b + sum W_rgb * (255 * mean_torch - mean_caffe_rgb).
  """
  kernel_rgb = np.asarray(kernel, np.float64)[:, :, ::-1, :]  # input channels BGR -> RGB
  shift = 255.0 * IMAGENET_MEAN - CAFFE_MEAN_BGR[::-1]
  new_kernel = kernel_rgb * (255.0 * IMAGENET_STD)[None, None, :, None]
  new_bias = np.asarray(bias, np.float64) + np.einsum("hwio,i->o", kernel_rgb, shift)
  return new_kernel.astype(np.float32), new_bias.astype(np.float32)


def read_keras_h5(path: str) -> dict[str, np.ndarray]:
  """Keras VGG16 `.h5` -> npz dict in torchvision's input convention (see module docstring)."""
  import h5py  # imported here so the torch path does not need it

  out = {}
  try:
    f = h5py.File(path, "r")
  except OSError as error:
    raise ValueError(f"{path} is not a readable HDF5 file: {error}") from None
  with f:
    root = f["model_weights"] if "model_weights" in f else f  # full-model saves nest the weights
    for name in LAYERS:
      layer = KERAS_NAME[name]
      if layer not in root:
        raise ValueError(f"{path}: no layer {layer!r} (found {sorted(root.keys())[:8]}...); not a Keras VGG16 file")
      group = root[layer]
      names = [n.decode() if isinstance(n, bytes) else n for n in group.attrs.get("weight_names", [])]
      if not names:  # files without Keras' index attribute: take every dataset under the layer
        group.visititems(lambda n, obj: names.append(n) if isinstance(obj, h5py.Dataset) else None)
      arrays = [np.asarray(group[n]) for n in names]
      kernels = [a for a in arrays if a.ndim == 4]
      biases = [a for a in arrays if a.ndim == 1]
      if len(kernels) != 1 or len(biases) != 1:
        raise ValueError(
          f"{path}: layer {layer!r} should hold one 4-D kernel and one bias; got "
          f"{[a.shape for a in arrays]} under weight_names {names}"
        )
      out[f"{name}/kernel"], out[f"{name}/bias"] = kernels[0].astype(np.float32), biases[0].astype(np.float32)
  out["conv1_1/kernel"], out["conv1_1/bias"] = fold_caffe_preprocessing(out["conv1_1/kernel"], out["conv1_1/bias"])
  return out


def read_torch_pth(path: str) -> dict[str, np.ndarray]:
  """torchvision `.pth` -> npz dict; needs torch (CPU is enough)."""
  return convert_torch_state_dict(_torch_npz.read_state_dict(path, " (or convert the Keras .h5 instead)"))


def write_npz(arrays: dict[str, np.ndarray], path: str) -> None:
  """Writes the npz (whole or not at all), checking every conv1_1 .. conv3_3 kernel/bias is present and HWIO."""
  previous = 3
  for name in LAYERS:
    kernel, bias = arrays[f"{name}/kernel"], arrays[f"{name}/bias"]
    if kernel.shape[:3] != (3, 3, previous) or bias.shape != (kernel.shape[3],):
      raise ValueError(f"{name}: kernel {kernel.shape} / bias {bias.shape} do not fit VGG16 after {previous} channels")
    previous = kernel.shape[3]
  _torch_npz.save_npz(arrays, path)


def convert(input_path: str, output_path: str) -> dict[str, np.ndarray]:
  """Reads `input_path` (.pth / .pt or .h5) and writes the npz to `output_path`; returns the arrays."""
  if not os.path.isfile(input_path):
    raise FileNotFoundError(f"{input_path} does not exist")
  ext = os.path.splitext(input_path)[1].lower()
  if ext in (".h5", ".hdf5"):
    arrays = read_keras_h5(input_path)
  elif ext in (".pth", ".pt"):
    arrays = read_torch_pth(input_path)
  else:
    raise ValueError(f"{input_path}: expected a torchvision .pth or a Keras .h5 file")
  write_npz(arrays, output_path)
  return arrays


def main(argv: list[str] | None = None) -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--input", required=True, help="torchvision vgg16 .pth or Keras VGG16 notop .h5")
  parser.add_argument("--output", required=True, help="npz to write (keys conv1_1/kernel ... conv3_3/bias)")
  args = parser.parse_args(argv)
  try:
    arrays = convert(args.input, args.output)
  except (FileNotFoundError, ValueError) as error:
    sys.exit(f"error: {error}")
  print(f"wrote {args.output}: {len(arrays)} arrays ({', '.join(LAYERS)})", file=sys.stderr)


if __name__ == "__main__":
  main()
