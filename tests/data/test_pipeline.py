"""The grain pipeline: batch contents, determinism, resume, workers, process sharding, the fixed eval set."""

import os

import numpy as np
import pytest
import tensorflow_datasets as tfds
from ml_collections import ConfigDict
from PIL import Image

from jaxinpaint.data import masks, pipeline, sources

SIZE = 16


def _config(path="", **data):
  config = ConfigDict()
  config.seed = 0
  config.batch_size = 4
  config.data = ConfigDict(
    dict(
      source="folder",
      name="",
      path=path,
      train_split="train",
      eval_split="validation",
      image_size=SIZE,
      resize=None,
      random_flip=True,
      num_workers=0,
      eval_examples=8,
    )
  )
  config.data.update(data)
  config.masks = ConfigDict(dict(kind="random_box", eval_kind="centre", folder=""))
  return config


def _colour(i):
  return np.array([i, 255 - i, (7 * i) % 256], np.uint8)


def _flat_folder(root, count, shape=(20, 24)):
  """`count` constant-colour PNGs; image i has colour _colour(i), so a crop identifies its file."""
  for i in range(count):
    Image.fromarray(np.broadcast_to(_colour(i), (*shape, 3)).copy()).save(os.path.join(root, f"img{i:03d}.png"))
  return str(root)


def _noise_folder(root, count):
  rng = np.random.default_rng(1)
  images = []
  for i in range(count):
    images.append(rng.integers(0, 256, (SIZE + 2 + i, SIZE + 5, 3), dtype=np.uint8))
    Image.fromarray(images[-1]).save(os.path.join(root, f"n{i}.png"))
  return str(root), images


def _ids(batch):
  """Source index of every (constant-colour) example in a batch."""
  pixels = np.round((batch["image"][:, 0, 0, :] + 1.0) * 127.5).astype(int)
  return [int(p[0]) for p in pixels]


def _windows(image, size):
  return [
    image[t : t + size, l : l + size]
    for t in range(image.shape[0] - size + 1)
    for l in range(image.shape[1] - size + 1)
  ]


def _window_kind(example, images):
  """'plain' or 'mirror' if f32 `example` in [-1, 1] is a (mirrored) window of one uint8 image, else None."""
  crop = np.round((example + 1.0) * 127.5).astype(np.uint8)
  windows = [w for image in images for w in _windows(image, crop.shape[0])]
  if any(np.array_equal(crop, w) for w in windows):
    return "plain"
  if any(np.array_equal(crop[:, ::-1], w) for w in windows):
    return "mirror"
  return None


def _take(iterator, n):
  return [next(iterator) for _ in range(n)]


def _assert_same(batches_a, batches_b):
  assert len(batches_a) == len(batches_b)
  for a, b in zip(batches_a, batches_b):
    np.testing.assert_array_equal(a["image"], b["image"])
    np.testing.assert_array_equal(a["valid"], b["valid"])


def test_batches_are_normalised_crops_with_binary_masks(tmp_path):
  path, images = _noise_folder(tmp_path, 6)
  config = _config(path)
  iterator = pipeline.make_train_iterator(config, source=sources.FolderSource(path, "train", eval_fraction=0.0))
  kinds = []
  for batch in _take(iterator, 3):
    assert set(batch) == {"image", "valid"}
    assert batch["image"].shape == (4, SIZE, SIZE, 3) and batch["image"].dtype == np.float32
    assert batch["valid"].shape == (4, SIZE, SIZE, 1) and batch["valid"].dtype == np.float32
    assert np.all(np.isfinite(batch["image"])) and -1.0 <= batch["image"].min() <= batch["image"].max() <= 1.0
    assert set(np.unique(batch["valid"])) == {0.0, 1.0}
    pixels = (batch["image"] + 1.0) * 127.5
    np.testing.assert_allclose(pixels, np.round(pixels), atol=1e-4)
    # Every example is an unresized SIZE x SIZE window (maybe mirrored) of one source image, mapped to [-1, 1].
    kinds += [_window_kind(example, images) for example in batch["image"]]
  assert None not in kinds and "plain" in kinds and "mirror" in kinds
  config.data.random_flip = False
  batch = next(pipeline.make_train_iterator(config, source=sources.FolderSource(path, "train", eval_fraction=0.0)))
  assert [_window_kind(example, images) for example in batch["image"]] == ["plain"] * 4


def test_fit_image_resizes_as_configured():
  image = np.zeros((12, 30, 3), np.uint8)
  assert pipeline.fit_image(image, 16).shape == (16, 40, 3)  # Shorter side up to the crop size.
  assert pipeline.fit_image(np.zeros((20, 17, 3), np.uint8), 16).shape == (20, 17, 3)  # Big enough: kept.
  assert pipeline.fit_image(image, 16, resize=(39, 32)).shape == (39, 32, 3)
  with pytest.raises(ValueError, match=r"resize=\(10, 32\).*image_size=16"):
    pipeline.fit_image(image, 16, resize=(10, 32))
  # A constant image stays constant through the resize.
  flat = np.full((12, 30, 3), 77, np.uint8)
  assert np.all(pipeline.fit_image(flat, 16, resize=(24, 20)) == 77)


def test_resize_config_crops_from_resized_image(tmp_path):
  small = np.random.default_rng(2).integers(0, 256, (6, 5, 3), dtype=np.uint8)
  Image.fromarray(small).save(tmp_path / "small.png")
  path = str(tmp_path)
  batch = next(
    pipeline.make_train_iterator(
      _config(path, resize=(20, 18)), source=sources.FolderSource(path, "train", eval_fraction=0.0)
    )
  )
  resized = np.asarray(Image.fromarray(small).resize((18, 20), Image.BICUBIC))
  assert None not in [_window_kind(example, [resized]) for example in batch["image"]]


def test_same_seed_same_batches_and_exact_resume(tmp_path):
  path, _ = _noise_folder(tmp_path, 5)
  source = sources.FolderSource(path, "train", eval_fraction=0.0)
  config = _config(path)
  first = _take(pipeline.make_train_iterator(config, source=source), 4)
  _assert_same(first, _take(pipeline.make_train_iterator(config, source=source), 4))
  config.seed = 1
  other = _take(pipeline.make_train_iterator(config, source=source), 4)
  assert not np.array_equal(first[0]["image"], other[0]["image"])
  assert not np.array_equal(first[0]["valid"], other[0]["valid"])

  config.seed = 0
  iterator = pipeline.make_train_iterator(config, source=source)
  _take(iterator, 2)
  state = iterator.get_state()
  rest = _take(iterator, 3)
  _assert_same(rest[:2], first[2:4])
  resumed = pipeline.make_train_iterator(config, source=source)
  resumed.set_state(state)
  _assert_same(_take(resumed, 3), rest)


def test_two_workers_give_the_same_batches(tmp_path):
  path = _flat_folder(tmp_path, 7)
  config = _config(path)
  in_process = _take(pipeline.make_train_iterator(config), 4)
  config.data.num_workers = 2
  iterator = pipeline.make_train_iterator(config)
  _assert_same(_take(iterator, 4), in_process)


def test_processes_take_disjoint_shares_of_the_global_batch(tmp_path):
  path = _flat_folder(tmp_path, 11)
  config = _config(path)
  config.batch_size = 6
  single = _take(pipeline.make_train_iterator(config), 2)
  shares = [_take(pipeline.make_train_iterator(config, p, 2), 2) for p in range(2)]
  for k in range(2):
    assert [share[k]["image"].shape[0] for share in shares] == [3, 3]  # Sizes sum to the global batch.
    for p in range(2):
      # Process p's example j is global example j * 2 + p, identical to the single-process run.
      np.testing.assert_array_equal(shares[p][k]["image"], single[k]["image"][p::2])
      np.testing.assert_array_equal(shares[p][k]["valid"], single[k]["valid"][p::2])
  # 6 of the 11 training files in the first global batch: distinct files, split between the processes.
  ids = [_ids(shares[p][0]) for p in range(2)]
  assert set(ids[0]).isdisjoint(ids[1]) and len(set(ids[0] + ids[1])) == 6


def test_bad_batch_and_empty_source_errors(tmp_path):
  path = _flat_folder(tmp_path, 4)
  config = _config(path)
  config.batch_size = 5
  with pytest.raises(ValueError, match="global batch 5 .*divisible by process_count=2"):
    pipeline.make_train_iterator(config, 0, 2)
  with pytest.raises(ValueError, match="global batch 5 .*divisible by process_count=2"):
    pipeline.make_eval_batches(config, 1, 2)
  config.batch_size = 4
  with pytest.raises(ValueError, match="process_index=2"):
    pipeline.make_train_iterator(config, 2, 2)
  with pytest.raises(ValueError, match="empty"):
    pipeline.make_train_iterator(config, source=[])
  config.masks.kind = "no_such_mask"
  with pytest.raises(ValueError, match="no_such_mask"):
    pipeline.make_train_iterator(config)


def test_eval_batches_fixed_held_out_and_sharded(tmp_path):
  path = _flat_folder(tmp_path, 12)
  config = _config(path, eval_examples=11)
  train_ids = {int(os.path.basename(f)[3:6]) for f in sources.FolderSource(path, "train").files}
  eval_ids = {int(os.path.basename(f)[3:6]) for f in sources.FolderSource(path, "eval").files}
  batches = pipeline.make_eval_batches(config)
  assert len(batches) == 2  # 11 examples -> the 8 of two full global batches of 4.
  # Only held-out images (example i is eval image i % n_eval), centre masks from masks.eval_kind.
  assert {i for b in batches for i in _ids(b)} == eval_ids and eval_ids.isdisjoint(train_ids)
  centre = masks.make_mask_fn("centre")(None, SIZE, SIZE)
  for batch in batches:
    np.testing.assert_array_equal(batch["valid"], np.broadcast_to(centre[..., None], (4, SIZE, SIZE, 1)))
  config.data.eval_examples = 3
  with pytest.raises(ValueError, match="eval_examples=3 is smaller than the global batch 4"):
    pipeline.make_eval_batches(config)


def test_eval_set_seeded_per_example_and_independent_of_seed_and_processes(tmp_path):
  path, images = _noise_folder(tmp_path, 3)
  config = _config(path, eval_examples=9)
  config.masks.eval_kind = "free_form"
  source = sources.FolderSource(path, "train", eval_fraction=0.0)
  batches = pipeline.make_eval_batches(config, source=source)
  assert len(batches) == 2
  valid = np.concatenate([b["valid"] for b in batches])
  expected = [
    masks.make_mask_fn("free_form")(np.random.default_rng([pipeline.EVAL_SEED, 1, i]), SIZE, SIZE) for i in range(8)
  ]
  np.testing.assert_array_equal(valid[..., 0], np.stack(expected))
  assert len({v.tobytes() for v in valid}) == 8  # Different masks per example.
  # Example i is an unmirrored crop of image i % 3; repeats of an image get different crops.
  crops = np.concatenate([b["image"] for b in batches])
  assert [_window_kind(crop, [images[i % 3]]) for i, crop in enumerate(crops)] == ["plain"] * 8
  assert any(not np.array_equal(crops[i], crops[i + 3]) for i in range(5))
  # Fixed: independent of config.seed and of the number of processes.
  config.seed = 123
  _assert_same(pipeline.make_eval_batches(config, source=source), batches)
  shares = [pipeline.make_eval_batches(config, p, 2, source=source) for p in range(2)]
  for k, batch in enumerate(batches):
    for key in ("image", "valid"):
      np.testing.assert_array_equal(np.concatenate([share[k][key] for share in shares]), batch[key])


def test_folder_with_corrupt_file_still_gives_full_batches(tmp_path):
  path = _flat_folder(tmp_path, 5)
  (tmp_path / "img002_broken.png").write_bytes(b"\x89PNG\r\n\x1a\n truncated")
  source = sources.FolderSource(path, "train", eval_fraction=0.0)
  batches = _take(pipeline.make_train_iterator(_config(path), source=source), 6)  # 24 examples > 4 epochs.
  assert all(b["image"].shape == (4, SIZE, SIZE, 3) for b in batches)
  assert source.num_skipped == 1
  assert {i for b in batches for i in _ids(b)} == {0, 1, 2, 3, 4}


def test_tfds_mock_end_to_end():
  config = _config(source="tfds", name="celeb_a", resize=(24, 20))
  with tfds.testing.mock_data(num_examples=6):
    batch = next(pipeline.make_train_iterator(config))
    eval_batches = pipeline.make_eval_batches(config)
  assert batch["image"].shape == (4, SIZE, SIZE, 3) and np.all(np.abs(batch["image"]) <= 1.0)
  assert len(eval_batches) == 2 and eval_batches[0]["valid"].shape == (4, SIZE, SIZE, 1)


def test_demo_config_and_iterate_images():
  config = _config(source="demo", image_size=32, eval_examples=4)
  config.batch_size = 2
  batch = next(pipeline.make_train_iterator(config))
  assert batch["image"].shape == (2, 32, 32, 3) and batch["image"].std() > 0.01
  source = sources.DemoSource("eval")
  crops = list(pipeline.iterate_images(source, 32))
  assert len(crops) == len(source) and all(c.shape == (32, 32, 3) and c.dtype == np.uint8 for c in crops)
  image = source[0]
  top, left = (image.shape[0] - 32) // 2, (image.shape[1] - 32) // 2
  np.testing.assert_array_equal(crops[0], image[top : top + 32, left : left + 32])


def test_fit_image_shorter_side_keeps_aspect():
  image = np.zeros((100, 200, 3), np.uint8)
  out = pipeline.fit_image(image, 32, shorter_side=64)
  assert out.shape == (64, 128, 3)
  with pytest.raises(ValueError, match="shorter_side=16 is smaller than image_size=32"):
    pipeline.fit_image(image, 32, shorter_side=16)


def _dihedral_kind(example, images):
  """How f32 `example` is a window of one uint8 image: (k, mirrored) with example = rot90(window[, ::-1], k)."""
  crop = np.round((example + 1.0) * 127.5).astype(np.uint8)
  windows = [w for image in images for w in _windows(image, crop.shape[0])]
  for k in range(4):
    for mirrored in (False, True):
      undone = np.rot90(crop, -k)
      undone = undone[:, ::-1] if mirrored else undone
      if any(np.array_equal(undone, w) for w in windows):
        return k, mirrored
  return None


def test_random_scaled_crop_cuts_a_window_at_the_drawn_scale():
  image = np.random.default_rng(3).integers(0, 256, (40, 60, 3), dtype=np.uint8)
  rng = np.random.default_rng(0)
  # Shorter side 40 -> 40: no resize, so the crop is an exact 16 x 16 window.
  crops = [pipeline.random_scaled_crop(image, 16, (40, 40), rng) for _ in range(5)]
  assert all(c.shape == (16, 16, 3) and c.dtype == np.uint8 for c in crops)
  assert all(_window_kind(pipeline.to_example(c, np.ones((16, 16, 1)))["image"], [image]) == "plain" for c in crops)
  # Shorter side 40 -> 80: an 8 x 8 window, upsampled to 16 x 16.
  crop = pipeline.random_scaled_crop(image, 16, (80, 80), rng)
  assert any(np.array_equal(crop, pipeline.resize_image(w, 16, 16)) for w in _windows(image, 8))
  # A range of scales, deterministic per generator.
  again = [pipeline.random_scaled_crop(image, 16, (40, 64), np.random.default_rng(5)) for _ in range(2)]
  np.testing.assert_array_equal(*again)
  with pytest.raises(ValueError, match=r"scale_range=\(8, 20\).*image_size=16"):
    pipeline.random_scaled_crop(image, 16, (8, 20), rng)


def test_color_jitter_is_identity_at_zero_and_seeded():
  image = np.random.default_rng(4).integers(0, 256, (8, 8, 3), dtype=np.uint8)
  np.testing.assert_array_equal(pipeline.color_jitter(image, 0.0, np.random.default_rng(0)), image)
  a, b = (pipeline.color_jitter(image, 0.3, np.random.default_rng(1)) for _ in range(2))
  np.testing.assert_array_equal(a, b)
  assert a.dtype == np.uint8 and not np.array_equal(a, image)
  # A flat grey image has nothing for contrast or saturation to act on: it is scaled by brightness x gains.
  grey = np.full((4, 4, 3), 100, np.uint8)
  draws = np.random.default_rng(2)
  brightness = draws.uniform(0.7, 1.3, 3)[0]
  gains = draws.uniform(0.85, 1.15, 3)
  np.testing.assert_allclose(
    pipeline.color_jitter(grey, 0.3, np.random.default_rng(2))[0, 0], 100 * brightness * gains, atol=0.5 + 1e-3
  )


def test_rot90_gives_every_rotation_of_a_window(tmp_path):
  path, images = _noise_folder(tmp_path, 3)
  config = _config(path, rot90=True)
  source = sources.FolderSource(path, "train", eval_fraction=0.0)
  kinds = [
    _dihedral_kind(example, images)
    for batch in _take(pipeline.make_train_iterator(config, source=source), 4)
    for example in batch["image"]
  ]
  assert None not in kinds
  assert {k for k, _ in kinds} == {0, 1, 2, 3}


def test_augmented_stream_is_seeded_resumes_exactly_and_ignores_workers(tmp_path):
  path, _ = _noise_folder(tmp_path, 5)
  config = _config(path, scale_range=(SIZE + 4, 2 * SIZE), rot90=True, color_jitter=0.2)
  first = _take(pipeline.make_train_iterator(config), 4)
  _assert_same(first, _take(pipeline.make_train_iterator(config), 4))
  plain = _take(pipeline.make_train_iterator(_config(path)), 4)
  assert not np.array_equal(first[0]["image"], plain[0]["image"])
  pixels = (first[0]["image"] + 1.0) * 127.5
  np.testing.assert_allclose(pixels, np.round(pixels), atol=1e-4)  # still uint8 levels
  iterator = pipeline.make_train_iterator(config)
  _take(iterator, 2)
  state = iterator.get_state()
  resumed = pipeline.make_train_iterator(config)
  resumed.set_state(state)
  _assert_same(_take(resumed, 2), first[2:4])
  config.data.num_workers = 2
  _assert_same(_take(pipeline.make_train_iterator(config), 4), first)


def test_bad_scale_range_is_one_clear_error(tmp_path):
  path, _ = _noise_folder(tmp_path, 2)
  for bad in [(SIZE,), (SIZE - 1, 2 * SIZE), (3 * SIZE, 2 * SIZE)]:
    with pytest.raises(ValueError, match=r"config.data.scale_range=.*image_size=16 <= low <= high"):
      pipeline.make_train_iterator(_config(path, scale_range=bad))


def test_dead_leaves_fraction_replaces_crops_and_leaves_the_stream_alone_at_zero(tmp_path):
  path, images = _noise_folder(tmp_path, 3)
  plain = _take(pipeline.make_train_iterator(_config(path)), 3)
  _assert_same(plain, _take(pipeline.make_train_iterator(_config(path, dead_leaves=0.0)), 3))
  mixed = _take(pipeline.make_train_iterator(_config(path, dead_leaves=0.5)), 4)
  kinds = [_dihedral_kind(example, images) for batch in mixed for example in batch["image"]]
  synthetic_count = sum(kind is None for kind in kinds)  # noise windows vs procedural images
  assert 3 <= synthetic_count <= 13
  _assert_same(mixed, _take(pipeline.make_train_iterator(_config(path, dead_leaves=0.5)), 4))
  every = _take(pipeline.make_train_iterator(_config(path, dead_leaves=1.0)), 2)
  assert all(_dihedral_kind(example, images) is None for batch in every for example in batch["image"])
  with pytest.raises(ValueError, match=r"config.data.dead_leaves=1.5 must be a fraction in \[0, 1\]"):
    pipeline.make_train_iterator(_config(path, dead_leaves=1.5))
