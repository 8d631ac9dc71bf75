"""Random-access image sources: TFDS array_record datasets, image folders and offline demo photographs.

Every source is a sequence (`__len__`, `__getitem__`) of `uint8[H, W, 3]` RGB numpy images of any size; the
pipeline resizes and crops them. Sizes differ between examples. Each source has a stable `__repr__` (grain's
`DataLoader.set_state` compares `repr(data_source)`), decodes lazily where the data lives on disk, and pickles
cheaply (grain's `mp_prefetch` workers are spawned and receive the source by pickle).

Splits are 'train' and 'eval'; `make_source(config.data, split)` picks the source named by `config.data.source`.
"""

from __future__ import annotations

import importlib.util
import os
import zlib
from typing import Any, Callable

import numpy as np
from absl import logging
from PIL import Image, ImageOps

from jaxinpaint.data import synthetic

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".webp", ".bmp")
SPLITS = ("train", "eval")


def to_rgb(image: Any) -> np.ndarray:
  """Any 2-D/3-D image array (gray, gray+1, RGB, RGBA; uint8, uint16, bool or float in [0, 1]) -> uint8[H, W, 3]."""
  image = np.asarray(image)
  if image.dtype == bool:
    image = image.astype(np.uint8) * 255
  elif image.dtype.kind == "u" and image.dtype.itemsize == 2:  # 16-bit: 65535 is white, as 255 is
    image = np.round(image.astype(np.float64) / 257.0).astype(np.uint8)
  elif np.issubdtype(image.dtype, np.floating):
    image = np.clip(np.round(image * 255.0), 0, 255).astype(np.uint8)
  elif image.dtype != np.uint8:
    raise ValueError(f"to_rgb: unsupported image dtype {image.dtype} (shape {image.shape}); expected uint8")
  if image.ndim == 2:
    image = image[..., None]
  if image.ndim != 3 or image.shape[-1] not in (1, 3, 4):
    raise ValueError(f"to_rgb: expected an image of shape (H, W), (H, W, 1|3|4), got {image.shape}")
  if image.shape[-1] == 1:
    image = np.repeat(image, 3, axis=-1)
  return np.ascontiguousarray(image[..., :3])


def read_rgb(path: str) -> np.ndarray:
  """An image file as uint8[H, W, 3] RGB, EXIF rotation applied, 16-bit files scaled to 8 bits.

  PIL opens 16-bit grey PNGs as 'I;16' (or 'I'), whose convert('RGB') clips every level above 255 to white.
  Raises what PIL raises (OSError, ValueError, ...) for an unreadable file.
  """
  with Image.open(path) as image:
    image = ImageOps.exif_transpose(image)
    if image.mode.startswith("I"):
      levels = np.asarray(image)
      if levels.size and (levels.min() < 0 or levels.max() > 65535):
        raise ValueError(f"{image.mode} image with levels outside 0..65535")
      return to_rgb(levels.astype(np.uint16))
    return np.asarray(image.convert("RGB"))


def _check_split(split: str) -> None:
  if split not in SPLITS:
    raise ValueError(f"split must be one of {SPLITS}, got {split!r}")


# ----------------------------------------------------------------------------------------------------------------
# TFDS


class TfdsSource:
  """A TFDS dataset prepared as array_record, read with `tfds.data_source` (no TensorFlow at read time).

  `source[i]` is the decoded 'image' feature of example i as uint8[H, W, 3] (grayscale repeated to RGB).
  """

  def __init__(self, name: str, split: str, data_dir: str | None = None):
    self.name = name
    self.split = split
    self.data_dir = data_dir or None
    self._ds = _open_tfds(self.name, self.split, self.data_dir)

  def __len__(self) -> int:
    return len(self._ds)

  def __getitem__(self, index: int) -> np.ndarray:
    return to_rgb(self._ds[index]["image"])

  def __repr__(self) -> str:
    return f"TfdsSource(name={self.name!r}, split={self.split!r}, data_dir={self.data_dir!r})"

  def __getstate__(self) -> dict[str, Any]:
    # Workers reopen the array_record files rather than receive open file handles.
    return {"name": self.name, "split": self.split, "data_dir": self.data_dir}

  def __setstate__(self, state: dict[str, Any]) -> None:
    self.__dict__.update(state)
    self._ds = _open_tfds(self.name, self.split, self.data_dir)


def _open_tfds(name: str, split: str, data_dir: str | None):
  """`tfds.data_source(name, split)` with one-line errors for unknown, unprepared or TFRecord datasets."""
  import tensorflow_datasets as tfds  # Imported lazily: TFDS is slow to import and only this source needs it.

  try:
    builder_cls = tfds.builder_cls(name.split("/")[0].split(":")[0])
  except tfds.core.registered.DatasetNotFoundError:
    raise ValueError(f"{name!r} is not a TFDS builder (see https://www.tensorflow.org/datasets/catalog)") from None
  try:
    ds = tfds.data_source(name, split=split, data_dir=data_dir, download=False)
  except Exception as error:  # TFDS raises NotImplementedError/AssertionError/FileNotFoundError for these cases.
    raise _tfds_error(tfds, builder_cls, name, split, data_dir, error) from error
  features = getattr(getattr(ds, "dataset_info", None), "features", None)
  if features is not None and "image" not in features.keys():
    raise ValueError(f"TFDS dataset {name!r} has no 'image' feature (features: {sorted(features.keys())})")
  return ds


def _tfds_error(tfds, builder_cls, name: str, split: str, data_dir: str | None, error: Exception) -> Exception:
  """The clear error for a failed `tfds.data_source` call."""
  builder = tfds.builder(name, data_dir=data_dir)
  if not builder.is_prepared():
    command = f"tfds build {name} --file_format=array_record" + (f" --data_dir={data_dir}" if data_dir else "")
    if getattr(builder_cls, "MANUAL_DOWNLOAD_INSTRUCTIONS", None):
      command += (
        f" --manual_dir=DIR (this dataset needs a manual download: put its source files in DIR, see"
        f" the TFDS catalog page for {name.split('/')[0].split(':')[0]})"
      )
    return ValueError(f"TFDS dataset {name!r} is not prepared at {builder.data_path}; prepare it with: {command}")
  if str(builder.info.file_format).lower().endswith("tfrecord"):
    return ValueError(
      f"TFDS dataset {name!r} at {builder.data_path} is TFRecord, which is not random-access; re-prepare it "
      f"with: tfds build {name} --file_format=array_record into another data_dir"
    )
  splits = sorted(builder.info.splits.keys())
  if split.split("[")[0] not in splits:
    return ValueError(f"TFDS dataset {name!r} has no split {split!r} (splits: {splits})")
  return ValueError(f"TFDS dataset {name!r} split {split!r} could not be opened: {error}")


# ----------------------------------------------------------------------------------------------------------------
# Image folders


def list_images(path: str) -> list[str]:
  """Sorted paths of all images (by extension, case-insensitive) under `path`, recursively."""
  found = []
  for root, dirs, files in os.walk(path, followlinks=True):
    dirs.sort()
    found.extend(os.path.join(root, f) for f in files if f.lower().endswith(IMAGE_EXTENSIONS))
  return sorted(found)


def hold_out(files: list[str], root: str, eval_fraction: float) -> set[str]:
  """The ceil(n * eval_fraction) files with the smallest CRC32 of their relative path: the eval split.

  Hashing the path (not the position) keeps a file's split stable when other files are added or removed.
  """
  count = int(np.ceil(len(files) * eval_fraction))
  ranked = sorted(files, key=lambda f: (zlib.crc32(os.path.relpath(f, root).encode()), f))
  return set(ranked[:count])


class FolderSource:
  """All images under a folder (recursive), split deterministically into train and eval.

  Files are decoded in `__getitem__`. An unreadable or corrupt file is skipped: it is logged once (absl warning),
  counted in `num_skipped` (per process: grain workers keep their own counts), and replaced by the next readable
  file in sorted order, so indices stay valid and batches keep their fixed size.
  """

  def __init__(self, path: str, split: str, eval_fraction: float = 0.05):
    _check_split(split)
    if not 0.0 <= eval_fraction < 1.0:
      raise ValueError(f"eval_fraction must be in [0, 1), got {eval_fraction}")
    if not os.path.isdir(path):
      raise ValueError(f"image folder {path!r} does not exist or is not a directory")
    self.path = os.path.abspath(path)
    self.split = split
    self.eval_fraction = eval_fraction
    files = list_images(self.path)
    if not files:
      raise ValueError(f"image folder {path!r} holds no {'/'.join(IMAGE_EXTENSIONS)} files")
    held = hold_out(files, self.path, eval_fraction)
    self.files = [f for f in files if (f in held) == (split == "eval")]
    if not self.files:
      raise ValueError(
        f"image folder {path!r} has {len(files)} images, which leaves its {split!r} split empty "
        f"with eval_fraction={eval_fraction}"
      )
    self._bad: set[int] = set()

  @property
  def num_skipped(self) -> int:
    """How many unreadable files this process has met so far."""
    return len(self._bad)

  def __len__(self) -> int:
    return len(self.files)

  def __getitem__(self, index: int) -> np.ndarray:
    for step in range(len(self.files)):
      i = (index + step) % len(self.files)
      if i in self._bad:
        continue
      image = self._decode(i)
      if image is not None:
        return image
    raise ValueError(f"image folder {self.path!r} ({self.split}) has no readable image among {len(self.files)} files")

  def _decode(self, i: int) -> np.ndarray | None:
    try:
      # Phone photos store their rotation in EXIF; read_rgb applies it so crops see the upright picture.
      return read_rgb(self.files[i])
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as error:
      self._bad.add(i)
      logging.warning("Skipping unreadable image %s (%s); %d skipped so far.", self.files[i], error, len(self._bad))
      return None

  def __repr__(self) -> str:
    return f"FolderSource(path={self.path!r}, split={self.split!r}, eval_fraction={self.eval_fraction!r})"


# ----------------------------------------------------------------------------------------------------------------
# Demo photographs shipped inside installed wheels (offline).


def _packaged(package: str, *parts: str) -> Callable[[], np.ndarray]:
  """A photo file shipped in an installed package, opened without importing it (sklearn takes seconds)."""

  def load():
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
      raise FileNotFoundError(f"package {package!r} is not installed")
    with Image.open(os.path.join(list(spec.submodule_search_locations)[0], *parts)) as image:
      return np.asarray(image.convert("RGB"))

  load.package = package  # which wheel ships it: held-out sets can exclude the training photos' packages
  return load


DEMO_PHOTOS: dict[str, Callable[[], np.ndarray]] = {
  "astronaut": _packaged("skimage", "data", "astronaut.png"),
  "rocket": _packaged("skimage", "data", "rocket.jpg"),
  "hubble_deep_field": _packaged("skimage", "data", "hubble_deep_field.jpg"),
  "immunohistochemistry": _packaged("skimage", "data", "ihc.png"),
  "retina": _packaged("skimage", "data", "retina.jpg"),
  "stereo_motorcycle": _packaged("skimage", "data", "motorcycle_left.png"),
  "stereo_motorcycle_right": _packaged("skimage", "data", "motorcycle_right.png"),
  "china": _packaged("sklearn", "datasets", "images", "china.jpg"),
  "flower": _packaged("sklearn", "datasets", "images", "flower.jpg"),
  # Grayscale photographs and textures (as RGB). Left out: the synthetic images (chessboard, colour wheel,
  # logo, phantom, horse silhouette), the text scans (page, text) and the 102 px microaneurysms crop.
  "camera": _packaged("skimage", "data", "camera.png"),
  "moon": _packaged("skimage", "data", "moon.png"),
  "coins": _packaged("skimage", "data", "coins.png"),
  "cell": _packaged("skimage", "data", "cell.png"),
  "clock_motion": _packaged("skimage", "data", "clock_motion.png"),
  "brick": _packaged("skimage", "data", "brick.png"),
  "grass": _packaged("skimage", "data", "grass.png"),
  "gravel": _packaged("skimage", "data", "gravel.png"),
  # Held out for eval: never seen in training.
  "chelsea": _packaged("skimage", "data", "chelsea.png"),
  "coffee": _packaged("skimage", "data", "coffee.png"),
  "grace_hopper": _packaged("matplotlib", "mpl-data", "sample_data", "grace_hopper.jpg"),
}
DEMO_EVAL_PHOTOS = ("chelsea", "coffee", "grace_hopper")
# `data.eval_split` of the demo source: every held-out photo, or only those shipped by a package that ships no
# training photo (a second held-out set for issue 12: other photographers, other pipelines, not just other photos).
# 'training_photos' is not held out: eval crops of the training photos, to tell memorisation from capacity.
DEMO_EVAL_SETS = ("eval", "other_package", "training_photos")


def demo_eval_photos(eval_set: str = "eval") -> tuple[str, ...]:
  """The held-out demo photos of `eval_set` (DEMO_EVAL_SETS)."""
  if eval_set not in DEMO_EVAL_SETS:
    raise ValueError(f"config.data.eval_split for the demo source must be one of {DEMO_EVAL_SETS}; got {eval_set!r}")
  if eval_set == "eval":
    return DEMO_EVAL_PHOTOS
  if eval_set == "training_photos":
    return tuple(n for n in DEMO_PHOTOS if n not in DEMO_EVAL_PHOTOS)
  training = {DEMO_PHOTOS[n].package for n in DEMO_PHOTOS if n not in DEMO_EVAL_PHOTOS}
  return tuple(n for n in DEMO_EVAL_PHOTOS if DEMO_PHOTOS[n].package not in training)


class DemoSource:
  """Real photographs from scikit-image, scikit-learn and matplotlib, for offline demos and tests.

  Whole photos are held out for eval (`DEMO_EVAL_PHOTOS`, or with `eval_set='other_package'` only those from a
  package that ships no training photo); `extra_train_path`, a folder, adds its images to the training photos
  (and to the 'training_photos' diagnostic set) and is refused if it holds a held-out photo; `len` is the number
  of photos in the split (the
  pipeline repeats and cuts random crops). Photos that fail to load in this install are skipped, logged and
  counted in `num_skipped`. The photos (~15 MB in all) are decoded once, at construction.
  """

  def __init__(self, split: str, eval_set: str = "eval", extra_train_path: str = ""):
    _check_split(split)
    self.split = split
    self.eval_set = eval_set
    self.extra_train_path = extra_train_path
    held = demo_eval_photos(eval_set)
    wanted = [n for n in DEMO_PHOTOS if n in (held if split == "eval" else demo_eval_photos("training_photos"))]
    self.names: list[str] = []
    self._images: list[np.ndarray] = []
    self.num_skipped = 0
    for name in wanted:
      try:
        image = to_rgb(DEMO_PHOTOS[name]())
      except Exception as error:  # A missing optional file or package only shrinks the demo set.
        self.num_skipped += 1
        logging.warning("Demo photo %r is unavailable here (%s); skipping it.", name, error)
        continue
      self.names.append(name)
      self._images.append(image)
    if not self._images:
      raise ValueError(f"no demo photos could be loaded for split {split!r} (tried {wanted})")
    if extra_train_path and (split == "train" or eval_set == "training_photos"):
      self._add_training_folder(extra_train_path)

  def _add_training_folder(self, path: str) -> None:
    """Every image under `path` joins the training photos; one equal to a held-out photo is refused."""
    if not os.path.isdir(path):
      raise ValueError(f"config.data.extra_train_path {path!r} does not exist or is not a directory")
    files = list_images(path)
    if not files:
      raise ValueError(f"config.data.extra_train_path {path!r} holds no {'/'.join(IMAGE_EXTENSIONS)} files")
    held = {}
    for name in DEMO_EVAL_PHOTOS:
      try:
        held[name] = to_rgb(DEMO_PHOTOS[name]())
      except Exception:  # an unavailable held-out photo cannot leak either
        continue
    for file in files:
      try:
        image = read_rgb(file)
      except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as error:
        raise ValueError(f"config.data.extra_train_path: {file!r} cannot be read ({error})") from None
      for name, photo in held.items():
        if image.shape == photo.shape and np.array_equal(image, photo):
          raise ValueError(f"config.data.extra_train_path: {file!r} is the held-out demo photo {name!r}")
      self.names.append("folder:" + os.path.relpath(file, path))
      self._images.append(image)

  def __len__(self) -> int:
    return len(self._images)

  def __getitem__(self, index: int) -> np.ndarray:
    return self._images[index]

  def __repr__(self) -> str:
    extra = "" if self.eval_set == "eval" or self.split != "eval" else f", eval_set={self.eval_set!r}"
    if self.extra_train_path and (self.split == "train" or self.eval_set == "training_photos"):
      extra += f", extra_train_path={self.extra_train_path!r}"
    return f"DemoSource(split={self.split!r}{extra})"


class LfwFacesSource:
  """The 100 face crops of scikit-image's `data.lfw_subset()` (25x25 grayscale, as RGB), offline.

  Small, aligned faces: the offline stand-in for CelebA that a DCGAN learns in CPU minutes (upscale them with
  `config.data.resize`). Every `EVAL_EVERY`-th face (20 of 100) is held out for eval. The subset's other 100
  images are non-faces and are not used.
  """

  EVAL_EVERY = 5

  def __init__(self, split: str):
    _check_split(split)
    self.split = split
    from skimage import data  # Imported here: only this source needs it.

    faces = data.lfw_subset()[:100]
    held = np.arange(len(faces)) % self.EVAL_EVERY == 0
    self._images = [to_rgb(f) for f in faces[held == (split == "eval")]]

  def __len__(self) -> int:
    return len(self._images)

  def __getitem__(self, index: int) -> np.ndarray:
    return self._images[index]

  def __repr__(self) -> str:
    return f"LfwFacesSource(split={self.split!r})"


# ----------------------------------------------------------------------------------------------------------------


def make_source(data_config, split: str):
  """The source for `data_config.source` ('demo' | 'folder' | 'tfds' | 'lfw') and split ('train' | 'eval')."""
  _check_split(split)
  kind = data_config.source
  if kind == "demo":  # eval_split 'other_package' / 'training_photos' picks that set (DEMO_EVAL_SETS); else 'eval'
    eval_split = data_config.get("eval_split")
    if eval_split == "dead_leaves" and split == "eval":  # procedural images, cut as the photos are
      size = data_config.get("shorter_side", 0) or data_config.image_size
      return synthetic.DeadLeavesSource(data_config.get("eval_examples", 32), size)
    extra = data_config.get("extra_train_path", "")  # more training photos; the held-out sets do not change
    return DemoSource(split, eval_split if eval_split in DEMO_EVAL_SETS else "eval", extra_train_path=extra)
  if kind == "folder":
    return FolderSource(data_config.path, split)
  if kind == "tfds":
    tfds_split = data_config.train_split if split == "train" else data_config.eval_split
    return TfdsSource(data_config.name, tfds_split, data_dir=data_config.path or None)
  if kind == "lfw":
    return LfwFacesSource(split)
  raise ValueError(f"config.data.source must be 'demo', 'folder', 'tfds' or 'lfw', got {kind!r}")
