"""DCGAN (seed 001): layer shapes of its tables, sub-pixel upsampling, each network trained by exactly its own loss
(each GAN loss against its formula), one Adam per network, sharded == single device, bad sizes fail clearly."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import helpers  # tests/helpers.py
from jaxinpaint import sharding, tasks, train
from jaxinpaint.data import pipeline
from jaxinpaint.models import DCGANDiscriminator, DCGANGenerator
from jaxinpaint.models.dcgan import SubpixelUp, depth_to_space
from jaxinpaint.runs import jit_init


def load_config(variant="tiny", **overrides):
  config = helpers.load_config("dcgan", variant)
  for key, value in overrides.items():
    section, name = key.split("__")
    config[section][name] = value
  return config


def shapes_of(module, *args, **kwargs):
  """Output shapes of every submodule of `module.apply(init(*args), *args)`, computed without any FLOP."""

  def run(*a):
    variables = module.init(jax.random.key(0), *a, **kwargs)
    return module.apply(variables, *a, **kwargs, capture_intermediates=True)

  out, state = jax.eval_shape(run, *args)
  inter = state["intermediates"]
  return out.shape, {k: v["__call__"][0].shape for k, v in inter.items() if k != "__call__"}


def test_generator_and_discriminator_follow_seed_001_tables():
  z = jax.ShapeDtypeStruct((2, 100), jnp.float32)
  out, layers = shapes_of(DCGANGenerator(), z)
  assert out == (2, 64, 64, 3)
  assert layers["norm0"] == (2, 4, 4, 1024)  # dense + reshape
  assert [layers[f"up{i}"] for i in (1, 2, 3, 4)] == [
    (2, 8, 8, 512),
    (2, 16, 16, 256),
    (2, 32, 32, 128),
    (2, 64, 64, 3),
  ]
  image = jax.ShapeDtypeStruct((2, 64, 64, 3), jnp.float32)
  logits, layers = shapes_of(DCGANDiscriminator(), image)
  assert logits == (2, 1)
  assert [layers[f"conv{i}"] for i in range(4)] == [(2, 32, 32, 64), (2, 16, 16, 128), (2, 8, 8, 256), (2, 4, 4, 512)]
  variables = jax.eval_shape(lambda x: DCGANDiscriminator().init(jax.random.key(0), x), image)
  assert variables["params"]["conv1"]["kernel"].shape == (5, 5, 64, 128)  # 5x5 convs
  assert shapes_of(DCGANDiscriminator(num_logits=2), image)[0] == (2, 2)


def test_generator_at_another_size_is_bounded_and_batch_independent_in_eval_mode():
  gen = DCGANGenerator(latent_dim=7, features=(8, 4, 4))  # 3 upsamplings: 32 px
  assert gen.image_size == 32
  z = jax.random.uniform(jax.random.key(1), (3, 7), minval=-1, maxval=1)
  variables = jit_init(gen.init)(jax.random.key(2), z)
  apply = jax.jit(gen.apply)
  out = apply(variables, z)
  assert out.shape == (3, 32, 32, 3) and float(jnp.abs(out).max()) <= 1.0
  np.testing.assert_allclose(apply(variables, z[1:2])[0], out[1], atol=1e-6)


def test_depth_to_space_and_icnr_start():
  x = np.random.default_rng(0).normal(size=(2, 3, 5, 4 * 6)).astype(np.float32)
  y = np.asarray(depth_to_space(jnp.asarray(x)))
  for i in range(2):
    for j in range(2):
      np.testing.assert_array_equal(y[:, i::2, j::2, :], x[..., (2 * i + j) * 6 : (2 * i + j + 1) * 6])
  up = SubpixelUp(5)
  h = jnp.asarray(x[..., :7])
  out = np.asarray(jax.jit(lambda x: up.apply(up.init(jax.random.key(0), x), x))(h))
  assert out.shape == (2, 6, 10, 5)
  # ICNR: the four phases start equal, so the first output is a nearest-neighbour upsampling (no checkerboard)
  np.testing.assert_allclose(out[:, 0::2, 0::2], out[:, 1::2, 1::2], atol=1e-6)
  np.testing.assert_allclose(out[:, 0::2, 1::2], out[:, 1::2, 0::2], atol=1e-6)


def test_wrong_sizes_fail_with_the_size_needed():
  with pytest.raises(ValueError, match=r"64x64 RGB images .* got shape \(1, 48, 48, 3\)"):
    DCGANDiscriminator().init(jax.random.key(0), jnp.zeros((1, 48, 48, 3)))
  with pytest.raises(ValueError, match=r"z of shape \[B, 100\]"):
    DCGANGenerator().init(jax.random.key(0), jnp.zeros((1, 64)))
  config = load_config()
  config.data.image_size = 48
  with pytest.raises(ValueError, match=r"image_size=48, but a DCGAN generator with 3 feature levels makes 32x32"):
    train.Trainer(config)
  config = load_config(loss__gan_loss="relu")
  with pytest.raises(ValueError, match="unknown GAN loss 'relu'"):
    train.Trainer(config)


def _setup(gan_loss):
  config = load_config(loss__gan_loss=gan_loss)
  task = tasks.make_task(config)
  batch = {k: jnp.asarray(v) for k, v in next(pipeline.make_train_iterator(config)).items()}
  variables = dict(jit_init(task.init)(jax.random.key(0), batch))
  params = variables.pop("params")
  return config, task, train.TrainState(step=0, params=params, model_state=variables, opt_state=None), batch


def _logits_by_hand(task, params, model_state, real, rng):
  """Independent forward pass: z, G(z) and D's logits on real and fake batches (train mode)."""
  stats = model_state["batch_stats"]
  z = jax.random.uniform(rng, (real.shape[0], task.latent_dim), minval=-1.0, maxval=1.0)
  fake, _ = task.generator.apply(
    {"params": params["generator"], "batch_stats": stats["generator"]}, z, train=True, mutable=["batch_stats"]
  )
  critic = lambda x: task.discriminator.apply(
    {"params": params["discriminator"], "batch_stats": stats["discriminator"]}, x, train=True, mutable=["batch_stats"]
  )[0]
  return critic(real), critic(fake)


def _formulas(gan_loss, real, fake):
  """Seed 001's three GAN losses in numpy: (d_loss, g_loss) from logits [B, K]."""
  sig = lambda x: 1 / (1 + np.exp(-x))
  if gan_loss == "sigmoid_ce":
    return -np.log(sig(real)).mean() - np.log(1 - sig(fake)).mean(), -np.log(sig(fake)).mean()
  if gan_loss == "softmax_ce":  # two logits (real, fake) per image
    log_softmax = lambda x: x - np.log(np.exp(x).sum(-1, keepdims=True))
    return -log_softmax(real)[:, 0].mean() - log_softmax(fake)[:, 1].mean(), -log_softmax(fake)[:, 0].mean()
  assert gan_loss == "mse"  # least squares on D's probability
  return ((sig(real) - 1) ** 2).mean() + (sig(fake) ** 2).mean(), ((sig(fake) - 1) ** 2).mean()


@pytest.mark.parametrize("gan_loss", ["sigmoid_ce", "softmax_ce", "mse"])
def test_each_gan_loss_matches_its_formula(gan_loss):
  config, task, state, batch = _setup(gan_loss)
  rng = jax.random.key(3)
  loss, (_, terms) = jax.jit(task.loss_fn)(state.params, state.model_state, batch, rng, 0)
  real, fake = jax.jit(functools.partial(_logits_by_hand, task))(state.params, state.model_state, batch["image"], rng)
  real, fake = np.asarray(real, np.float64), np.asarray(fake, np.float64)
  assert real.shape == (config.batch_size, 2 if gan_loss == "softmax_ce" else 1)
  d, g = _formulas(gan_loss, real, fake)
  assert float(terms["d_loss"]) == pytest.approx(d, rel=1e-5)
  assert float(terms["g_loss"]) == pytest.approx(g, rel=1e-5)
  assert float(loss) == pytest.approx(d + g, rel=1e-5)


def test_each_network_gets_exactly_the_gradient_of_its_own_loss():
  _, task, state, batch = _setup("sigmoid_ce")
  stats = state.model_state["batch_stats"]

  @jax.jit
  def both(params, model_state, batch, rng):
    grads, (new_state, _) = jax.grad(task.loss_fn, has_aux=True)(params, model_state, batch, rng, 0)
    z = jax.random.uniform(rng, (batch["image"].shape[0], task.latent_dim), minval=-1.0, maxval=1.0)

    def generate(gp):
      return task.generator.apply(
        {"params": gp, "batch_stats": stats["generator"]}, z, train=True, mutable=["batch_stats"]
      )[0]

    def critic(dp, x):
      return task.discriminator.apply(
        {"params": dp, "batch_stats": stats["discriminator"]}, x, train=True, mutable=["batch_stats"]
      )[0]

    # generator: -mean log D(G(z)) with D fixed; discriminator: its BCE with G(z) a constant
    g_only = jax.grad(lambda gp: jnp.mean(jax.nn.softplus(-critic(params["discriminator"], generate(gp)))))
    fake = generate(params["generator"])
    d_only = jax.grad(
      lambda dp: jnp.mean(jax.nn.softplus(-critic(dp, batch["image"]))) + jnp.mean(jax.nn.softplus(critic(dp, fake)))
    )
    expected = {"generator": g_only(params["generator"]), "discriminator": d_only(params["discriminator"])}
    return grads, expected, new_state

  grads, expected, new_state = both(state.params, state.model_state, batch, jax.random.key(4))
  for name in ("generator", "discriminator"):
    got, want = jax.tree.leaves(grads[name]), jax.tree.leaves(expected[name])
    assert len(got) == len(want)
    for a, b in zip(got, want):
      np.testing.assert_allclose(a, b, rtol=2e-4, atol=1e-6)
    assert any(float(jnp.abs(a).max()) > 0 for a in got)
  # the discriminator's running statistics saw the real batch, then the fake one
  assert not np.allclose(
    new_state["batch_stats"]["discriminator"]["norm1"]["mean"], stats["discriminator"]["norm1"]["mean"]
  )


def test_one_adam_per_network_with_its_own_rate():
  config = load_config(optim__discriminator_learning_rate=1e-2)
  config.optim.learning_rate = config.optim.end_learning_rate = 1e-4
  trainer = train.Trainer(config, jax.devices()[:1])
  state = trainer.initial_state()
  step = trainer.compile_step(trainer.task, state)
  before = jax.tree.map(np.asarray, state.params)
  state, _ = step(state, sharding.to_global(next(pipeline.make_train_iterator(config)), trainer.mesh))
  for name, lr in (("generator", 1e-4), ("discriminator", 1e-2)):
    moved = np.concatenate(
      [
        np.abs(np.asarray(a) - b).ravel()
        for a, b in zip(jax.tree.leaves(state.params[name]), jax.tree.leaves(before[name]))
      ]
    )
    # Adam's first step moves every parameter with a non-negligible gradient by ~lr
    assert np.median(moved[moved > 0]) == pytest.approx(lr, rel=0.05), name


def test_sharded_step_equals_single_device_step():
  config = load_config()
  config.optim.eps = 1.0  # update proportional to the gradient, so float-noise signs do not decide the check
  results = helpers.sharded_and_single(config)
  assert results["sharded"][0]["loss"] == pytest.approx(results["single"][0]["loss"], rel=1e-5)
  for a, b in zip(results["sharded"][1], results["single"][1]):
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)
