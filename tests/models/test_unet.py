"""The inpainting U-Net: shapes in every conv mode, size errors, no NaN on all-hole input, frozen encoder norms."""

import flax
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxinpaint.models import InpaintingUNet, composite, make_model, upsample2
from jaxinpaint.runs import jit_init

CONVS = ("partial", "weighted", "gated", "plain")
SMALL = dict(features=(8, 16, 16, 16))


def _inputs(b, h, w, seed=0, hole_fraction=0.3):
  k1, k2 = jax.random.split(jax.random.key(seed))
  image = jax.random.uniform(k1, (b, h, w, 3), minval=-1, maxval=1)
  valid = (jax.random.uniform(k2, (b, h, w, 1)) > hole_fraction).astype(jnp.float32)
  return image, valid


@pytest.mark.parametrize("conv", CONVS)
@pytest.mark.parametrize("size,depth", [(64, 6), (256, 7)])
def test_every_mode_runs_ignores_hole_content_and_survives_all_holes(conv, size, depth):
  """One compiled train-mode forward + backward per mode and size, fed three inputs."""
  model = InpaintingUNet(conv=conv, depth=depth, **SMALL)
  image, valid = _inputs(2, size, size)
  variables = jit_init(model.init)(jax.random.key(1), image, valid)

  @jax.jit
  def run(params, image, valid):
    def loss(params):
      out, updates = model.apply(
        {"params": params, "batch_stats": variables["batch_stats"]}, image, valid, train=True, mutable=["batch_stats"]
      )
      return jnp.mean((out - image) ** 2), (out, updates)

    (value, (out, updates)), grads = jax.value_and_grad(loss, has_aux=True)(params)
    return value, out, updates, grads

  value, out, updates, grads = run(variables["params"], image, valid)
  assert out.shape == (2, size, size, 3) and out.dtype == jnp.float32
  assert np.isfinite(np.asarray(out)).all() and np.isfinite(float(value))
  assert updates["batch_stats"].keys() == variables["batch_stats"].keys()
  # encoder: 7x7, 5x5, 5x5, then 3x3 kernels, stride 2; decoder 3x3; no norm on the first and last layers
  p = variables["params"]
  assert p["enc1"]["kernel"].shape[:2] == (7, 7) and p["enc2"]["kernel"].shape[:2] == (5, 5)
  assert p[f"enc{depth}"]["kernel"].shape[:2] == (3, 3)
  assert "enc1_norm" not in p and "enc2_norm" in p and "dec1_norm" not in p
  # the last layer sees the input image (and, for gated/plain, its mask channel) besides the upsampled features
  expected_in = SMALL["features"][0] + (3 if conv in ("partial", "weighted") else 4)
  assert p["dec1"]["kernel"].shape[2] == expected_in

  # what the hole pixels held must not change anything: the model only sees known pixels
  noise = jax.random.normal(jax.random.key(5), image.shape) * 10
  _, out_noisy, _, _ = run(variables["params"], image + noise * (1 - valid), valid)
  np.testing.assert_allclose(np.asarray(out_noisy), np.asarray(out), atol=1e-4)

  # an all-hole input: no NaN in the loss, the output or any gradient
  value, out, _, grads = run(variables["params"], jnp.ones_like(image), jnp.zeros_like(valid))
  assert np.isfinite(float(value)) and np.isfinite(np.asarray(out)).all()
  assert all(np.isfinite(np.asarray(g)).all() for g in jax.tree.leaves(grads))


def test_non_square_odd_multiple():
  model = InpaintingUNet(conv="partial", depth=4, **SMALL)
  image, valid = _inputs(1, 48, 80)  # 3x16 by 5x16
  out = jax.jit(lambda x, m: model.apply(model.init(jax.random.key(0), x, m), x, m))(image, valid)
  assert out.shape == (1, 48, 80, 3)


def test_bad_sizes_name_what_works():
  model = InpaintingUNet(depth=7)
  with pytest.raises(ValueError, match=r"divisible by 2\*\*7 = 128.*H=100, W=256"):
    model.init(jax.random.key(0), jnp.zeros((1, 100, 256, 3)), jnp.zeros((1, 100, 256, 1)))
  with pytest.raises(ValueError, match=r"valid must be f32\[B, H, W, 1\].*\(1, 128, 64, 1\)"):
    model.init(jax.random.key(0), jnp.zeros((1, 128, 128, 3)), jnp.zeros((1, 128, 64, 1)))
  with pytest.raises(ValueError, match="got image"):
    model.init(jax.random.key(0), jnp.zeros((128, 128, 3)), jnp.zeros((128, 128, 1)))


def test_freeze_encoder_norm_keeps_encoder_statistics():
  image, valid = _inputs(4, 32, 32)
  for freeze in (False, True):
    model = InpaintingUNet(conv="weighted", depth=5, freeze_encoder_norm=freeze, **SMALL)
    variables = jit_init(model.init)(jax.random.key(0), image, valid)
    _, new = jax.jit(lambda v: model.apply(v, image, valid, train=True, mutable=["batch_stats"]))(variables)
    old_stats, new_stats = (flax.traverse_util.flatten_dict(s) for s in (variables["batch_stats"], new["batch_stats"]))
    for path, old in old_stats.items():
      changed = not np.allclose(np.asarray(old), np.asarray(new_stats[path]))
      if path[0].startswith("enc"):
        assert changed != freeze, (freeze, path)
      else:
        assert changed, path


def test_weighted_conv_uses_weighted_batchnorm_by_default():
  image, valid = _inputs(1, 32, 32)
  w = InpaintingUNet(conv="weighted", depth=5, **SMALL)
  p = InpaintingUNet(conv="partial", depth=5, **SMALL)
  w_vars = jit_init(w.init)(jax.random.key(0), image, valid)
  p_vars = jax.eval_shape(p.init, jax.random.key(0), image, valid)
  # same parameter tree, different behaviour: the weighted norm ignores hole statistics
  assert jax.tree.structure(w_vars) == jax.tree.structure(p_vars)
  image2 = image.at[:, :16].set(0.0)
  valid2 = valid.at[:, :16].set(0.0)
  out_w = jax.jit(lambda v: w.apply(v, image2, valid2, train=True, mutable=["batch_stats"])[0])(w_vars)
  out_p = jax.jit(lambda v: p.apply(v, image2, valid2, train=True, mutable=["batch_stats"])[0])(w_vars)
  assert not np.allclose(np.asarray(out_w), np.asarray(out_p))
  with pytest.raises(ValueError, match="norm must be one of"):
    InpaintingUNet(norm="layer", depth=5, **SMALL).init(jax.random.key(0), image, valid)


def test_upsample_and_composite():
  x = jnp.arange(2 * 3 * 4 * 2, dtype=jnp.float32).reshape(2, 3, 4, 2)
  up = np.asarray(upsample2(x))
  np.testing.assert_array_equal(up, np.repeat(np.repeat(np.asarray(x), 2, axis=1), 2, axis=2))
  image, valid = _inputs(2, 8, 8)
  out = jnp.full_like(image, 0.25)
  comp = np.asarray(composite(image, out, valid))
  v = np.asarray(valid)[..., 0] > 0
  np.testing.assert_array_equal(comp[v], np.asarray(image)[v])
  assert np.all(comp[~v] == 0.25)


@pytest.mark.parametrize("decoder", ["subpixel", "concat"])
def test_gated_unet_output_layer_is_an_ungated_plain_conv(decoder):
  # DeepFill's rule: hidden layers gated, the output conv plain (no f * sigmoid(g) squashing the image)
  model = InpaintingUNet(conv="gated", depth=2, decoder=decoder, **SMALL)
  image, valid = _inputs(2, 16, 16, seed=4)
  variables = jit_init(model.init)(jax.random.key(0), image, valid)
  p = variables["params"]
  assert p["dec1"]["kernel"].shape[-1] == p["dec1"]["bias"].shape[0] == 3  # gated: 2 x 3 (feature, gate)
  assert p["dec2"]["kernel"].shape[-1] == 2 * SMALL["features"][0]  # the hidden decoder layer stays gated
  shift = jnp.asarray([0.5, -2.0, 3.0])
  moved = {**variables, "params": {**p, "dec1": {**p["dec1"], "bias": p["dec1"]["bias"] + shift}}}
  out, out_moved = model.apply(variables, image, valid), model.apply(moved, image, valid)
  # a plain conv's bias shifts the output by exactly itself everywhere
  np.testing.assert_allclose(np.asarray(out_moved - out), np.broadcast_to(shift, out.shape), atol=1e-5)


def test_registry():
  assert isinstance(make_model("unet", conv="plain"), InpaintingUNet)
  with pytest.raises(ValueError, match="unknown model 'vae'"):
    make_model("vae")


@pytest.mark.parametrize("conv", ["weighted", "plain"])  # per-channel real-valued masks; the united mask
def test_both_decoder_forms_compute_the_same_net(conv):
  """decoder='subpixel' (fused) and 'concat' (upsample, concatenate, 3x3 conv): same params, same output, same
  batch statistics and same gradients, on a non-square input with holes. (Partial shares weighted's mask path,
  gated shares plain's; layers are checked one by one in test_conv_formulation.py.)"""
  image, valid = _inputs(2, 24, 40, seed=3)
  nets = {d: InpaintingUNet(conv=conv, depth=3, decoder=d, **SMALL) for d in ("subpixel", "concat")}
  variables = jit_init(nets["concat"].init)(jax.random.key(0), image, valid)
  assert jax.tree.map(jnp.shape, variables) == jax.tree.map(
    jnp.shape, nets["subpixel"].init(jax.random.key(0), image, valid)
  )

  @jax.jit
  def run(params):
    def loss(p, net):
      out, state = net.apply({**variables, "params": p}, image, valid, train=True, mutable=["batch_stats"])
      return jnp.mean(jnp.square(out - image)), (out, state)

    return {d: jax.value_and_grad(loss, has_aux=True)(params, net) for d, net in nets.items()}

  results = run(variables["params"])
  (loss_s, (out_s, state_s)), grad_s = results["subpixel"]
  (loss_c, (out_c, state_c)), grad_c = results["concat"]
  np.testing.assert_allclose(np.asarray(out_s), np.asarray(out_c), rtol=1e-4, atol=1e-5)
  for a, b in zip(jax.tree.leaves((state_s, grad_s)), jax.tree.leaves((state_c, grad_c))):
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-3, atol=1e-5)
  assert float(loss_s) == pytest.approx(float(loss_c), rel=1e-5)
  with pytest.raises(ValueError, match="decoder must be one of"):
    InpaintingUNet(conv=conv, depth=3, decoder="transpose", **SMALL).init(jax.random.key(0), image, valid)


@pytest.mark.parametrize("conv", CONVS)
def test_full_res_layers_run_at_the_input_resolution_and_still_ignore_hole_content(conv):
  """`full_res`: stride-1 convs before the first strided conv and one more before the output conv, both at the
  input's size; hole pixels still change nothing, and a residual net starts exactly at its fill."""
  model = InpaintingUNet(conv=conv, depth=3, full_res=2, **SMALL)
  image, valid = _inputs(2, 24, 40)
  variables = jit_init(model.init)(jax.random.key(1), image, valid)
  p = variables["params"]
  assert {"full1", "full2", "full2_norm", "out"} <= p.keys() and "full1_norm" not in p
  assert p["full1"]["kernel"].shape[:2] == (3, 3) and p["out"]["kernel"].shape[:2] == (3, 3)
  run = jax.jit(lambda v, x, m: model.apply(v, x, m, capture_intermediates=True))
  out, state = run(variables, image, valid)
  for name in ("full1", "full2", "dec1"):  # a masked conv returns (features, mask)
    assert state["intermediates"][name]["__call__"][0][0].shape[1:] == (24, 40, SMALL["features"][0]), name
  assert out.shape == image.shape and np.isfinite(np.asarray(out)).all()
  noise = jax.random.normal(jax.random.key(5), image.shape) * 10
  noisy, _ = run(variables, image + noise * (1 - valid), valid)
  np.testing.assert_allclose(np.asarray(noisy), np.asarray(out), atol=1e-4)
  if conv == "plain":
    residual = model.clone(residual_fill=True, fill="push_pull")
    start = residual.apply(jit_init(residual.init)(jax.random.key(2), image, valid), image, valid)
    expected = InpaintingUNet(conv=conv, depth=3, residual_fill=True, **SMALL).apply(
      jit_init(InpaintingUNet(conv=conv, depth=3, residual_fill=True, **SMALL).init)(jax.random.key(3), image, valid),
      image,
      valid,
    )
    np.testing.assert_allclose(np.asarray(start), np.asarray(expected), atol=1e-6)  # both are the fill alone
