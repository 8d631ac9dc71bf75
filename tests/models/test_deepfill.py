"""DeepFill generators and discriminators: shapes at 64 and 256 px, the paper's parameter count, holes never read,
local patches around the hole, v1's spatial discount and the gradient penalty through a real critic."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxinpaint import gan_losses
from jaxinpaint.tasks.deepfill import spatial_discount
from jaxinpaint.models import DeepFillV1Generator, DeepFillV2Generator, GlobalCritic, LocalCritic, SNPatchGAN
from jaxinpaint.models.discriminators import hole_box_origin, local_patch


def batch(size, n=2, seed=0):
  rng = np.random.default_rng(seed)
  image = rng.uniform(-1, 1, size=(n, size, size, 3)).astype(np.float32)
  valid = np.ones((n, size, size, 1), np.float32)
  valid[0, size // 4 : size // 2, size // 8 : size // 2] = 0
  valid[-1, size // 2 :, size // 2 : size - 3] = 0
  return jnp.asarray(image), jnp.asarray(valid)


def random_variables(model, *args, seed=0):
  """model's variables filled from numpy (fan-in scaled normals): no compiled init, shapes from eval_shape."""
  rng = np.random.default_rng(seed)
  shapes = jax.eval_shape(model.init, jax.random.key(0), *args)

  def fill(s):
    scale = 1.0 / np.sqrt(np.prod(s.shape[:-1])) if len(s.shape) > 1 else 0.1
    return jnp.asarray(rng.normal(size=s.shape) * scale, s.dtype)

  return jax.tree.map(fill, shapes)


@pytest.mark.parametrize("cls", [DeepFillV2Generator, DeepFillV1Generator])
def test_generators_run_at_64_and_256(cls):
  for size in (64, 256):
    image, valid = batch(size, n=1 if size == 256 else 2)
    model = cls(cnum=4 if size == 256 else 8)
    out = jax.jit(model.apply)(random_variables(model, image, valid), image, valid)
    n = image.shape[0]
    assert out["coarse"].shape == out["refined"].shape == (n, size, size, 3)
    assert out["offsets"].shape == (n, size // 8, size // 8, 2) and out["offsets"].dtype == jnp.int32
    for key in ("coarse", "refined"):
      x = np.asarray(out[key])
      assert np.isfinite(x).all() and x.min() >= -1 and x.max() <= 1


def test_reference_widths_give_the_papers_parameter_count():
  image, valid = jnp.zeros((1, 256, 256, 3)), jnp.ones((1, 256, 256, 1))
  count = lambda m: sum(x.size for x in jax.tree.leaves(jax.eval_shape(m.init, jax.random.key(0), image, valid)))
  assert 4.0e6 < count(DeepFillV2Generator()) < 4.1e6  # Yu et al. 2019: 4.1M
  assert count(DeepFillV1Generator()) > count(DeepFillV2Generator(cnum=32))  # plain convs are twice as wide


def test_generator_never_reads_the_hole():
  image, valid = batch(64)
  model = DeepFillV2Generator(cnum=8)
  apply = jax.jit(model.apply)
  variables = random_variables(model, image, valid, seed=1)
  a = apply(variables, image, valid)
  b = apply(variables, jnp.where(valid > 0, image, -image + 0.5), valid)
  for key in ("coarse", "refined"):
    np.testing.assert_array_equal(np.asarray(a[key]), np.asarray(b[key]))
  assert np.abs(np.asarray(a["refined"])).max() > 1e-3
  # an all-hole image leaves contextual attention nothing to copy: finite output, no NaN
  empty = apply(variables, image, jnp.zeros_like(valid))
  assert all(np.isfinite(np.asarray(empty[k])).all() for k in ("coarse", "refined"))


@pytest.mark.parametrize("config_name", ["gated", "deepfill_v1"])
def test_attention_similarity_is_plumbed_from_the_config(config_name, monkeypatch):
  import importlib

  from jaxinpaint.tasks import deepfill
  from helpers import load_config  # tests/helpers.py

  ca_lib = importlib.import_module("jaxinpaint.layers.contextual_attention")
  seen, original = [], ca_lib.contextual_attention

  def spy(*args, **kwargs):
    seen.append(kwargs["similarity"])
    return original(*args, **kwargs)

  monkeypatch.setattr(ca_lib, "contextual_attention", spy)
  image, valid = batch(32)
  for similarity in (None, "cosine"):
    config = load_config(config_name)
    assert config.model.attention_similarity == "reference"  # the reference's temperature by default
    if similarity:
      config.model.attention_similarity = similarity
    generator = deepfill.DeepFillTask(config).generator
    jax.eval_shape(generator.init, jax.random.key(0), image, valid)
  assert seen == ["reference", "cosine"]


def test_bad_sizes_fail_with_one_line():
  with pytest.raises(ValueError, match=r"divisible by 8 .* got 60x64"):
    DeepFillV2Generator(cnum=4).init(jax.random.key(0), jnp.zeros((1, 60, 64, 3)), jnp.ones((1, 60, 64, 1)))
  with pytest.raises(ValueError, match="valid"):
    DeepFillV2Generator(cnum=4).init(jax.random.key(0), jnp.zeros((1, 64, 64, 3)), jnp.ones((1, 64, 64, 3)))


def test_discriminator_shapes():
  for size in (64, 256):
    image, valid = batch(size)
    d = SNPatchGAN(features=(4, 8, 8, 8, 8, 8))
    variables = random_variables(d, image, valid)
    assert sorted(variables) == ["params", "spectral"] and len(variables["spectral"]) == 6
    scores = jax.jit(d.apply)(variables, image, valid)
    assert scores.shape == (2, (size // 64) ** 2 * 8)  # six stride-2 layers: size / 64 squared patches
  image, _ = batch(32)
  for critic in (GlobalCritic(features=(4, 8)), LocalCritic(features=(4, 8, 8))):
    assert jax.eval_shape(critic.apply, random_variables(critic, image), image).shape == (2,)


def test_local_patch_is_centred_on_each_hole_and_clamped():
  valid = np.ones((3, 16, 20, 1), np.float32)
  valid[0, 6:9, 8:12] = 0  # rows 6..8, cols 8..11 -> window rows 3..10, cols 6..13 for size 8
  valid[1, 0:2, 17:20] = 0  # top-right corner -> clamped
  origin = np.asarray(hole_box_origin(jnp.asarray(valid), 8))
  np.testing.assert_array_equal(origin, [[3, 6], [0, 12], [4, 6]])  # no hole: the centre
  x = np.arange(3 * 16 * 20, dtype=np.float32).reshape(3, 16, 20, 1)
  patches = np.asarray(local_patch(jnp.asarray(x), jnp.asarray(origin), 8))
  for n, (top, left) in enumerate(origin):
    np.testing.assert_array_equal(patches[n], x[n, top : top + 8, left : left + 8])
  with pytest.raises(ValueError, match="local patch size 17"):
    hole_box_origin(jnp.asarray(valid), 17)


def test_spatial_discount_is_gamma_to_the_distance_from_known_pixels():
  rng = np.random.default_rng(0)
  valid = np.ones((2, 12, 14, 1), np.float32)
  valid[0, 2:9, 3:12] = 0
  valid[1] = (rng.uniform(size=(12, 14, 1)) > 0.6).astype(np.float32)
  weights = np.asarray(spatial_discount(jnp.asarray(valid), 0.9))
  for n in range(2):
    known = np.argwhere(valid[n, ..., 0] > 0)
    for i in range(12):
      for j in range(14):
        d = np.abs(known - [i, j]).max(axis=1).min()  # chessboard distance to the nearest known pixel
        assert weights[n, i, j, 0] == pytest.approx(0.9 ** max(d - 1, 0), rel=1e-5), (n, i, j)
  assert weights[0, 5, 7, 0] == pytest.approx(0.9**3)
  assert np.isfinite(np.asarray(spatial_discount(jnp.zeros((1, 8, 8, 1)), 0.9))).all()


def test_gradient_penalty_through_a_critic_matches_finite_differences():
  critic = GlobalCritic(features=(4, 4))
  rng = np.random.default_rng(0)
  real = rng.uniform(-1, 1, size=(2, 8, 8, 3)).astype(np.float32)
  fake = rng.uniform(-1, 1, size=(2, 8, 8, 3)).astype(np.float32)
  variables = random_variables(critic, jnp.asarray(real))
  fn = lambda x: critic.apply(variables, x)
  key = jax.random.key(3)
  gp = float(gan_losses.gradient_penalty(fn, jnp.asarray(real), jnp.asarray(fake), key, weight=10.0))
  eps_mix = np.asarray(jax.random.uniform(key, (2, 1, 1, 1)))
  x_hat = eps_mix * real + (1 - eps_mix) * fake
  h = 1e-2
  size = x_hat[0].size
  expected = []
  for n in range(2):  # central differences of critic(x_hat_n) in every input coordinate, as one batch
    steps = (h * np.eye(size, dtype=np.float32)).reshape(size, 8, 8, 3)
    plus, minus = (np.asarray(jax.jit(fn)(jnp.asarray(x_hat[n] + s * steps))) for s in (1.0, -1.0))
    grad = (plus.astype(np.float64) - minus) / (2 * h)
    expected.append((np.linalg.norm(grad) - 1.0) ** 2)
  assert gp == pytest.approx(10.0 * np.mean(expected), rel=2e-2)
