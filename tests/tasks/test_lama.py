"""LaMa: parameter counts of the published configurations (counted independently from the reference's layer list),
the generator's conventions, the losses against numpy, the training mask mix, and the task in the generic trainer:
each network gets its own loss's gradient, sharded == single-device, 20 :tiny steps finite, a resumed run
bit-exact, inpainting in pad mode at sizes that are not multiples of 8, and one-line config errors."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxinpaint import inpaint, losses, train
from jaxinpaint.data import masks
from jaxinpaint.eval import harness
from jaxinpaint.tasks import lama
from jaxinpaint.models.lama import LamaGenerator, NLayerDiscriminator
from jaxinpaint.runs import jit_init
from helpers import eqns_named, leaves, load_config, sharded_and_single, straight_and_resumed  # tests/helpers.py
from helpers import lama_losses_with_and_without, lama_tiny_batch as tiny_batch


def count(tree) -> int:
  return sum(int(np.prod(x.shape)) for x in jax.tree.leaves(tree))


def reference_generator_params(n_blocks: int, ngf: int = 64, ratio: float = 0.75) -> int:
  """FFCResNetGenerator's trainable parameters from its layer list (ffc.py, ffc_resnet_075.yaml): bias-free FFC
  convs, BatchNorm weight + bias, transposed convs and the output conv with bias."""
  conv = lambda cin, cout, k: cin * cout * k * k
  bn = lambda c: 2 * c
  total = conv(4, ngf, 7) + bn(ngf)  # stem, all local
  total += conv(ngf, 2 * ngf, 3) + bn(2 * ngf) + conv(2 * ngf, 4 * ngf, 3) + bn(4 * ngf)
  dim = 8 * ngf
  g = int(dim * ratio)
  l = dim - g
  total += conv(4 * ngf, l, 3) + conv(4 * ngf, g, 3) + bn(l) + bn(g)  # last downsampling: local -> (l, g)
  spectral = conv(g, g // 2, 1) + bn(g // 2) + conv(g, g, 1) + bn(g) + conv(g // 2, g, 1)  # conv1, FU, conv2
  ffc_bn = conv(l, l, 3) + conv(l, g, 3) + conv(g, l, 3) + spectral + bn(l) + bn(g)
  total += n_blocks * 2 * ffc_bn
  for cin in (8 * ngf, 4 * ngf, 2 * ngf):  # ConvTranspose2d (bias) + BN
    total += conv(cin, cin // 2, 3) + cin // 2 + bn(cin // 2)
  return total + conv(ngf, 3, 7) + 3


def test_parameter_counts_match_the_reference_configs():
  assert reference_generator_params(9) == 27_048_835  # LaMa-Fourier, "about 27M"
  assert reference_generator_params(18) == 50_975_875  # Big-LaMa, "about 51M"
  image, valid = (
    jax.ShapeDtypeStruct((1, 256, 256, 3), jnp.float32),
    jax.ShapeDtypeStruct((1, 256, 256, 1), jnp.float32),
  )
  for name, blocks in (("lama", 9), ("big", 18)):
    config = load_config("lama", name if name == "big" else None)
    kwargs = {k: v for k, v in config.model.items() if k != "name"}
    assert kwargs["n_blocks"] == blocks
    shapes = jax.eval_shape(LamaGenerator(**kwargs).init, jax.random.key(0), image, valid)
    assert count(shapes["params"]) == reference_generator_params(blocks)
  # NLayerDiscriminator(ndf 64, 4 layers): 4x4 convs with bias 3-64-128-256-512-512-1, BN after the middle four
  widths = [3, 64, 128, 256, 512, 512, 1]
  want = sum(a * b * 16 + b for a, b in zip(widths, widths[1:])) + sum(2 * c for c in widths[2:-1])
  shapes = jax.eval_shape(NLayerDiscriminator().init, jax.random.key(0), image)
  assert count(shapes["params"]) == want == 6_962_369


@pytest.fixture(scope="module")
def tiny_generator():
  generator = LamaGenerator(ngf=8, n_blocks=1)
  image = jnp.zeros((2, 24, 40, 3))
  return generator, jit_init(generator.init)(jax.random.key(0), image, jnp.ones((2, 24, 40, 1)))


def test_generator_output_is_in_range_any_multiple_of_8_and_ignores_hole_pixels(tiny_generator):
  generator, variables = tiny_generator
  rng = np.random.default_rng(0)
  image = rng.uniform(-1, 1, (2, 24, 40, 3)).astype(np.float32)
  valid = np.ones((2, 24, 40, 1), np.float32)
  valid[:, 5:15, 10:30] = 0
  noisy = np.where(valid > 0, image, rng.uniform(-1, 1, image.shape)).astype(np.float32)
  out = generator.apply(variables, jnp.asarray(image), jnp.asarray(valid))
  assert out.shape == image.shape and float(jnp.abs(out).max()) < 1.0  # 2 sigmoid - 1
  np.testing.assert_array_equal(np.asarray(out), np.asarray(generator.apply(variables, noisy, jnp.asarray(valid))))
  with pytest.raises(ValueError, match="divisible by 8; got 20x40"):
    generator.apply(variables, jnp.zeros((1, 20, 40, 3)), jnp.ones((1, 20, 40, 1)))


def test_bfloat16_generator_keeps_every_fft_in_float32():
  generator = LamaGenerator(ngf=8, n_blocks=2, dtype=jnp.bfloat16)
  image, valid = jnp.zeros((1, 16, 24, 3)), jnp.ones((1, 16, 24, 1))
  variables = jax.eval_shape(generator.init, jax.random.key(0), image, valid)
  jaxpr = jax.make_jaxpr(lambda v: generator.apply(v, image, valid, train=True, mutable=["batch_stats"]))(variables)
  ffts = list(eqns_named(jaxpr.jaxpr, "fft"))
  assert len(ffts) == 2 * 2 * 2  # forward + inverse in each of two FFCs per block, two blocks
  assert all(v.aval.dtype in (jnp.float32, jnp.complex64) for e in ffts for v in (*e.invars, *e.outvars))
  convs = list(eqns_named(jaxpr.jaxpr, "conv_general_dilated"))
  assert any(e.invars[0].aval.dtype == jnp.bfloat16 for e in convs)  # the rest does run in bfloat16


# ------------------------------------------------------------------------------------------------ losses


def test_masked_l1_weights_known_and_missing_pixels():
  rng = np.random.default_rng(1)
  out, target = rng.uniform(0, 1, (2, 4, 5, 3)), rng.uniform(0, 1, (2, 4, 5, 3))
  valid = (rng.uniform(size=(2, 4, 5, 1)) > 0.4).astype(np.float64)
  want = np.mean((10 * valid + 0.5 * (1 - valid)) * np.abs(out - target))
  assert float(losses.masked_l1(out, target, valid, 10.0, 0.5)) == pytest.approx(want, rel=1e-5)


def test_nonsaturating_losses_and_mask_as_fake_target_match_numpy():
  rng = np.random.default_rng(2)
  real, fake = rng.normal(size=(2, 3, 3)), rng.normal(size=(2, 3, 3))
  hole = (rng.uniform(size=(2, 3, 3)) > 0.5).astype(np.float64)
  sp = lambda x: np.log1p(np.exp(x))
  plain = np.mean(sp(-real)) + np.mean(sp(fake))
  masked = np.mean(sp(-real)) + np.mean(hole * sp(fake) + (1 - hole) * sp(-fake))
  assert float(losses.nonsaturating_d_loss(real, fake)) == pytest.approx(plain, rel=1e-5)
  assert float(losses.nonsaturating_d_loss(real, fake, hole)) == pytest.approx(masked, rel=1e-5)
  assert float(losses.nonsaturating_g_loss(fake)) == pytest.approx(np.mean(sp(-fake)), rel=1e-5)


def test_r1_penalty_is_the_mean_squared_gradient_norm_of_a_known_critic():
  w = jnp.asarray(np.random.default_rng(3).normal(size=(4, 4, 3)), jnp.float32)
  x = jnp.ones((5, 4, 4, 3))
  grads = jax.grad(lambda v: jnp.sum(jnp.sum(v * w, axis=(1, 2, 3)) ** 2 / 2))(x)  # per example s_b^2 / 2
  s = np.asarray(jnp.sum(x * w, axis=(1, 2, 3)))
  want = np.mean(s**2 * np.sum(np.asarray(w) ** 2))  # grad_b = s_b w
  assert float(losses.r1_penalty(grads)) == pytest.approx(want, rel=1e-5)


def test_feature_matching_and_nearest_resize_follow_the_reference():
  rng = np.random.default_rng(4)
  fake = [rng.normal(size=(2, 4, 4, 3)), rng.normal(size=(2, 2, 2, 5))]
  real = [rng.normal(size=f.shape) for f in fake]
  want = np.mean([np.mean((f - r) ** 2) for f, r in zip(fake, real)])
  assert float(losses.feature_matching_loss(fake, real)) == pytest.approx(want, rel=1e-5)
  mask = rng.uniform(size=(1, 32, 32, 1)).astype(np.float32)
  small = np.asarray(losses.resize_nearest(jnp.asarray(mask), 7, 5))
  rows, cols = np.floor(np.arange(7) * 32 / 7).astype(int), np.floor(np.arange(5) * 32 / 5).astype(int)
  np.testing.assert_array_equal(small, mask[:, rows][:, :, cols])


def test_lama_training_masks_mix_strokes_and_boxes_half_and_half():
  kinds = []
  for seed in range(200):
    rng = np.random.default_rng(seed)
    box = rng.random() < 0.5  # the generator's first draw picks the family
    valid = masks.MASK_GENERATORS["lama"](np.random.default_rng(seed), 256, 256)
    hole = valid < 0.5
    assert hole.any() and valid.shape == (256, 256)
    if box:  # 1-4 boxes with sides of 30-150 px
      assert hole.sum() >= 30 * 30
    kinds.append(box)
  assert 0.4 < np.mean(kinds) < 0.6
  np.testing.assert_array_equal(
    masks.MASK_GENERATORS["lama"](np.random.default_rng(7), 64, 64),
    masks.MASK_GENERATORS["lama"](np.random.default_rng(7), 64, 64),
  )


# ------------------------------------------------------------------------------------------------ the task


def test_each_network_receives_the_gradient_of_its_own_loss():
  task = lama.LamaTask(load_config("lama"))
  batch = tiny_batch()
  variables = dict(jit_init(task.init)(jax.random.key(0), batch))
  params = variables.pop("params")
  state = variables

  @jax.jit
  def all_grads(p):
    total = jax.grad(lambda q: task.loss_fn(q, state, batch, jax.random.key(1), jnp.zeros((), jnp.int32))[0])(p)
    d_only = jax.grad(lambda q: task.losses(q, state, batch)[1])(p)
    g_only = jax.grad(lambda q: task.losses(q, state, batch)[0])(p)
    return total, d_only, g_only

  total, d_only, g_only = all_grads(params)
  for a, b in zip(leaves(total["discriminator"]), leaves(d_only["discriminator"])):
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7)
  for a, b in zip(leaves(total["generator"]), leaves(g_only["generator"])):
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7)
  # the stop_gradients cut the cross terms: D's loss does not reach G and G's does not reach D
  assert max(np.abs(x).max() for x in leaves(d_only["generator"])) == 0.0
  assert max(np.abs(x).max() for x in leaves(g_only["discriminator"])) == 0.0
  assert max(np.abs(x).max() for x in leaves(d_only["discriminator"])) > 0.0


def test_sharded_lama_step_equals_single_device_step():
  config = load_config("lama")
  for optim in (config.optim, config.d_optim):
    optim.eps = 1e-3  # smooth Adam in g: a ~0 gradient's rounding must not flip a +-lr update (test_gan_train.py)
  runs = sharded_and_single(config)
  metrics = {name: m for name, (m, _) in runs.items()}
  for key in ("g_loss", "d_loss", "d_real", "d_fake", "r1", "feature_matching", "l1_known"):
    assert metrics["sharded"][key] == pytest.approx(metrics["single"][key], rel=1e-4, abs=1e-6), key
  for a, b in zip(runs["sharded"][1], runs["single"][1]):
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
  """configs/lama.py:tiny trained 20 steps straight, and resumed from its step-10 checkpoint (one device)."""
  return straight_and_resumed(load_config("lama"), tmp_path_factory)


def test_twenty_tiny_steps_stay_finite(runs):
  history = runs["full"]["history"]
  assert sorted(history) == [5, 10, 15, 20]
  for values in history.values():
    for key in ("g_loss", "d_loss", "g_adv", "d_real", "d_fake", "r1", "l1_known", "feature_matching"):
      assert np.isfinite(values[key]), (key, values)
  assert all(np.isfinite(v) for v in runs["full"]["eval"].values())


def test_resumed_lama_run_is_bit_exact(runs):
  a, b = runs["full"]["state"], runs["second"]["state"]
  assert sorted(runs["second"]["history"]) == [15, 20] and int(a.step) == int(b.step) == 20  # resumed at 10
  assert sorted(a.params) == sorted(a.model_state["batch_stats"]) == ["discriminator", "generator"]
  for x, y in zip(leaves((a.params, a.model_state, a.opt_state)), leaves((b.params, b.model_state, b.opt_state))):
    np.testing.assert_array_equal(x, y)


@pytest.mark.parametrize("height,width", [(37, 45), (50, 29)])
def test_inpaint_pad_mode_works_at_sizes_that_are_not_multiples_of_8(runs, height, width):
  model = inpaint.load(runs["full_dir"])
  rng = np.random.default_rng(height)
  image = rng.integers(0, 256, (height, width, 3), dtype=np.uint8)
  hole = np.zeros((height, width), bool)
  hole[10:25, 7:20] = True
  out = inpaint.inpaint(model, image, hole, mode="pad")
  assert out.shape == image.shape and out.dtype == np.uint8
  np.testing.assert_array_equal(out[~hole], image[~hole])
  assert not np.array_equal(out[hole], image[hole])


def test_tables_say_which_perceptual_term_trained_the_run(tmp_path):
  config = load_config("lama")
  assert "no perceptual term: no ResNet-PL or VGG weights" in lama.loss_label(config)
  assert harness.loss_label(config) == lama.loss_label(config)
  config.loss.vgg_weights = str(tmp_path / "missing.npz")
  assert "VGG weights" in lama.loss_label(config) and "not found" in lama.loss_label(config)


def test_bad_lama_config_fails_with_one_line():
  config = load_config("lama")
  config.data.image_size = 36
  with pytest.raises(ValueError, match="image_size=36 is not divisible by 8"):
    train.Trainer(config)
  config = load_config("lama")
  config.model.ratio_g = 1.0
  with pytest.raises(ValueError, match=r"ratio_g must be in \[0, 1\)"):
    lama.LamaTask(config)


def test_vgg_weights_stand_in_for_resnet_pl_with_its_weight(tmp_path):
  from jaxinpaint.models.vgg import VGG16_LAYERS

  rng = np.random.default_rng(0)
  arrays = {}
  for name, cin, cout in VGG16_LAYERS:
    arrays[f"{name}/kernel"] = rng.normal(0, np.sqrt(2 / (9 * cin)), (3, 3, cin, cout)).astype(np.float32)
    arrays[f"{name}/bias"] = rng.normal(0, 0.05, (cout,)).astype(np.float32)
  np.savez(tmp_path / "vgg.npz", **arrays)
  plain_config, vgg_config = load_config("lama"), load_config("lama")
  vgg_config.loss.vgg_weights = str(tmp_path / "vgg.npz")
  plain, with_vgg = lama.LamaTask(plain_config), lama.LamaTask(vgg_config)
  assert "perceptual" in with_vgg.metric_names and "perceptual" not in plain.metric_names
  assert "VGG16 perceptual in place of ResNet-PL (VGG16 weights sha256 " in lama.loss_label(vgg_config)
  batch = tiny_batch()
  g_plain, d_plain, g_vgg, d_vgg, perceptual, out = lama_losses_with_and_without(plain, with_vgg, batch)
  vgg_fn = jax.jit(with_vgg.vgg_fn)
  want = float(losses.feature_mse_sum(vgg_fn(out), vgg_fn(batch["image"])))
  g_plain, d_plain, g_vgg, d_vgg, perceptual = (float(x) for x in (g_plain, d_plain, g_vgg, d_vgg, perceptual))
  assert perceptual == pytest.approx(want, rel=1e-5) and perceptual > 0
  assert g_vgg == pytest.approx(g_plain + 30.0 * perceptual, rel=1e-5)
  assert d_vgg == pytest.approx(d_plain, rel=1e-6)
