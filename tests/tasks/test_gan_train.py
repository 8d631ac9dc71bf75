"""DeepFill in the generic trainer: each network gets exactly its own loss's gradient, v1's critic updates 5 times
per generator update, the sharded GAN step equals the single-device step, G and D losses stay finite over 20
:tiny steps, a resumed run is bit-exact, and TensorBoard gets both losses, D(real)/D(fake) and the stage images."""

import glob
import os

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from jaxinpaint import models, sharding, train
from jaxinpaint.data import pipeline
from jaxinpaint.tasks import deepfill, optim
from jaxinpaint.runs import jit_init
from helpers import leaves, load_config, sharded_and_single, straight_and_resumed  # tests/helpers.py


def tiny_batch(n=2, size=32):
  rng = np.random.default_rng(0)
  valid = np.ones((n, size, size, 1), np.float32)
  valid[:, 8:20, 6:18] = 0
  valid[-1, 22:, 20:] = 0
  return {"image": jnp.asarray(rng.uniform(-1, 1, (n, size, size, 3)), jnp.float32), "valid": jnp.asarray(valid)}


class StubGenerator(nn.Module):
  """Two small conv stages with DeepFill's outputs: the gradient routing does not depend on the architecture,
  and this compiles in a second (the real generators are trained in the tests below)."""

  @nn.compact
  def __call__(self, image, valid, train=False):
    h = jnp.tanh(nn.Conv(4, (3, 3))(jnp.concatenate([image * valid, 1.0 - valid], axis=-1)))
    coarse = jnp.tanh(nn.Conv(3, (3, 3))(h))
    refined = jnp.tanh(nn.Conv(3, (3, 3))(jnp.concatenate([h, coarse], axis=-1)))
    return {"coarse": coarse, "refined": refined, "offsets": jnp.zeros(image.shape[:3] + (2,), jnp.int32)}


@pytest.mark.parametrize("name", ["gated", "deepfill_v1"])
def test_each_network_receives_the_gradient_of_its_own_loss(name):
  task = deepfill.DeepFillTask(load_config(name))
  task.__dict__["generator"] = StubGenerator()  # replaces the cached property
  batch = tiny_batch()
  variables = dict(jit_init(task.init)(jax.random.key(0), batch))
  params = variables.pop("params")
  state, rng = variables, jax.random.key(1)
  image, valid = batch["image"], batch["valid"]

  def composite(g_params):
    out = task.generator.apply({"params": g_params}, image, valid)
    return out, models.composite(image, out["refined"], valid)

  def d_alone(d_params, g_params):  # no stop_gradient anywhere: D's loss as a function of both networks
    return task.adversary.d_loss(d_params, state, image, composite(g_params)[1], valid, rng)[0]

  def g_alone(g_params):
    out, comp = composite(g_params)
    return task.config.gan.weight * task.adversary.g_loss(
      params["discriminator"], state, comp, valid
    ) + task.reconstruction_loss(out["coarse"], out["refined"], image, valid)

  @jax.jit
  def all_grads(p):
    total = jax.grad(lambda q: task.loss_fn(q, state, batch, rng, jnp.zeros((), jnp.int32))[0])(p)
    return (
      total,
      jax.grad(d_alone)(p["discriminator"], p["generator"]),
      jax.grad(g_alone)(p["generator"]),
      jax.grad(d_alone, argnums=1)(p["discriminator"], p["generator"]),
    )

  total, d_grad, g_grad, d_through_g = all_grads(params)
  for a, b in zip(leaves(total["discriminator"]), leaves(d_grad)):
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7)
  for a, b in zip(leaves(total["generator"]), leaves(g_grad)):
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7)
  # without the stop_gradient, D's loss would also push G: the routing is doing something
  assert max(np.abs(x).max() for x in leaves(d_through_g)) > 1e-5


def test_update_every_steps_the_inner_optimiser_only_every_k_updates():
  params = {"w": jnp.asarray([1.0, -2.0, 0.5])}
  grads = [{"w": jnp.asarray(np.random.default_rng(i).normal(size=3), jnp.float32)} for i in range(7)]
  wrapped, plain = optim.update_every(optax.adam(0.1), 3), optax.adam(0.1)
  ws, wp = wrapped.init(params), plain.init(params)
  p_wrapped, p_plain = params, params
  for i, g in enumerate(grads):
    before = jax.tree.map(np.asarray, ws.inner)
    updates, ws = wrapped.update(g, ws, p_wrapped)
    p_wrapped = optax.apply_updates(p_wrapped, updates)
    if i % 3 == 0:  # plain Adam sees only the gradients of steps 0, 3, 6
      updates, wp = plain.update(g, wp, p_plain)
      p_plain = optax.apply_updates(p_plain, updates)
    else:
      assert all(np.array_equal(a, b) for a, b in zip(leaves(before), leaves(ws.inner)))
    np.testing.assert_allclose(np.asarray(p_wrapped["w"]), np.asarray(p_plain["w"]), rtol=1e-6)
  assert int(ws.count) == 7
  with pytest.raises(ValueError, match="every >= 1"):
    optim.update_every(optax.adam(0.1), 0)


def test_sharded_gan_step_equals_single_device_step():
  config = load_config("gated")
  # Adam's update is ~lr * sign(g) for |g| >> eps, so a gradient of ~1e-9 (several here, e.g. gates that are
  # saturated) turns float rounding of the cross-device sum into a +-lr flip. A large eps makes the update
  # smooth in g; the step and its reductions are what this test compares.
  for optim_config in (config.optim, config.d_optim):
    optim_config.eps = 1e-3
  runs = sharded_and_single(config)
  metrics = {name: m for name, (m, _) in runs.items()}
  params = {name: p for name, (_, p) in runs.items()}
  for key in ("g_loss", "d_loss", "d_real", "d_fake", "l1_refined"):
    assert metrics["sharded"][key] == pytest.approx(metrics["single"][key], rel=1e-4, abs=1e-6), key
  for a, b in zip(params["sharded"], params["single"]):
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
  """configs/gated.py:tiny trained 20 steps straight, and resumed from its step-10 checkpoint to step 20.

  On one device: the sharded step is compared with the single-device one above, and 8 fake CPU devices run
  this network's many small ops several times slower."""
  return straight_and_resumed(load_config("gated"), tmp_path_factory)


def test_gan_losses_stay_finite_and_the_output_beats_the_masked_input(runs):
  history = runs["full"]["history"]
  assert sorted(history) == [5, 10, 15, 20]
  for values in history.values():
    for key in ("g_loss", "d_loss", "d_real", "d_fake", "l1_coarse", "l1_refined"):
      assert np.isfinite(values[key]), (key, values)
  assert history[20]["l1_refined"] < history[5]["l1_refined"]
  assert runs["full"]["eval"]["psnr"] > runs["full"]["baseline"]["psnr"]


def test_resumed_gan_run_is_bit_exact(runs):
  a, b = runs["full"]["state"], runs["second"]["state"]
  assert sorted(runs["second"]["history"]) == [15, 20] and int(a.step) == int(b.step) == 20  # resumed at 10
  for x, y in zip(leaves((a.params, a.model_state, a.opt_state)), leaves((b.params, b.model_state, b.opt_state))):
    np.testing.assert_array_equal(x, y)
  assert sorted(a.model_state) == ["spectral"]


def test_tensorboard_has_both_losses_and_the_stage_images(runs):
  from tensorboard.backend.event_processing import event_accumulator

  workdir = runs["full_dir"]
  events = glob.glob(os.path.join(workdir, "events.out.tfevents.*"))
  acc = event_accumulator.EventAccumulator(events[0], size_guidance={"tensors": 0, "images": 0})
  acc.Reload()
  tags = set(acc.Tags()["tensors"]) | set(acc.Tags()["scalars"]) | set(acc.Tags()["images"])
  for name in ("g_loss", "d_loss", "d_real", "d_fake", "l1_coarse", "l1_refined", "g_adv"):
    assert f"train/{name}" in tags, tags
  assert {"samples", "stages", "eval/psnr", "eval/ssim"} <= tags
  from PIL import Image

  grid = np.asarray(Image.open(os.path.join(workdir, "samples", "stages_step_0000020.png")))
  # target | input | coarse | output | composite | attention, 32 px tiles with 2 px padding
  assert grid.shape == (6 * 36, 6 * 36, 3)


def test_deepfill_v1_updates_the_generator_once_per_five_critic_updates():
  config = load_config("deepfill_v1")
  trainer = train.Trainer(config, jax.devices()[:1])
  state = trainer.initial_state()
  step = trainer.compile_step(trainer.task, state)  # one compile; the schedule reads the state's step counter
  batches = pipeline.make_train_iterator(config)
  states = {}
  for k in range(1, 7):
    state, metrics = step(state, sharding.to_global(next(batches), trainer.mesh))
    values = metrics.compute()
    assert all(np.isfinite(float(values[name])) for name in ("g_loss", "d_loss", "gp")), (k, values)
    states[k] = state.replace(params=jax.tree.map(np.array, state.params))  # copies: the step donates its input
  same = lambda a, b, group: all(
    np.array_equal(x, y) for x, y in zip(leaves(states[a].params[group]), leaves(states[b].params[group]))
  )
  assert same(4, 5, "generator")  # step index 4: a critic-only step
  assert not same(5, 6, "generator")  # step index 5 = 0 mod 5: the generator moves
  assert not same(4, 5, "discriminator") and not same(5, 6, "discriminator")
  assert states[6].model_state == {}


def test_deepfill_v1_weights_the_coarse_l1_terms_by_1_2():
  # reference v1: g = 0.001 gan + L1_LOSS_ALPHA l1 + AE_LOSS_ALPHA ae, each = COARSE_L1_ALPHA coarse + refined,
  # with L1_LOSS_ALPHA = AE_LOSS_ALPHA = COARSE_L1_ALPHA = 1.2
  task = deepfill.DeepFillTask(load_config("deepfill_v1"))
  batch = tiny_batch()
  image, valid = batch["image"], batch["valid"]
  off = image + 0.25 * valid  # wrong by 0.25 on the known pixels only: the discounted hole term is 0
  known_l1 = 0.25  # the known-pixel L1 is a mean over known pixels and channels
  coarse_only = float(task.reconstruction_loss(off, image, image, valid))
  refined_only = float(task.reconstruction_loss(image, off, image, valid))
  assert refined_only == pytest.approx(1.2 * known_l1, rel=1e-5)
  assert coarse_only == pytest.approx(1.2 * 1.2 * known_l1, rel=1e-5)


@pytest.mark.parametrize("size", [256, 32])  # the reference size and the :tiny one
def test_deepfill_v1_local_patch_holds_the_whole_hole(size):
  from jaxinpaint.data import masks

  config = load_config("deepfill_v1")
  config.data.image_size = size
  adversary = deepfill.DeepFillTask(config).adversary
  largest = masks.random_box(np.random.default_rng(0), size, size, size_range=(160 / 256, 160 / 256))
  valid = np.stack([largest] + [masks.random_box(np.random.default_rng(seed), size, size) for seed in range(15)])
  hole = jnp.asarray(1.0 - valid[..., None])
  patch = adversary._inputs(jnp.broadcast_to(hole, hole.shape[:3] + (3,)), jnp.asarray(valid[..., None]))["local"]
  assert patch.shape[1:3] == (adversary.size, adversary.size)
  np.testing.assert_array_equal(np.asarray(patch[..., 0]).sum(axis=(1, 2)), (1.0 - valid).sum(axis=(1, 2)))


def test_bad_gan_config_fails_with_one_line():
  config = load_config("gated")
  config.data.image_size = 36
  with pytest.raises(ValueError, match="image_size=36 is not divisible by 8"):
    train.Trainer(config)
  config = load_config("gated")
  config.gan.loss = "hinj"
  with pytest.raises(ValueError, match="hinj"):
    train.Trainer(config)
  config = load_config("deepfill_v1")
  config.discriminator.name = "patchgan"
  with pytest.raises(ValueError, match="patchgan"):
    train.Trainer(config)
  config = load_config("deepfill_v1")
  config.discriminator.local_fraction = 1.5
  with pytest.raises(ValueError, match="local_fraction must be in"):
    train.Trainer(config)
