"""Dead-leaves training images: the radius law, the disc model, seeding, and their place in the train stream."""

import numpy as np
import pytest

from jaxinpaint.data import synthetic


def test_power_law_radius_follows_the_density():
  # P(a <= r < b) for density r^-3 on [r_min, r_max] is (a^-2 - b^-2) / (r_min^-2 - r_max^-2), integrated here
  # by hand, against 20000 draws.
  rng = np.random.default_rng(0)
  r_min, r_max = 2.0, 64.0
  draws = np.array([synthetic.power_law_radius(rng, r_min, r_max) for _ in range(20000)])
  assert draws.min() >= r_min and draws.max() <= r_max
  edges = np.array([2.0, 3.0, 4.0, 8.0, 16.0, 64.0])
  expected = (edges[:-1] ** -2 - edges[1:] ** -2) / (r_min**-2 - r_max**-2)
  observed = np.histogram(draws, edges)[0] / len(draws)
  np.testing.assert_allclose(observed, expected, atol=0.012)


def test_dead_leaves_is_seeded_uint8_and_has_flat_regions_and_edges():
  a, b = (synthetic.dead_leaves(np.random.default_rng(7), 33) for _ in range(2))
  np.testing.assert_array_equal(a, b)
  assert a.shape == (33, 33, 3) and a.dtype == np.uint8
  assert not np.array_equal(a, synthetic.dead_leaves(np.random.default_rng(8), 33))
  step = np.abs(np.diff(a.astype(int), axis=1)).max(axis=-1)
  assert (step <= 2).mean() > 0.5  # most neighbours lie inside one disc (a gentle ramp at most)
  assert (step >= 30).mean() > 0.01  # and occlusion edges exist


def test_a_disc_covering_the_image_is_a_shaded_linear_ramp():
  # r_min = r_max far above the size: an image is either covered by the first disc that lands (flat colour plus
  # a linear shade, so second differences vanish up to rounding, and the shade is not flat) or split by an edge.
  ramps = 0
  for seed in range(20):
    image = synthetic.dead_leaves(np.random.default_rng(seed), 24, r_min=400.0, r_max=400.0).astype(int)
    curvature = max(np.abs(np.diff(image, 2, axis=0)).max(), np.abs(np.diff(image, 2, axis=1)).max())
    if curvature <= 2:
      ramps += 1
      assert np.ptp(image) >= 1
    else:
      assert curvature >= 10  # an occlusion edge, not a curved shade
  assert ramps >= 10


def test_dead_leaves_refuses_bad_sizes():
  with pytest.raises(ValueError, match="size must be positive"):
    synthetic.dead_leaves(np.random.default_rng(0), 0)
  with pytest.raises(ValueError, match="r_min <= r_max"):
    synthetic.dead_leaves(np.random.default_rng(0), 8, r_min=5.0, r_max=2.0)


def test_demo_dead_leaves_eval_set_is_fixed_images_cut_like_the_photos():
  from jaxinpaint import configs_lib
  from jaxinpaint.data import sources

  config = configs_lib.load_config_file("configs/wconv.py:demo")
  config.data.eval_split, config.data.eval_examples = "dead_leaves", 4
  source = sources.make_source(config.data, "eval")
  assert isinstance(source, synthetic.DeadLeavesSource) and len(source) == 4
  assert source[0].shape == (config.data.shorter_side, config.data.shorter_side, 3)  # cut as the photos are
  again = sources.make_source(config.data, "eval")
  assert all(np.array_equal(source[i], again[i]) for i in range(4)) and not np.array_equal(source[0], source[1])
  assert isinstance(sources.make_source(config.data, "train"), sources.DemoSource)  # training data unchanged
