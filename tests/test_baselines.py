"""Classical peers: known pixels kept byte-exact, fills that are right where the answer is known (constant,
linear), holes never read, better than mean fill on a real photo, and one-line errors for bad input."""

import numpy as np
import pytest

from jaxinpaint import baselines
from jaxinpaint.data import masks

NAMES = list(baselines.BASELINES)


def random_case(h=33, w=47, seed=0):
  rng = np.random.default_rng(seed)
  image = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
  hole = masks.free_form(rng, h, w) < 0.5
  assert 0 < hole.sum() < h * w
  return image, hole


@pytest.mark.parametrize("name", NAMES)
def test_known_pixels_are_byte_exact_at_odd_size(name):
  image, hole = random_case()
  out = baselines.BASELINES[name](image, hole)
  assert out.shape == image.shape and out.dtype == np.uint8
  np.testing.assert_array_equal(out[~hole], image[~hole])


@pytest.mark.parametrize("name", NAMES)
def test_constant_image_is_filled_with_its_colour(name):
  image = np.empty((40, 36, 3), np.uint8)
  image[:] = (200, 40, 90)
  hole = np.zeros((40, 36), bool)
  hole[10:25, 8:30] = True
  out = baselines.BASELINES[name](image, hole)
  # Telea's gradient term is accumulated in float32 by OpenCV: a few levels of rounding on a flat image
  assert np.abs(out.astype(int) - image.astype(int)).max() <= (3 if name == "telea" else 1)


def test_biharmonic_reproduces_a_linear_gradient_and_opencv_comes_close():
  yy, xx = np.mgrid[0:48, 0:64]
  ramp = 40 + 2.0 * xx + 1.0 * yy  # 40 .. 213
  image = np.repeat(np.round(ramp)[..., None], 3, axis=-1).astype(np.uint8)
  hole = np.zeros((48, 64), bool)
  hole[14:34, 20:44] = True
  err = {n: np.abs(baselines.BASELINES[n](image, hole).astype(float) - image)[hole].mean() for n in NAMES}
  assert err["biharmonic"] < 0.6
  assert err["telea"] < 6 and err["navier_stokes"] < 6
  assert err["mean_fill"] > max(err["telea"], err["navier_stokes"]) and err["mean_fill"] > 10


def test_mean_fill_is_the_mean_of_known_pixels():
  image, hole = random_case(seed=3)
  expected = np.round(image[~hole].astype(np.float64).mean(axis=0)).astype(np.uint8)
  out = baselines.mean_fill(image, hole)
  np.testing.assert_array_equal(out[hole], np.broadcast_to(expected, out[hole].shape))


@pytest.mark.parametrize("name", NAMES)
def test_no_hole_and_all_hole(name):
  image, _ = random_case()
  np.testing.assert_array_equal(baselines.BASELINES[name](image, np.zeros(image.shape[:2], bool)), image)
  assert (baselines.BASELINES[name](image, np.ones(image.shape[:2], bool)) == 128).all()


@pytest.mark.parametrize("name", NAMES)
def test_each_peer_never_reads_hole_pixels(name):
  """Called directly (as users and the ablation do), a peer's output is the same whatever lies under the hole."""
  from skimage import data

  photo = data.chelsea()[::5, ::5][:61, :87]  # odd size; holes touch the bottom and right borders
  hole = masks.free_form(np.random.default_rng(4), *photo.shape[:2]) < 0.5
  hole[-6:, 20:50] = hole[15:40, -5:] = True
  magenta = np.where(hole[..., None], np.array([255, 0, 255], np.uint8), photo)
  noise = np.where(hole[..., None], np.random.default_rng(5).integers(0, 256, photo.shape, np.uint8), photo)
  np.testing.assert_array_equal(baselines.BASELINES[name](magenta, hole), baselines.BASELINES[name](noise, hole))


def test_batch_never_reads_hole_pixels_and_beats_mean_fill_on_a_photo():
  from skimage import data

  photo = data.astronaut()[::8, ::8][:48, :48]  # a 48 x 48 thumbnail of a real photograph
  rng = np.random.default_rng(1)
  valid = np.stack([masks.free_form(rng, 48, 48) for _ in range(3)])[..., None]
  image = np.repeat(photo[None], 3, axis=0).astype(np.float32) / 127.5 - 1.0
  scrambled = np.where(valid > 0.5, image, rng.uniform(-1, 1, image.shape).astype(np.float32))
  hole = valid[..., 0] < 0.5
  l1 = {}
  for name in NAMES:
    out = baselines.inpaint_batch(name, image, valid)
    np.testing.assert_array_equal(out, baselines.inpaint_batch(name, scrambled, valid))
    np.testing.assert_array_equal(baselines.to_uint8(out)[~hole], baselines.to_uint8(image)[~hole])
    l1[name] = np.abs(out - image)[hole].mean()
  for name in ("telea", "navier_stokes", "biharmonic"):
    assert l1[name] < 0.8 * l1["mean_fill"], l1


def test_bad_input_fails_with_one_clear_line():
  image, hole = random_case()
  with pytest.raises(ValueError, match=r"image must be uint8\[H, W, 3\]; got float32"):
    baselines.telea(image.astype(np.float32), hole)
  with pytest.raises(ValueError, match=r"hole must be bool\[33, 47\] like the image; got \(47, 33\)"):
    baselines.biharmonic(image, hole.T)
  with pytest.raises(ValueError, match="unknown classical baseline 'opencv'"):
    baselines.parse_names("telea,opencv")
  with pytest.raises(ValueError, match="valid f32"):
    baselines.inpaint_batch("telea", image[None].astype(np.float32), hole[None].astype(np.float32))
  assert baselines.parse_names("all") == NAMES
  assert baselines.parse_names("none") == []
  assert baselines.parse_names(" telea, mean_fill ") == ["telea", "mean_fill"]
