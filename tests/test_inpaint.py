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

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from test_evaluate import ROOT, make_run  # noqa: E402


@pytest.fixture(scope="module")
def model(tmp_path_factory):
  workdir = str(tmp_path_factory.mktemp("run"))
  make_run(workdir, seed=1)
  return inpaint.load(workdir)


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
  jobs = inpaint.plan_jobs(image=None, mask=None, output=None, image_dir=str(tmp_path / "photos"),
                           mask_dir=str(tmp_path / "masks"), output_dir=str(tmp_path / "out"))
  assert [os.path.relpath(j[2], tmp_path / "out") for j in jobs] == ["a.png", "sub/b.png"]
  written = inpaint.run_files(model, jobs, invert_mask=False, resize_mask=False, mode="auto", grid=True,
                              progress=False)
  assert len(written) == 4
  for name, (h, w) in sizes.items():
    out = np.asarray(Image.open(tmp_path / "out" / (os.path.splitext(name)[0] + ".png")))
    source = inpaint.read_image(str(tmp_path / "photos" / name))
    hole = inpaint.to_hole(inpaint.read_mask(jobs[list(sizes).index(name)][1]))
    assert out.shape == (h, w, 3)
    np.testing.assert_array_equal(out[~hole], source[~hole])
    grid = np.asarray(Image.open(tmp_path / "out" / (os.path.splitext(name)[0] + "_grid.png")))
    assert grid.shape == (h, 3 * w + 8, 3)
  os.remove(tmp_path / "masks" / "sub" / "b_mask.png")
  with pytest.raises(ValueError, match=r"no mask in .* for 1 of 2 images \(e.g. 'sub/b.png'"):
    inpaint.plan_jobs(image=None, mask=None, output=None, image_dir=str(tmp_path / "photos"),
                      mask_dir=str(tmp_path / "masks"), output_dir=str(tmp_path / "out"))


def test_cli(model, tmp_path):
  image, hole = photo(45, 61)
  Image.fromarray(image).save(tmp_path / "photo.png")
  Image.fromarray(hole.astype(np.uint8) * 255).save(tmp_path / "mask.png")
  env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=8", JAX_PLATFORMS="cpu")
  env.pop("JAXINPAINT_TRACEBACK", None)
  cmd = [sys.executable, "-m", "jaxinpaint.inpaint", f"--workdir={model.workdir}", f"--image={tmp_path}/photo.png",
         f"--mask={tmp_path}/mask.png", f"--output={tmp_path}/out.png", "--grid"]
  proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
  assert proc.returncode == 0, proc.stderr[-3000:]
  out = np.asarray(Image.open(tmp_path / "out.png"))
  np.testing.assert_array_equal(out[~hole], image[~hole])
  assert os.path.isfile(tmp_path / "out_grid.png")
