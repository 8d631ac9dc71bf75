"""The inpaint tool: any size in, the same size out with every known pixel byte-exact, holes filled by the model
(pad and tile), white = hole unless inverted, a warning for a mask that looks inverted, folder mode and grids,
and one-line errors for unreadable images, mismatched masks and missing checkpoints."""

import os
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from jaxinpaint import inpaint, train, visualize
from jaxinpaint.data import masks

from helpers import ROOT, cli_env, make_run, write_png16  # tests/helpers.py


@pytest.fixture(scope="module")
def model(tmp_path_factory):
  workdir = str(tmp_path_factory.mktemp("run"))
  make_run(workdir, seed=1)
  return inpaint.load(workdir)


FAMILIES = ("wconv", "pconv", "plain", "gated", "deepfill_v1")  # every model family with a tiny config
LEAK_SIZES = ((301, 457), (45, 61), (20, 27))  # odd sizes: pad mirrors rows/columns; the last is below one tile


@pytest.fixture(scope="module", params=FAMILIES)
def family_model(request, tmp_path_factory):
  """One untrained tiny run per model family, restored once for the module."""
  if request.param == "wconv":
    return request.getfixturevalue("model")
  workdir = str(tmp_path_factory.mktemp(request.param))
  make_run(workdir, name=request.param, seed=2)
  return inpaint.load(workdir)


def border_holes(h, w, seed):
  """Free-form holes plus holes touching the bottom and right borders, which padding mirrors."""
  hole = masks.free_form(np.random.default_rng(seed), h, w) < 0.5
  hole[-max(h // 8, 2) :, w // 4 : w // 2] = True
  hole[h // 3 : h // 2, -max(w // 8, 2) :] = True
  return hole


def with_hole_contents(image, hole, kind, seed=0):
  """The image with its hole pixels replaced by magenta or by uniform noise."""
  fill = (
    np.broadcast_to(np.array([255, 0, 255], np.uint8), image.shape)
    if kind == "magenta"
    else np.random.default_rng(seed).integers(0, 256, image.shape, np.uint8)
  )
  return np.where(hole[..., None], fill, image)


def photo(h, w, seed=0):
  from skimage import data

  image = np.asarray(Image.fromarray(data.chelsea()).resize((w, h), Image.BICUBIC))
  hole = masks.free_form(np.random.default_rng(seed), h, w) < 0.5
  return image, hole


@pytest.mark.parametrize("mode", ["pad", "tile"])
def test_odd_size_keeps_size_and_every_known_pixel(model, mode):
  image, hole = photo(301, 457)
  result = inpaint.inpaint(model, image, hole, mode=mode)
  assert result.shape == (301, 457, 3) and result.dtype == np.uint8
  np.testing.assert_array_equal(result[~hole], image[~hole])
  assert (result[hole] != image[hole]).mean() > 0.5  # the holes hold the model's fill, not the input


@pytest.mark.parametrize("mode", inpaint.MODES)
def test_output_never_depends_on_pixels_under_the_hole(family_model, mode):
  """Object removal at the border must not bring the object back: magenta or noise under the hole, same bytes."""
  for i, (h, w) in enumerate(LEAK_SIZES):
    image, _ = photo(h, w)
    hole = border_holes(h, w, seed=i)
    a = inpaint.inpaint(family_model, with_hole_contents(image, hole, "magenta"), hole, mode=mode)
    b = inpaint.inpaint(family_model, with_hole_contents(image, hole, "noise", seed=i), hole, mode=mode)
    differ = (a != b).any(-1)
    assert not differ.any(), f"{h}x{w}: {differ.sum()} pixels differ, by up to {np.abs(a.astype(int) - b).max()}"


def test_holes_hold_the_models_prediction(model):
  """At the training size, pad mode is one forward pass: the holes equal the model's output there."""
  image, hole = photo(32, 32, seed=3)
  x = image.astype(np.float32)[None] / 127.5 - 1
  valid = (~hole).astype(np.float32)[None, ..., None]
  expected = visualize.to_uint8(model.predict(x, valid))[0]
  result = inpaint.inpaint(model, image, hole)
  np.testing.assert_array_equal(result[hole], expected[hole])
  assert model.accepts(64, 96) and not model.accepts(40, 40)  # the U-Net needs multiples of 2**depth


def test_mask_files_are_white_hole_unless_inverted(model, tmp_path):
  image, _ = photo(40, 56)
  mask = np.zeros((40, 56), np.uint8)
  mask[8:24, 10:40] = 255
  Image.fromarray(image).save(tmp_path / "photo.png")
  Image.fromarray(mask).save(tmp_path / "mask.png")
  for invert in (False, True):
    result = inpaint.inpaint(model, str(tmp_path / "photo.png"), str(tmp_path / "mask.png"), invert_mask=invert)
    changed = (result != image).any(-1)
    hole = (mask > 127) != invert
    assert not changed[~hole].any() and changed[hole].mean() > 0.5


def test_mask_that_is_almost_all_white_warns_it_may_be_inverted(model):
  image, _ = photo(32, 32)
  mask = np.full((32, 32), 255, np.uint8)
  mask[:4, :4] = 0
  with pytest.warns(inpaint.MaskPolarityWarning, match=r"98% of the image as hole .*--invert_mask"):
    inpaint.inpaint(model, image, mask)
  np.testing.assert_array_equal(inpaint.inpaint(model, image, np.zeros((32, 32), bool)), image)  # no hole


def test_bad_input_fails_in_one_line(model, tmp_path):
  image, hole = photo(48, 40)
  with pytest.raises(ValueError, match=r"mask is 24x20 but the image is 48x40 \(height x width\); pass --resize_mask"):
    inpaint.inpaint(model, image, hole[::2, ::2])
  resized = inpaint.inpaint(model, image, hole[::2, ::2], resize_mask=True)
  assert resized.shape == image.shape
  (tmp_path / "broken.jpg").write_bytes(b"not a jpeg")
  with pytest.raises(ValueError, match="cannot read image '.*broken.jpg'"):
    inpaint.inpaint(model, str(tmp_path / "broken.jpg"), hole)
  with pytest.raises(ValueError, match="mode must be one of"):
    inpaint.inpaint(model, image, hole, mode="crop")
  with pytest.raises(FileNotFoundError, match="run directory .*nowhere does not exist"):
    inpaint.load(str(tmp_path / "nowhere"))
  train.save_config(model.run.config, str(tmp_path / "untrained"))
  with pytest.raises(FileNotFoundError, match=r"no checkpoint found in .*untrained/checkpoints"):
    inpaint.inpaint(str(tmp_path / "untrained"), image, hole)


def test_folder_mode_pairs_masks_and_writes_grids(model, tmp_path):
  (tmp_path / "photos" / "sub").mkdir(parents=True)
  (tmp_path / "masks" / "sub").mkdir(parents=True)
  sizes = {"a.jpg": (37, 51), "sub/b.png": (33, 29)}
  for i, (name, (h, w)) in enumerate(sizes.items()):
    image, hole = photo(h, w, seed=i)
    Image.fromarray(image).save(tmp_path / "photos" / name, quality=95)
    stem = os.path.splitext(name)[0]
    mask_name = stem + ("_mask.png" if i else ".png")
    Image.fromarray(hole.astype(np.uint8) * 255).save(tmp_path / "masks" / mask_name)
  jobs = inpaint.plan_jobs(
    image=None,
    mask=None,
    output=None,
    image_dir=str(tmp_path / "photos"),
    mask_dir=str(tmp_path / "masks"),
    output_dir=str(tmp_path / "out"),
  )
  assert [os.path.relpath(j[2], tmp_path / "out") for j in jobs] == ["a.png", "sub/b.png"]
  report = inpaint.run_files(model, jobs, invert_mask=False, resize_mask=False, mode="auto", grid=True, progress=False)
  assert len(report.written) == 4 and not report.skipped
  for name, (h, w) in sizes.items():
    out = np.asarray(Image.open(tmp_path / "out" / (os.path.splitext(name)[0] + ".png")))
    source = inpaint.read_image(str(tmp_path / "photos" / name))
    hole = inpaint.read_hole(jobs[list(sizes).index(name)][1])
    assert out.shape == (h, w, 3)
    np.testing.assert_array_equal(out[~hole], source[~hole])
    grid = np.asarray(Image.open(tmp_path / "out" / (os.path.splitext(name)[0] + "_grid.png")))
    assert grid.shape == (h, 3 * w + 8, 3)
  os.remove(tmp_path / "masks" / "sub" / "b_mask.png")
  jobs = inpaint.plan_jobs(
    image=None,
    mask=None,
    output=None,
    image_dir=str(tmp_path / "photos"),
    mask_dir=str(tmp_path / "masks"),
    output_dir=str(tmp_path / "out"),
  )
  assert [j[1] is None for j in jobs] == [False, True]  # run_files skips it and says why
  os.remove(tmp_path / "masks" / "a.png")
  with pytest.raises(ValueError, match=r"no mask in .* for any of the 2 images \(e.g. 'a.jpg'"):
    inpaint.plan_jobs(
      image=None,
      mask=None,
      output=None,
      image_dir=str(tmp_path / "photos"),
      mask_dir=str(tmp_path / "masks"),
      output_dir=str(tmp_path / "out"),
    )


def test_cli(model, tmp_path):
  image, hole = photo(45, 61)
  Image.fromarray(image).save(tmp_path / "photo.png")
  Image.fromarray(hole.astype(np.uint8) * 255).save(tmp_path / "mask.png")
  env = cli_env()
  cmd = [
    sys.executable,
    "-m",
    "jaxinpaint.inpaint",
    f"--workdir={model.workdir}",
    f"--image={tmp_path}/photo.png",
    f"--mask={tmp_path}/mask.png",
    f"--output={tmp_path}/out.png",
    "--grid",
  ]
  proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
  assert proc.returncode == 0, proc.stderr[-3000:]
  out = np.asarray(Image.open(tmp_path / "out.png"))
  np.testing.assert_array_equal(out[~hole], image[~hole])
  assert os.path.isfile(tmp_path / "out_grid.png")


# ------------------------------------------------------------------------------------------------ safety


def folder_plan(tmp_path, output_dir="out", mask_dir="masks", grid=False, mask=None):
  mask_dir = None if mask_dir is None else str(tmp_path / mask_dir)
  return inpaint.plan_jobs(
    image=None,
    mask=mask,
    output=None,
    image_dir=str(tmp_path / "photos"),
    mask_dir=mask_dir,
    output_dir=str(tmp_path / output_dir),
    grid=grid,
  )


def save(path, array):
  os.makedirs(os.path.dirname(path), exist_ok=True)
  Image.fromarray(array).save(path)


def test_16_bit_and_coloured_mask_files_follow_the_one_mask_rule(model, tmp_path):
  image, hole = photo(40, 56, seed=5)
  write_png16(tmp_path / "mask16.png", hole.astype(np.uint16) * 65535)
  result = inpaint.inpaint(model, image, str(tmp_path / "mask16.png"))
  changed = (result != image).any(-1)
  assert not changed[~hole].any() and changed[hole].mean() > 0.5  # not read as all hole
  red = np.zeros((40, 56, 3), np.uint8)
  red[hole] = (255, 0, 0)
  save(tmp_path / "red.png", red)
  with pytest.raises(ValueError, match=r"mask '.*red.png' has colour .*grey or binary mask, white = hole"):
    inpaint.inpaint(model, image, str(tmp_path / "red.png"))


def test_outputs_never_overwrite_inputs(tmp_path):
  image, hole = photo(20, 24)
  save(tmp_path / "photos" / "a.png", image)
  save(tmp_path / "photos" / "b.jpg", image)
  save(tmp_path / "photos" / "out" / "b.png", image)  # a photo inside what will be asked as --output_dir
  save(tmp_path / "masks" / "a.png", hole.astype(np.uint8) * 255)
  save(tmp_path / "masks" / "b.png", hole.astype(np.uint8) * 255)
  single = dict(
    image=str(tmp_path / "photos" / "a.png"),
    mask=str(tmp_path / "masks" / "a.png"),
    image_dir=None,
    mask_dir=None,
    output_dir=None,
  )
  for output, flag in (("photos/a.png", "--image"), ("masks/a.png", "--mask"), ("photos/./a.png", "--image")):
    with pytest.raises(ValueError, match=f"--output .* is the {flag} file"):
      inpaint.plan_jobs(output=str(tmp_path / output), **single)
  save(tmp_path / "x_grid.png", hole.astype(np.uint8) * 255)
  with pytest.raises(ValueError, match="is the --mask file"):  # the grid would land on the mask
    inpaint.plan_jobs(**dict(single, mask=str(tmp_path / "x_grid.png")), output=str(tmp_path / "x.png"), grid=True)
  with pytest.raises(ValueError, match="--output_dir .* is the --image_dir"):
    folder_plan(tmp_path, output_dir="photos")
  with pytest.raises(ValueError, match=r"--output_dir .* would overwrite the input '.*photos/out/b.png'"):
    folder_plan(tmp_path, output_dir="photos/out")  # b.jpg's result is photos/out/b.png, a photo
  with pytest.raises(ValueError, match=r"would overwrite the input '.*masks/a.png'"):
    folder_plan(tmp_path, output_dir="masks")


def test_masks_are_never_taken_as_photos(tmp_path):
  image, hole = photo(20, 24)
  for name in ("x.jpg", "y.png"):
    save(tmp_path / "photos" / name, image)
    save(tmp_path / "photos" / (os.path.splitext(name)[0] + "_mask.png"), hole.astype(np.uint8) * 255)
  rel = lambda jobs: [tuple(os.path.relpath(p, tmp_path) if p else None for p in j) for j in jobs]  # noqa: E731
  expected = [("photos/x.jpg", "photos/x_mask.png", "out/x.png"), ("photos/y.png", "photos/y_mask.png", "out/y.png")]
  assert rel(folder_plan(tmp_path, mask_dir="photos")) == expected  # masks beside photos, --mask_dir = --image_dir
  save(tmp_path / "photos" / "common.png", hole.astype(np.uint8) * 255)  # one --mask for all, among the photos
  one = str(tmp_path / "photos" / "common.png")
  assert [j[0] for j in rel(folder_plan(tmp_path, mask_dir=None, mask=one))] == ["photos/x.jpg", "photos/y.png"]
  os.remove(one)
  save(tmp_path / "masks" / "x.png", hole.astype(np.uint8) * 255)
  save(tmp_path / "masks" / "y.png", hole.astype(np.uint8) * 255)
  assert [j[0] for j in rel(folder_plan(tmp_path))] == ["photos/x.jpg", "photos/y.png"]  # x_mask.png lies beside
  os.rename(tmp_path / "masks", tmp_path / "photos" / "masks")  # a mask folder inside the photo folder
  assert [j[0] for j in rel(folder_plan(tmp_path, mask_dir="photos/masks"))] == ["photos/x.jpg", "photos/y.png"]


def test_colliding_output_names_are_refused(tmp_path):
  image, hole = photo(20, 24)
  for name in ("x.jpg", "x.png", "y_grid.png", "y.png"):
    save(tmp_path / "photos" / name, image)
  save(tmp_path / "masks" / "x.png", hole.astype(np.uint8) * 255)
  save(tmp_path / "masks" / "y.png", hole.astype(np.uint8) * 255)
  save(tmp_path / "masks" / "y_grid.png", hole.astype(np.uint8) * 255)
  with pytest.raises(ValueError, match=r"'.*photos/x.jpg' and '.*photos/x.png' would both be written to '.*out/x.png'"):
    folder_plan(tmp_path)
  os.remove(tmp_path / "photos" / "x.jpg")
  assert len(folder_plan(tmp_path)) == 3  # x.png, y_grid.png, y.png
  with pytest.raises(ValueError, match=r"would both be written to '.*out/y_grid.png'"):  # y's grid, y_grid's result
    folder_plan(tmp_path, grid=True)


def test_outputs_that_cannot_be_written_are_found_before_any_work(tmp_path):
  image, hole = photo(20, 24)
  save(tmp_path / "a.png", image)
  save(tmp_path / "m.png", hole.astype(np.uint8) * 255)
  (tmp_path / "taken").mkdir()
  (tmp_path / "file.txt").write_text("not a folder")
  single = dict(
    image=str(tmp_path / "a.png"), mask=str(tmp_path / "m.png"), image_dir=None, mask_dir=None, output_dir=None
  )
  for output, pattern in (
    (tmp_path / "taken", "is a directory"),
    (tmp_path / "file.txt" / "o.png", "is a file"),
    ("/proc/jaxinpaint_test/o.png", "is not writable"),
    (tmp_path / "o.xyz", "'.xyz' is not an image format PIL can write"),
  ):
    with pytest.raises(ValueError, match=pattern):
      inpaint.plan_jobs(output=str(output), **single)
  save(tmp_path / "photos" / "a.png", image)
  save(tmp_path / "masks" / "a.png", hole.astype(np.uint8) * 255)
  with pytest.raises(ValueError, match=r"cannot write --output_dir .*file.txt.* is a file"):
    folder_plan(tmp_path, output_dir="file.txt")
  (tmp_path / "out" / "a.png").mkdir(parents=True)
  with pytest.raises(ValueError, match=r"out/a.png' is a directory"):
    folder_plan(tmp_path)
  env = cli_env()
  cmd = [
    sys.executable,
    "-m",
    "jaxinpaint.inpaint",
    f"--workdir={tmp_path}/no_run",
    f"--image={tmp_path}/a.png",
    f"--mask={tmp_path}/m.png",
    f"--output={tmp_path}/taken",
  ]
  proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
  assert proc.returncode == 1 and proc.stderr.strip().splitlines()[-1].startswith("error: --output "), proc.stderr
  assert "is a directory" in proc.stderr and "Traceback" not in proc.stderr  # before the run was even looked at


def test_bad_files_are_skipped_and_summarised(model, tmp_path):
  image, hole = photo(37, 41)
  mask = hole.astype(np.uint8) * 255
  for name in ("good.png", "no_mask.png", "red_mask.png", "wrong_size.png"):
    save(tmp_path / "photos" / name, image)
  (tmp_path / "photos" / "corrupt.png").write_bytes(b"not a png")
  for name in ("good.png", "corrupt.png", "wrong_size.png"):
    save(tmp_path / "masks" / name, mask if name != "wrong_size.png" else mask[:20])
  save(tmp_path / "masks" / "red_mask.png", np.stack([mask, 0 * mask, 0 * mask], -1))
  jobs = folder_plan(tmp_path)
  report = inpaint.run_files(model, jobs, invert_mask=False, resize_mask=False, mode="auto", grid=False, progress=False)
  assert report.written == [str(tmp_path / "out" / "good.png")]
  reasons = {os.path.basename(path): reason for path, reason in report.skipped}
  assert sorted(reasons) == ["corrupt.png", "no_mask.png", "red_mask.png", "wrong_size.png"]
  assert "cannot read image" in reasons["corrupt.png"] and "no mask" in reasons["no_mask.png"]
  assert "has colour" in reasons["red_mask.png"] and "mask is 20x41" in reasons["wrong_size.png"]
  assert sorted(os.listdir(tmp_path / "out")) == ["good.png"]  # nothing half-written or temporary left
  env = cli_env()
  cmd = [
    sys.executable,
    "-m",
    "jaxinpaint.inpaint",
    f"--workdir={model.workdir}",
    f"--image_dir={tmp_path}/photos",
    f"--mask_dir={tmp_path}/masks",
    f"--output_dir={tmp_path}/cli",
  ]
  proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
  assert proc.returncode == 1, proc.stderr[-3000:]
  assert "inpainted 1 of 5 images, wrote 1 files" in proc.stdout
  lines = proc.stderr.strip().splitlines()
  assert lines[-1] == "error: skipped 4 of 5 images (reasons above)"
  assert sum(line.startswith("skipped ") for line in lines) == 4 and os.path.isfile(tmp_path / "cli" / "good.png")
