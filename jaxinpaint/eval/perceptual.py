"""Perceptual metrics the inpainting literature reports beside PSNR/SSIM: FID and LPIPS, computed in JAX.

- FID (Heusel et al. 2017): Frechet distance between Gaussians fitted to Inception-v3 pool features (2048-d) of
  real and inpainted images, d = |mu_r - mu_f|^2 + Tr(S_r + S_f - 2 (S_r S_f)^(1/2)). The network is
  `jaxinpaint.models.inception.InceptionV3Pool` (pytorch-fid's FID Inception); inputs are resized bilinearly to
  299 x 299 and given in [-1, 1].
- LPIPS-VGG (Zhang et al. 2018, eq. 1): d(x, y) = sum_l mean_hw |w_l * (n(f_l(x)) - n(f_l(y)))|^2 over VGG16
  relu1_2, relu2_2, relu3_3, relu4_3, relu5_3 (`jaxinpaint.models.vgg.VGG16Features(blocks=5, taps='relu')`, the
  conv stack the partial-conv loss uses too), where n() divides each feature vector by its L2 norm and w_l are
  the learned non-negative per-channel weights (the "lin" layers of the lpips package, v0.1).

Weights are local files (nothing is downloaded). `scripts/convert_inception.py` and `scripts/convert_lpips.py`
turn the public PyTorch files into the `.npz` read here: flat keys `params/<module path>/<name>` and
`batch_stats/...`, i.e. `flax.traverse_util.flatten_dict(variables, sep='/')`. Without weights a metric is
left out and says why (`Perceptual.notes`); it is never estimated some other way.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Mapping, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from flax import traverse_util

# INCEPTION_DIM re-exported: the harness's callers size their FID statistics with it.
from jaxinpaint.models.inception import INCEPTION_DIM as INCEPTION_DIM
from jaxinpaint.models.inception import INCEPTION_SIZE, InceptionV3Pool
from jaxinpaint.models.vgg import VGG16_BLOCKS, VGG16Features

LPIPS_SHIFT = (-0.030, -0.088, -0.188)  # lpips ScalingLayer: [-1, 1] input -> the VGG's ImageNet statistics
LPIPS_SCALE = (0.458, 0.448, 0.450)
LPIPS_EPS = 1e-10

# ------------------------------------------------------------------------------------------------ LPIPS


class Lpips(nn.Module):
  """LPIPS distance with the VGG16 backbone: (x, y) f32[B, H, W, 3] in [-1, 1] -> f32[B] (eq. 1 above).

  H and W of at least 16 (four 2x2 pools before relu5_3). The VGG shares this module's scope, so the params are
  flat: `conv1_1` ... `conv5_3` (the backbone) beside `lin0` ... `lin4` (kernels f32[1, 1, C_l, 1]).
  """

  def setup(self):
    self.vgg = VGG16Features(blocks=len(VGG16_BLOCKS), taps="relu")
    nn.share_scope(self, self.vgg)  # the backbone's convs sit beside the lin layers, as in the weights file

  @nn.compact
  def __call__(self, x, y):
    if x.shape != y.shape or x.ndim != 4 or x.shape[-1] != 3:
      raise ValueError(f"Lpips expects two equal f32[B, H, W, 3]; got {x.shape} and {y.shape}")
    b = x.shape[0]
    h = (jnp.concatenate([x, y]).astype(jnp.float32) - jnp.asarray(LPIPS_SHIFT)) / jnp.asarray(LPIPS_SCALE)
    total = jnp.zeros((b,), jnp.float32)
    for i, f in enumerate(self.vgg(h)):
      unit = f / (jnp.sqrt(jnp.sum(f * f, axis=-1, keepdims=True) + LPIPS_EPS) + LPIPS_EPS)
      diff = jnp.square(unit[:b] - unit[b:])
      total = total + nn.Conv(1, (1, 1), use_bias=False, name=f"lin{i}")(diff).mean(axis=(1, 2, 3))
    return total


# ------------------------------------------------------------------------------------------------ weights

MODELS = {"inception": InceptionV3Pool, "lpips": Lpips}
CONVERTERS = {"inception": "scripts/convert_inception.py", "lpips": "scripts/convert_lpips.py"}


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


def variables_from_arrays(kind: str, arrays: Mapping[str, np.ndarray], where: str) -> dict:
  """Flat npz arrays -> `kind` variables, checking every key and shape; extra keys are ignored.

  ValueError starting with `where` (what the arrays came from) that counts the problems and names the first few.
  """
  expected = traverse_util.flatten_dict(abstract_variables(kind), sep="/")
  problems = [
    f"{k} has shape {arrays[k].shape}, expected {v.shape}"
    for k, v in expected.items()
    if k in arrays and arrays[k].shape != v.shape
  ]
  problems += [f"missing {k}" for k in expected if k not in arrays]
  if problems:
    raise ValueError(
      f"{where} does not fit the network ({len(problems)} problems): "
      f"{'; '.join(problems[:4])}; convert it with {CONVERTERS[kind]}"
    )
  flat = {k: jnp.asarray(arrays[k], jnp.float32) for k in expected}
  return traverse_util.unflatten_dict(flat, sep="/")


def load_variables(kind: str, path: str | os.PathLike) -> dict:
  """Reads an `.npz` of `kind` ('inception' | 'lpips') weights, checking every key and shape.

  FileNotFoundError when `path` does not exist; ValueError naming the file when it is unreadable, lacks a key
  or has one of the wrong shape. Extra keys are ignored.
  """
  path = os.fspath(path)
  if not os.path.isfile(path):
    raise FileNotFoundError(f"{kind} weights file {path!r} does not exist; make it with {CONVERTERS[kind]}")
  try:
    with np.load(path, allow_pickle=False) as archive:
      arrays = {key: np.asarray(archive[key]) for key in archive.files}
  except (OSError, ValueError) as error:
    raise ValueError(f"{kind} weights file {path!r} is not a readable .npz: {error}") from None
  return variables_from_arrays(kind, arrays, f"{kind} weights file {path!r}")


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


def low_rank_frechet_distance(mu1, a, mu2, b) -> float:
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
    return low_rank_frechet_distance(kept_real[0], kept_real[1], kept_fake[0], kept_fake[1])
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
      self.lpips = functools.partial(jax.jit(Lpips().apply), variables)
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
