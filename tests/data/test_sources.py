"""Sources: TFDS (under mock_data), image folders (with a corrupt file), offline demo photographs."""

import logging
import math
import os
import pickle
import re

import numpy as np
import pytest
import tensorflow_datasets as tfds
from ml_collections import ConfigDict
from PIL import Image

from jaxinpaint.data import sources

from helpers import ROOT, write_png16  # tests/helpers.py


def _write(path, array, **save_kwargs):
  os.makedirs(os.path.dirname(path), exist_ok=True)
  Image.fromarray(array).save(path, **save_kwargs)


def _image_folder(root):
  """Writes 9 distinct lossless images of various sizes (nested folders, mixed-case extensions) and junk.

  Returns {relative path: uint8 array}.
  """
  rng = np.random.default_rng(0)
  names = [
    "a.png",
    "b.PNG",
    "sub/c.bmp",
    "sub/d.webp",
    "sub/deeper/e.png",
    "sub/deeper/f.png",
    "g.png",
    "other/h.png",
    "other/i.Png",
  ]
  images = {}
  for i, name in enumerate(names):
    array = rng.integers(0, 256, (10 + 3 * i, 30 - 2 * i, 3), dtype=np.uint8)
    _write(os.path.join(root, name), array, **({"lossless": True} if name.endswith("webp") else {}))
    images[name] = array
  with open(os.path.join(root, "notes.txt"), "w") as f:
    f.write("not an image")
  return images


def test_to_rgb_converts_gray_rgba_bool_float():
  gray = np.arange(12, dtype=np.uint8).reshape(3, 4)
  np.testing.assert_array_equal(sources.to_rgb(gray), np.stack([gray] * 3, -1))
  np.testing.assert_array_equal(sources.to_rgb(gray[..., None]), np.stack([gray] * 3, -1))
  rgba = np.arange(48, dtype=np.uint8).reshape(3, 4, 4)
  np.testing.assert_array_equal(sources.to_rgb(rgba), rgba[..., :3])
  assert sources.to_rgb(np.array([[True, False]])).tolist() == [[[255] * 3, [0] * 3]]
  assert sources.to_rgb(np.array([[0.0, 0.5, 1.0]])).tolist() == [[[0] * 3, [128] * 3, [255] * 3]]
  with pytest.raises(ValueError, match=r"\(3, 4, 2\)"):
    sources.to_rgb(np.zeros((3, 4, 2), np.uint8))
  with pytest.raises(ValueError, match="int32"):
    sources.to_rgb(np.zeros((3, 4), np.int32))


def test_tfds_source_reads_mock_celeb_a_as_rgb_uint8():
  with tfds.testing.mock_data(num_examples=5):
    source = sources.TfdsSource("celeb_a", "train")
    assert len(source) == 5
    images = [source[i] for i in range(5)]
    assert all(im.dtype == np.uint8 and im.shape == (218, 178, 3) for im in images)
    assert repr(source) == "TfdsSource(name='celeb_a', split='train', data_dir=None)"
    # Workers get the source by pickle; it reopens the files and reads the same pixels.
    clone = pickle.loads(pickle.dumps(source))
    np.testing.assert_array_equal(clone[3], images[3])
    assert repr(clone) == repr(source)


def test_tfds_source_repeats_grayscale_to_rgb():
  with tfds.testing.mock_data(num_examples=3):
    image = sources.TfdsSource("mnist", "test")[1]
  assert image.shape == (28, 28, 3) and image.dtype == np.uint8
  np.testing.assert_array_equal(image[..., 0], image[..., 2])


def test_tfds_source_missing_dataset_says_how_to_prepare(tmp_path):
  command = re.escape(f"tfds build celeb_a --file_format=array_record --data_dir={tmp_path}")
  with pytest.raises(ValueError, match=rf"'celeb_a' is not prepared at .*; prepare it with: {command}$") as error:
    sources.TfdsSource("celeb_a", "train", data_dir=str(tmp_path))
  assert "\n" not in str(error.value)
  with pytest.raises(ValueError, match=r"tfds build imagenet2012 .*--manual_dir=DIR"):
    sources.TfdsSource("imagenet2012", "validation", data_dir=str(tmp_path))
  with pytest.raises(ValueError, match=r"^'no_such_dataset' is not a TFDS builder"):
    sources.TfdsSource("no_such_dataset", "train", data_dir=str(tmp_path))
  assert os.listdir(tmp_path) == []  # Nothing downloaded or prepared.


def test_folder_source_finds_splits_and_decodes(tmp_path):
  images = _image_folder(str(tmp_path))
  train = sources.FolderSource(str(tmp_path), "train", eval_fraction=0.25)
  held = sources.FolderSource(str(tmp_path), "eval", eval_fraction=0.25)
  assert len(held) == math.ceil(9 * 0.25) and len(train) == 9 - len(held)
  found = {os.path.relpath(f, tmp_path) for f in train.files + held.files}
  assert found == set(images) and not set(train.files) & set(held.files)
  assert train.files == sorted(train.files)
  for source in (train, held):
    for i, path in enumerate(source.files):
      np.testing.assert_array_equal(source[i], images[os.path.relpath(path, tmp_path)])
  # Deterministic: a second scan gives the same split; the repr names the folder and split.
  assert sources.FolderSource(str(tmp_path), "eval", eval_fraction=0.25).files == held.files
  assert repr(held) == f"FolderSource(path={str(tmp_path)!r}, split='eval', eval_fraction=0.25)"
  assert train.num_skipped == 0


def test_16_bit_pngs_decode_to_their_8_bit_levels(tmp_path):
  """A real photo written as 16-bit PNG (grey, as PIL opens 'I;16'; RGB; RGBA) decodes within 1 level of its
  8-bit self in training (FolderSource) and in the inpaint tool, not as all white."""
  from skimage import data

  from jaxinpaint import inpaint

  photo = data.astronaut()[::4, ::4]  # 128 x 128
  grey = np.asarray(Image.fromarray(photo).convert("L"))
  deep = {
    "grey16.png": deepen(grey),
    "rgb16.png": deepen(photo),
    "rgba16.png": np.concatenate([deepen(photo), np.full(photo.shape[:2] + (1,), 65535, np.uint16)], -1),
  }
  expected = {"grey16.png": np.repeat(grey[..., None], 3, -1), "rgb16.png": photo, "rgba16.png": photo}
  os.makedirs(tmp_path / "photos")
  for name, array in deep.items():
    write_png16(tmp_path / "photos" / name, array)
  with Image.open(tmp_path / "photos" / "grey16.png") as image:
    assert image.mode == "I;16"
  folder = sources.FolderSource(str(tmp_path / "photos"), "train", eval_fraction=0.0)
  for name, want in expected.items():
    for decoded in (
      folder[folder.files.index(str(tmp_path / "photos" / name))],
      inpaint.read_image(str(tmp_path / "photos" / name)),
    ):
      assert decoded.dtype == np.uint8 and decoded.shape == want.shape
      assert np.abs(decoded.astype(int) - want).max() <= 1, name
  np.testing.assert_array_equal(sources.to_rgb(grey.astype(np.uint16) * 257), expected["grey16.png"])


def deepen(image):
  """uint8 -> uint16 levels v * 257 plus sub-level noise (0..199) in the low byte, white kept at 65535: a 16-bit
  photo is not just its 8 bits shifted up."""
  noise = np.random.default_rng(0).integers(0, 200, image.shape)
  return np.minimum(image.astype(np.int64) * 257 + noise, 65535).astype(np.uint16)


def test_folder_source_skips_and_counts_corrupt_file(tmp_path, caplog):
  images = _image_folder(str(tmp_path))
  with open(tmp_path / "a0_corrupt.png", "wb") as f:
    f.write(b"\x89PNG\r\n\x1a\n this is not a png")
  source = sources.FolderSource(str(tmp_path), "train", eval_fraction=0.0)
  assert len(source) == 10
  bad = [os.path.basename(f) for f in source.files].index("a0_corrupt.png")
  with caplog.at_level(logging.WARNING):
    replacement = source[bad]
  # Replaced by the next readable file in sorted order, so batches keep their size.
  np.testing.assert_array_equal(replacement, images[os.path.relpath(source.files[bad + 1], tmp_path)])
  assert source.num_skipped == 1
  assert any("a0_corrupt.png" in r.getMessage() and "Skipping" in r.getMessage() for r in caplog.records)
  source[bad]
  assert source.num_skipped == 1  # Counted once.


def test_folder_source_all_corrupt_raises(tmp_path):
  for name in ("x.png", "y.jpg"):
    (tmp_path / name).write_bytes(b"garbage")
  source = sources.FolderSource(str(tmp_path), "train", eval_fraction=0.0)
  with pytest.raises(ValueError, match="no readable image"):
    source[0]
  assert source.num_skipped == 2


def test_folder_source_bad_folders(tmp_path):
  with pytest.raises(ValueError, match="missing_dir"):
    sources.FolderSource(str(tmp_path / "missing_dir"), "train")
  (tmp_path / "empty" / "nested").mkdir(parents=True)
  (tmp_path / "empty" / "readme.txt").write_text("no images here")
  with pytest.raises(ValueError, match=r"empty'.*holds no"):
    sources.FolderSource(str(tmp_path / "empty"), "train")
  _write(str(tmp_path / "one" / "only.png"), np.zeros((8, 8, 3), np.uint8))
  with pytest.raises(ValueError, match="'train' split empty"):
    sources.FolderSource(str(tmp_path / "one"), "train", eval_fraction=0.5)
  with pytest.raises(ValueError, match="split must be one of"):
    sources.FolderSource(str(tmp_path / "one"), "validation")


def test_demo_source_real_photos_with_disjoint_eval():
  train, held = sources.DemoSource("train"), sources.DemoSource("eval")
  assert len(train) >= 6 and len(held) >= 2
  assert set(train.names).isdisjoint(held.names)
  assert set(held.names) <= set(sources.DEMO_EVAL_PHOTOS)
  fingerprints = {}
  for source in (train, held):
    for i in range(len(source)):
      image = source[i]
      assert image.dtype == np.uint8 and image.ndim == 3 and image.shape[2] == 3
      assert min(image.shape[:2]) >= 256 and image.std() > 10  # Real photos, not blank placeholders.
      fingerprints[(image.shape, image[::17, ::13].tobytes())] = source.split
  assert len(fingerprints) == len(train) + len(held)  # No photo appears twice, in either split.
  assert train.num_skipped + len(train) + held.num_skipped + len(held) == len(sources.DEMO_PHOTOS)
  assert repr(train) == "DemoSource(split='train')"


def test_demo_source_skips_and_counts_unavailable_photos(monkeypatch, caplog):
  def missing():
    raise FileNotFoundError("not in this install")

  photos = dict(sources.DEMO_PHOTOS, chelsea=missing)
  monkeypatch.setattr(sources, "DEMO_PHOTOS", photos)
  with caplog.at_level(logging.WARNING):
    held = sources.DemoSource("eval")
  assert held.names == ["coffee", "grace_hopper"] and held.num_skipped == 1
  assert any("'chelsea'" in r.getMessage() for r in caplog.records)
  monkeypatch.setattr(sources, "DEMO_PHOTOS", {name: missing for name in photos})
  with pytest.raises(ValueError, match="no demo photos could be loaded for split 'train'"):
    sources.DemoSource("train")


def test_make_source_dispatches(tmp_path):
  _image_folder(str(tmp_path))
  config = ConfigDict(
    dict(source="folder", name="celeb_a", path=str(tmp_path), train_split="train", eval_split="validation")
  )
  assert isinstance(sources.make_source(config, "train"), sources.FolderSource)
  config.source = "demo"
  assert repr(sources.make_source(config, "eval")) == "DemoSource(split='eval')"
  config.source, config.path = "tfds", ""
  with tfds.testing.mock_data(num_examples=4):
    source = sources.make_source(config, "eval")
  assert repr(source) == "TfdsSource(name='celeb_a', split='validation', data_dir=None)" and len(source) == 4
  config.source = "s3"
  with pytest.raises(ValueError, match="'s3'"):
    sources.make_source(config, "train")
  with pytest.raises(ValueError, match="split must be one of"):
    sources.make_source(config, "test")


def test_demo_training_stream_reads_only_training_photos(monkeypatch):
  """The wconv demo's training batches (multi-scale crops, jitter) are cut from training photos only, and those
  include the grayscale photos and textures."""
  from jaxinpaint import configs_lib
  from jaxinpaint.data import pipeline

  config = configs_lib.load_config_file(os.path.join(ROOT, "configs", "wconv.py"), "demo")
  config.data.num_workers, config.batch_size = 0, 4
  read = []
  original = sources.DemoSource.__getitem__

  def recording(self, index):
    read.append((self.split, self.names[index]))
    return original(self, index)

  monkeypatch.setattr(sources.DemoSource, "__getitem__", recording)
  iterator = pipeline.make_train_iterator(config)
  for _ in range(6):
    next(iterator)
  assert len(read) >= 24 and {split for split, _ in read} == {"train"}  # (grain reads ahead)
  assert not {name for _, name in read} & set(sources.DEMO_EVAL_PHOTOS)
  train = sources.DemoSource("train")
  grey = [n for n, image in zip(train.names, train._images) if np.array_equal(image[..., 0], image[..., 2])]
  assert len(train) >= 16 and {"camera", "brick", "grass"} <= set(grey)


def test_demo_second_held_out_set_comes_from_a_package_without_training_photos():
  """data.eval_split='other_package': held-out photos whose wheel ships no training photo (issue 12's second set)."""
  train_packages = {sources.DEMO_PHOTOS[n].package for n in sources.DemoSource("train").names}
  other = sources.DemoSource("eval", "other_package")
  assert other.names == ["grace_hopper"]  # matplotlib's; every training photo is scikit-image's or scikit-learn's
  assert {sources.DEMO_PHOTOS[n].package for n in other.names}.isdisjoint(train_packages)
  assert set(other.names) < set(sources.DemoSource("eval").names)
  config = ConfigDict(dict(source="demo", name="demo", path="", train_split="train", eval_split="other_package"))
  assert repr(sources.make_source(config, "eval")) == "DemoSource(split='eval', eval_set='other_package')"
  assert repr(sources.make_source(config, "train")) == "DemoSource(split='train')"
  seen = sources.DemoSource("eval", "training_photos")  # the diagnostic set: crops of the training photos
  assert seen.names == sources.DemoSource("train").names
  with pytest.raises(
    ValueError, match=r"eval_split for the demo source must be one of \('eval', 'other_package', 'training_photos'\)"
  ):
    sources.DemoSource("eval", "validation")


def test_demo_extra_training_folder_adds_photos_and_refuses_held_out_ones(tmp_path):
  """data.extra_train_path: its images join the demo's training photos (and the training-photo diagnostic set);
  the held-out sets do not change; a copy of a held-out photo, a missing folder or an unreadable file is one
  ValueError line; another source is refused by the config check."""
  from jaxinpaint import configs_lib

  images = _image_folder(str(tmp_path / "more"))
  base = sources.DemoSource("train")
  train = sources.DemoSource("train", extra_train_path=str(tmp_path / "more"))
  assert train.names[: len(base)] == base.names and len(train) == len(base) + len(images)
  for name, array in images.items():
    np.testing.assert_array_equal(train[train.names.index("folder:" + name)], array)
  assert sources.DemoSource("eval", extra_train_path=str(tmp_path / "more")).names == sources.DemoSource("eval").names
  seen = sources.DemoSource("eval", "training_photos", extra_train_path=str(tmp_path / "more"))
  assert seen.names == train.names
  config = ConfigDict(dict(source="demo", name="demo", path="", eval_split="eval", extra_train_path=str(tmp_path)))
  assert repr(sources.make_source(config, "train")) == f"DemoSource(split='train', extra_train_path={str(tmp_path)!r})"

  _write(str(tmp_path / "leak" / "cat.png"), sources.DEMO_PHOTOS["chelsea"]())
  with pytest.raises(ValueError, match=r"cat\.png' is the held-out demo photo 'chelsea'"):
    sources.DemoSource("train", extra_train_path=str(tmp_path / "leak"))
  with pytest.raises(ValueError, match="does not exist or is not a directory"):
    sources.DemoSource("train", extra_train_path=str(tmp_path / "nowhere"))
  (tmp_path / "bad").mkdir()
  (tmp_path / "bad" / "x.png").write_bytes(b"not a png")
  with pytest.raises(ValueError, match=r"x\.png' cannot be read"):
    sources.DemoSource("train", extra_train_path=str(tmp_path / "bad"))
  folder_config = configs_lib.load_config_file(os.path.join(ROOT, "configs", "wconv.py"))
  folder_config.data.extra_train_path = str(tmp_path / "more")
  with pytest.raises(ValueError, match="adds training photos to the demo source only; data.source is 'tfds'"):
    configs_lib.validate_config(folder_config)
