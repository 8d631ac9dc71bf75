"""jaxinpaint.metrics against skimage on real photographs, against numpy, and the seed-004 protocol."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from skimage import data, filters, transform
from skimage.metrics import peak_signal_noise_ratio, structural_similarity

from jaxinpaint import metrics

H, W = 72, 88  # non-square, not a power of two
# Jitted once: eager dispatch compiles every small op separately, which is slower on this CPU.
l1, l2, psnr, tv, ssim, inpainting_metrics = (
  jax.jit(f) for f in (metrics.l1, metrics.l2, metrics.psnr, metrics.tv, metrics.ssim, metrics.inpainting_metrics)
)


def _photos() -> np.ndarray:
  """astronaut, coffee, chelsea downsized to H x W: f32[3, H, W, 3] in [0, 1]."""
  images = [data.astronaut(), data.coffee(), data.chelsea()]
  return np.stack([transform.resize(im, (H, W), anti_aliasing=True) for im in images]).astype(np.float32)


def _distortions(image: np.ndarray, rng: np.random.Generator) -> list[np.ndarray]:
  """Noise, blur, and a box filled with the mean colour (a crude inpainting)."""
  noisy = np.clip(image + rng.normal(0.0, 0.06, image.shape), 0.0, 1.0)
  blurred = filters.gaussian(image, sigma=1.2, channel_axis=-1)
  boxed = image.copy()
  boxed[20:50, 25:60] = image.mean(axis=(0, 1))
  return [d.astype(np.float32) for d in (noisy, blurred, boxed)]


def _skimage_ssim(a, b):
  return structural_similarity(
    a, b, gaussian_weights=True, sigma=1.5, use_sample_covariance=False, data_range=1.0, channel_axis=-1
  )


@pytest.fixture(scope="module")
def photo_pairs():
  rng = np.random.default_rng(0)
  targets, outputs = [], []
  for image in _photos():
    for distorted in _distortions(image, rng):
      targets.append(image)
      outputs.append(distorted)
  return np.stack(targets), np.stack(outputs)


def test_psnr_and_ssim_match_skimage_on_photographs(photo_pairs):
  targets, outputs = photo_pairs
  ours_psnr = np.asarray(psnr(targets, outputs))
  ours_ssim = np.asarray(ssim(targets, outputs))
  ref_psnr = [peak_signal_noise_ratio(t, o, data_range=1.0) for t, o in zip(targets, outputs)]
  ref_ssim = [_skimage_ssim(t, o) for t, o in zip(targets, outputs)]
  np.testing.assert_allclose(ours_psnr, ref_psnr, atol=1e-3)
  np.testing.assert_allclose(ours_ssim, ref_ssim, atol=1e-3)
  # The distortions span a real range, so agreement is not an artefact of near-identical images.
  assert np.ptp(ref_ssim) > 0.1 and np.ptp(ref_psnr) > 5.0


def test_ssim_max_val_scales_like_skimage(photo_pairs):
  targets, outputs = photo_pairs[0][:2] * 255.0, photo_pairs[1][:2] * 255.0
  ours = np.asarray(ssim(targets, outputs, max_val=255.0))
  ref = [
    structural_similarity(
      t, o, gaussian_weights=True, sigma=1.5, use_sample_covariance=False, data_range=255.0, channel_axis=-1
    )
    for t, o in zip(targets, outputs)
  ]
  np.testing.assert_allclose(ours, ref, atol=1e-3)
  ours_psnr = np.asarray(psnr(targets, outputs, max_val=255.0))
  np.testing.assert_allclose(
    ours_psnr, [peak_signal_noise_ratio(t, o, data_range=255.0) for t, o in zip(targets, outputs)], atol=1e-3
  )


def _random_case(shape=(2, 13, 17, 3), region_channels=1, seed=1):
  rng = np.random.default_rng(seed)
  target = rng.uniform(size=shape).astype(np.float32)
  output = rng.uniform(size=shape).astype(np.float32)
  region = (rng.uniform(size=shape[:3] + (region_channels,)) > 0.6).astype(np.float32)
  return target, output, region


@pytest.mark.parametrize("region_channels", [1, 3])
def test_region_metrics_match_numpy(region_channels):
  target, output, region = _random_case(region_channels=region_channels)
  w = np.broadcast_to(region, target.shape)
  diff = output.astype(np.float64) - target
  ref_l1 = (w * np.abs(diff)).sum(axis=(1, 2, 3)) / w.sum(axis=(1, 2, 3))
  ref_l2 = (w * diff**2).sum(axis=(1, 2, 3)) / w.sum(axis=(1, 2, 3))
  np.testing.assert_allclose(l1(target, output, region), ref_l1, rtol=1e-5)
  np.testing.assert_allclose(l2(target, output, region), ref_l2, rtol=1e-5)
  np.testing.assert_allclose(psnr(target, output, region), 10 * np.log10(1.0 / ref_l2), rtol=1e-5)
  # Without a region: plain means over everything.
  np.testing.assert_allclose(l1(target, output), np.abs(diff).mean(axis=(1, 2, 3)), rtol=1e-5)
  np.testing.assert_allclose(l2(target, output), (diff**2).mean(axis=(1, 2, 3)), rtol=1e-5)


def _tv_numpy(image, region):
  """Loop over every 4-neighbour pair; a pair counts (weight max) when either end is in the region."""
  b, h, w, c = image.shape
  out = []
  for n in range(b):
    total = count = 0.0
    for i in range(h):
      for j in range(w):
        for di, dj in ((0, 1), (1, 0)):
          if i + di < h and j + dj < w:
            for ch in range(c):
              r = max(region[n, i, j, ch % region.shape[3]], region[n, i + di, j + dj, ch % region.shape[3]])
              total += r * abs(float(image[n, i, j, ch]) - float(image[n, i + di, j + dj, ch]))
              count += r
    out.append(total / count if count else 0.0)
  return np.array(out)


def test_tv_matches_numpy_loop():
  _, image, region = _random_case(shape=(2, 7, 9, 3))
  np.testing.assert_allclose(tv(image, region), _tv_numpy(image, region), rtol=1e-5)
  np.testing.assert_allclose(tv(image), _tv_numpy(image, np.ones_like(image[..., :1])), rtol=1e-5)
  assert float(tv(np.full((1, 8, 8, 3), 0.3, np.float32))[0]) == 0.0


def _box_valid(b=2, h=H, w=W):
  valid = np.ones((b, h, w, 1), np.float32)
  valid[:, 18:46, 20:61] = 0.0
  return valid


def test_inpainting_metrics_follow_seed_004_protocol(photo_pairs):
  targets, outputs = photo_pairs[0][:2], photo_pairs[1][:2]
  valid = _box_valid()
  hole = 1.0 - valid
  composite = valid * targets + hole * outputs
  got = inpainting_metrics(targets, outputs, valid)
  assert set(got) == {"l1", "l2", "tv", "psnr", "ssim", "psnr_full", "ssim_full"}
  hole3 = np.broadcast_to(hole, targets.shape).astype(bool)
  diff = outputs.astype(np.float64) - targets
  ref_l1 = [100 * np.abs(d[m]).mean() for d, m in zip(diff, hole3)]
  ref_l2 = [100 * (d[m] ** 2).mean() for d, m in zip(diff, hole3)]
  np.testing.assert_allclose(got["l1"], ref_l1, rtol=1e-5)
  np.testing.assert_allclose(got["l2"], ref_l2, rtol=1e-5)
  np.testing.assert_allclose(got["psnr"], 10 * np.log10(100.0 / np.array(ref_l2)), rtol=1e-5)
  np.testing.assert_allclose(got["tv"], 100 * _tv_numpy(composite[:, 14:50, 16:65], hole[:, 14:50, 16:65]), rtol=1e-4)
  ref_ssim = [_skimage_ssim(t, c) for t, c in zip(targets, composite)]
  np.testing.assert_allclose(got["ssim"], ref_ssim, atol=1e-3)
  np.testing.assert_allclose(got["ssim_full"], ref_ssim, atol=1e-3)
  np.testing.assert_allclose(
    got["psnr_full"], [peak_signal_noise_ratio(t, c, data_range=1.0) for t, c in zip(targets, composite)], atol=1e-3
  )
  # SSIM is of the composite, not of the raw output.
  assert np.all(np.abs(np.asarray(got["ssim"]) - np.asarray(ssim(targets, outputs))) > 1e-3)


def test_known_pixels_of_output_do_not_matter(photo_pairs):
  targets, outputs = photo_pairs[0][:2], photo_pairs[1][:2]
  valid = _box_valid()
  scrambled = np.where(valid > 0, np.random.default_rng(3).uniform(size=outputs.shape), outputs)
  a = inpainting_metrics(targets, outputs, valid)
  b = inpainting_metrics(targets, scrambled.astype(np.float32), valid)
  for key in a:
    np.testing.assert_allclose(a[key], b[key], rtol=1e-6, err_msg=key)
  # ...whereas changing the hole does change them.
  c = inpainting_metrics(targets, np.where(valid > 0, outputs, 0.5).astype(np.float32), valid)
  assert all(np.all(np.asarray(a[k]) != np.asarray(c[k])) for k in ("l1", "l2", "tv", "psnr", "ssim"))


def test_perfect_output_hits_the_caps(photo_pairs):
  targets = photo_pairs[0][:2]
  got = inpainting_metrics(targets, targets, _box_valid())
  np.testing.assert_allclose(got["ssim"], 1.0, atol=1e-6)
  np.testing.assert_allclose(got["psnr"], metrics.PSNR_CAP_DB)
  np.testing.assert_allclose(got["psnr_full"], metrics.PSNR_CAP_DB)
  np.testing.assert_array_equal(got["l1"], 0.0)
  np.testing.assert_allclose(psnr(targets, targets), 100.0)


@pytest.mark.parametrize("fill", [0.0, 1.0], ids=["all_hole", "no_hole"])
def test_extreme_masks_give_no_nan(fill):
  target, output, _ = _random_case(shape=(2, 16, 16, 3))
  valid = np.full((2, 16, 16, 1), fill, np.float32)
  got = inpainting_metrics(target, output, valid)
  for key, value in got.items():
    assert np.all(np.isfinite(value)), key
  if fill == 1.0:  # nothing to judge in the hole: errors 0, PSNR at its cap, composite == target
    for key in ("l1", "l2", "tv"):
      np.testing.assert_array_equal(got[key], 0.0)
    np.testing.assert_allclose(got["psnr"], 100.0)
    np.testing.assert_allclose(got["ssim"], 1.0, atol=1e-6)
  else:  # the whole image is hole: hole metrics equal full-image ones
    np.testing.assert_allclose(got["l1"], 100 * l1(target, output), rtol=1e-6)
    np.testing.assert_allclose(got["psnr"], got["psnr_full"], rtol=1e-6)
  grads = jax.grad(lambda o: psnr(target, o, 1.0 - valid).sum())(output)
  assert np.all(np.isfinite(grads))


def test_bad_inputs_raise_value_error():
  target, output, region = _random_case(shape=(2, 16, 16, 3))
  with pytest.raises(ValueError, match="shapes differ"):
    metrics.l1(target, output[:, :15])
  with pytest.raises(ValueError, match="region"):
    metrics.l2(target, output, region[:, :, :8])
  with pytest.raises(ValueError, match="valid"):
    metrics.inpainting_metrics(target, output, np.ones((2, 16, 16, 2), np.float32))
  with pytest.raises(ValueError, match="11x11"):
    metrics.ssim(target[:, :10], output[:, :10])
  with pytest.raises(ValueError, match=r"B, H, W, C"):
    metrics.psnr(target[0], output[0])


def test_inpainting_collection_averages_over_examples(photo_pairs):
  targets, outputs = photo_pairs[0][:4], photo_pairs[1][:4]
  valid = np.concatenate([_box_valid(), _box_valid()])
  per_example = inpainting_metrics(targets, outputs, valid)
  collect = jax.jit(metrics.collect_inpainting_metrics)
  ones = np.ones(2, np.float32)
  first = collect(targets[:2], outputs[:2], valid[:2], ones)
  rest = collect(targets[2:], outputs[2:], valid[2:], ones)
  merged = first.merge(rest).compute()
  for key, values in per_example.items():
    np.testing.assert_allclose(merged[key], np.mean(values), rtol=1e-5, err_msg=key)
  # A padded batch: the example mask leaves the padding out of the average.
  padded = collect(targets[2:], outputs[2:], valid[2:], np.array([1, 0], np.float32))
  np.testing.assert_allclose(first.merge(padded).compute()["psnr"], np.mean(per_example["psnr"][:3]), rtol=1e-5)
  empty_then = metrics.InpaintingMetrics.empty().merge(first).compute()
  np.testing.assert_allclose(empty_then["l1"], np.mean(per_example["l1"][:2]), rtol=1e-5)


def test_loss_collection_means_over_steps():
  train_metrics = metrics.make_loss_collection(["total", "hole_l1"])
  step = jax.jit(lambda x: train_metrics.single_from_model_output(total=x, hole_l1=2.0 * x))
  collected = step(jnp.float32(1.0))
  for value in (2.0, 6.0):
    collected = collected.merge(step(jnp.float32(value)))
  result = collected.compute()
  assert set(result) == {"total", "hole_l1"}
  np.testing.assert_allclose(result["total"], 3.0)
  np.testing.assert_allclose(result["hole_l1"], 6.0)
  for bad in ([], ["a", "a"], ["mask"], ["not a name"]):
    with pytest.raises(ValueError):
      metrics.make_loss_collection(bad)
