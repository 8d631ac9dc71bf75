"""FID and LPIPS plumbing with random weights (jaxinpaint.eval.perceptual, models/inception.py, scripts/): the
Frechet distance against the sqrtm formula, LPIPS against an independent evaluation of its equation, the
Inception network's size against torchvision's, the converters' key and layout mapping (torch cross-correlation
semantics) and their command lines, and the harness columns they add."""

import pathlib
import sys

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.linalg
from flax import traverse_util

from jaxinpaint import runs, sharding
from jaxinpaint.data import sources
from jaxinpaint.eval import harness, mask_sets, tables
from jaxinpaint.eval import perceptual as pm
from helpers import load_config, load_script  # tests/helpers.py


convert_inception, convert_lpips = load_script("convert_inception"), load_script("convert_lpips")
VGG16_TORCH_INDEX = convert_lpips._torch_npz.VGG16_TORCH_INDEX


def random_psd(rng, dim):
  a = rng.standard_normal((dim, dim + 3))
  return a @ a.T / dim


def test_frechet_distance_matches_the_sqrtm_formula():
  rng = np.random.default_rng(0)
  mu1, mu2 = rng.standard_normal(12), rng.standard_normal(12)
  s1, s2 = random_psd(rng, 12), random_psd(rng, 12)
  covmean = scipy.linalg.sqrtm(s1 @ s2).real  # pytorch-fid's formula
  expected = np.sum((mu1 - mu2) ** 2) + np.trace(s1) + np.trace(s2) - 2 * np.trace(covmean)
  assert pm.frechet_distance(mu1, s1, mu2, s2) == pytest.approx(expected, rel=1e-8)
  assert pm.frechet_distance(mu1, s1, mu1, s1) == pytest.approx(0.0, abs=1e-8)
  assert pm.frechet_distance(mu1, s1, mu1 + 2.0, s1) == pytest.approx(4.0 * 12, rel=1e-8)


@pytest.mark.parametrize("n", [4, 23])  # features kept (n <= dim) and running sums (n > dim)
def test_gaussian_stats_equal_numpy_mean_and_cov(n):
  rng = np.random.default_rng(n)
  feats = rng.standard_normal((n, 6)) * 3 + 1
  stats = pm.GaussianStats(6)
  for chunk in np.array_split(feats, 4):
    stats.add(chunk)
  assert (stats.centred() is None) == (n > 6)
  mu, cov = stats.mean_cov()
  np.testing.assert_allclose(mu, feats.mean(0), rtol=1e-12)
  np.testing.assert_allclose(cov, np.cov(feats, rowvar=False), rtol=1e-10)
  with pytest.raises(ValueError, match="at least 2 images"):
    pm.GaussianStats(6).mean_cov()


def test_low_rank_fid_equals_the_full_formula():
  rng = np.random.default_rng(4)
  real, fake = pm.GaussianStats(10), pm.GaussianStats(10)
  real.add(rng.standard_normal((5, 10)))
  fake.add(rng.standard_normal((7, 10)) * 2 + 0.5)
  expected = pm.frechet_distance(*real.mean_cov(), *fake.mean_cov())
  assert pm.fid_from_stats(real, fake) == pytest.approx(expected, rel=1e-8)
  assert pm.fid_from_stats(real, real) == pytest.approx(0.0, abs=1e-9)


LPIPS_BLOCKS = (  # VGG16's convs per block; LPIPS taps the ReLU after each block's last conv
  ("conv1_1", "conv1_2"),
  ("conv2_1", "conv2_2"),
  ("conv3_1", "conv3_2", "conv3_3"),
  ("conv4_1", "conv4_2", "conv4_3"),
  ("conv5_1", "conv5_2", "conv5_3"),
)


def lpips_reference(params, x, y):
  """Eq. 1 straight from the parameters: sum_l mean_hw sum_c w_lc (n(f_l(x)) - n(f_l(y)))^2, f_l = relu1_2 ..
  relu5_3 of torchvision's VGG16 (lax convolutions at full precision, numpy ReLU and floor 2x2 max-pools)."""

  def taps(image):
    h, out = (np.asarray(image, np.float64) - np.array(pm.LPIPS_SHIFT)) / np.array(pm.LPIPS_SCALE), []
    for i, block in enumerate(LPIPS_BLOCKS):
      if i:
        b, hh, ww, c = h.shape
        h = h[:, : hh // 2 * 2, : ww // 2 * 2].reshape(b, hh // 2, 2, ww // 2, 2, c).max(axis=(2, 4))
      for name in block:
        h = jax.lax.conv_general_dilated(
          h.astype(np.float32),
          params[name]["kernel"],
          (1, 1),
          ((1, 1), (1, 1)),
          dimension_numbers=("NHWC", "HWIO", "NHWC"),
          precision=jax.lax.Precision.HIGHEST,
        )
        h = np.maximum(np.asarray(h, np.float64) + params[name]["bias"], 0)
      out.append(h / (np.sqrt((h * h).sum(-1, keepdims=True) + 1e-10) + 1e-10))
    return out

  return sum(
    ((fx - fy) ** 2 * params[f"lin{l}"]["kernel"][0, 0, :, 0]).sum(-1).mean(axis=(1, 2))
    for l, (fx, fy) in enumerate(zip(taps(x), taps(y)))
  )


def test_lpips_follows_its_equation_with_random_weights():
  variables = pm.random_variables("lpips", seed=0)
  # The VGG16 backbone shares Lpips's scope: the flat layout the converter writes and old npz files hold.
  names = [name for block in LPIPS_BLOCKS for name in block] + [f"lin{l}" for l in range(5)]
  assert sorted(variables["params"]) == sorted(names)
  rng = np.random.default_rng(2)
  x = jnp.asarray(rng.uniform(-1, 1, (2, 24, 20, 3)), jnp.float32)
  y = jnp.asarray(rng.uniform(-1, 1, (2, 24, 20, 3)), jnp.float32)
  lpips = jax.jit(pm.Lpips().apply)
  d = np.asarray(lpips(variables, x, y))
  assert d.shape == (2,) and (d > 0).all()
  np.testing.assert_allclose(lpips(variables, y, x), d, rtol=1e-5)
  np.testing.assert_allclose(lpips(variables, x, x), 0.0, atol=1e-7)
  # All five layers (24 x 20 -> relu5_3 at 1 x 1, odd sizes floored by the pools) against the equation.
  params = jax.tree.map(np.asarray, variables["params"])
  np.testing.assert_allclose(d, lpips_reference(params, x, y), rtol=1e-4)
  # Only layer 1's weights on: the relu1_2 term alone, part of the total.
  for l in range(1, 5):
    params[f"lin{l}"] = {"kernel": np.zeros_like(params[f"lin{l}"]["kernel"])}
  single = np.asarray(lpips({"params": params}, x, y))
  np.testing.assert_allclose(single, lpips_reference(params, x, y), rtol=1e-4)
  assert (single < d).all()


def test_inception_has_torchvisions_layers_and_sizes():
  flat = traverse_util.flatten_dict(pm.abstract_variables("inception"), sep="/")
  params = sum(int(np.prod(v.shape)) for k, v in flat.items() if k.startswith("params/"))
  assert params == 21_785_568  # torchvision inception_v3's 27,161,264 less its classifier and aux head
  # a few torch keys and their OIHW shapes, in HWIO here
  assert flat["params/Conv2d_1a_3x3/conv/kernel"].shape == (3, 3, 3, 32)
  assert flat["params/Mixed_6e/branch7x7dbl_5/conv/kernel"].shape == (1, 7, 192, 192)
  assert flat["params/Mixed_7c/branch3x3dbl_3b/conv/kernel"].shape == (3, 1, 384, 384)
  assert flat["batch_stats/Mixed_5b/branch_pool/bn/var"].shape == (32,)


def torch_style(flat):
  """Flat npz arrays -> the state dict torch would hold (OIHW kernels, bn weight/running_*), plus the extras a
  real pytorch-fid file has."""
  names = {
    "conv/kernel": "conv.weight",
    "bn/scale": "bn.weight",
    "bn/bias": "bn.bias",
    "bn/mean": "bn.running_mean",
    "bn/var": "bn.running_var",
  }
  out = {}
  for key, value in flat.items():
    module, leaf = key.split("/", 1)[1].rsplit("/", 2)[0], "/".join(key.rsplit("/", 2)[1:])
    out[f"{module.replace('/', '.')}.{names[leaf]}"] = value.transpose(3, 2, 0, 1) if value.ndim == 4 else value
    if leaf == "bn/var":
      out[f"{module.replace('/', '.')}.bn.num_batches_tracked"] = np.asarray(7)
  out["fc.weight"], out["fc.bias"] = np.zeros((1008, 2048), np.float32), np.zeros(1008, np.float32)
  return out


def torch_lpips_state_dicts(rng):
  """Random torchvision vgg16 and lpips vgg.pth state dicts, OIHW as torch holds them."""
  vgg = {}
  for name, index in VGG16_TORCH_INDEX.items():
    shape = traverse_util.flatten_dict(pm.abstract_variables("lpips"), sep="/")[f"params/{name}/kernel"].shape
    vgg[f"features.{index}.weight"] = rng.standard_normal((shape[3], shape[2], 3, 3)).astype(np.float32)
    vgg[f"features.{index}.bias"] = rng.standard_normal(shape[3]).astype(np.float32)
  lins = {
    f"lin{i}.model.1.weight": np.abs(rng.standard_normal((1, c, 1, 1))).astype(np.float32)
    for i, c in enumerate((64, 128, 256, 512, 512))
  }
  return vgg, lins


def test_converters_map_torch_state_dicts(tmp_path):
  rng = np.random.default_rng(3)
  flat = {
    k: rng.standard_normal(v.shape).astype(np.float32)
    for k, v in traverse_util.flatten_dict(pm.abstract_variables("inception"), sep="/").items()
  }
  converted = convert_inception.inception_from_torch(torch_style(flat))
  assert converted.keys() == flat.keys()
  for key in flat:
    np.testing.assert_array_equal(converted[key], flat[key])
  np.savez(tmp_path / "inception.npz", **converted)
  pm.load_variables("inception", tmp_path / "inception.npz")
  with pytest.raises(ValueError, match="unexpected key 'Mixed_5b.branch1x1.weight'"):
    convert_inception.inception_from_torch({"Mixed_5b.branch1x1.weight": np.zeros(1)})

  # LPIPS: torchvision features.{i} OIHW -> HWIO, applied as torch's cross-correlation
  vgg, lins = torch_lpips_state_dicts(rng)
  arrays = convert_lpips.lpips_from_torch(vgg, lins)
  # a full lpips checkpoint names the same convs net.slice{k}.{i}
  in_slices = {f"net.slice{1 + int(k.split('.')[1]) // 5}.{k.split('.', 1)[1]}": v for k, v in vgg.items()}
  assert {k: v.tobytes() for k, v in convert_lpips.lpips_from_torch(in_slices, lins).items()} == {
    k: v.tobytes() for k, v in arrays.items()
  }
  np.savez(tmp_path / "lpips.npz", **arrays)
  variables = pm.load_variables("lpips", tmp_path / "lpips.npz")
  x = rng.standard_normal((1, 6, 7, 3)).astype(np.float32)
  y = nn.Conv(64, (3, 3), padding=((1, 1), (1, 1))).apply({"params": variables["params"]["conv1_1"]}, x)
  w, b = vgg["features.0.weight"], vgg["features.0.bias"]
  expected = b + np.einsum("oikl,kli->o", w, x[0, 2:5, 3:6, :])  # out[o] at pixel (3, 4), torch semantics
  np.testing.assert_allclose(np.asarray(y)[0, 3, 4], expected, rtol=1e-4, atol=1e-4)
  np.testing.assert_array_equal(
    variables["params"]["lin2"]["kernel"][0, 0, :, 0], lins["lin2.model.1.weight"][0, :, 0, 0]
  )
  with pytest.raises(ValueError, match="missing 'lin4.model.1.weight'"):
    convert_lpips.lpips_from_torch(vgg, {k: v for k, v in lins.items() if "lin4" not in k})


def test_converter_command_lines_write_whole_files_or_one_error_line(tmp_path, monkeypatch):
  vgg, lins = torch_lpips_state_dicts(np.random.default_rng(5))
  paths = {"vgg": str(tmp_path / "vgg16.pth"), "lin": str(tmp_path / "vgg.pth")}
  held = {paths["vgg"]: vgg, paths["lin"]: lins}
  for path in held:
    pathlib.Path(path).write_bytes(b"stand-in")
  args = ["--vgg", paths["vgg"], "--lin", paths["lin"], "--output"]
  # Without torch a .pth asks for it, in one error line.
  monkeypatch.setitem(sys.modules, "torch", None)
  with pytest.raises(SystemExit, match=r"^error: reading .*vgg16.pth needs PyTorch: pip install torch"):
    convert_lpips.main(args + [str(tmp_path / "never.npz")])
  # The state dicts torch would read, without torch:
  monkeypatch.setattr(convert_lpips._torch_npz, "read_state_dict", lambda path, hint="": held[path])
  convert_lpips.main(args + [str(tmp_path / "lpips_vgg")])  # written under exactly this name, no .npz appended
  variables = pm.load_variables("lpips", tmp_path / "lpips_vgg")
  np.testing.assert_array_equal(variables["params"]["conv5_3"]["bias"], vgg["features.28.bias"])
  held[paths["lin"]] = {k: v for k, v in lins.items() if "lin4" not in k}
  with pytest.raises(SystemExit, match=r"^error: not an lpips vgg.pth: missing 'lin4.model.1.weight'"):
    convert_lpips.main(args + [str(tmp_path / "second.npz")])
  with pytest.raises(SystemExit, match=r"^error: .*missing.pth does not exist"):
    convert_lpips.main(["--vgg", str(tmp_path / "missing.pth"), "--lin", paths["lin"], "--output", "x.npz"])
  # Inception: a misshapen array is caught before anything is written.
  shapes = traverse_util.flatten_dict(pm.abstract_variables("inception"), sep="/")
  flat = {k: np.zeros(v.shape, np.float32) for k, v in shapes.items()}
  flat["params/Mixed_7c/branch_pool/conv/kernel"] = np.zeros((1, 1, 2048, 100), np.float32)
  held[str(tmp_path / "vgg16.pth")] = torch_style(flat)
  with pytest.raises(SystemExit, match=r"^error: .*vgg16.pth does not fit the network \(1 problems\): .*branch_pool"):
    convert_inception.main(["--input", paths["vgg"], "--output", str(tmp_path / "inception.npz")])
  assert sorted(p.name for p in tmp_path.iterdir()) == ["lpips_vgg", "vgg.pth", "vgg16.pth"]  # no partial files


def test_weights_files_fail_in_one_line(tmp_path):
  with pytest.raises(FileNotFoundError, match="make it with scripts/convert_lpips.py"):
    pm.load_variables("lpips", tmp_path / "none.npz")
  np.savez(tmp_path / "bad.npz", **{"params/conv1_1/kernel": np.zeros((3, 3, 3, 8))})
  with pytest.raises(
    ValueError,
    match=r"does not fit the network \(31 problems\): .*conv1_1/kernel has shape "
    r"\(3, 3, 3, 8\)",
  ):
    pm.load_variables("lpips", tmp_path / "bad.npz")
  with pytest.raises(FileNotFoundError, match="inception weights file"):
    pm.Perceptual(inception=str(tmp_path / "missing.npz"))
  notes = pm.Perceptual().notes
  assert len(notes) == 2 and notes[0].startswith("FID left out") and notes[1].startswith("LPIPS left out")


def test_harness_adds_lpips_and_fid_columns_with_random_weights(tmp_path):
  config = runs.with_defaults(load_config())
  config.eval.masks, config.eval.examples, config.eval.batch_size = "centre", 4, 4
  eval_set = mask_sets.EvalSet.from_config(config, 1)
  mesh = sharding.make_mesh(jax.devices()[:1])  # one device: compiling Inception for 8 is what costs here
  source = sources.make_source(config.data, "eval")
  truth = [b["image"] for b in eval_set.batches("centre", source)]
  perceptual = pm.Perceptual(
    inception=pm.random_variables("inception", 1), lpips=pm.random_variables("lpips", 1), fid_size=75
  )  # 75 px: the smallest input Inception takes; 299 for real numbers
  methods = {
    "oracle": harness.Method(lambda image, valid: truth[0], on_host=True),
    **harness.baseline_methods(["mean_fill"]),
  }
  results = harness.evaluate_methods(methods, eval_set, mesh=mesh, source=source, perceptual=perceptual, progress=False)
  assert results.value("oracle", "centre", "lpips") == pytest.approx(0.0, abs=1e-6)
  assert results.value("oracle", "centre", "fid") < 1e-4 * results.value("Mean colour fill", "centre", "fid")
  assert results.value("Mean colour fill", "centre", "lpips") > 0
  table = tables.markdown(results)
  assert "Centre LPIPS ↓" in table and "Centre FID ↓" in table and "left out" not in table
