"""Image-quality metrics for inpainting, per image, and clu collections that average them over examples.

All functions are pure jnp and jit-able. Images are f32[B, H, W, C] in [0, 1] (convert model outputs from
[-1, 1] first); every metric returns f32[B], one value per image. A `region` is f32[B, H, W, 1] (or
[B, H, W, C]), 1 = pixel counted; region means run over region pixels x channels.

Conventions chosen here (document them next to any number you publish):
- Empty region: the error is defined as 0, so L1/L2/TV are 0 and PSNR takes its cap. Never NaN.
- PSNR is capped at 100 dB: the MSE is floored at 1e-10 * max_val**2, so identical images give 100, not inf.
- SSIM follows Wang et al. 2004 as skimage computes it with `gaussian_weights=True, sigma=1.5,
  use_sample_covariance=False, data_range=max_val, channel_axis=-1`: an 11-tap Gaussian window (sigma 1.5,
  truncated at 3.5 sigma), K1 = 0.01, K2 = 0.03, the SSIM map averaged over the windows that fit entirely
  inside the image (skimage's 5-px border crop), then over channels. Images must be at least 11 x 11.
"""

# No `from __future__ import annotations`: clu reads the Collection field annotations as live classes.
from collections.abc import Sequence

import flax
import jax
import jax.numpy as jnp
import numpy as np
from clu import metrics as clu_metrics

PSNR_CAP_DB = 100.0
_MSE_FLOOR = 1e-10  # relative to max_val**2; 10*log10(1/1e-10) = 100 dB
_SSIM_SIGMA = 1.5
_SSIM_TRUNCATE = 3.5  # skimage's choice: gives the 11-tap window of Wang et al.
_SSIM_K1, _SSIM_K2 = 0.01, 0.03


def _as_image(x, name: str) -> jax.Array:
  x = jnp.asarray(x, jnp.float32)
  if x.ndim != 4:
    raise ValueError(f"{name} must be f32[B, H, W, C]; got shape {x.shape}")
  return x


def _check_pair(target, output) -> tuple[jax.Array, jax.Array]:
  target, output = _as_image(target, "target"), _as_image(output, "output")
  if target.shape != output.shape:
    raise ValueError(f"target and output shapes differ: {target.shape} vs {output.shape}")
  return target, output


def _check_region(region, like: jax.Array, name: str = "region") -> jax.Array:
  region = _as_image(region, name)
  b, h, w, c = like.shape
  if region.shape[:3] != (b, h, w) or region.shape[3] not in (1, c):
    raise ValueError(f"{name} must be f32[{b}, {h}, {w}, 1 or {c}] to match images {like.shape}; got {region.shape}")
  return region


def _region_mean(values: jax.Array, region: jax.Array | None) -> jax.Array:
  """Mean of `values` [B, H, W, C] over region pixels x channels, per image; 0 where the region is empty."""
  if region is None:
    return values.mean(axis=(1, 2, 3))
  weights = jnp.broadcast_to(region, values.shape)
  total = (weights * values).sum(axis=(1, 2, 3))
  count = weights.sum(axis=(1, 2, 3))
  return jnp.where(count > 0, total / jnp.where(count > 0, count, 1.0), 0.0)


def l1(target, output, region=None) -> jax.Array:
  """Mean absolute error, f32[B]: mean |output - target| over (region) pixels x channels."""
  target, output = _check_pair(target, output)
  region = None if region is None else _check_region(region, target)
  return _region_mean(jnp.abs(output - target), region)


def l2(target, output, region=None) -> jax.Array:
  """Mean squared error (MSE), f32[B]: mean (output - target)^2 over (region) pixels x channels."""
  target, output = _check_pair(target, output)
  region = None if region is None else _check_region(region, target)
  return _region_mean(jnp.square(output - target), region)


def psnr(target, output, region=None, max_val: float = 1.0) -> jax.Array:
  """Peak signal-to-noise ratio in dB, f32[B]: 10 log10(max_val^2 / MSE), MSE over (region) pixels.

  The MSE is floored at 1e-10 * max_val^2, so the result is at most `PSNR_CAP_DB` (100 dB): identical
  images, and an empty region, give 100 rather than inf.
  """
  mse = l2(target, output, region)
  mse = jnp.maximum(mse, _MSE_FLOOR * max_val**2)
  return 10.0 * jnp.log10(max_val**2 / mse)


def tv(image, region=None) -> jax.Array:
  """Total variation, f32[B]: mean |x[p] - x[q]| over 4-neighbour pairs (p, q) and channels.

  Horizontal and vertical pairs are pooled into one mean (Johnson et al. 2016's TV regulariser, as a mean).
  With a region, a pair counts (weight max(r_p, r_q)) when either pixel is in the region, so the seams
  between a region and its surround are measured too. Empty region -> 0.
  """
  image = _as_image(image, "image")
  if region is None:
    region = jnp.ones(image.shape[:3] + (1,), jnp.float32)
  region = _check_region(region, image)
  dh = jnp.abs(image[:, :, 1:] - image[:, :, :-1])
  dv = jnp.abs(image[:, 1:] - image[:, :-1])
  wh = jnp.broadcast_to(jnp.maximum(region[:, :, 1:], region[:, :, :-1]), dh.shape)
  wv = jnp.broadcast_to(jnp.maximum(region[:, 1:], region[:, :-1]), dv.shape)
  total = (wh * dh).sum(axis=(1, 2, 3)) + (wv * dv).sum(axis=(1, 2, 3))
  count = wh.sum(axis=(1, 2, 3)) + wv.sum(axis=(1, 2, 3))
  return jnp.where(count > 0, total / jnp.where(count > 0, count, 1.0), 0.0)


def _gaussian_taps() -> np.ndarray:
  """The 1-D Gaussian scipy.ndimage uses for sigma 1.5, truncate 3.5: 11 taps, summing to 1."""
  radius = int(_SSIM_TRUNCATE * _SSIM_SIGMA + 0.5)
  x = np.arange(-radius, radius + 1, dtype=np.float64)
  taps = np.exp(-0.5 * (x / _SSIM_SIGMA) ** 2)
  return (taps / taps.sum()).astype(np.float32)


def _gaussian_valid(x: jax.Array) -> jax.Array:
  """Separable Gaussian filter of f32[N, H, W, 1] keeping only windows inside the image (VALID)."""
  taps = jnp.asarray(_gaussian_taps())
  dims = ("NHWC", "HWIO", "NHWC")
  highest = jax.lax.Precision.HIGHEST  # default TPU/GPU conv precision is too coarse for variances
  x = jax.lax.conv_general_dilated(
    x, taps.reshape(-1, 1, 1, 1), (1, 1), "VALID", dimension_numbers=dims, precision=highest
  )
  return jax.lax.conv_general_dilated(
    x, taps.reshape(1, -1, 1, 1), (1, 1), "VALID", dimension_numbers=dims, precision=highest
  )


def ssim(target, output, max_val: float = 1.0) -> jax.Array:
  """Structural similarity (Wang et al. 2004, eq. 13), f32[B], matching skimage (see module docstring).

  SSIM = (2 mu_x mu_y + C1)(2 s_xy + C2) / ((mu_x^2 + mu_y^2 + C1)(s_x^2 + s_y^2 + C2)) with Gaussian-
  weighted local statistics, C1 = (0.01 max_val)^2, C2 = (0.03 max_val)^2, averaged over valid windows and
  channels.
  """
  target, output = _check_pair(target, output)
  b, h, w, c = target.shape
  size = len(_gaussian_taps())
  if h < size or w < size:
    raise ValueError(f"ssim needs images of at least {size}x{size} pixels; got {target.shape}")
  stack = jnp.stack([target, output, target * target, output * output, target * output])
  # Channels and statistics go to the batch axis so one single-channel filter serves them all.
  stack = stack.transpose(0, 1, 4, 2, 3).reshape(5 * b * c, h, w, 1)
  mu_x, mu_y, e_xx, e_yy, e_xy = _gaussian_valid(stack).reshape(5, b, c, h - size + 1, w - size + 1)
  var_x, var_y, cov = e_xx - mu_x * mu_x, e_yy - mu_y * mu_y, e_xy - mu_x * mu_y
  c1, c2 = (_SSIM_K1 * max_val) ** 2, (_SSIM_K2 * max_val) ** 2
  ssim_map = ((2 * mu_x * mu_y + c1) * (2 * cov + c2)) / ((mu_x**2 + mu_y**2 + c1) * (var_x + var_y + c2))
  return ssim_map.mean(axis=(1, 2, 3))


def inpainting_metrics(target, output, valid) -> dict[str, jax.Array]:
  """Seed 004's evaluation protocol (Kang et al., Table I), plus the full-image numbers mmagic reports.

  Args:
    target: f32[B, H, W, C] ground truth in [0, 1].
    output: f32[B, H, W, C] raw network output in [0, 1].
    valid: f32[B, H, W, 1] (or C), 1 = known pixel, 0 = hole.

  Returns f32[B] per key:
    l1, l2: MAE and MSE over the hole pixels of the output, x100 (percent of the [0, 1] range; Table I units).
    tv: total variation x100 of the composite over the pairs touching the hole (the fill and its seams).
    psnr: dB over the hole pixels of the output (100 dB cap; also for an image without a hole).
    ssim: SSIM of the composite valid*target + (1-valid)*output against the target.
    psnr_full, ssim_full: PSNR and SSIM of the composite over the whole image (mmagic's columns);
      ssim_full is the same number as ssim, kept under both names so either protocol's table reads directly.
  Changing `output` where valid = 1 changes none of these.
  """
  target, output = _check_pair(target, output)
  valid = _check_region(valid, target, "valid")
  hole = 1.0 - valid
  composite = valid * target + hole * output
  ssim_composite = ssim(target, composite)
  return {
    "l1": 100.0 * l1(target, output, hole),
    "l2": 100.0 * l2(target, output, hole),
    "tv": 100.0 * tv(composite, hole),
    "psnr": psnr(target, output, hole),
    "ssim": ssim_composite,
    "psnr_full": psnr(target, composite),
    "ssim_full": ssim_composite,
  }


@flax.struct.dataclass
class InpaintingMetrics(clu_metrics.Collection):
  """Averages `inpainting_metrics` over examples: `InpaintingMetrics.single_from_model_output(**values)`.

  Each field is an `Average` of the per-example values, so merging batches gives the mean over all
  examples. Pass `mask=f32[B]` with the values to drop padded examples. Use `single_from_model_output`
  under jit with global arrays; merge with `.merge`, read with `.compute()`.
  """

  l1: clu_metrics.Average.from_output("l1")
  l2: clu_metrics.Average.from_output("l2")
  tv: clu_metrics.Average.from_output("tv")
  psnr: clu_metrics.Average.from_output("psnr")
  ssim: clu_metrics.Average.from_output("ssim")
  psnr_full: clu_metrics.Average.from_output("psnr_full")
  ssim_full: clu_metrics.Average.from_output("ssim_full")


def collect_inpainting_metrics(target, output, valid, mask=None) -> InpaintingMetrics:
  """`InpaintingMetrics` for one batch; `mask` f32[B] (1 = real example) leaves padded examples out."""
  values = inpainting_metrics(target, output, valid)
  if mask is not None:
    values["mask"] = jnp.asarray(mask)
  return InpaintingMetrics.single_from_model_output(**values)


def make_loss_collection(names: Sequence[str]) -> type[clu_metrics.Collection]:
  """A `Collection` class with one `Average` per loss-term name, e.g. a train step's `TrainMetrics`.

    TrainMetrics = make_loss_collection(["total", "valid_l1", "hole_l1"])  # once, at set-up
    metrics = TrainMetrics.single_from_model_output(total=loss, **terms)   # inside the step

  Scalars count once per call, so the computed value is the mean over steps. Each call makes a new class:
  build it once and reuse it (a new class retraces jitted functions that return it).
  """
  names = list(names)
  bad = [n for n in names if not (isinstance(n, str) and n.isidentifier()) or n in ("mask", "_reduction_counter")]
  if not names or bad or len(set(names)) != len(names):
    raise ValueError(f"loss names must be distinct identifiers other than 'mask'; got {names}")
  return clu_metrics.Collection.create(**{n: clu_metrics.Average.from_output(n) for n in names})
