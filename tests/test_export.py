"""Export: the StableHLO artifact and the TF SavedModel, each reloaded in a fresh process where jaxinpaint and
flax (and, for TF, JAX) cannot be imported, fill a real photo as `jaxinpaint.inpaint` does to within 1 grey level
for two batch sizes and two image sizes, with every known pixel byte-identical; symbolic batch and H/W (multiples
of the stride); one-line errors. Full round trip: the WConv U-Net (through the CLI) and DeepFill v2; the other
families (PConv, plain U-Net, DeepFill v1) are exported and deserialised in-process, the same comparison on one
batch."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from jaxinpaint import export, inpaint, runs
from jaxinpaint.data import masks

from helpers import ROOT, load_config, make_run, save_run  # tests/helpers.py

CASES = ((1, 32, 32), (3, 64, 96))  # (batch, H, W): multiples of the tiny models' training size 32
ROUND_TRIP = ("wconv", "gated")
IN_PROCESS = ("pconv", "plain", "deepfill_v1")
STRIDES = {"wconv": 32, "pconv": 32, "plain": 32, "gated": 8, "deepfill_v1": 8}  # 2**depth (tiny: 5); DeepFill 8

# Run in a fresh interpreter: jaxinpaint and flax (and, for TF, JAX itself) cannot be imported there at all.
JAX_RELOAD = """
import sys
sys.modules.update(jaxinpaint=None, flax=None)
import numpy as np, jax
cases, out = np.load(sys.argv[1]), {}
for i, folder in enumerate(sys.argv[3:]):
  exported = jax.export.deserialize(bytearray(open(folder + '/fill.stablehlo', 'rb').read()))
  for key in [k for k in cases.files if k.startswith('image')]:
    out[f'{i}_{key}'] = np.asarray(exported.call(cases[key], cases[key.replace('image', 'hole')]))
leaked = sorted(m for m in sys.modules if m.split('.')[0] in ('jaxinpaint', 'flax') and sys.modules[m])
assert not leaked, leaked
np.savez(sys.argv[2], **out)
"""
TF_RELOAD = """
import sys
sys.modules.update(jaxinpaint=None, flax=None, jax=None)  # TF imports jax when it is installed; it copes without
import numpy as np, tensorflow as tf
cases, out = np.load(sys.argv[1]), {}
for i, folder in enumerate(sys.argv[3:]):
  serve = tf.saved_model.load(folder + '/saved_model').signatures['serving_default']
  for key in [k for k in cases.files if k.startswith('image')]:
    out[f'{i}_{key}'] = serve(image=tf.constant(cases[key]), hole=tf.constant(cases[key.replace('image', 'hole')]))[
        'filled'].numpy()
leaked = sorted(m for m in sys.modules if m.split('.')[0] in ('jaxinpaint', 'jax', 'flax') and sys.modules[m])
assert not leaked, leaked
np.savez(sys.argv[2], **out)
"""


def astronaut(batch, h, w, seed=0):
  """uint8[B, H, W, 3] crops of a real photo and uint8[B, H, W] holes (0/255: free-form strokes + a box)."""
  from skimage import data

  photo = data.astronaut()
  rng = np.random.default_rng(seed)
  images, holes = [], []
  for i in range(batch):
    top, left = rng.integers(0, 200, 2)
    crop = photo[top : top + 300, left : left + 300]
    images.append(np.asarray(Image.fromarray(crop).resize((w, h), Image.BICUBIC)))
    hole = masks.free_form(rng, h, w) < 0.5
    hole[h // 4 : h // 2, w // 3 : w // 2] = True
    holes.append(hole.astype(np.uint8) * 255)
  return np.stack(images), np.stack(holes)


def expected(model, images, holes):
  return np.stack([inpaint.inpaint(model, im, ho > 0, mode="pad") for im, ho in zip(images, holes)])


def check_fill(result, images, holes, reference, what):
  assert result.shape == images.shape and result.dtype == np.uint8, (what, result.shape, result.dtype)
  known = holes == 0
  np.testing.assert_array_equal(result[known], images[known], err_msg=f"{what}: a known pixel changed")
  diff = np.abs(result.astype(int) - reference).max()
  assert diff <= 1, f"{what}: differs from jaxinpaint.inpaint by up to {diff} grey levels"
  assert (result[~known] != images[~known]).mean() > 0.5, f"{what}: the hole was not filled"


@pytest.fixture(scope="module")
def round_trip(tmp_path_factory):
  """Exports the round-trip families (wconv through the CLI) and writes the cases and expected outputs."""
  root = tmp_path_factory.mktemp("export")
  folders, models = [], {}
  for name in ROUND_TRIP:
    workdir, out = str(root / f"run_{name}"), str(root / f"export_{name}")
    make_run(workdir, name=name, seed=3)
    models[name] = inpaint.load(workdir)
    if name == "wconv":
      cli = subprocess.run(
        [sys.executable, "-m", "jaxinpaint.export", f"--workdir={workdir}", f"--out={out}"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
      )
      assert cli.returncode == 0, cli.stderr[-3000:]
      assert f"exported unet/weighted (step 20) to {out}" in cli.stdout
    else:
      export.export_run(models[name], out)
    folders.append(out)
  cases = {}
  for batch, h, w in CASES:
    cases[f"image_{batch}x{h}x{w}"], cases[f"hole_{batch}x{h}x{w}"] = astronaut(batch, h, w, seed=h + batch)
  np.savez(root / "cases.npz", **cases)
  references = {
    f"{i}_{key}": expected(models[name], cases[key], cases[key.replace("image", "hole")])
    for i, name in enumerate(ROUND_TRIP)
    for key in cases
    if key.startswith("image")
  }
  return dict(root=root, folders=folders, cases=cases, references=references)


def reload_in_fresh_process(round_trip, script, tag):
  out = round_trip["root"] / f"{tag}.npz"
  env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
  proc = subprocess.run(
    [sys.executable, "-c", script, str(round_trip["root"] / "cases.npz"), str(out), *round_trip["folders"]],
    capture_output=True,
    text=True,
    timeout=600,
    env=env,
    cwd="/",
  )
  assert proc.returncode == 0, proc.stderr[-3000:]
  return np.load(out)


@pytest.mark.parametrize("fmt", ["stablehlo", "saved_model"])
def test_artifact_reloaded_without_jaxinpaint_matches_inpaint(round_trip, fmt):
  results = reload_in_fresh_process(round_trip, JAX_RELOAD if fmt == "stablehlo" else TF_RELOAD, fmt)
  cases = round_trip["cases"]
  assert sorted(results.files) == sorted(round_trip["references"])  # both families, both batch sizes and sizes
  for key, reference in round_trip["references"].items():
    image_key = key.split("_", 1)[1]
    family = ROUND_TRIP[int(key.split("_")[0])]
    check_fill(
      results[key],
      cases[image_key],
      cases[image_key.replace("image", "hole")],
      reference,
      f"{fmt} {family} {image_key}",
    )


def test_manifest_names_family_shapes_and_stride(round_trip):
  for name, folder in zip(ROUND_TRIP, round_trip["folders"]):
    info = json.load(open(os.path.join(folder, export.MANIFEST_FILE)))
    s = STRIDES[name]
    assert info["stride"] == s and info["symbolic_height_width"] and info["step"] == 20
    assert info["config"] == f"configs/{name}.py" and info["training_size"] == 32
    assert info["family"] == {"wconv": "unet/weighted", "gated": "deepfill/deepfill_v2"}[name]
    assert info["inputs"]["image"]["shape"] == f"b, {s}*h, {s}*w, 3" == info["output"]["shape"]
    assert info["inputs"]["hole"] == {
      "shape": f"b, {s}*h, {s}*w",
      "dtype": "uint8",
      "meaning": "nonzero = fill this pixel",
    }
    assert sorted(os.listdir(folder)) == ["fill.stablehlo", "manifest.json", "saved_model"]


def test_stablehlo_is_symbolic_and_rejects_sizes_off_the_stride(round_trip):
  import jax

  folder = round_trip["folders"][ROUND_TRIP.index("gated")]
  exported = jax.export.deserialize(bytearray(open(os.path.join(folder, export.STABLEHLO_FILE), "rb").read()))
  image_shape = exported.in_avals[0].shape
  assert [str(d) for d in image_shape] == ["b", "8*h", "8*w", "3"]
  images, holes = astronaut(2, 40, 56)  # multiples of 8, not of the training size: the artifact takes them
  assert exported.call(images, holes).shape == (2, 40, 56, 3)
  with pytest.raises(ValueError, match="divisible by 8|8\\*h"):
    exported.call(images[:, :36], holes[:, :36])


@pytest.mark.parametrize("name", IN_PROCESS)
def test_other_families_export_and_deserialise(name, tmp_path):
  """The cheaper check: export (no SavedModel), deserialise and call in this process; same comparison, one batch."""
  import jax

  workdir, out = str(tmp_path / "run"), str(tmp_path / "export")
  make_run(workdir, name=name, seed=4)
  model = inpaint.load(workdir)
  info = export.export_run(model, out, saved_model=False)
  assert info["stride"] == STRIDES[name] and sorted(os.listdir(out)) == ["fill.stablehlo", "manifest.json"]
  if name == "plain":  # exporting again replaces the earlier export whole
    (tmp_path / "export" / "stale.txt").write_text("from before")
    export.export_run(model, out, saved_model=False)
    assert sorted(os.listdir(out)) == ["fill.stablehlo", "manifest.json"]
    assert not [p for p in os.listdir(tmp_path) if p.endswith((".partial", ".old"))]
  exported = jax.export.deserialize(bytearray(open(os.path.join(out, export.STABLEHLO_FILE), "rb").read()))
  images, holes = astronaut(2, 64, 32, seed=5)
  check_fill(np.asarray(exported.call(images, holes)), images, holes, expected(model, images, holes), name)


def test_the_diffusion_fill_exports_fixed_sizes_that_match_inpaint(tmp_path):
  """The diffusion fill starts from the biharmonic fill, which starts from push-pull: with a symbolic H, W the
  pyramid's evenness test cannot be decided, and it used to end the pyramid silently (the stride-1 export then
  differed from inpaint by 126 grey levels). Now push-pull refuses symbolic sizes and the export is fixed-size."""
  import jax

  workdir = str(tmp_path / "run")
  make_run(workdir, name="diffusion", seed=7)
  model = inpaint.load(workdir)
  for folder, size, shape in (("default", None, (32, 32)), ("wide", (64, 96), (64, 96))):
    info = export.export_run(model, str(tmp_path / folder), saved_model=False, size=size)
    assert info["family"] == "inpainting/diffusion" and info["config"] == "configs/diffusion.py"
    assert info["stride"] is None, info["stride"]
    exported = jax.export.deserialize(bytearray(open(tmp_path / folder / export.STABLEHLO_FILE, "rb").read()))
    images, holes = astronaut(2, *shape, seed=8)
    check_fill(np.asarray(exported.call(images, holes)), images, holes, expected(model, images, holes), folder)


def test_a_model_that_cannot_be_symbolic_exports_fixed_sizes(tmp_path):
  """The demo U-Net's push-pull fill builds a pyramid as deep as H and W stay even, so no symbolic H, W: the export
  falls back to the training size, and `size` exports another fixed size that matches inpaint there."""
  import jax

  config = runs.with_defaults(load_config("wconv"))
  config.model.residual_fill = True
  workdir = str(tmp_path / "run")
  save_run(config, workdir)
  model = inpaint.load(workdir)
  info = export.export_run(model, str(tmp_path / "training_size"), saved_model=False)
  assert info["stride"] is None and not info["symbolic_height_width"]
  assert info["inputs"]["image"]["shape"] == "b, 32, 32, 3" and "other sizes need another export" in info["shape_note"]
  info = export.export_run(model, str(tmp_path / "wide"), size=(64, 96))
  assert info["inputs"]["hole"]["shape"] == "b, 64, 96"
  data = open(tmp_path / "wide" / export.STABLEHLO_FILE, "rb").read()
  exported = jax.export.deserialize(bytearray(data))
  images, holes = astronaut(2, 64, 96, seed=6)
  reference = expected(model, images, holes)
  check_fill(np.asarray(exported.call(images, holes)), images, holes, reference, "fixed StableHLO")
  import tensorflow as tf  # the fixed-size SavedModel, checked in this process

  serve = tf.saved_model.load(str(tmp_path / "wide" / export.SAVED_MODEL_DIR)).signatures[export.SIGNATURE]
  assert serve.structured_input_signature[1]["image"].shape.as_list() == [None, 64, 96, 3]
  filled = serve(image=tf.constant(images), hole=tf.constant(holes))[export.OUTPUT_KEY].numpy()
  check_fill(filled, images, holes, reference, "fixed SavedModel")
  with pytest.raises(ValueError):
    exported.call(images[:, :32, :32], holes[:, :32, :32])
  with pytest.raises(ValueError, match="cannot take 40 x 40"):
    export.export_run(model, str(tmp_path / "odd"), saved_model=False, size=(40, 40))
  assert export.parse_size("512x768") == (512, 768)
  with pytest.raises(ValueError, match="--size must be HEIGHTxWIDTH in pixels"):
    export.parse_size("512")


def test_errors_are_one_line_and_touch_nothing(round_trip, tmp_path):
  proc = subprocess.run(
    [sys.executable, "-m", "jaxinpaint.export", f"--workdir={tmp_path / 'nope'}", f"--out={tmp_path / 'o'}"],
    cwd=ROOT,
    capture_output=True,
    text=True,
    timeout=300,
  )
  last = proc.stderr.strip().splitlines()[-1]
  assert proc.returncode == 1 and last.startswith("error: ") and "does not exist" in last, proc.stderr[-2000:]
  assert not (tmp_path / "o").exists()
  taken = tmp_path / "taken"
  taken.mkdir()
  (taken / "notes.txt").write_text("mine")
  with pytest.raises(ValueError, match="is a folder that holds other files, not an earlier export"):
    export.export_run(str(tmp_path), str(taken))
  assert (taken / "notes.txt").read_text() == "mine" and sorted(os.listdir(taken)) == ["notes.txt"]
  with pytest.raises(ValueError, match="platforms must name some of cpu, cuda, rocm, tpu; got 'gpu'"):
    export.export_run(str(tmp_path), str(tmp_path / "o"), platforms=["gpu"])
