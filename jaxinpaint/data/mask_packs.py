"""Frozen mask packs: a folder of PNG masks plus `manifest.json`, so any codebase scores on the same holes.

A pack is
  DIR/000000.png ... DIR/<n-1>.png   8-bit greyscale, 255 = hole, 0 = known (LaMa's and DeepFill's file convention)
  DIR/manifest.json                  format, name, generator and its parameters, seed, size, count, and per file
                                     its sha256 and hole ratio; `pack_id`
The pack id is the first 16 hex digits of a sha256 over every mask in order (file name, height, width and the
packed hole bits), so it names the masks themselves: the same masks give the same id whatever PNG encoder wrote
them, and any other mask set gets another id. Each file's sha256 (of its bytes) is what `verify_pack` checks.

Generated packs draw mask i from `np.random.default_rng([seed, 1, i])`, the stream `pipeline.eval_example` draws
eval example i's mask from (its EVAL_SEED is 0), so the pack of kind K, seed 0 and the eval image size holds
exactly the masks the in-pipeline kind K scores on. Kinds: every `masks.MASK_GENERATORS` name but 'folder'
(including 'centre'), '+' unions, 'hole_<low>-<high>' (free-form strokes with a hole ratio in [low, high) %,
`masks.mask_in_bucket`) and 'buckets' (six sub-packs DIR/hole_0-10 ... DIR/hole_50-60).

`import_folder` turns another codebase's mask files (any size, either polarity, grey/RGB/16-bit, anti-aliased
edges) into a pack through `mask_files.read_hole`, optionally resized (nearest) and bucketed by hole ratio.
Writing goes to a temporary folder that is renamed into place, so a failed run leaves no half-written pack.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import inspect
import json
import os
import shutil
import tempfile
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
from PIL import Image

from jaxinpaint.data import masks

MANIFEST = "manifest.json"
FORMAT = "jaxinpaint-mask-pack/1"
BUCKETS = "buckets"
ID_DIGITS = 16
POLARITIES = ("white_hole", "black_hole")


class MaskPackError(ValueError):
  """A pack that cannot be written, read or trusted; the message is one line naming the folder and file."""


def bucket_kind(low: float, high: float) -> str:
  """(0.1, 0.2) -> 'hole_10-20'."""
  return f"hole_{round(low * 100)}-{round(high * 100)}"


BUCKET_KINDS = tuple(bucket_kind(*b) for b in masks.HOLE_RATIO_BUCKETS)


def parse_bucket(kind: str) -> tuple[float, float]:
  """'hole_10-20' -> (0.1, 0.2); ValueError naming the kind otherwise."""
  try:
    low, high = (int(v) / 100 for v in kind[len("hole_") :].split("-"))
  except ValueError:
    raise ValueError(
      f"mask kind {kind!r}: write hole-ratio buckets as hole_<low>-<high> in percent, e.g. hole_10-20"
    ) from None
  if not 0 <= low < high <= 1:
    raise ValueError(f"mask kind {kind!r}: need 0 <= low < high <= 100")
  return low, high


def generator_for(kind: str) -> masks.MaskFn:
  """The seeded generator fn(rng, h, w) -> valid f32[h, w] of a pack kind (module docstring)."""
  if kind.startswith("hole_"):
    return functools.partial(masks.mask_in_bucket, bucket=parse_bucket(kind))
  if "folder" in (n.strip() for n in kind.split("+")):
    raise ValueError("mask kind 'folder' draws from files: make a pack of a folder with --from=DIR")
  return masks.make_mask_fn(kind)


def _defaults(fn: Callable) -> dict[str, Any]:
  """Keyword defaults of a generator (after rng, h, w), with a functools.partial's bound keywords applied."""
  bound = {}
  while isinstance(fn, functools.partial):
    bound = {**fn.keywords, **bound}
    fn = fn.func
  params = {
    name: p.default
    for name, p in inspect.signature(fn).parameters.items()
    if p.default is not inspect.Parameter.empty and not callable(p.default)
  }
  params.update({k: v for k, v in bound.items() if not callable(v)})
  params.pop("rng", None)
  return params


def describe_generator(kind: str) -> dict[str, Any]:
  """What draws a kind's masks, for the manifest: the function and every parameter that shapes the masks."""
  if kind.startswith("hole_"):
    low, high = parse_bucket(kind)
    return {
      "function": "masks.mask_in_bucket",
      "parameters": {"bucket": [low, high], **_defaults(masks.mask_in_bucket)},
      "generator": describe_generator("free_form"),
    }
  names = [n.strip() for n in kind.split("+")]
  if len(names) > 1:
    return {"function": "masks.union", "components": [describe_generator(n) for n in names]}
  fn = masks.MASK_GENERATORS[names[0]]
  base = fn.func if isinstance(fn, functools.partial) else fn
  info = {"function": f"masks.{base.__name__}", "parameters": _defaults(fn)}
  if names[0].startswith("lama_"):
    info["settings"] = masks.LAMA_SETTINGS[info["parameters"]["kind"]]
  return json.loads(json.dumps(info))  # tuples -> lists, as the manifest stores them


# ------------------------------------------------------------------------------------------------ files


def _png_bytes(hole: np.ndarray) -> bytes:
  """bool hole[H, W] -> the bytes of an 8-bit greyscale PNG, 255 = hole."""
  import io

  buffer = io.BytesIO()
  Image.fromarray(np.where(hole, 255, 0).astype(np.uint8)).save(buffer, format="PNG")  # uint8[H, W]: mode L
  return buffer.getvalue()


def _decode(path: str) -> np.ndarray:
  """A pack file -> bool hole[H, W]; MaskPackError unless it is 8-bit greyscale holding only 0 and 255."""
  with Image.open(path) as img:
    img.load()
    if img.mode != "L":
      raise MaskPackError(f"{path}: a pack file must be 8-bit greyscale, got mode {img.mode}")
    arr = np.asarray(img)
  if not np.all((arr == 0) | (arr == 255)):
    raise MaskPackError(f"{path}: a pack file holds only 0 (known) and 255 (hole)")
  return arr == 255


def pack_id(holes: Sequence[tuple[str, np.ndarray]]) -> str:
  """Hash over (file name, bool hole[H, W]) in order: names the masks, not their PNG encoding."""
  digest = hashlib.sha256(FORMAT.encode())
  for name, hole in holes:
    _update_id(digest, name, hole)
  return digest.hexdigest()[:ID_DIGITS]


def _update_id(digest, name: str, hole: np.ndarray) -> None:
  h, w = hole.shape
  digest.update(f"\n{name} {h} {w}\n".encode())
  digest.update(np.packbits(np.asarray(hole, bool)).tobytes())


def file_name(index: int) -> str:
  return f"{index:06d}.png"


def write_pack(
  out: str,
  holes: Sequence[np.ndarray],
  *,
  name: str,
  generator: dict[str, Any],
  seed: int | None,
  extra: dict[str, Any] | None = None,
  sources: Sequence[str] | None = None,
) -> dict[str, Any]:
  """Writes bool hole[H, W] masks (one size) as a pack in `out` (which must not exist or be empty).

  Returns the manifest. Files are written to a temporary sibling folder and renamed into place.
  """
  if not holes:
    raise MaskPackError(f"mask pack {out}: no masks to write")
  shapes = {h.shape for h in holes}
  if len(shapes) != 1:
    raise MaskPackError(f"mask pack {out}: masks of several sizes {sorted(shapes)}; resize them to one")
  _check_out(out)
  parent = os.path.dirname(os.path.abspath(out))
  os.makedirs(parent, exist_ok=True)
  tmp = tempfile.mkdtemp(prefix=".pack-", dir=parent)
  try:
    files = []
    for i, hole in enumerate(holes):
      data = _png_bytes(hole)
      with open(os.path.join(tmp, file_name(i)), "wb") as f:
        f.write(data)
      entry = {
        "name": file_name(i),
        "sha256": hashlib.sha256(data).hexdigest(),
        "hole_ratio": round(float(np.mean(hole)), 6),
      }
      if sources is not None:
        entry["source"] = sources[i]
      files.append(entry)
    ((h, w),) = shapes
    manifest = {
      "format": FORMAT,
      "pack_id": pack_id([(file_name(i), m) for i, m in enumerate(holes)]),
      "name": name,
      "generator": generator,
      "seed": seed,
      "size": [h, w],
      "count": len(holes),
      "convention": "8-bit greyscale PNG, 255 = hole, 0 = known",
      "mean_hole_ratio": round(float(np.mean([f["hole_ratio"] for f in files])), 6),
      **(extra or {}),
      "files": files,
    }
    with open(os.path.join(tmp, MANIFEST), "w") as f:
      json.dump(manifest, f, indent=1)
    if os.path.isdir(out):
      os.rmdir(out)  # empty, checked above
    os.replace(tmp, out)
  except BaseException:
    shutil.rmtree(tmp, ignore_errors=True)
    raise
  return manifest


def _check_out(out: str) -> None:
  if os.path.exists(out) and not (os.path.isdir(out) and not os.listdir(out)):
    raise MaskPackError(f"--out={out} already exists and is not an empty folder; choose another or remove it")


def generate_holes(kind: str, size: int, n: int, seed: int, progress=None) -> list[np.ndarray]:
  """n bool hole[size, size] masks of `kind`, mask i drawn from default_rng([seed, 1, i])."""
  fn = generator_for(kind)
  holes = []
  for i in range(n):
    valid = np.asarray(fn(np.random.default_rng([seed, 1, i]), size, size))
    holes.append(valid < 0.5)
    if progress is not None:
      progress.update(1)
  return holes


def make_pack(kind: str, size: int, n: int, seed: int, out: str, progress=None) -> list[dict[str, Any]]:
  """`masks pack --kind=...`: one pack (or, for 'buckets', six sub-packs of n masks each). Returns manifests."""
  if size <= 0 or n <= 0:
    raise MaskPackError(f"--size and --n must be positive; got size={size}, n={n}")
  if seed < 0:
    raise MaskPackError(f"--seed must be >= 0; got {seed}")
  _check_out(out)
  kinds = BUCKET_KINDS if kind == BUCKETS else (kind,)
  for k in kinds:
    generator_for(k)  # a bad kind fails before any drawing
  # every mask is drawn before any file is written: a bucket the generator cannot reach leaves nothing behind
  holes = {k: generate_holes(k, size, n, seed, progress) for k in kinds}
  rng = "numpy default_rng([seed, 1, i]) for mask i (pipeline.eval_example's mask stream)"
  return [
    write_pack(
      out if kind != BUCKETS else os.path.join(out, k),
      holes[k],
      name=k,
      seed=seed,
      generator={"kind": k, **describe_generator(k), "rng": rng},
    )
    for k in kinds
  ]


# ------------------------------------------------------------------------------------------------ import


def find_mask_files(folder: str) -> list[str]:
  """Mask image files under `folder` (recursive, masks.MASK_EXTENSIONS), sorted by relative path."""
  if not os.path.isdir(folder):
    raise MaskPackError(f"--from={folder} is not a folder")
  found = []
  for root, dirs, files in os.walk(folder):
    dirs.sort()
    found += [
      os.path.relpath(os.path.join(root, f), folder) for f in files if f.lower().endswith(masks.MASK_EXTENSIONS)
    ]
  if not found:
    raise MaskPackError(f"--from={folder} holds no mask files ({', '.join(masks.MASK_EXTENSIONS)})")
  return sorted(found)


def resize_nearest(hole: np.ndarray, size: int) -> np.ndarray:
  """bool hole[H, W] -> bool[size, size], nearest neighbour by pixel centres (as PIL NEAREST)."""
  src_h, src_w = hole.shape
  rows = np.minimum(((np.arange(size) + 0.5) * src_h / size).astype(np.int64), src_h - 1)
  cols = np.minimum(((np.arange(size) + 0.5) * src_w / size).astype(np.int64), src_w - 1)
  return hole[rows[:, None], cols[None, :]]


def import_folder(
  folder: str,
  out: str,
  *,
  polarity: str = "white_hole",
  threshold: float = 0.5,
  resize: int = 0,
  bucket: bool = False,
  warn: Callable[[str], None] | None = None,
  progress=None,
) -> list[dict[str, Any]]:
  """`masks pack --from=DIR`: another codebase's mask files as a pack (or six bucket sub-packs). Returns manifests.

  Files are read in sorted relative-path order with `mask_files.read_hole(path, polarity=, threshold=)`; with
  `resize` each hole map is resized to resize x resize (nearest), else all files must share one size. `warn`
  gets one line per mask that is more than `mask_files.HOLE_WARNING_RATIO` hole (its polarity is probably the
  other one). With `bucket`, masks go to DIR/hole_0-10 ... DIR/hole_50-60 by hole ratio (masks of 60 % and more
  are left out, and counted in each manifest).
  """
  from jaxinpaint.data import mask_files

  if polarity not in POLARITIES:
    raise MaskPackError(f"--polarity must be one of {', '.join(POLARITIES)}; got {polarity!r}")
  if not 0.0 < threshold < 1.0:
    raise MaskPackError(f"--threshold must be in (0, 1); got {threshold}")
  if resize < 0:
    raise MaskPackError(f"--resize must be a positive size (0 = keep); got {resize}")
  _check_out(out)
  names = find_mask_files(folder)
  holes = []
  for name in names:
    try:
      hole = np.asarray(mask_files.read_hole(os.path.join(folder, name), polarity=polarity, threshold=threshold), bool)
    except mask_files.MaskFileError as e:
      raise MaskPackError(f"--from={folder}: {e}") from None
    if resize:
      hole = resize_nearest(hole, resize)
    elif holes and hole.shape != holes[0].shape:
      raise MaskPackError(
        f"--from={folder}: {name} is {hole.shape[0]}x{hole.shape[1]} but {names[0]} is "
        f"{holes[0].shape[0]}x{holes[0].shape[1]}; pass --resize=S to make one size"
      )
    ratio = float(np.mean(hole))
    if ratio > mask_files.HOLE_WARNING_RATIO and warn is not None:
      warn(
        f"{name} is {100 * ratio:.0f} % hole: is it drawn with the other polarity (--polarity="
        f"{POLARITIES[1 - POLARITIES.index(polarity)]})?"
      )
    holes.append(hole)
    if progress is not None:
      progress.update(1)
  generator = {
    "kind": "import",
    "from": os.path.abspath(folder),
    "polarity": polarity,
    "threshold": threshold,
    "resize": resize or None,
    "resample": "nearest" if resize else None,
    "reader": "jaxinpaint.data.mask_files.read_hole",
  }
  base = os.path.basename(os.path.normpath(folder))
  if not bucket:
    return [write_pack(out, holes, name=f"import:{base}", generator=generator, seed=None, sources=names)]
  index = [masks.bucket_of(float(np.mean(h))) for h in holes]
  manifests = []
  for b, kind in enumerate(BUCKET_KINDS):
    chosen = [i for i, k in enumerate(index) if k == b]
    if not chosen:
      continue
    manifests.append(
      write_pack(
        os.path.join(out, kind),
        [holes[i] for i in chosen],
        name=f"import:{base}:{kind}",
        generator={**generator, "bucket": list(masks.HOLE_RATIO_BUCKETS[b])},
        seed=None,
        sources=[names[i] for i in chosen],
        extra={"left_out_above_60": sum(k is None for k in index)},
      )
    )
  if not manifests:
    raise MaskPackError(f"--from={folder}: no mask has a hole ratio below 60 %; nothing to bucket")
  return manifests


# ------------------------------------------------------------------------------------------------ read


@dataclasses.dataclass(frozen=True)
class Pack:
  """A verified pack: its masks in file order as packed bits (u8[N, ceil(H W / 8)], 1 = hole), and its manifest.

  Bits, not bools: a 12 000-mask set of 512 px is 0.4 GB instead of 3 GB in memory.
  """

  path: str
  manifest: dict[str, Any]
  bits: np.ndarray

  @property
  def id(self) -> str:
    return self.manifest["pack_id"]

  @property
  def name(self) -> str:
    return self.manifest["name"]

  @property
  def size(self) -> tuple[int, int]:
    return tuple(self.manifest["size"])

  def __len__(self) -> int:
    return len(self.bits)

  def hole(self, index: int) -> np.ndarray:
    """bool hole[H, W] of mask index % N."""
    h, w = self.size
    return np.unpackbits(self.bits[index % len(self.bits)], count=h * w).reshape(h, w).astype(bool)

  @property
  def holes(self) -> np.ndarray:
    """Every mask, bool[N, H, W] (True = hole)."""
    return np.stack([self.hole(i) for i in range(len(self))])

  def valid(self, index: int) -> np.ndarray:
    """valid f32[H, W] (1 = known) of mask index % N: eval example i is paired with mask i mod N."""
    return np.logical_not(self.hole(index)).astype(np.float32)

  def summary(self) -> dict[str, Any]:
    """What tables say about the pack."""
    return {
      "pack_id": self.id,
      "name": self.name,
      "path": self.path,
      "size": list(self.size),
      "count": len(self),
      "seed": self.manifest.get("seed"),
      "generator": self.manifest["generator"].get("kind", self.name),
    }


def read_manifest(path: str) -> dict[str, Any]:
  file = os.path.join(path, MANIFEST)
  if not os.path.isfile(file):
    raise MaskPackError(f"mask pack {path}: no {MANIFEST} (make packs with python -m jaxinpaint.masks pack)")
  try:
    with open(file) as f:
      manifest = json.load(f)
  except (OSError, json.JSONDecodeError) as e:
    raise MaskPackError(f"mask pack {path}: {MANIFEST} is not readable JSON ({e})") from None
  missing = [k for k in ("format", "pack_id", "name", "generator", "size", "count", "files") if k not in manifest]
  if missing or manifest.get("format") != FORMAT:
    raise MaskPackError(
      f"mask pack {path}: {MANIFEST} is not a {FORMAT} manifest "
      f"({'missing ' + ', '.join(missing) if missing else 'format ' + repr(manifest['format'])})"
    )
  return manifest


def verify_pack(path: str) -> Pack:
  """Reads a pack and checks it against its manifest: every file's sha256, size and the pack id.

  MaskPackError naming the first file that is missing or differs (or the manifest, when its id or count does
  not match the files).
  """
  path = os.path.normpath(path)
  manifest = read_manifest(path)
  files = manifest["files"]
  if len(files) != manifest["count"]:
    raise MaskPackError(f"mask pack {path}: {MANIFEST} lists {len(files)} files but says count {manifest['count']}")
  holes, digest_holes = [], hashlib.sha256(FORMAT.encode())
  for entry in files:
    file = os.path.join(path, entry["name"])
    if os.path.basename(entry["name"]) != entry["name"]:
      raise MaskPackError(f"mask pack {path}: {MANIFEST} names {entry['name']!r}, not a file of the pack folder")
    if not os.path.isfile(file):
      raise MaskPackError(f"mask pack {path}: {entry['name']} is missing")
    with open(file, "rb") as f:
      digest = hashlib.sha256(f.read()).hexdigest()
    if digest != entry["sha256"]:
      raise MaskPackError(
        f"mask pack {path}: {entry['name']} does not match its manifest (sha256 {digest[:12]}..., "
        f"manifest {entry['sha256'][:12]}...)"
      )
    hole = _decode(file)
    if list(hole.shape) != list(manifest["size"]):
      raise MaskPackError(f"mask pack {path}: {entry['name']} is {hole.shape}, the manifest says {manifest['size']}")
    _update_id(digest_holes, entry["name"], hole)
    holes.append(np.packbits(hole))
  if digest_holes.hexdigest()[:ID_DIGITS] != manifest["pack_id"]:
    raise MaskPackError(f"mask pack {path}: {MANIFEST}'s pack_id {manifest['pack_id']} does not match its files")
  return Pack(path, manifest, np.stack(holes))


def open_packs(path: str) -> list[Pack]:
  """The verified pack in `path`, or, for a folder of packs (e.g. the six bucket packs), each one in name order."""
  path = os.path.normpath(path)
  if not os.path.isdir(path):
    raise MaskPackError(f"mask pack {path} does not exist or is not a folder")
  if os.path.isfile(os.path.join(path, MANIFEST)):
    return [verify_pack(path)]
  subs = sorted(d for d in os.listdir(path) if os.path.isfile(os.path.join(path, d, MANIFEST)))
  if not subs:
    raise MaskPackError(f"mask pack {path}: no {MANIFEST} in it or in its sub-folders")
  order = {k: i for i, k in enumerate(BUCKET_KINDS)}  # buckets by hole ratio, other packs after them by name
  subs.sort(key=lambda d: (order.get(d, len(order)), d))
  return [verify_pack(os.path.join(path, d)) for d in subs]
