"""jaxinpaint.losses against numpy formulas, the VGG16 feature path with random weights, and the converter."""

import logging
import sys

import h5py
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxinpaint import losses
from jaxinpaint.models.vgg import VGG16_LAYERS, VGG16Features, load_vgg16_params, to_imagenet_input

from helpers import load_script  # tests/helpers.py

convert_vgg16 = load_script("convert_vgg16")


def _case(shape=(2, 11, 14, 3), valid_channels=1, seed=0):
  rng = np.random.default_rng(seed)
  output = rng.uniform(-1, 1, shape).astype(np.float32)
  target = rng.uniform(-1, 1, shape).astype(np.float32)
  valid = np.ones(shape[:3] + (valid_channels,), np.float32)
  valid[:, 3:7, 4:9] = 0.0
  valid[0, 0, 0] = 0.0  # a hole at the corner exercises the dilation's edge
  return output, target, valid


def _random_vgg_arrays(seed=0) -> dict[str, np.ndarray]:
  rng = np.random.default_rng(seed)
  arrays = {}
  for name, cin, cout in VGG16_LAYERS:
    arrays[f"{name}/kernel"] = rng.normal(0, np.sqrt(2 / (9 * cin)), (3, 3, cin, cout)).astype(np.float32)
    arrays[f"{name}/bias"] = rng.normal(0, 0.05, (cout,)).astype(np.float32)
  return arrays


@pytest.fixture(scope="module")
def vgg_npz(tmp_path_factory):
  path = tmp_path_factory.mktemp("vgg") / "vgg16_pool3.npz"
  np.savez(path, **_random_vgg_arrays())
  return path


@pytest.mark.parametrize("valid_channels", [1, 3])
def test_l1_terms_and_mse_match_numpy(valid_channels):
  output, target, valid = _case(valid_channels=valid_channels)
  diff = output.astype(np.float64) - target
  m = np.broadcast_to(valid, output.shape)
  # Eq. 1: normalised by N_gt = every element, not by the number of valid / hole pixels.
  np.testing.assert_allclose(losses.valid_l1(output, target, valid), np.abs(m * diff).sum() / diff.size, rtol=1e-5)
  np.testing.assert_allclose(losses.hole_l1(output, target, valid), np.abs((1 - m) * diff).sum() / diff.size, rtol=1e-5)
  np.testing.assert_allclose(losses.mse_loss(output, target), (diff**2).mean(), rtol=1e-5)


def _tv_numpy(composite, valid):
  """Eq. 6 by loops: P = 3x3 dilation of the hole; pairs with both ends in P; / (C*H*W), mean over batch."""
  b, h, w, c = composite.shape
  hole = 1.0 - np.broadcast_to(valid, composite.shape)
  p = np.zeros_like(hole)
  for i in range(h):
    for j in range(w):
      p[:, i, j] = hole[:, max(i - 1, 0) : i + 2, max(j - 1, 0) : j + 2].max(axis=(1, 2))
  total = 0.0
  for i in range(h):
    for j in range(w):
      if j + 1 < w:
        total += (p[:, i, j] * p[:, i, j + 1] * np.abs(composite[:, i, j + 1] - composite[:, i, j])).sum()
      if i + 1 < h:
        total += (p[:, i, j] * p[:, i + 1, j] * np.abs(composite[:, i + 1, j] - composite[:, i, j])).sum()
  return total / composite.size


@pytest.mark.parametrize("valid_channels", [1, 3])
def test_tv_loss_matches_paper_equation(valid_channels):
  output, target, valid = _case(valid_channels=valid_channels)
  composite = valid * target + (1 - valid) * output
  np.testing.assert_allclose(losses.tv_loss(composite, valid), _tv_numpy(composite, valid), rtol=1e-5)
  # No hole, no TV: the known region is not smoothed.
  assert float(losses.tv_loss(composite, np.ones_like(valid))) == 0.0


def test_gram_matrix_normalisation():
  f = np.random.default_rng(1).normal(size=(2, 5, 6, 4)).astype(np.float32)
  ref = np.einsum("bhwc,bhwd->bcd", f.astype(np.float64), f) / (4 * 5 * 6)
  np.testing.assert_allclose(losses.gram_matrix(f), ref, rtol=1e-5)


def _feature_lists(seed=2):
  rng = np.random.default_rng(seed)
  shapes = [(2, 8, 10, 4), (2, 4, 5, 6), (2, 2, 2, 8)]
  return [[rng.normal(size=s).astype(np.float32) for s in shapes] for _ in range(3)]


def test_perceptual_and_style_match_numpy():
  out_f, comp_f, gt_f = _feature_lists()
  ref_perc = sum(np.abs(o - g).mean() + np.abs(c - g).mean() for o, c, g in zip(out_f, comp_f, gt_f))
  np.testing.assert_allclose(losses.perceptual_loss(out_f, comp_f, gt_f), ref_perc, rtol=1e-5)

  def gram(f):
    b, h, w, c = f.shape
    flat = f.reshape(b, h * w, c).astype(np.float64)
    return flat.transpose(0, 2, 1) @ flat / (c * h * w)

  # Eqs. 4-5: (1 / C_p^2) * || K_p (Psi^T Psi - Psi_gt^T Psi_gt) ||_1, averaged over the batch.
  ref_style = 0.0
  for o, c, g in zip(out_f, comp_f, gt_f):
    cp = g.shape[-1]
    ref_style += (np.abs(gram(o) - gram(g)).sum(axis=(1, 2)) / cp**2).mean()
    ref_style += (np.abs(gram(c) - gram(g)).sum(axis=(1, 2)) / cp**2).mean()
  np.testing.assert_allclose(losses.style_loss(out_f, comp_f, gt_f), ref_style, rtol=1e-5)
  with pytest.raises(ValueError, match="feature lists"):
    losses.style_loss(out_f, comp_f[:2], gt_f)


def _toy_features(x):
  """A stand-in feature extractor: three average-pooled views of the image (no weights needed)."""
  return [x, jax.lax.reduce_window(x, 0.0, jax.lax.add, (1, 2, 2, 1), (1, 2, 2, 1), "VALID") / 4, jnp.tanh(x)]


def test_pconv_loss_weights_and_terms():
  output, target, valid = _case()
  composite = valid * target + (1 - valid) * output
  total, terms = losses.pconv_loss(output, target, valid, vgg_fn=_toy_features)
  assert set(terms) == {"valid_l1", "hole_l1", "perceptual", "style", "tv"}
  feats = [_toy_features(jnp.asarray(x)) for x in (output, composite, target)]
  np.testing.assert_allclose(terms["perceptual"], losses.perceptual_loss(*feats), rtol=1e-5)
  np.testing.assert_allclose(terms["style"], losses.style_loss(*feats), rtol=1e-5)
  np.testing.assert_allclose(terms["tv"], _tv_numpy(composite, valid), rtol=1e-5)
  order = ("valid_l1", "hole_l1", "perceptual", "style", "tv")
  np.testing.assert_allclose(total, sum(w * terms[k] for w, k in zip((1, 6, 0.05, 120, 0.1), order)), rtol=1e-5)
  # Each weight scales exactly its own term.
  for i, key in enumerate(order):
    weights = [0.0] * 5
    weights[i] = 2.0
    alone, _ = losses.pconv_loss(output, target, valid, vgg_fn=_toy_features, weights=weights)
    np.testing.assert_allclose(alone, 2.0 * terms[key], rtol=1e-5, err_msg=key)
  with pytest.raises(ValueError, match="weights"):
    losses.pconv_loss(output, target, valid, weights=(1, 6))


def test_pconv_loss_without_vgg_leaves_terms_out():
  output, target, valid = _case()
  total, terms = losses.pconv_loss(output, target, valid, vgg_fn=None)
  assert set(terms) == {"valid_l1", "hole_l1", "tv"}  # absent, not faked as 0
  np.testing.assert_allclose(total, terms["valid_l1"] + 6 * terms["hole_l1"] + 0.1 * terms["tv"], rtol=1e-6)


@pytest.mark.parametrize("path", [None, "does/not/exist.npz"])
def test_no_weights_logs_a_warning(caplog, path):
  with caplog.at_level(logging.WARNING):
    assert losses.make_perceptual_fn(path) is None
  assert any("perceptual and style" in r.getMessage() and r.levelno == logging.WARNING for r in caplog.records)


def test_bad_shapes_raise():
  output, target, valid = _case()
  with pytest.raises(ValueError, match="output and target"):
    losses.valid_l1(output, target[:, :5], valid)
  with pytest.raises(ValueError, match="valid"):
    losses.hole_l1(output, target, valid[:, :, :3])


def _conv_same_numpy(x, kernel, bias):
  """3x3 cross-correlation with zero padding 1, HWIO kernel, in float64."""
  h, w = x.shape[1:3]
  xp = np.pad(x.astype(np.float64), ((0, 0), (1, 1), (1, 1), (0, 0)))
  out = np.zeros(x.shape[:3] + (kernel.shape[-1],))
  for dy in range(3):
    for dx in range(3):
      out += xp[:, dy : dy + h, dx : dx + w] @ kernel[dy, dx].astype(np.float64)
  return out + bias


def test_vgg_block1_matches_numpy(vgg_npz):
  params = load_vgg16_params(vgg_npz)
  x = np.random.default_rng(4).normal(size=(1, 10, 12, 3)).astype(np.float32)
  pool1 = VGG16Features().apply({"params": params}, x)[0]
  params_np = jax.tree.map(np.asarray, params)
  a = np.maximum(_conv_same_numpy(x, params_np["conv1_1"]["kernel"], params_np["conv1_1"]["bias"]), 0)
  a = np.maximum(_conv_same_numpy(a, params_np["conv1_2"]["kernel"], params_np["conv1_2"]["bias"]), 0)
  ref = a.reshape(1, 5, 2, 6, 2, 64).max(axis=(2, 4))
  np.testing.assert_allclose(pool1, ref, rtol=1e-4, atol=1e-4)


def _max_pool2_numpy(x):
  """2x2 stride-2 max-pool, odd sizes floored (torch's)."""
  b, h, w, c = x.shape
  return x[:, : h // 2 * 2, : w // 2 * 2].reshape(b, h // 2, 2, w // 2, 2, c).max(axis=(2, 4))


def test_one_vgg16_gives_the_loss_pools_and_the_lpips_relus(vgg_npz):
  params = load_vgg16_params(vgg_npz)
  x = np.random.default_rng(8).normal(size=(1, 13, 10, 3)).astype(np.float32)
  pools = VGG16Features().apply({"params": params}, x)
  relus = VGG16Features(blocks=3, taps="relu").apply({"params": params}, x)
  assert [r.shape[1:3] for r in relus] == [(13, 10), (6, 5), (3, 2)]
  for pool, relu in zip(pools, relus):  # pool_k = maxpool(relu_k) of the same convs
    np.testing.assert_array_equal(pool, _max_pool2_numpy(np.asarray(relu)))
  # The loss's params are the first seven of the 13-conv VGG16 that LPIPS builds, in the same layout and shapes.
  full = jax.eval_shape(VGG16Features(blocks=5, taps="relu").init, jax.random.key(0), x)["params"]
  shapes = {name: (p["kernel"].shape, p["bias"].shape) for name, p in full.items()}
  assert len(shapes) == 13 and shapes["conv5_3"] == ((3, 3, 512, 512), (512,))
  assert {n: shapes[n] for n, _, _ in VGG16_LAYERS} == {n: ((3, 3, i, o), (o,)) for n, i, o in VGG16_LAYERS}
  with pytest.raises(ValueError, match="taps must be 'pool' or 'relu'"):
    VGG16Features(taps="conv").init(jax.random.key(0), x)


def test_perceptual_path_end_to_end(vgg_npz):
  features = losses.make_perceptual_fn(vgg_npz)
  output, target, valid = _case(shape=(2, 12, 20, 3))
  shapes = [f.shape for f in jax.eval_shape(features, jnp.asarray(output))]
  assert shapes == [(2, 6, 10, 64), (2, 3, 5, 128), (2, 1, 2, 256)]

  # Weights are an argument so that one compilation serves every check below (VGG grads compile slowly on CPU).
  @jax.jit
  def loss_and_grad(out, tgt, weights):
    loss = lambda o: losses.pconv_loss(o, tgt, valid, vgg_fn=features, weights=weights)
    return jax.value_and_grad(loss, has_aux=True)(out)

  paper = jnp.asarray(losses.PCONV_WEIGHTS)
  (total, terms), grads = loss_and_grad(output, target, paper)
  assert set(terms) == {"valid_l1", "hole_l1", "perceptual", "style", "tv"}
  assert all(np.isfinite(v) and v > 0 for v in terms.values())
  assert np.isfinite(total) and np.all(np.isfinite(grads)) and np.abs(grads).sum() > 0
  # The perceptual term alone reaches the output both in the hole and outside it (I_out vs I_gt).
  _, perc_grad = loss_and_grad(output, target, jnp.asarray([0.0, 0.0, 1.0, 0.0, 0.0]))
  assert np.abs(perc_grad[:, 3:7, 4:9]).sum() > 0 and np.abs(perc_grad[:, 9:]).sum() > 0
  # Identical output and target: perceptual and style vanish.
  (_, same), _ = loss_and_grad(target, target, paper)
  np.testing.assert_allclose([same["perceptual"], same["style"]], 0.0, atol=1e-6)


def test_to_imagenet_input():
  x = np.array([-1.0, 0.0, 1.0], np.float32).reshape(1, 1, 3, 1) * np.ones((1, 1, 1, 3), np.float32)
  got = np.asarray(to_imagenet_input(x))
  mean, std = np.array([0.485, 0.456, 0.406]), np.array([0.229, 0.224, 0.225])
  np.testing.assert_allclose(got[0, 0], (np.array([[0.0], [0.5], [1.0]]) - mean) / std, rtol=1e-5)


def test_load_vgg16_params_errors_name_the_file(tmp_path):
  missing = tmp_path / "nope.npz"
  with pytest.raises(FileNotFoundError, match="nope.npz"):
    load_vgg16_params(missing)
  arrays = _random_vgg_arrays()
  del arrays["conv2_2/bias"]
  arrays["conv3_1/kernel"] = arrays["conv3_1/kernel"][..., :8]
  bad = tmp_path / "bad.npz"
  np.savez(bad, **arrays)
  with pytest.raises(ValueError, match=r"bad\.npz.*missing conv2_2/bias.*conv3_1/kernel has shape"):
    load_vgg16_params(bad)
  garbage = tmp_path / "garbage.npz"
  garbage.write_bytes(b"not a zip file")
  with pytest.raises(ValueError, match="garbage.npz"):
    load_vgg16_params(garbage)
  with pytest.raises(ValueError, match="bad.npz"):
    losses.make_perceptual_fn(bad)  # a file that exists but is wrong is an error, not a silent switch-off


def _write_keras_h5(path, arrays_bgr, layout):
  """A tiny stand-in for vgg16_weights_tf_dim_ordering_tf_kernels_notop.h5 (Keras' HDF5 weight layout)."""
  with h5py.File(path, "w") as f:
    root = f.create_group("model_weights") if layout == "full_model" else f
    layers = [convert_vgg16.KERAS_NAME[name] for name in convert_vgg16.LAYERS]
    root.attrs["layer_names"] = [n.encode() for n in layers]
    for name, layer in zip(convert_vgg16.LAYERS, layers):
      group = root.create_group(layer)
      if layout == "legacy":  # keras 1 names, datasets straight in the layer group
        names = [f"{layer}_W_1:0", f"{layer}_b_1:0"]
      else:  # keras 2 names, nested under the layer name
        names = [f"{layer}/kernel:0", f"{layer}/bias:0"]
      group.create_dataset(names[0], data=arrays_bgr[f"{name}/kernel"])
      group.create_dataset(names[1], data=arrays_bgr[f"{name}/bias"])
      group.attrs["weight_names"] = [n.encode() for n in names]


@pytest.mark.parametrize("layout", ["legacy", "keras2", "full_model"])
def test_converter_keras_h5_round_trip(tmp_path, layout):
  keras = _random_vgg_arrays(seed=5)
  h5_path, npz_path = tmp_path / "vgg16_notop.h5", tmp_path / "vgg16_pool3.npz"
  _write_keras_h5(h5_path, keras, layout)
  convert_vgg16.main(["--input", str(h5_path), "--output", str(npz_path)])
  params = load_vgg16_params(npz_path)
  for name, _, _ in VGG16_LAYERS[1:]:  # copied untouched
    np.testing.assert_array_equal(params[name]["kernel"], keras[f"{name}/kernel"])
    np.testing.assert_array_equal(params[name]["bias"], keras[f"{name}/bias"])
  # conv1_1 on torchvision-normalised RGB == the Keras conv1_1 on Caffe-preprocessed BGR (away from borders).
  rgb01 = np.random.default_rng(6).uniform(size=(1, 9, 9, 3))
  caffe = 255.0 * rgb01[..., ::-1] - np.array([103.939, 116.779, 123.68])
  torch_in = (rgb01 - np.array([0.485, 0.456, 0.406])) / np.array([0.229, 0.224, 0.225])
  ref = _conv_same_numpy(caffe, keras["conv1_1/kernel"], keras["conv1_1/bias"])[:, 1:-1, 1:-1]
  got = _conv_same_numpy(torch_in, np.asarray(params["conv1_1"]["kernel"]), np.asarray(params["conv1_1"]["bias"]))
  got = got[:, 1:-1, 1:-1]
  np.testing.assert_allclose(got, ref, rtol=1e-4, atol=1e-3 * np.abs(ref).max())
  # And the whole extractor runs on the converted weights.
  pools = VGG16Features().apply({"params": params}, torch_in.astype(np.float32)[:, :8, :8])
  assert [p.shape[1:] for p in pools] == [(4, 4, 64), (2, 2, 128), (1, 1, 256)]


def test_converter_rejects_bad_files(tmp_path):
  arrays = _random_vgg_arrays()
  del arrays["conv3_3/kernel"], arrays["conv3_3/bias"]
  h5_path = tmp_path / "partial.h5"
  with h5py.File(h5_path, "w") as f:
    for name in convert_vgg16.LAYERS[:-1]:
      layer = convert_vgg16.KERAS_NAME[name]
      f.create_dataset(f"{layer}/{layer}/kernel:0", data=arrays[f"{name}/kernel"])
      f.create_dataset(f"{layer}/{layer}/bias:0", data=arrays[f"{name}/bias"])
  with pytest.raises(ValueError, match="block3_conv3"):
    convert_vgg16.convert(str(h5_path), str(tmp_path / "out.npz"))
  text = tmp_path / "weights.txt"
  text.write_text("x")
  with pytest.raises(ValueError, match="expected a torchvision .pth or a Keras .h5"):
    convert_vgg16.convert(str(text), str(tmp_path / "out.npz"))
  # The command line: one error line, and nothing written under the output name.
  with pytest.raises(SystemExit, match=r"^error: .*partial.h5: no layer 'block3_conv3'"):
    convert_vgg16.main(["--input", str(h5_path), "--output", str(tmp_path / "out.npz")])
  (tmp_path / "garbage.h5").write_bytes(b"not hdf5")
  with pytest.raises(SystemExit, match=r"^error: .*garbage.h5 is not a readable HDF5 file"):
    convert_vgg16.main(["--input", str(tmp_path / "garbage.h5"), "--output", str(tmp_path / "out.npz")])
  assert not (tmp_path / "out.npz").exists()


def test_converter_torch_state_dict_orientation(tmp_path, monkeypatch):
  rng = np.random.default_rng(7)
  state = {}
  for (name, cin, cout), index in zip(VGG16_LAYERS, (0, 2, 5, 7, 10, 12, 14)):
    state[f"features.{index}.weight"] = rng.normal(size=(cout, cin, 3, 3)).astype(np.float32)  # OIHW
    state[f"features.{index}.bias"] = rng.normal(size=(cout,)).astype(np.float32)
  arrays = convert_vgg16.convert_torch_state_dict(state)
  npz_path = tmp_path / "from_torch.npz"
  convert_vgg16.write_npz(arrays, str(npz_path))
  params = load_vgg16_params(npz_path)
  # torch's conv2d: out[o, y, x] = b[o] + sum_{i, ky, kx} w[o, i, ky, kx] * in[i, y + ky - 1, x + kx - 1].
  x = rng.normal(size=(3, 6, 7))
  xp = np.pad(x, ((0, 0), (1, 1), (1, 1)))
  w, b = state["features.0.weight"], state["features.0.bias"]
  ref = b[:, None, None] + sum(
    np.einsum("oi,iyx->oyx", w[:, :, ky, kx], xp[:, ky : ky + 6, kx : kx + 7]) for ky in range(3) for kx in range(3)
  )
  got = (
    jax.lax.conv_general_dilated(
      x.transpose(1, 2, 0)[None].astype(np.float32),
      params["conv1_1"]["kernel"],
      (1, 1),
      "SAME",
      dimension_numbers=("NHWC", "HWIO", "NHWC"),
      precision=jax.lax.Precision.HIGHEST,
    )
    + params["conv1_1"]["bias"]
  )
  np.testing.assert_allclose(np.asarray(got[0]).transpose(2, 0, 1), ref, rtol=1e-4, atol=1e-4)
  with pytest.raises(ValueError, match="features.14.weight"):
    convert_vgg16.convert_torch_state_dict({k: v for k, v in state.items() if k != "features.14.weight"})
  # Without torch, a .pth asks the user to install it instead of failing obscurely.
  monkeypatch.setitem(sys.modules, "torch", None)
  pth = tmp_path / "vgg16.pth"
  pth.write_bytes(b"\x80")
  with pytest.raises(SystemExit, match="pip install torch"):
    convert_vgg16.convert(str(pth), str(tmp_path / "out.npz"))


def test_hole_log_mse_is_the_mean_per_example_log_hole_mse():
  rng = np.random.default_rng(0)
  out, gt = (rng.uniform(-1, 1, (3, 8, 8, 3)).astype(np.float32) for _ in range(2))
  valid = (rng.uniform(size=(3, 8, 8, 1)) > 0.2).astype(np.float32)
  valid[1] = 1.0  # no hole: log(eps)
  valid[2, :, :] = 1.0
  valid[2, 3, 4] = 0.0  # a one-pixel hole weighs as much as a big one
  expected = []
  for b in range(3):
    hole = np.broadcast_to(valid[b] == 0, out[b].shape)
    mse = np.square(out[b] - gt[b])[hole].mean() if hole.any() else 0.0
    expected.append(np.log(mse + 1e-4))
  np.testing.assert_allclose(losses.hole_log_mse(out, gt, valid), np.mean(expected), rtol=1e-5)
  # Known pixels do not count.
  changed = np.where(valid > 0, out + 0.5, out)
  np.testing.assert_allclose(losses.hole_log_mse(changed, gt, valid), np.mean(expected), rtol=1e-5)
