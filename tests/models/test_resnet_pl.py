"""ResNet-PL (LaMa's high-receptive-field perceptual loss): the Flax ResNet-50-dilated encoder against a state dict
whose keys and shapes follow the reference code (`models/ade20k/resnet.py`, `base.py` ResnetDilated), the
converter's round trip, a numpy forward pass of the dilated network, the loss, and the LaMa task's use of it."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxinpaint import losses
from jaxinpaint.tasks import lama
from jaxinpaint.losses import file_sha256
from jaxinpaint.models.resnet_pl import ResNetDilated, load_resnet_pl
from helpers import lama_losses_with_and_without, load_config, load_script  # tests/helpers.py
from helpers import lama_tiny_batch as tiny_batch

SMALL = dict(blocks=(1, 1, 2, 2), stem_width=4, base_width=2)  # two blocks where stages 3-4 dilate by 2 and 4


convert_resnet_pl = load_script("convert_resnet_pl")


def reference_state_dict(blocks=(3, 4, 6, 3), stem_width=64, base_width=64, seed=0) -> dict[str, np.ndarray]:
  """Random arrays keyed and shaped like `ResnetDilated(resnet50()).state_dict()`: the deep stem conv1-3 (3x3,
  OIHW) + bn1-3, then `layer{s}.{i}.conv1-3` / `bn1-3` bottlenecks (inplanes 128 at layer1, expansion 4) and
  `layer{s}.0.downsample.{0,1}`; BN running_var positive; every BN has a `num_batches_tracked`."""
  rng = np.random.default_rng(seed)
  sd = {}

  def conv(name, cout, cin, k):
    sd[f"{name}.weight"] = rng.normal(0, np.sqrt(2 / (k * k * cin)), (cout, cin, k, k)).astype(np.float32)

  def bn(name, c):
    sd[f"{name}.weight"] = rng.uniform(0.5, 1.5, c).astype(np.float32)
    sd[f"{name}.bias"] = rng.normal(0, 0.1, c).astype(np.float32)
    sd[f"{name}.running_mean"] = rng.normal(0, 0.1, c).astype(np.float32)
    sd[f"{name}.running_var"] = rng.uniform(0.5, 2.0, c).astype(np.float32)
    sd[f"{name}.num_batches_tracked"] = np.array(1000, np.int64)

  w = stem_width
  for i, (cin, cout) in enumerate(((3, w), (w, w), (w, 2 * w)), start=1):
    conv(f"conv{i}", cout, cin, 3)
    bn(f"bn{i}", cout)
  inplanes = 2 * w
  for s, count in enumerate(blocks, start=1):
    planes = base_width * 2 ** (s - 1)
    for i in range(count):
      p = f"layer{s}.{i}"
      conv(f"{p}.conv1", planes, inplanes, 1)
      bn(f"{p}.bn1", planes)
      conv(f"{p}.conv2", planes, planes, 3)
      bn(f"{p}.bn2", planes)
      conv(f"{p}.conv3", 4 * planes, planes, 1)
      bn(f"{p}.bn3", 4 * planes)
      if i == 0:
        conv(f"{p}.downsample.0", 4 * planes, inplanes, 1)
        bn(f"{p}.downsample.1", 4 * planes)
      inplanes = 4 * planes
  return sd


# ------------------------------------------------------------------------ numpy forward of the reference encoder


def np_conv(x, weight, stride=1, dilation=1):
  """torch Conv2d (no bias, padding = dilation * (k // 2)) on NHWC x with an OIHW weight, in float64."""
  k = weight.shape[-1]
  pad = dilation * (k // 2)
  x = np.pad(x, ((0, 0), (pad, pad), (pad, pad), (0, 0)))
  h = (x.shape[1] - dilation * (k - 1) - 1) // stride + 1
  w = (x.shape[2] - dilation * (k - 1) - 1) // stride + 1
  out = np.zeros((x.shape[0], h, w, weight.shape[0]))
  for i in range(k):
    for j in range(k):
      patch = x[
        :,
        i * dilation : i * dilation + stride * (h - 1) + 1 : stride,
        j * dilation : j * dilation + stride * (w - 1) + 1 : stride,
      ]
      out += patch @ weight[:, :, i, j].T.astype(np.float64)
  return out


def np_bn(x, sd, name):
  scale = sd[f"{name}.weight"] / np.sqrt(sd[f"{name}.running_var"].astype(np.float64) + 1e-5)
  return (x - sd[f"{name}.running_mean"]) * scale + sd[f"{name}.bias"]


def np_maxpool3s2(x):
  x = np.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)), constant_values=-np.inf)
  h, w = (x.shape[1] - 3) // 2 + 1, (x.shape[2] - 3) // 2 + 1
  return np.max([x[:, i : i + 2 * h - 1 : 2, j : j + 2 * w - 1 : 2] for i in range(3) for j in range(3)], axis=0)


def np_resnet_dilated(sd, x, blocks):
  """The reference forward with `_nostride_dilate` applied by hand: layer3 (dilate 2) and layer4 (dilate 4) lose
  their strides; a 3x3 conv that had stride 2 gets dilation dilate // 2, every other 3x3 conv dilation dilate."""
  relu = lambda t: np.maximum(t, 0)
  x = relu(np_bn(np_conv(x, sd["conv1.weight"], stride=2), sd, "bn1"))
  x = relu(np_bn(np_conv(x, sd["conv2.weight"]), sd, "bn2"))
  x = relu(np_bn(np_conv(x, sd["conv3.weight"]), sd, "bn3"))
  x = np_maxpool3s2(x)
  feats = []
  for s, count in enumerate(blocks, start=1):
    for i in range(count):
      p = f"layer{s}.{i}"
      stride = 2 if (s == 2 and i == 0) else 1
      dilation = {1: 1, 2: 1, 3: 1 if i == 0 else 2, 4: 2 if i == 0 else 4}[s]
      y = relu(np_bn(np_conv(x, sd[f"{p}.conv1.weight"]), sd, f"{p}.bn1"))
      y = relu(np_bn(np_conv(y, sd[f"{p}.conv2.weight"], stride, dilation), sd, f"{p}.bn2"))
      y = np_bn(np_conv(y, sd[f"{p}.conv3.weight"]), sd, f"{p}.bn3")
      if i == 0:
        x = np_bn(np_conv(x, sd[f"{p}.downsample.0.weight"], stride), sd, f"{p}.downsample.1")
      x = relu(y + x)
    feats.append(x)
  return feats


def np_imagenet(x):
  return ((x + 1) / 2 - np.array([0.485, 0.456, 0.406])) / np.array([0.229, 0.224, 0.225])


@pytest.fixture(scope="module")
def small_weights(tmp_path_factory):
  """(torch-style state dict, path of its converted npz) for the SMALL architecture."""
  sd = reference_state_dict(**SMALL)
  path = tmp_path_factory.mktemp("resnet_pl") / "small.npz"
  np.savez(path.with_name("small_state_dict.npz"), **sd)
  convert_resnet_pl.main(["--input", str(path.with_name("small_state_dict.npz")), "--output", str(path)])
  return sd, str(path)


# ------------------------------------------------------------------------------------------------ the tests


def test_full_encoder_matches_the_reference_state_dict_keys_and_shapes():
  sd = reference_state_dict()
  arrays = convert_resnet_pl.convert_state_dict(sd)
  assert len(arrays) == len([k for k in sd if not k.endswith("num_batches_tracked")])
  shapes = jax.eval_shape(ResNetDilated().init, jax.random.key(0), jax.ShapeDtypeStruct((1, 32, 32, 3), jnp.float32))
  flat = {"/".join(k.key for k in path): leaf.shape for path, leaf in jax.tree_util.tree_leaves_with_path(shapes)}
  # params/conv1/kernel -> conv1/kernel; batch_stats/bn1/mean -> bn1/mean
  flat = {k.split("/", 1)[1]: v for k, v in flat.items()}
  assert flat == {k: v.shape for k, v in arrays.items()}
  trainable = sum(int(np.prod(v)) for k, v in flat.items() if not k.endswith(("/mean", "/var")))
  # torchvision resnet50 25,557,032 - fc 2,049,000 - 7x7 stem and bn 9,536 + deep stem 112,320 + its BNs 512
  # + layer1.0 seeing 128 channels instead of 64 (conv1 +4,096, downsample +16,384)
  assert trainable == 25_557_032 - 2_049_000 - 9_536 + 112_320 + 512 + 4_096 + 16_384 == 23_631_808


def test_converter_round_trip_uses_every_array_exactly_once(small_weights):
  sd, path = small_weights
  model, variables = load_resnet_pl(path)
  assert (tuple(model.blocks), model.stem_width, model.base_width) == tuple(SMALL.values())
  loaded = [np.asarray(x) for x in jax.tree.leaves(variables)]
  sources = [v for k, v in sd.items() if not k.endswith("num_batches_tracked")]
  assert len(loaded) == len(sources)
  # every source array (random, so all distinct) is found in exactly one loaded leaf, transposed for convs
  for source in sources:
    want = source.transpose(2, 3, 1, 0) if source.ndim == 4 else source
    hits = [leaf for leaf in loaded if leaf.shape == want.shape and np.array_equal(leaf, want)]
    assert len(hits) == 1
  init = jax.eval_shape(model.init, jax.random.key(0), jnp.zeros((1, 16, 16, 3)))
  assert jax.tree.structure(init) == jax.tree.structure(variables)
  assert [x.shape for x in jax.tree.leaves(init)] == [x.shape for x in jax.tree.leaves(variables)]


def test_converter_and_loader_reject_wrong_files_with_one_line(small_weights, tmp_path):
  sd, _ = small_weights
  with pytest.raises(ValueError, match="not a ResnetDilated encoder key: 'fc.weight'"):
    convert_resnet_pl.convert_state_dict({**sd, "fc.weight": np.zeros((10, 2048))})
  arrays = convert_resnet_pl.convert_state_dict({("module." + k): v for k, v in sd.items()})  # DataParallel save
  assert set(arrays) == set(convert_resnet_pl.convert_state_dict(sd))
  broken = dict(arrays)
  del broken["layer3_1/bn2/var"]
  broken["layer2_0/conv2/kernel"] = broken["layer2_0/conv2/kernel"][:, :, :1]
  np.savez(tmp_path / "broken.npz", **broken)
  with pytest.raises(ValueError, match=r"missing layer3_1/bn2/var; layer2_0/conv2/kernel has shape \(3, 3, 1, 4\)"):
    load_resnet_pl(tmp_path / "broken.npz")
  np.savez(tmp_path / "extra.npz", **arrays, **{"layer4_0/conv2/bias": np.zeros(16, np.float32)})
  with pytest.raises(ValueError, match="unexpected layer4_0/conv2/bias"):
    load_resnet_pl(tmp_path / "extra.npz")
  with pytest.raises(FileNotFoundError, match="convert_resnet_pl.py"):
    load_resnet_pl(tmp_path / "missing.npz")
  with pytest.raises(SystemExit, match="^error: .*missing.pth does not exist$"):
    convert_resnet_pl.main(["--input", str(tmp_path / "missing.pth"), "--output", str(tmp_path / "out.npz")])
  np.savez(tmp_path / "partial_sd.npz", **{k: v for k, v in sd.items() if not k.startswith("layer4")})
  with pytest.raises(SystemExit, match="^error: missing layer4_0/conv1/kernel$"):
    convert_resnet_pl.main(["--input", str(tmp_path / "partial_sd.npz"), "--output", str(tmp_path / "out.npz")])
  (tmp_path / "garbage.npz").write_text("not an npz")
  with pytest.raises(SystemExit, match="^error: .*garbage.npz is not a readable .npz"):
    convert_resnet_pl.main(["--input", str(tmp_path / "garbage.npz"), "--output", str(tmp_path / "out.npz")])
  assert not (tmp_path / "out.npz").exists()


@pytest.mark.parametrize("size", [32, 27])
def test_features_match_a_numpy_forward_at_output_strides_4_8_8_8(small_weights, size):
  sd, path = small_weights
  fn = losses.make_resnet_pl_fn(path)
  x = np.random.default_rng(size).uniform(-1, 1, (2, size, size, 3)).astype(np.float32)
  got = [np.asarray(f) for f in jax.jit(fn)(jnp.asarray(x))]
  want = np_resnet_dilated(sd, np_imagenet(x.astype(np.float64)), SMALL["blocks"])
  down4, down8 = -(-size // 4), -(-size // 8)  # torch's padded stride-2 convs / pools round up
  assert [f.shape for f in got] == [
    (2, down4, down4, 8),
    (2, down8, down8, 16),
    (2, down8, down8, 32),
    (2, down8, down8, 64),
  ]
  for g, w in zip(got, want):
    np.testing.assert_allclose(g, w, rtol=1e-4, atol=1e-4 * np.abs(w).max())


def test_resnet_pl_loss_is_the_weighted_sum_of_stage_mses(small_weights):
  sd, path = small_weights
  fn = jax.jit(losses.make_resnet_pl_fn(path))
  rng = np.random.default_rng(3)
  pred, target = (rng.uniform(-1, 1, (2, 16, 16, 3)).astype(np.float32) for _ in range(2))
  got = 30.0 * float(losses.feature_mse_sum(fn(jnp.asarray(pred)), fn(jnp.asarray(target))))
  fp, ft = (np_resnet_dilated(sd, np_imagenet(x.astype(np.float64)), SMALL["blocks"]) for x in (pred, target))
  want = sum(30.0 * np.mean((a - b) ** 2) for a, b in zip(fp, ft))
  assert got == pytest.approx(want, rel=1e-4) and want > 0


def test_lama_step_adds_thirty_times_resnet_pl_and_tables_name_its_file(small_weights, tmp_path):
  _, path = small_weights
  plain_config, rpl_config = load_config("lama"), load_config("lama")
  rpl_config.loss.resnet_pl_weights = path
  rpl_config.loss.vgg_weights = str(tmp_path / "never_read.npz")  # ResNet-PL wins over the VGG16 stand-in
  plain, with_rpl = lama.LamaTask(plain_config), lama.LamaTask(rpl_config)
  assert with_rpl.perceptual_fn is with_rpl.resnet_pl_fn is not None
  assert "perceptual" in with_rpl.metric_names and "perceptual" not in plain.metric_names
  label = lama.loss_label(rpl_config)
  assert label.endswith(f"+ ResNet-PL (ADE20k ResNet-50-dilated weights sha256 {file_sha256(path)})")
  batch = tiny_batch()
  g_plain, d_plain, g_rpl, d_rpl, term, out = lama_losses_with_and_without(plain, with_rpl, batch)
  fn = jax.jit(with_rpl.resnet_pl_fn)
  want = float(losses.feature_mse_sum(fn(out), fn(batch["image"])))
  assert float(term) == pytest.approx(want, rel=1e-5) and want > 0
  assert float(g_rpl) == pytest.approx(float(g_plain) + 30.0 * want, rel=1e-5)
  assert float(d_rpl) == pytest.approx(float(d_plain), rel=1e-6)


def test_missing_resnet_pl_file_is_said_in_the_label(tmp_path):
  config = load_config("lama")
  config.loss.resnet_pl_weights = str(tmp_path / "gone.npz")
  assert lama.LamaTask(config).perceptual_fn is None
  assert lama.loss_label(config).endswith(
    f"(no perceptual term: ResNet-PL weights {tmp_path / 'gone.npz'} not found, no VGG weights)"
  )
