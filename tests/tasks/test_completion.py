"""Latent-optimisation completion (Yeh et al., seed 001): the weighted context loss against scipy, the loss falls
over the iterations, the composite keeps the known pixels exactly, Poisson blending against a sparse solve,
8 devices == 1 device, clear errors, and `--mode=complete` end to end."""

import importlib
import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.sparse
import scipy.sparse.linalg
from scipy.signal import convolve2d

import helpers  # tests/helpers.py
from jaxinpaint import complete, completion, sharding, train
from jaxinpaint.data import masks
from jaxinpaint.models import DCGANDiscriminator, DCGANGenerator
from jaxinpaint.runs import jit_init

GEN = DCGANGenerator(latent_dim=8, features=(16, 8, 8))  # 32 px
DISC = DCGANDiscriminator(features=(8, 8), image_size=32)


@pytest.fixture(scope="module")
def setup():
  z = jnp.zeros((1, 8))
  variables = jit_init(
    lambda z, x: {"generator": GEN.init(jax.random.key(0), z), "discriminator": DISC.init(jax.random.key(1), x)}
  )(z, jnp.zeros((1, 32, 32, 3)))
  # targets the generator can reach exactly, with a centre hole and a random box
  z_true = jax.random.uniform(jax.random.key(2), (5, 8), minval=-0.8, maxval=0.8)
  image = np.asarray(jax.jit(GEN.apply)(variables["generator"], z_true))
  rng = np.random.default_rng(0)
  valid = np.stack([masks.centre_box(32, 32)] * 3 + [masks.random_box(rng, 32, 32) for _ in range(2)])[..., None]
  return variables, image, valid.astype(np.float32)


def test_weighted_context_weights_match_scipy():
  rng = np.random.default_rng(1)
  valid = np.stack([masks.random_boxes(rng, 20, 17) for _ in range(2)])[..., None]
  got = np.asarray(completion.context_weights(valid, weighted=True, window=7))
  for v, g in zip(valid[..., 0], got[..., 0]):
    want = v * convolve2d(1 - v, np.ones((7, 7)) / 49, mode="same", boundary="symm")
    np.testing.assert_allclose(g, want, atol=1e-6)
  assert (got[valid == 0] == 0).all() and got.max() > 0
  np.testing.assert_array_equal(completion.context_weights(valid), valid)  # plain L1: W = M
  with pytest.raises(ValueError, match="positive odd"):
    completion.context_weights(valid, weighted=True, window=6)


def test_context_and_perceptual_losses_match_numpy():
  rng = np.random.default_rng(2)
  g, y, w = (rng.normal(size=(3, 6, 5, 3)).astype(np.float32) for _ in range(3))
  want = np.abs(w * (g - y)).sum(axis=(1, 2, 3))
  np.testing.assert_allclose(completion.context_loss(g, y, w), want, rtol=1e-5)
  logits = rng.normal(size=(3, 1)).astype(np.float32)
  np.testing.assert_allclose(completion.perceptual_loss(logits), np.log1p(np.exp(-logits[:, 0])), rtol=1e-5)


def test_completion_lowers_the_context_loss_and_keeps_known_pixels(setup):
  variables, image, valid = setup
  z0 = completion.initial_latents(7, len(image), 8)
  out = completion.Completion(GEN, DISC, iterations=60, learning_rate=0.05).run(variables, image, valid, z0)
  ctx = out["context"]
  assert ctx.shape == (61, 5)
  assert (ctx[-1] < 0.3 * ctx[0]).all(), ctx[[0, -1]]
  assert np.abs(out["z"]).max() <= 1.0  # z kept in [-1, 1]
  known = np.broadcast_to(valid, image.shape) == 1
  np.testing.assert_array_equal(out["output"][known], image[known])  # exactly, bit for bit
  np.testing.assert_array_equal(out["output"][~known], out["generated"][~known])
  # history[t] is the loss at iterate t: the last entry is the returned z's
  generated = jax.jit(GEN.apply)(variables["generator"], jnp.asarray(out["z"]))
  np.testing.assert_allclose(np.abs(valid * (generated - image)).sum(axis=(1, 2, 3)), ctx[-1], rtol=1e-4)
  # the default prior: D with training-mode BatchNorm on the completed batch (bamos)
  logits = jax.jit(lambda d, x: DISC.apply(d, x, train=True, mutable=["batch_stats"])[0])(
    variables["discriminator"], generated
  )
  np.testing.assert_allclose(out["perceptual"][-1], jax.nn.softplus(-logits[:, 0]), rtol=1e-4)


def test_weighted_completion_also_fits_the_context(setup):
  variables, image, valid = setup
  z0 = completion.initial_latents(7, len(image), 8)
  out = completion.Completion(GEN, DISC, iterations=40, learning_rate=0.05, weighted=True, lam=0.0).run(
    variables, image, valid, z0
  )
  assert (out["context"][-1] < 0.5 * out["context"][0]).all()


def poisson_by_hand(y, g, known):
  """Sparse direct solve of the discrete Poisson equation of `poisson_blend`, for one f32[H, W] channel."""
  h, w = y.shape
  hole = np.flatnonzero(known.ravel() == 0)
  index = {p: i for i, p in enumerate(hole)}
  rows, cols, vals, rhs = [], [], [], np.zeros(len(hole))
  for i, p in enumerate(hole):
    r, c = divmod(p, w)
    for rr, cc in ((r - 1, c), (r + 1, c), (r, c - 1), (r, c + 1)):
      if 0 <= rr < h and 0 <= cc < w:
        q = rr * w + cc
        rows.append(i), cols.append(i), vals.append(1.0)
        rhs[i] += g.ravel()[p] - g.ravel()[q]
        if q in index:
          rows.append(i), cols.append(index[q]), vals.append(-1.0)
        else:
          rhs[i] += y.ravel()[q]
  a = scipy.sparse.csr_matrix((vals, (rows, cols)), shape=(len(hole), len(hole)))
  x = y.astype(np.float64).ravel().copy()
  x[hole] = scipy.sparse.linalg.spsolve(a, rhs)
  return x.reshape(h, w)


def test_poisson_blending_solves_the_poisson_equation_and_keeps_known_pixels():
  rng = np.random.default_rng(3)
  image = rng.uniform(-1, 1, size=(2, 14, 11, 3)).astype(np.float32)
  generated = rng.uniform(-1, 1, size=(2, 14, 11, 3)).astype(np.float32)
  valid = np.stack([masks.random_boxes(rng, 14, 11, size_range=(0.3, 0.6)) for _ in range(2)])[..., None]
  valid[1, 0, :] = 0  # a hole touching the image border (Neumann there)
  blend = jax.jit(completion.poisson_blend)
  out = np.asarray(blend(image, generated, valid))
  known = np.broadcast_to(valid, image.shape) == 1
  np.testing.assert_array_equal(out[known], image[known])
  for b in range(2):
    for c in range(3):
      want = poisson_by_hand(image[b, ..., c], generated[b, ..., c], valid[b, ..., 0])
      np.testing.assert_allclose(out[b, ..., c], want, atol=2e-4)
  # gradients of G(z) with the boundary of y: a generated image that is y plus a constant blends back to y
  out = np.asarray(blend(image, image + 0.3, valid))
  np.testing.assert_allclose(out, image, atol=1e-4)


def test_completion_on_8_devices_equals_one_device(setup):
  variables, image, valid = setup  # 5 images: padded to 8 on the 8-device mesh, then cut back
  z0 = completion.initial_latents(9, len(image), 8)
  c = completion.Completion(GEN, DISC, iterations=15, learning_rate=0.05, blend="poisson", poisson_iterations=300)
  many = c.run(variables, image, valid, z0, mesh=sharding.make_mesh(jax.devices()))
  one = c.run(variables, image, valid, z0, mesh=sharding.make_mesh(jax.devices()[:1]))
  assert len(jax.devices()) == 8
  for key in ("z", "generated", "output", "context", "perceptual"):
    assert many[key].shape == one[key].shape
    np.testing.assert_allclose(many[key], one[key], rtol=1e-5, atol=1e-5)


def test_prior_uses_the_batch_statistics_of_the_batch_being_completed_by_default(setup):
  # bamos' reference keeps D's BatchNorm in training mode while completing: the batch's own statistics
  variables, image, valid = setup
  z0 = completion.initial_latents(3, len(image), 8)
  z_other = z0.at[4].set(-z0[4])  # another member of the batch changes
  x, x_other = (GEN.apply(variables["generator"], z, train=False) for z in (z0, z_other))
  # a fresh D's logits are ~0 whatever its statistics: scale its last layer so the prior tells them apart
  d = variables["discriminator"]
  d = {**d, "params": {**d["params"], "logits": jax.tree.map(lambda p: 100.0 * p, d["params"]["logits"])}}
  variables = {**variables, "discriminator": d}
  for stats, call in (
    ("batch", lambda x: DISC.apply(d, x, train=True, mutable=["batch_stats"])[0]),
    ("running", lambda x: DISC.apply(d, x, train=False)),
  ):
    kwargs = {} if stats == "batch" else {"discriminator_stats": "running"}  # the default is 'batch'
    c = completion.Completion(GEN, DISC, iterations=0, **kwargs)
    prior, prior_other = (np.asarray(jax.jit(c)(variables, image, valid, z)["perceptual"][0]) for z in (z0, z_other))
    np.testing.assert_allclose(prior, np.asarray(completion.perceptual_loss(call(x))), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(prior_other, np.asarray(completion.perceptual_loss(call(x_other))), rtol=1e-5, atol=1e-6)
    moved = np.abs(prior_other[:4] - prior[:4]).max()  # images 0-3 kept their z
    assert (moved > 1e-4) if stats == "batch" else (moved < 1e-6), (stats, moved)
  with pytest.raises(ValueError, match="discriminator_stats must be one of"):
    completion.Completion(GEN, DISC, discriminator_stats="eval")
  config = helpers.load_config("dcgan", "tiny")
  assert config.completion.discriminator_stats == "batch"
  config.completion.discriminator_stats = "running"
  from jaxinpaint.tasks import dcgan

  assert dcgan.DCGANTask(config).completer().discriminator_stats == "running"


def test_bad_inputs_fail_with_one_clear_line(setup):
  variables, image, valid = setup
  c = completion.Completion(GEN, DISC, iterations=2)
  z0 = completion.initial_latents(0, len(image), 8)
  empty = valid.copy()
  empty[2] = 0
  with pytest.raises(ValueError, match=r"image\(s\) \[2\] have no known pixels .* nothing to complete from"):
    c.run(variables, image, empty, z0)
  with pytest.raises(ValueError, match=r"32x32 RGB images .* got shape \(5, 40, 40, 3\) — resize or crop to 32x32"):
    c.run(variables, np.zeros((5, 40, 40, 3)), np.ones((5, 40, 40, 1)), z0)
  with pytest.raises(ValueError, match=r"z_init must be f32\[5, 8\]"):
    c.run(variables, image, valid, z0[:3])
  with pytest.raises(ValueError, match="blend must be one of"):
    completion.Completion(GEN, DISC, blend="seamless")


def test_mode_complete_end_to_end(tmp_path):
  config = helpers.load_config("dcgan", "tiny")
  workdir = str(tmp_path)
  trained = train.train_and_evaluate(config, workdir)
  assert trained["step"] == config.num_train_steps
  assert all(np.isfinite(v) for v in trained["eval"].values())
  assert os.path.isfile(os.path.join(workdir, "samples", "step_0000010.png"))
  module, function = importlib.import_module("jaxinpaint.main").MODES["complete"].split(":")
  complete_run = getattr(importlib.import_module(module), function)
  assert complete_run is complete.complete_run
  result = complete_run(config, workdir)
  folder = os.path.join(workdir, "completion")
  for name in ("metrics.json", "completions.png", "samples.png"):
    assert os.path.isfile(os.path.join(folder, name)), name
  with open(os.path.join(folder, "metrics.json")) as f:
    saved = json.load(f)
  assert saved["step"] == 10 and saved["num_images"] == config.completion.num_images
  assert saved["mse"] == pytest.approx(np.mean(saved["per_image"]["mse"]))
  assert 0 < saved["ssim"] <= 1 and saved["mse"] > 0
  assert saved["context_loss"][str(config.completion.iterations)] < saved["context_loss"]["0"]
  assert result["mse"] == saved["mse"]


def test_seed001_scores_follow_their_formulas():
  rng = np.random.default_rng(4)
  a = rng.uniform(-1, 1, size=(2, 16, 16, 3)).astype(np.float32)
  b = np.clip(a + rng.normal(scale=0.1, size=a.shape), -1, 1).astype(np.float32)
  s = completion.seed001_scores(a, b)
  ua, ub = (np.round((x + 1) * 127.5).astype(np.float64) for x in (a, b))
  np.testing.assert_allclose(s["mse"], ((ua - ub) ** 2).mean(axis=(1, 2, 3)))
  np.testing.assert_allclose(s["psnr"], 10 * np.log10(255**2 / s["mse"]))
  assert (completion.seed001_scores(a, a)["ssim"] == 1).all() and (s["ssim"] < 1).all()
