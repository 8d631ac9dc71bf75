"""Perceptual metrics the inpainting literature reports beside PSNR/SSIM: FID and LPIPS, computed in JAX.

- FID (Heusel et al. 2017): Frechet distance between Gaussians fitted to Inception-v3 pool features (2048-d) of
  real and inpainted images, d = |mu_r - mu_f|^2 + Tr(S_r + S_f - 2 (S_r S_f)^(1/2)). The network is the
  TF-slim Inception used by every FID implementation (pytorch-fid's `fid_inception_v3`: torchvision's
  Inception3 with average pools that do not count padding and a max pool in the last block); inputs are
  resized bilinearly to 299 x 299 and given in [-1, 1].
- LPIPS-VGG (Zhang et al. 2018, eq. 1): d(x, y) = sum_l mean_hw |w_l * (n(f_l(x)) - n(f_l(y)))|^2 over VGG16
  relu1_2, relu2_2, relu3_3, relu4_3, relu5_3, where n() divides each feature vector by its L2 norm and w_l
  are the learned non-negative per-channel weights (the "lin" layers of the lpips package, v0.1).

Weights are local files (nothing is downloaded). `scripts/convert_inception.py` and `scripts/convert_lpips.py`
turn the public PyTorch files into the `.npz` read here: flat keys `params/<module path>/<name>` and
`batch_stats/...`, i.e. `flax.traverse_util.flatten_dict(variables, sep='/')`. Without weights a metric is
left out and says why (`Perceptual.notes`); it is never estimated some other way.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from flax import traverse_util

INCEPTION_SIZE = 299
INCEPTION_DIM = 2048
LPIPS_SHIFT = (-0.030, -0.088, -0.188)  # lpips ScalingLayer: [-1, 1] input -> the VGG's ImageNet statistics
LPIPS_SCALE = (0.458, 0.448, 0.450)
LPIPS_EPS = 1e-10

# ------------------------------------------------------------------------------------------------ Inception


def _same(kh: int, kw: int) -> tuple[tuple[int, int], tuple[int, int]]:
  return ((kh // 2, kh // 2), (kw // 2, kw // 2))


class BasicConv(nn.Module):
  """conv (no bias) -> BatchNorm (running statistics, eps 1e-3) -> ReLU: torchvision's BasicConv2d."""

  features: int
  kernel: tuple[int, int] = (1, 1)
  strides: tuple[int, int] = (1, 1)
  padding: str | tuple = "VALID"

  @nn.compact
  def __call__(self, x):
    x = nn.Conv(self.features, self.kernel, self.strides, padding=self.padding, use_bias=False, name="conv")(x)
    x = nn.BatchNorm(use_running_average=True, epsilon=1e-3, name="bn")(x)
    return nn.relu(x)


def _conv(name: str, features: int, kernel=(1, 1), strides=(1, 1), padded: bool = False) -> BasicConv:
  return BasicConv(features, kernel, strides, _same(*kernel) if padded else "VALID", name=name)


def _avg_pool_3x3(x):
  """3x3 stride-1 average pool that ignores the zero padding (TensorFlow's behaviour, kept by FID)."""
  return nn.avg_pool(x, (3, 3), strides=(1, 1), padding=((1, 1), (1, 1)), count_include_pad=False)


class InceptionA(nn.Module):
  pool_features: int

  @nn.compact
  def __call__(self, x):
    b1 = _conv("branch1x1", 64)(x)
    b5 = _conv("branch5x5_2", 64, (5, 5), padded=True)(_conv("branch5x5_1", 48)(x))
    b3 = _conv("branch3x3dbl_1", 64)(x)
    b3 = _conv("branch3x3dbl_3", 96, (3, 3), padded=True)(_conv("branch3x3dbl_2", 96, (3, 3), padded=True)(b3))
    bp = _conv("branch_pool", self.pool_features)(_avg_pool_3x3(x))
    return jnp.concatenate([b1, b5, b3, bp], axis=-1)


class InceptionB(nn.Module):
  @nn.compact
  def __call__(self, x):
    b3 = _conv("branch3x3", 384, (3, 3), (2, 2))(x)
    bd = _conv("branch3x3dbl_2", 96, (3, 3), padded=True)(_conv("branch3x3dbl_1", 64)(x))
    bd = _conv("branch3x3dbl_3", 96, (3, 3), (2, 2))(bd)
    bp = nn.max_pool(x, (3, 3), strides=(2, 2))
    return jnp.concatenate([b3, bd, bp], axis=-1)


class InceptionC(nn.Module):
  channels_7x7: int

  @nn.compact
  def __call__(self, x):
    c7 = self.channels_7x7
    b1 = _conv("branch1x1", 192)(x)
    b7 = _conv("branch7x7_1", c7)(x)
    b7 = _conv("branch7x7_3", 192, (7, 1), padded=True)(_conv("branch7x7_2", c7, (1, 7), padded=True)(b7))
    bd = _conv("branch7x7dbl_1", c7)(x)
    for i, (kernel, features) in enumerate((((7, 1), c7), ((1, 7), c7), ((7, 1), c7), ((1, 7), 192)), start=2):
      bd = _conv(f"branch7x7dbl_{i}", features, kernel, padded=True)(bd)
    bp = _conv("branch_pool", 192)(_avg_pool_3x3(x))
    return jnp.concatenate([b1, b7, bd, bp], axis=-1)


class InceptionD(nn.Module):
  @nn.compact
  def __call__(self, x):
    b3 = _conv("branch3x3_2", 320, (3, 3), (2, 2))(_conv("branch3x3_1", 192)(x))
    b7 = _conv("branch7x7x3_1", 192)(x)
    b7 = _conv("branch7x7x3_3", 192, (7, 1), padded=True)(_conv("branch7x7x3_2", 192, (1, 7), padded=True)(b7))
    b7 = _conv("branch7x7x3_4", 192, (3, 3), (2, 2))(b7)
    bp = nn.max_pool(x, (3, 3), strides=(2, 2))
    return jnp.concatenate([b3, b7, bp], axis=-1)


class InceptionE(nn.Module):
  """`pool='avg'` for Mixed_7b; 'max' for Mixed_7c (the FID network's max pool there)."""

  pool: str = "avg"

  @nn.compact
  def __call__(self, x):
    b1 = _conv("branch1x1", 320)(x)
    b3 = _conv("branch3x3_1", 384)(x)
    b3 = jnp.concatenate(
      [_conv("branch3x3_2a", 384, (1, 3), padded=True)(b3), _conv("branch3x3_2b", 384, (3, 1), padded=True)(b3)],
      axis=-1,
    )
    bd = _conv("branch3x3dbl_2", 384, (3, 3), padded=True)(_conv("branch3x3dbl_1", 448)(x))
    bd = jnp.concatenate(
      [_conv("branch3x3dbl_3a", 384, (1, 3), padded=True)(bd), _conv("branch3x3dbl_3b", 384, (3, 1), padded=True)(bd)],
      axis=-1,
    )
    if self.pool == "avg":
      pooled = _avg_pool_3x3(x)
    else:
      pooled = nn.max_pool(x, (3, 3), strides=(1, 1), padding=((1, 1), (1, 1)))
    bp = _conv("branch_pool", 192)(pooled)
    return jnp.concatenate([b1, b3, bd, bp], axis=-1)


class InceptionV3Pool(nn.Module):
  """FID Inception-v3 to the final average pool: f32[B, H, W, 3] in [-1, 1] -> f32[B, 2048].

  The input is first resized bilinearly (half-pixel centres, no antialiasing: torch's `interpolate(...,
  align_corners=False)`) to `size` x `size`; 299 is what FID numbers are quoted at. Module names follow
  torchvision's Inception3 so the converted state dict maps one to one.
  """

  size: int = INCEPTION_SIZE

  @nn.compact
  def __call__(self, x):
    if x.ndim != 4 or x.shape[-1] != 3:
      raise ValueError(f"InceptionV3Pool expects f32[B, H, W, 3]; got shape {x.shape}")
    x = jax.image.resize(x.astype(jnp.float32), (x.shape[0], self.size, self.size, 3), "bilinear", antialias=False)
    x = _conv("Conv2d_1a_3x3", 32, (3, 3), (2, 2))(x)
    x = _conv("Conv2d_2a_3x3", 32, (3, 3))(x)
    x = _conv("Conv2d_2b_3x3", 64, (3, 3), padded=True)(x)
    x = nn.max_pool(x, (3, 3), strides=(2, 2))
    x = _conv("Conv2d_3b_1x1", 80)(x)
    x = _conv("Conv2d_4a_3x3", 192, (3, 3))(x)
    x = nn.max_pool(x, (3, 3), strides=(2, 2))
    x = InceptionA(32, name="Mixed_5b")(x)
    x = InceptionA(64, name="Mixed_5c")(x)
    x = InceptionA(64, name="Mixed_5d")(x)
    x = InceptionB(name="Mixed_6a")(x)
    for name, c7 in (("Mixed_6b", 128), ("Mixed_6c", 160), ("Mixed_6d", 160), ("Mixed_6e", 192)):
      x = InceptionC(c7, name=name)(x)
    x = InceptionD(name="Mixed_7a")(x)
    x = InceptionE("avg", name="Mixed_7b")(x)
    x = InceptionE("max", name="Mixed_7c")(x)
    return x.mean(axis=(1, 2))


# ------------------------------------------------------------------------------------------------ LPIPS

# VGG16 conv layers in order, grouped by block; LPIPS taps the ReLU after each block's last conv.
VGG16_FULL = (
  (("conv1_1", 64), ("conv1_2", 64)),
  (("conv2_1", 128), ("conv2_2", 128)),
  (("conv3_1", 256), ("conv3_2", 256), ("conv3_3", 256)),
  (("conv4_1", 512), ("conv4_2", 512), ("conv4_3", 512)),
  (("conv5_1", 512), ("conv5_2", 512), ("conv5_3", 512)),
)
# torchvision `vgg16().features` index of each conv (ReLU and max-pool layers sit between them).
VGG16_TORCH_INDEX = dict(
  zip([n for block in VGG16_FULL for n, _ in block], (0, 2, 5, 7, 10, 12, 14, 17, 19, 21, 24, 26, 28))
)


class LpipsVGG(nn.Module):
  """LPIPS distance with the VGG16 backbone: (x, y) f32[B, H, W, 3] in [-1, 1] -> f32[B] (eq. 1 above).

  H and W of at least 16 (four 2x2 pools before relu5_3).
  """

  @nn.compact
  def __call__(self, x, y):
    if x.shape != y.shape or x.ndim != 4 or x.shape[-1] != 3:
      raise ValueError(f"LpipsVGG expects two equal f32[B, H, W, 3]; got {x.shape} and {y.shape}")
    b = x.shape[0]
    h = (jnp.concatenate([x, y]).astype(jnp.float32) - jnp.asarray(LPIPS_SHIFT)) / jnp.asarray(LPIPS_SCALE)
    total = jnp.zeros((b,), jnp.float32)
    for i, block in enumerate(VGG16_FULL):
      if i:
        h = nn.max_pool(h, (2, 2), strides=(2, 2))
      for name, features in block:
        h = nn.relu(nn.Conv(features, (3, 3), padding=((1, 1), (1, 1)), name=name)(h))
      unit = h / (jnp.sqrt(jnp.sum(h * h, axis=-1, keepdims=True) + LPIPS_EPS) + LPIPS_EPS)
      diff = jnp.square(unit[:b] - unit[b:])
      total = total + nn.Conv(1, (1, 1), use_bias=False, name=f"lin{i}")(diff).mean(axis=(1, 2, 3))
    return total


# ------------------------------------------------------------------------------------------------ weights

MODELS = {"inception": InceptionV3Pool, "lpips": LpipsVGG}


def _init_inputs(kind: str):
  x = jnp.zeros((1, 32, 32, 3), jnp.float32)
  return (x,) if kind == "inception" else (x, x)


@functools.lru_cache(maxsize=None)
def abstract_variables(kind: str) -> dict:
  """Shapes of the variables a `kind` ('inception' | 'lpips') network needs, without computing them."""
  model = MODELS[kind]()
  return jax.eval_shape(lambda: model.init(jax.random.key(0), *_init_inputs(kind)))


def random_variables(kind: str, seed: int = 0) -> dict:
  """Random variables of the right shapes, for tests of the plumbing (the numbers mean nothing).

  Drawn with numpy from `abstract_variables` (no compiled init: Inception's takes minutes on a small CPU):
  kernels ~ N(0, 2 / fan_in) (He) so activations stay O(1), biases 0, BatchNorm the identity, and LPIPS
  'lin' weights |N(0, 1)| / C, non-negative as trained ones are.
  """
  rng = np.random.default_rng(seed)
  out = {}
  for key, leaf in traverse_util.flatten_dict(abstract_variables(kind), sep="/").items():
    name = key.rsplit("/", 1)[1]
    if name == "kernel" and "/lin" in key:
      value = np.abs(rng.standard_normal(leaf.shape, np.float32)) / leaf.shape[-2]
    elif name == "kernel":
      value = rng.standard_normal(leaf.shape, np.float32) * np.float32(np.sqrt(2.0 / np.prod(leaf.shape[:-1])))
    elif name in ("scale", "var"):
      value = np.ones(leaf.shape)
    else:
      value = np.zeros(leaf.shape)
    out[key] = jnp.asarray(value, jnp.float32)
  return traverse_util.unflatten_dict(out, sep="/")


def flatten_variables(variables: dict) -> dict[str, np.ndarray]:
  """Variables -> the flat npz layout: {'params/Mixed_5b/branch1x1/conv/kernel': array, ...}."""
  return {k: np.asarray(v) for k, v in traverse_util.flatten_dict(jax.device_get(variables), sep="/").items()}


def load_variables(kind: str, path: str | os.PathLike) -> dict:
  """Reads an `.npz` of `kind` ('inception' | 'lpips') weights, checking every key and shape.

  FileNotFoundError when `path` does not exist; ValueError naming the file when it is unreadable, lacks a key
  or has one of the wrong shape. Extra keys are ignored.
  """
  path = os.fspath(path)
  script = f"scripts/convert_{kind}.py"
  if not os.path.isfile(path):
    raise FileNotFoundError(f"{kind} weights file {path!r} does not exist; make it with {script}")
  try:
    with np.load(path, allow_pickle=False) as archive:
      arrays = {key: np.asarray(archive[key]) for key in archive.files}
  except (OSError, ValueError) as error:
    raise ValueError(f"{kind} weights file {path!r} is not a readable .npz: {error}") from None
  expected = traverse_util.flatten_dict(abstract_variables(kind), sep="/")
  problems = [
    f"{k} has shape {arrays[k].shape}, expected {v.shape}"
    for k, v in expected.items()
    if k in arrays and arrays[k].shape != v.shape
  ]
  problems += [f"missing {k}" for k in expected if k not in arrays]
  if problems:
    raise ValueError(
      f"{kind} weights file {path!r} does not fit the network ({len(problems)} problems): "
      f"{'; '.join(problems[:4])}; convert it with {script}"
    )
  flat = {k: jnp.asarray(arrays[k], jnp.float32) for k in expected}
  return traverse_util.unflatten_dict(flat, sep="/")


def read_torch_state_dict(path: str) -> dict:
  """A PyTorch state dict file -> {name: tensor}, for the converter scripts; needs torch (CPU is enough)."""
  try:
    import torch
  except ImportError:
    raise SystemExit(
      f"reading {path} needs PyTorch: pip install torch --index-url https://download.pytorch.org/whl/cpu"
    ) from None
  state_dict = torch.load(path, map_location="cpu", weights_only=True)
  return state_dict.state_dict() if hasattr(state_dict, "state_dict") else state_dict


def _to_numpy(value) -> np.ndarray:
  return np.asarray(value.numpy() if hasattr(value, "numpy") else value, np.float32)


def _oihw_to_hwio(value) -> np.ndarray:
  return _to_numpy(value).transpose(2, 3, 1, 0)


def inception_from_torch(state_dict) -> dict[str, np.ndarray]:
  """pytorch-fid `pt_inception-2015-12-05-*.pth` state dict -> flat npz arrays for `InceptionV3Pool`.

  `X.conv.weight` (OIHW) -> params/X/conv/kernel (HWIO); `X.bn.{weight, bias}` -> params/X/bn/{scale, bias};
  `X.bn.running_{mean, var}` -> batch_stats/X/bn/{mean, var}; module paths keep their names ('.' -> '/').
  The classifier (`fc.*`) and BatchNorm step counters are dropped.
  """
  renames = {
    "conv.weight": ("params", "conv/kernel"),
    "bn.weight": ("params", "bn/scale"),
    "bn.bias": ("params", "bn/bias"),
    "bn.running_mean": ("batch_stats", "bn/mean"),
    "bn.running_var": ("batch_stats", "bn/var"),
  }
  out = {}
  for key, value in state_dict.items():
    if key.startswith(("fc.", "AuxLogits.")) or key.endswith("num_batches_tracked"):
      continue
    module, _, leaf = key.rpartition(".")
    module, _, layer = module.rpartition(".")
    if f"{layer}.{leaf}" not in renames:
      raise ValueError(f"unexpected key {key!r}: not a pytorch-fid Inception state dict")
    collection, name = renames[f"{layer}.{leaf}"]
    array = _oihw_to_hwio(value) if leaf == "weight" and layer == "conv" else _to_numpy(value)
    out[f"{collection}/{module.replace('.', '/')}/{name}"] = array
  return out


def lpips_from_torch(vgg_state_dict, lin_state_dict) -> dict[str, np.ndarray]:
  """torchvision `vgg16` state dict + lpips `weights/v0.1/vgg.pth` -> flat npz arrays for `LpipsVGG`.

  The VGG may also come inside a full lpips checkpoint (`net.slice{k}.{i}.weight` keys, i = the torchvision
  `features` index). Kernels OIHW -> HWIO; `lin{l}.model.1.weight` f32[1, C, 1, 1] -> params/lin{l}/kernel.
  """
  by_index = {}
  for key, value in vgg_state_dict.items():
    parts = key.split(".")
    if parts[0] == "features" and len(parts) == 3:
      by_index[(int(parts[1]), parts[2])] = value
    elif parts[0] == "net" and parts[1].startswith("slice") and len(parts) == 4:
      by_index[(int(parts[2]), parts[3])] = value
  out = {}
  for name, index in VGG16_TORCH_INDEX.items():
    if (index, "weight") not in by_index or (index, "bias") not in by_index:
      raise ValueError(f"not a torchvision vgg16 state dict: no features.{index}.weight/bias (for {name})")
    out[f"params/{name}/kernel"] = _oihw_to_hwio(by_index[(index, "weight")])
    out[f"params/{name}/bias"] = _to_numpy(by_index[(index, "bias")])
  for i in range(len(VGG16_FULL)):
    key = f"lin{i}.model.1.weight"
    if key not in lin_state_dict:
      raise ValueError(f"not an lpips vgg.pth: missing {key!r} (found {sorted(lin_state_dict)[:5]})")
    out[f"params/lin{i}/kernel"] = _oihw_to_hwio(lin_state_dict[key])
  return out


# ------------------------------------------------------------------------------------------------ FID


class GaussianStats:
  """Mean and covariance of feature vectors, in float64.

  Up to `dim` vectors are kept as they are (an n x dim matrix is smaller than a dim x dim covariance, and
  `fid_from_stats` then needs no dim x dim eigendecomposition); beyond that only running sums are kept.
  """

  def __init__(self, dim: int):
    self.dim, self.n = dim, 0
    self.features: list[np.ndarray] | None = []
    self.total = self.outer = None

  def add(self, features: np.ndarray) -> None:
    f = np.asarray(features, np.float64).reshape(-1, self.dim)
    self.n += f.shape[0]
    if self.features is not None and self.n <= self.dim:
      self.features.append(f)
      return
    if self.features is not None:  # switch to running sums
      f = np.concatenate(self.features + [f])
      self.features, self.total, self.outer = None, np.zeros(self.dim), np.zeros((self.dim, self.dim))
    self.total += f.sum(axis=0)
    self.outer += f.T @ f

  def centred(self) -> tuple[np.ndarray, np.ndarray] | None:
    """(mean, features - mean) while the features are kept, else None."""
    if self.features is None or self.n == 0:
      return None
    f = np.concatenate(self.features)
    mu = f.mean(axis=0)
    return mu, f - mu

  def mean_cov(self) -> tuple[np.ndarray, np.ndarray]:
    """Mean and unbiased covariance (np.cov's), as FID implementations use."""
    if self.n < 2:
      raise ValueError(f"FID needs at least 2 images per set; got {self.n}")
    kept = self.centred()
    if kept is not None:
      return kept[0], kept[1].T @ kept[1] / (self.n - 1)
    mu = self.total / self.n
    return mu, (self.outer - self.n * np.outer(mu, mu)) / (self.n - 1)


def _psd_sqrt(matrix: np.ndarray) -> np.ndarray:
  values, vectors = np.linalg.eigh((matrix + matrix.T) / 2)
  return (vectors * np.sqrt(np.clip(values, 0, None))) @ vectors.T


def frechet_distance(mu1, sigma1, mu2, sigma2) -> float:
  """|mu1 - mu2|^2 + Tr(S1) + Tr(S2) - 2 Tr((S1 S2)^(1/2)) for symmetric PSD S1, S2 (float64).

  Tr((S1 S2)^(1/2)) = Tr((S1^(1/2) S2 S1^(1/2))^(1/2)): the same eigenvalues, but a symmetric matrix, so
  an eigendecomposition replaces the general (and in float noise, complex) matrix square root.
  """
  mu1, mu2 = np.asarray(mu1, np.float64), np.asarray(mu2, np.float64)
  sigma1, sigma2 = np.asarray(sigma1, np.float64), np.asarray(sigma2, np.float64)
  root1 = _psd_sqrt(sigma1)
  inner = np.linalg.eigvalsh(root1 @ sigma2 @ root1)
  trace_sqrt = np.sqrt(np.clip(inner, 0, None)).sum()
  value = float(np.sum((mu1 - mu2) ** 2) + np.trace(sigma1) + np.trace(sigma2) - 2 * trace_sqrt)
  return max(value, 0.0)  # a distance: equal sets can land a rounding error below 0


def frechet_distance_low_rank(mu1, a, mu2, b) -> float:
  """`frechet_distance` from centred features a f64[n1, d], b f64[n2, d] (S = a^T a / (n - 1)), exact.

  S1 S2 = a^T (a b^T b) / c has the non-zero eigenvalues of (a b^T)(a b^T)^T / c, so Tr((S1 S2)^(1/2)) is the
  sum of the singular values of a b^T over sqrt(c), c = (n1 - 1)(n2 - 1): an n1 x n2 problem, not d x d.
  """
  n1, n2 = a.shape[0], b.shape[0]
  if min(n1, n2) < 2:
    raise ValueError(f"FID needs at least 2 images per set; got {min(n1, n2)}")
  trace_sqrt = np.linalg.svd(a @ b.T, compute_uv=False).sum() / np.sqrt((n1 - 1) * (n2 - 1))
  value = np.sum((np.asarray(mu1) - np.asarray(mu2)) ** 2) + np.sum(a * a) / (n1 - 1) + np.sum(b * b) / (n2 - 1)
  return max(float(value - 2 * trace_sqrt), 0.0)


def fid_from_stats(real: GaussianStats, fake: GaussianStats) -> float:
  """FID between two feature sets; the low-rank form while both keep their features (fewer than d images)."""
  kept_real, kept_fake = real.centred(), fake.centred()
  if kept_real is not None and kept_fake is not None:
    return frechet_distance_low_rank(kept_real[0], kept_real[1], kept_fake[0], kept_fake[1])
  return frechet_distance(*real.mean_cov(), *fake.mean_cov())


# ------------------------------------------------------------------------------------------------ harness


class Perceptual:
  """The perceptual metrics available for an evaluation, from local weight files.

  `fid_features(x) -> f32[B, 2048]` and `lpips(x, y) -> f32[B]` (images in [-1, 1]) are None when their weights
  are not given; `notes` says what was left out and how to add it. A path that is given but missing raises.
  """

  def __init__(
    self, inception: str | dict | None = None, lpips: str | dict | None = None, fid_size: int = INCEPTION_SIZE
  ):
    self.notes: list[str] = []
    self.fid_features = self.lpips = None
    if inception:
      variables = inception if isinstance(inception, dict) else load_variables("inception", inception)
      apply = jax.jit(InceptionV3Pool(size=fid_size).apply)
      self.fid_features = functools.partial(apply, variables)
    else:
      self.notes.append(
        "FID left out: no Inception weights (set config.eval.inception_weights to an npz made by "
        "scripts/convert_inception.py from pytorch-fid's pt_inception-2015-12-05 .pth)."
      )
    if lpips:
      variables = lpips if isinstance(lpips, dict) else load_variables("lpips", lpips)
      self.lpips = functools.partial(jax.jit(LpipsVGG().apply), variables)
    else:
      self.notes.append(
        "LPIPS left out: no LPIPS-VGG weights (set config.eval.lpips_weights to an npz made by "
        "scripts/convert_lpips.py from torchvision's vgg16 .pth and lpips' vgg.pth)."
      )

  @property
  def names(self) -> Sequence[str]:
    return tuple(n for n, fn in (("lpips", self.lpips), ("fid", self.fid_features)) if fn is not None)

  @classmethod
  def from_config(cls, eval_config) -> "Perceptual":
    return cls(eval_config.get("inception_weights", "") or None, eval_config.get("lpips_weights", "") or None)
