"""FID and LPIPS plumbing with random weights: the Frechet distance against the sqrtm formula, LPIPS against an
independent evaluation of its equation, the Inception network's size against torchvision's, the converters'
key and layout mapping (torch cross-correlation semantics), and the harness columns they add."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.linalg
from flax import traverse_util

from jaxinpaint import evaluate, sharding
from jaxinpaint import perceptual_metrics as pm
from jaxinpaint.data import sources
from helpers import load_config  # tests/helpers.py


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


def test_lpips_follows_its_equation_with_random_weights():
  variables = pm.random_variables("lpips", seed=0)
  rng = np.random.default_rng(2)
  x = jnp.asarray(rng.uniform(-1, 1, (2, 24, 20, 3)), jnp.float32)
  y = jnp.asarray(rng.uniform(-1, 1, (2, 24, 20, 3)), jnp.float32)
  lpips = jax.jit(pm.LpipsVGG().apply)
  d = np.asarray(lpips(variables, x, y))
  assert d.shape == (2,) and (d > 0).all()
  np.testing.assert_allclose(lpips(variables, y, x), d, rtol=1e-5)
  np.testing.assert_allclose(lpips(variables, x, x), 0.0, atol=1e-7)
  # Only layer 1's weights on: LPIPS = mean_hw sum_c w_c (n(relu1_2(x)) - n(relu1_2(y)))^2, evaluated here with
  # lax convolutions straight from the parameters.
  params = jax.tree.map(np.asarray, variables["params"])
  for i in range(1, 5):
    params[f"lin{i}"]["kernel"] = np.zeros_like(params[f"lin{i}"]["kernel"])
  single = float(lpips({"params": params}, x[:1], y[:1])[0])

  def relu1_2(image):
    h = (np.asarray(image) - np.array(pm.LPIPS_SHIFT)) / np.array(pm.LPIPS_SCALE)
    for name in ("conv1_1", "conv1_2"):
      h = jax.lax.conv_general_dilated(
        h,
        params[name]["kernel"],
        (1, 1),
        ((1, 1), (1, 1)),
        dimension_numbers=("NHWC", "HWIO", "NHWC"),
        precision=jax.lax.Precision.HIGHEST,
      )
      h = np.maximum(np.asarray(h) + params[name]["bias"], 0)
    return h / (np.sqrt((h * h).sum(-1, keepdims=True) + 1e-10) + 1e-10)

  w = params["lin0"]["kernel"][0, 0, :, 0]
  expected = ((relu1_2(x[:1]) - relu1_2(y[:1])) ** 2 * w).sum(-1).mean()
  assert single == pytest.approx(expected, rel=1e-4)


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


def test_converters_map_torch_state_dicts(tmp_path):
  rng = np.random.default_rng(3)
  flat = {
    k: rng.standard_normal(v.shape).astype(np.float32)
    for k, v in traverse_util.flatten_dict(pm.abstract_variables("inception"), sep="/").items()
  }
  converted = pm.inception_from_torch(torch_style(flat))
  assert converted.keys() == flat.keys()
  for key in flat:
    np.testing.assert_array_equal(converted[key], flat[key])
  np.savez(tmp_path / "inception.npz", **converted)
  pm.load_variables("inception", tmp_path / "inception.npz")
  with pytest.raises(ValueError, match="unexpected key 'Mixed_5b.branch1x1.weight'"):
    pm.inception_from_torch({"Mixed_5b.branch1x1.weight": np.zeros(1)})

  # LPIPS: torchvision features.{i} OIHW -> HWIO, applied as torch's cross-correlation
  vgg = {}
  for name, index in pm.VGG16_TORCH_INDEX.items():
    shape = traverse_util.flatten_dict(pm.abstract_variables("lpips"), sep="/")[f"params/{name}/kernel"].shape
    vgg[f"features.{index}.weight"] = rng.standard_normal((shape[3], shape[2], 3, 3)).astype(np.float32)
    vgg[f"features.{index}.bias"] = rng.standard_normal(shape[3]).astype(np.float32)
  lins = {
    f"lin{i}.model.1.weight": np.abs(rng.standard_normal((1, c, 1, 1))).astype(np.float32)
    for i, c in enumerate((64, 128, 256, 512, 512))
  }
  arrays = pm.lpips_from_torch(vgg, lins)
  np.savez(tmp_path / "lpips.npz", **arrays)
  variables = pm.load_variables("lpips", tmp_path / "lpips.npz")
  x = rng.standard_normal((1, 6, 7, 3)).astype(np.float32)
  import flax.linen as nn

  y = nn.Conv(64, (3, 3), padding=((1, 1), (1, 1))).apply({"params": variables["params"]["conv1_1"]}, x)
  w, b = vgg["features.0.weight"], vgg["features.0.bias"]
  expected = b + np.einsum("oikl,kli->o", w, x[0, 2:5, 3:6, :])  # out[o] at pixel (3, 4), torch semantics
  np.testing.assert_allclose(np.asarray(y)[0, 3, 4], expected, rtol=1e-4, atol=1e-4)
  np.testing.assert_array_equal(
    variables["params"]["lin2"]["kernel"][0, 0, :, 0], lins["lin2.model.1.weight"][0, :, 0, 0]
  )
  with pytest.raises(ValueError, match="missing 'lin4.model.1.weight'"):
    pm.lpips_from_torch(vgg, {k: v for k, v in lins.items() if "lin4" not in k})


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
  config = evaluate.with_defaults(load_config())
  config.eval.masks, config.eval.examples, config.eval.batch_size = "centre", 4, 4
  eval_set = evaluate.EvalSet.from_config(config, 1)
  mesh = sharding.make_mesh(jax.devices()[:1])  # one device: compiling Inception for 8 is what costs here
  source = sources.make_source(config.data, "eval")
  truth = [b["image"] for b in eval_set.batches("centre", source)]
  perceptual = pm.Perceptual(
    inception=pm.random_variables("inception", 1), lpips=pm.random_variables("lpips", 1), fid_size=75
  )  # 75 px: the smallest input Inception takes; 299 for real numbers
  methods = {
    "oracle": evaluate.Method(lambda image, valid: truth[0], on_host=True),
    **evaluate.baseline_methods(["mean_fill"]),
  }
  results = evaluate.evaluate_methods(
    methods, eval_set, mesh=mesh, source=source, perceptual=perceptual, progress=False
  )
  assert results.value("oracle", "centre", "lpips") == pytest.approx(0.0, abs=1e-6)
  assert results.value("oracle", "centre", "fid") < 1e-4 * results.value("Mean colour fill", "centre", "fid")
  assert results.value("Mean colour fill", "centre", "lpips") > 0
  table = evaluate.markdown(results)
  assert "Centre LPIPS ↓" in table and "Centre FID ↓" in table and "left out" not in table
