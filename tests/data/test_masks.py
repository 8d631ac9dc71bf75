"""Tests for jaxinpaint.data.masks: determinism, value/shape contract, hole-ratio ranges, folders, buckets."""

import logging
import pickle

import numpy as np
import pytest
from PIL import Image

from jaxinpaint.data import masks

GENERATED = [n for n in masks.MASK_GENERATORS if n != "folder"]


def _rng(seed):
  return np.random.default_rng(seed)


def _ratios(name, size, n=50):
  fn = masks.make_mask_fn(name)
  return np.array([masks.hole_ratio(fn(_rng(seed), size, size)) for seed in range(n)])


# ----------------------------------------------------------------------------- contract of every generator


@pytest.mark.parametrize("name", GENERATED)
@pytest.mark.parametrize("h,w", [(61, 97), (64, 64), (40, 17)])
def test_values_dtype_shape(name, h, w):
  fn = masks.make_mask_fn(name)
  for seed in range(3):
    valid = fn(_rng(seed), h, w)
    assert valid.shape == (h, w)
    assert valid.dtype == np.float32
    assert set(np.unique(valid)) <= {0.0, 1.0}
    assert 0.0 < masks.hole_ratio(valid) < 1.0


@pytest.mark.parametrize("name", GENERATED)
def test_deterministic_per_seed(name):
  fn = masks.make_mask_fn(name)
  np.testing.assert_array_equal(fn(_rng(7), 61, 97), fn(_rng(7), 61, 97))
  # grain workers receive the function pickled.
  np.testing.assert_array_equal(pickle.loads(pickle.dumps(fn))(_rng(7), 61, 97), fn(_rng(7), 61, 97))
  draws = [fn(_rng(seed), 61, 97) for seed in range(4)]
  distinct = {d.tobytes() for d in draws}
  assert len(distinct) == (1 if name == "centre" else 4)


def test_global_numpy_rng_untouched():
  state = np.random.get_state()[1].copy()
  for name in GENERATED:
    masks.make_mask_fn(name)(_rng(0), 32, 32)
  np.testing.assert_array_equal(np.random.get_state()[1], state)


# Bounds around the measured values for seeds 0..49 (see the module docstring for 200-draw figures).
RATIO_RANGES = {  # name: (mean low, mean high, min allowed, max allowed)
  "random_box": (0.22, 0.30, (96 / 256) ** 2 - 0.01, (160 / 256) ** 2 + 0.01),
  "random_boxes": (0.09, 0.17, 0.005, 3 * (96 / 256) ** 2 + 0.01),
  "free_form": (0.12, 0.21, 0.005, 0.6),
  "deepfill_v2": (0.27, 0.35, (96 / 256) ** 2 - 0.005, 0.7),  # the box alone is at least 96 x 96 at 256
  "lines_circles": (0.12, 0.21, 0.001, 0.5),
  "random_lines": (0.11, 0.19, 0.001, 0.45),
  "lama_thin": (0.24, 0.33, 0.01, 0.5),
  "lama_medium": (0.19, 0.28, 0.0, 0.5),
  "lama_thick": (0.23, 0.33, 0.0, 0.5),
}


@pytest.mark.parametrize("name", sorted(RATIO_RANGES))
@pytest.mark.parametrize("size", [64, 256])
def test_hole_ratio_ranges(name, size):
  mean_lo, mean_hi, lo, hi = RATIO_RANGES[name]
  ratios = _ratios(name, size)
  assert mean_lo <= ratios.mean() <= mean_hi, ratios.mean()
  assert lo <= ratios.min() and ratios.max() <= hi, (ratios.min(), ratios.max())


@pytest.mark.parametrize("kind", ["thin", "medium", "thick"])
def test_lama_never_over_half(kind):
  ratios = [masks.hole_ratio(masks.lama_mask(_rng(s), 48, 80, kind=kind)) for s in range(60)]
  assert max(ratios) <= 0.5


def test_lama_rejection_gives_up_clearly():
  with pytest.raises(RuntimeError, match="max_hole|hole ratio"):
    masks.lama_mask(_rng(0), 64, 64, kind="thin", max_hole=1e-4, max_tries=3)
  with pytest.raises(ValueError, match="thin"):
    masks.lama_mask(_rng(0), 64, 64, kind="fat")


def test_lama_thick_uses_boxes_sometimes():
  # Box draws are solid rectangles: the hole equals its bounding box for a single box.
  box_like = 0
  for s in range(40):
    hole = masks.lama_mask(_rng(s), 64, 64, kind="thick") == 0
    rows, cols = np.nonzero(hole.any(1))[0], np.nonzero(hole.any(0))[0]
    if hole[rows[0] : rows[-1] + 1, cols[0] : cols[-1] + 1].all():
      box_like += 1
  assert 2 <= box_like <= 20


# ------------------------------------------------------------------------------------------------ boxes


@pytest.mark.parametrize("h,w", [(256, 256), (64, 64), (61, 97)])
def test_centre_box_is_centred(h, w):
  hole = masks.centre_box(h, w) == 0
  rows, cols = np.nonzero(hole.any(1))[0], np.nonzero(hole.any(0))[0]
  assert (rows[-1] - rows[0] + 1, cols[-1] - cols[0] + 1) == (h // 2, w // 2)
  assert hole.sum() == (h // 2) * (w // 2)
  assert abs(rows[0] - (h - 1 - rows[-1])) <= 1 and abs(cols[0] - (w - 1 - cols[-1])) <= 1
  if (h, w) == (256, 256):
    assert masks.hole_ratio(masks.centre_box(h, w)) == 0.25
    assert (rows[0], cols[0]) == (64, 64)


def test_centre_box_custom_and_bad():
  hole = masks.centre_box(10, 10, box=(2, 4)) == 0
  expected = np.zeros((10, 10), bool)
  expected[4:6, 3:7] = True
  np.testing.assert_array_equal(hole, expected)
  with pytest.raises(ValueError, match="fit"):
    masks.centre_box(10, 10, box=(11, 2))


def test_random_box_solid_inside_and_sized():
  for seed in range(30):
    hole = masks.random_box(_rng(seed), 256, 200) == 0
    rows, cols = np.nonzero(hole.any(1))[0], np.nonzero(hole.any(0))[0]
    bh, bw = rows[-1] - rows[0] + 1, cols[-1] - cols[0] + 1
    assert hole[rows[0] : rows[-1] + 1, cols[0] : cols[-1] + 1].all() and hole.sum() == bh * bw
    assert 96 <= bh <= 160 and round(200 * 96 / 256) <= bw <= round(200 * 160 / 256)


def test_random_boxes_count():
  one = masks.random_boxes(_rng(0), 64, 64, n_range=(1, 1), size_range=(0.25, 0.25)) == 0
  assert one.sum() == 16 * 16
  many = [masks.random_boxes(_rng(s), 64, 64, n_range=(3, 3), size_range=(0.1, 0.1)) for s in range(10)]
  assert all(masks.hole_ratio(m) <= 3 * 36 / 4096 for m in many)
  assert any(masks.hole_ratio(m) > 36 / 4096 for m in many)


# ---------------------------------------------------------------------------------------------- strokes


def _stamp_reference(h, w, p0, p1, width):
  """Distance to a segment by cases: perpendicular inside the segment, else the nearer endpoint."""
  (y0, x0), (y1, x1) = p0, p1
  yy, xx = np.mgrid[0:h, 0:w].astype(np.float64)
  d0 = np.hypot(yy - y0, xx - x0)
  d1 = np.hypot(yy - y1, xx - x1)
  length = np.hypot(y1 - y0, x1 - x0)
  along = ((yy - y0) * (y1 - y0) + (xx - x0) * (x1 - x0)) / length
  perp = np.abs((yy - y0) * (x1 - x0) - (xx - x0) * (y1 - y0)) / length
  dist = np.where((along >= 0) & (along <= length), perp, np.minimum(d0, d1))
  return dist <= max(width / 2, 0.5)


@pytest.mark.parametrize(
  "p0,p1,width",
  [
    ((3.2, 4.7), (20.5, 30.1), 5.0),
    ((25.0, -3.0), (2.0, 40.0), 2.5),
    ((10.0, 10.0), (10.0, 11.0), 9.0),
    ((0.0, 0.0), (29.0, 0.0), 1.0),
  ],
)
def test_stamp_segment_matches_distance(p0, p1, width):
  hole = np.zeros((30, 37), bool)
  masks._stamp_segment(hole, *p0, *p1, width)
  np.testing.assert_array_equal(hole, _stamp_reference(30, 37, p0, p1, width))


def test_free_form_respects_height_vs_width():
  # With h and w swapped (the reference bug) x stays within [0, h] (mirrored by the flip): the long axis'
  # middle half would get almost no strokes. Correct drawing spreads them along the whole long axis.
  for h, w, axis in [(32, 256, 0), (256, 32, 1)]:
    hole = sum(1.0 - masks.free_form(_rng(s), h, w) for s in range(30))
    profile = hole.sum(axis)
    n = len(profile)
    middle = profile[n // 4 : 3 * n // 4].sum() / profile.sum()
    assert 0.35 < middle < 0.75, (h, w, middle)


def test_free_form_flips_balance_drift():
  # DeepFill strokes drift to +x (cos 72 deg > 0); without real flips the hole centroid sits near 0.62 w.
  acc = np.zeros((32, 32))
  for seed in range(300):
    acc += 1.0 - masks.free_form(_rng(seed), 32, 32)
  col = (acc.sum(0) * np.arange(32)).sum() / acc.sum() / 31
  row = (acc.sum(1) * np.arange(32)).sum() / acc.sum() / 31
  assert abs(col - 0.5) < 0.05 and abs(row - 0.5) < 0.05


def test_free_form_scales_width_with_size():
  thin = masks.free_form(_rng(0), 64, 64, strokes=(1, 1), vertices=(4, 4), width=(4.0, 4.0))
  thick = masks.free_form(_rng(0), 64, 64, strokes=(1, 1), vertices=(4, 4), width=(40.0, 40.0))
  # Same rng stream, same path: the wider brush covers the narrower one.
  assert np.all(thick <= thin) and masks.hole_ratio(thick) > 2 * masks.hole_ratio(thin)


def test_deepfill_v2_box_follows_the_reference_bbox2mask():
  # 128 box at 256 px, each side pair shrunk by randint(MAX_DELTA // 2 + 1), MAX_DELTA = 32: sides 96..128,
  # mean area 112^2 / 256^2 = 0.1914 (E[side] = 128 - 2 * 8); at 32 px: box 16, MAX_DELTA 4, sides 12..16
  for size, (low, high) in ((256, (96, 128)), (32, (12, 16))):
    rng = _rng(0)
    boxes = np.array([masks.deepfill_v2_box(rng, size, size) for _ in range(4000)])
    top, left, bh, bw = boxes.T
    assert bh.min() == bw.min() == low and bh.max() == bw.max() == high
    assert np.all((high - bh) % 2 == 0) and top.min() >= 0 and (top + bh).max() <= size
    assert len(np.unique(bh)) == (high - low) // 2 + 1  # every shrink 0..MAX_DELTA // 2 is drawn
    if size == 256:
      assert 0.187 < np.mean(bh * bw) / size**2 < 0.196


def test_deepfill_v2_mask_holds_a_box_of_at_least_96_at_256_px():
  # the box's sides never go below 96 at 256 px (the old quarter-side shrink went down to 64): some 96 x 96
  # window of every mask is entirely hole
  for seed in range(12):
    hole = (masks.deepfill_v2_mask(_rng(seed), 256, 256) == 0).astype(np.int64)
    c = np.pad(hole.cumsum(0).cumsum(1), ((1, 0), (1, 0)))
    win = c[96:, 96:] - c[:-96, 96:] - c[96:, :-96] + c[:-96, :-96]
    assert win.max() == 96 * 96, seed


# ---------------------------------------------------------------------------------------------- folders


def _save(path, array):
  path.parent.mkdir(parents=True, exist_ok=True)
  Image.fromarray(array).save(path)


def test_folder_white_is_hole_and_resized(tmp_path):
  grey = np.zeros((32, 48), np.uint8)
  grey[:, :24] = 255  # left half white = hole
  grey[0, 30] = 100  # dark grey = known
  grey[31, 40] = 200  # light grey = hole
  _save(tmp_path / "a.png", grey)
  folder = masks.MaskFolder(tmp_path, 64, 96, augment=False)
  valid = folder(_rng(0))
  assert valid.shape == (64, 96) and valid.dtype == np.float32
  expected = np.ones((64, 96), np.float32)
  expected[:, :48] = 0.0
  expected[62:64, 80:82] = 0.0
  np.testing.assert_array_equal(valid, expected)
  np.testing.assert_array_equal(folder(_rng(0), 16, 24)[:, :12], 0.0)
  np.testing.assert_array_equal(folder(_rng(0), 16, 24)[:, 12:], 1.0)


def test_folder_formats_recursive_sorted(tmp_path):
  rgb = np.zeros((8, 8, 3), np.uint8)
  rgb[:4] = 255
  _save(tmp_path / "b" / "rgb.bmp", rgb)
  wide = np.zeros((8, 8), np.uint16)
  wide[:, :2] = 65535
  _save(tmp_path / "a" / "deep.png", wide)
  (tmp_path / "notes.txt").write_text("not a mask")
  folder = masks.MaskFolder(tmp_path, augment=False)
  assert [f.split("/")[-2:] for f in folder.files] == [["a", "deep.png"], ["b", "rgb.bmp"]]
  seen = {masks.hole_ratio(folder(_rng(s), 8, 8)) for s in range(20)}
  assert seen == {0.25, 0.5}


def test_folder_augment_and_determinism(tmp_path):
  corner = np.zeros((16, 16), np.uint8)
  corner[:4, :8] = 255
  _save(tmp_path / "m.png", corner)
  plain = masks.MaskFolder(tmp_path, 16, 16, augment=False)
  assert len({plain(_rng(s)).tobytes() for s in range(10)}) == 1
  aug = masks.MaskFolder(tmp_path, 16, 16, augment=True)
  outs = [aug(_rng(s)) for s in range(40)]
  assert len({o.tobytes() for o in outs}) >= 4  # rotations/flips of an asymmetric corner block
  assert all(masks.hole_ratio(o) == 32 / 256 for o in outs)
  np.testing.assert_array_equal(aug(_rng(3)), aug(_rng(3)))


def test_folder_skips_corrupt_and_counts(tmp_path, caplog):
  good = np.full((8, 8), 255, np.uint8)
  _save(tmp_path / "good.png", good)
  (tmp_path / "junk.png").write_bytes(b"definitely not a png")
  (tmp_path / "cut.png").write_bytes((tmp_path / "good.png").read_bytes()[:40])
  with caplog.at_level(logging.WARNING):
    folder = masks.MaskFolder(tmp_path, 8, 8)
  assert folder.num_skipped == 2 and len(folder) == 1
  assert sorted(p.split("/")[-1] for p in folder.skipped) == ["cut.png", "junk.png"]
  assert "junk.png" in caplog.text
  assert all(masks.hole_ratio(folder(_rng(s))) == 1.0 for s in range(5))


def test_folder_errors(tmp_path):
  with pytest.raises(ValueError, match=str(tmp_path)):
    masks.MaskFolder(tmp_path)
  (tmp_path / "bad.jpg").write_bytes(b"xx")
  with pytest.raises(ValueError, match="1 unreadable"):
    masks.MaskFolder(tmp_path)
  with pytest.raises(ValueError, match="not a directory"):
    masks.MaskFolder(tmp_path / "missing")
  _save(tmp_path / "ok.png", np.zeros((4, 4), np.uint8))
  with pytest.raises(ValueError, match="size"):
    masks.MaskFolder(tmp_path)(_rng(0))


def test_folder_via_registry_pickles(tmp_path):
  hole = np.zeros((8, 8), np.uint8)
  hole[2:4, 2:6] = 255
  _save(tmp_path / "m.png", hole)
  fn = masks.make_mask_fn("folder", path=str(tmp_path), augment=False)
  again = pickle.loads(pickle.dumps(fn))
  np.testing.assert_array_equal(fn(_rng(1), 16, 16), again(_rng(1), 16, 16))
  assert masks.hole_ratio(fn(_rng(1), 16, 16)) == 8 / 64
  empty = tmp_path / "empty"
  empty.mkdir()
  with pytest.raises(ValueError, match="empty"):
    masks.make_mask_fn("folder", path=str(empty))


# -------------------------------------------------------------------------------------- ratios, buckets


def test_hole_ratio_and_union():
  a = np.array([[1, 0, 1], [1, 1, 1]], np.float32)
  b = np.array([[0, 0, 1], [1, 1, 0]], np.float32)
  assert masks.hole_ratio(a) == pytest.approx(1 / 6)
  u = masks.union(a, b)
  np.testing.assert_array_equal(u, np.where((a == 0) | (b == 0), 0.0, 1.0))
  assert u.dtype == np.float32 and masks.hole_ratio(u) == pytest.approx(3 / 6)
  x, y = masks.free_form(_rng(0), 61, 97), masks.random_box(_rng(1), 61, 97)
  uxy = masks.union(x, y)
  assert masks.hole_ratio(uxy) >= max(masks.hole_ratio(x), masks.hole_ratio(y))
  np.testing.assert_array_equal(uxy == 0, (x == 0) | (y == 0))
  with pytest.raises(ValueError, match="shape"):
    masks.union(a, np.ones((3, 2), np.float32))
  with pytest.raises(ValueError):
    masks.union()


def test_bucket_of():
  assert masks.HOLE_RATIO_BUCKETS[0] == (0.0, 0.1) and masks.HOLE_RATIO_BUCKETS[-1] == (0.5, 0.6)
  ratios = (0.0, 0.05, 0.1, 0.35, 0.5999, 0.6, 1.0)
  assert [masks.bucket_of(r) for r in ratios] == [0, 0, 1, 3, 5, None, None]
  with pytest.raises(ValueError):
    masks.bucket_of(1.5)


@pytest.mark.parametrize("h,w", [(64, 64), (61, 97)])
def test_mask_in_bucket_hits_every_bucket(h, w):
  for bucket, (lo, hi) in enumerate(masks.HOLE_RATIO_BUCKETS):
    for seed in range(3):
      valid = masks.mask_in_bucket(_rng(seed), h, w, bucket)
      assert lo <= masks.hole_ratio(valid) < hi and masks.bucket_of(masks.hole_ratio(valid)) == bucket
      assert set(np.unique(valid)) <= {0.0, 1.0} and valid.shape == (h, w)
  first, second = (masks.mask_in_bucket(_rng(5), h, w, 4) for _ in range(2))
  np.testing.assert_array_equal(first, second)
  lines = masks.make_mask_fn("random_lines")
  r = masks.hole_ratio(masks.mask_in_bucket(_rng(0), h, w, (0.3, 0.35), generator=lines))
  assert 0.3 <= r < 0.35


def test_mask_in_bucket_terminates():
  with pytest.raises(RuntimeError, match="after 5 tries"):
    masks.mask_in_bucket(_rng(0), 32, 32, 0, generator=masks.make_mask_fn("centre"), max_tries=5)
  with pytest.raises(ValueError, match="bucket"):
    masks.mask_in_bucket(_rng(0), 32, 32, (0.5, 0.2))
  with pytest.raises(ValueError, match="bucket index"):
    masks.mask_in_bucket(_rng(0), 32, 32, 6)


# --------------------------------------------------------------------------------------------- registry


def test_registry_names_and_errors():
  for name in [
    "centre",
    "random_box",
    "free_form",
    "deepfill_v2",
    "lines_circles",
    "random_lines",
    "lama_thin",
    "lama_medium",
    "lama_thick",
    "folder",
  ]:
    assert name in masks.MASK_GENERATORS
  with pytest.raises(ValueError, match="free_form"):
    masks.make_mask_fn("brush")
  with pytest.raises(ValueError, match="unknown"):
    masks.make_mask_fn("free_form+nope")
  with pytest.raises(ValueError, match="bogus"):
    masks.make_mask_fn("free_form", bogus=1)
  with pytest.raises(ValueError, match="components"):
    masks.make_mask_fn("free_form+random_box", strokes=(1, 1))
  with pytest.raises(ValueError, match="size"):
    masks.make_mask_fn("free_form")(_rng(0), 0, 5)
  with pytest.raises(ValueError, match="size"):
    masks.random_box(_rng(0), 32.0, 32)
  with pytest.raises(ValueError, match="Generator"):
    masks.free_form(np.random.RandomState(0), 8, 8)


def test_union_spec_matches_manual_union_and_pickles():
  fn = masks.make_mask_fn("free_form+random_box", random_box={"size_range": (0.25, 0.5)})
  rng = _rng(11)
  first = masks.free_form(rng, 61, 97)
  expected = masks.union(first, masks.random_box(rng, 61, 97, size_range=(0.25, 0.5)))
  np.testing.assert_array_equal(fn(_rng(11), 61, 97), expected)
  again = pickle.loads(pickle.dumps(fn))
  np.testing.assert_array_equal(again(_rng(11), 61, 97), expected)


def test_kwargs_reach_generator():
  fn = masks.make_mask_fn("centre", box=(4, 4))
  assert masks.hole_ratio(fn(_rng(0), 8, 8)) == 0.25
  fixed = masks.make_mask_fn("random_box", size_range=(0.5, 0.5))
  assert masks.hole_ratio(fixed(_rng(0), 64, 64)) == 0.25
