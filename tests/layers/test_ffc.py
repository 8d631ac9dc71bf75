"""Fast Fourier convolution layers against an independent numpy version (np.fft.rfft2, explicit convolutions), at
odd sizes, in BatchNorm's training mode with random parameters; the Fourier unit stays float32 under bf16."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxinpaint.layers import ffc
from jaxinpaint.runs import jit_init
from helpers import eqns_named  # tests/helpers.py

EPS = 1e-5


def randomized(variables, seed=0):
  """The same tree with every parameter drawn ~N(0.5, 0.3) (BN scales away from 1, biases away from 0)."""
  leaves, tree = jax.tree.flatten(variables["params"])
  rng = np.random.default_rng(seed)
  params = jax.tree.unflatten(tree, [jnp.asarray(rng.normal(0.5, 0.3, x.shape), jnp.float32) for x in leaves])
  return {**variables, "params": params}


def np_bn(x, p):
  mean, var = x.mean(axis=(0, 1, 2)), x.var(axis=(0, 1, 2))
  return (x - mean) / np.sqrt(var + EPS) * np.asarray(p["scale"]) + np.asarray(p["bias"])


def np_conv(x, kernel, stride=1, dilation=1, pad=0):
  """Reflection-padded convolution, NHWC x, HWIO kernel, by summing shifted strided slices."""
  x = np.pad(x, ((0, 0), (pad, pad), (pad, pad), (0, 0)), mode="reflect") if pad else x
  kh, kw = kernel.shape[:2]
  oh = (x.shape[1] - dilation * (kh - 1) - 1) // stride + 1
  ow = (x.shape[2] - dilation * (kw - 1) - 1) // stride + 1
  out = 0.0
  for i in range(kh):
    for j in range(kw):
      patch = x[
        :,
        i * dilation : i * dilation + stride * (oh - 1) + 1 : stride,
        j * dilation : j * dilation + stride * (ow - 1) + 1 : stride,
      ]
      out = out + patch @ np.asarray(kernel[i, j], np.float64)
  return out


def np_fourier_unit(x, p):
  b, h, w, c = x.shape
  spec = np.fft.rfft2(x, axes=(1, 2), norm="ortho")
  z = np.stack([spec.real, spec.imag], axis=-1).reshape(b, h, w // 2 + 1, 2 * c)
  z = np.maximum(np_bn(z @ np.asarray(p["conv"]["kernel"][0, 0], np.float64), p["bn"]), 0.0)
  z = z.reshape(b, h, w // 2 + 1, -1, 2)
  return np.fft.irfft2(z[..., 0] + 1j * z[..., 1], s=(h, w), axes=(1, 2), norm="ortho")


def np_spectral(x, p, stride):
  if stride == 2:
    b, h, w, c = x.shape
    x = x[:, : h // 2 * 2, : w // 2 * 2].reshape(b, h // 2, 2, w // 2, 2, c).mean(axis=(2, 4))
  u = np.maximum(np_bn(x @ np.asarray(p["conv1"]["kernel"][0, 0], np.float64), p["bn1"]), 0.0)
  return (u + np_fourier_unit(u, p["fu"])) @ np.asarray(p["conv2"]["kernel"][0, 0], np.float64)


def apply_train(module, variables, *args):
  return module.apply(variables, *args, train=True, mutable=["batch_stats"])[0]


@pytest.mark.parametrize("shape", [(2, 7, 9, 3), (1, 8, 6, 2), (2, 5, 5, 4)])
def test_fourier_unit_matches_numpy_rfft2(shape):
  x = np.random.default_rng(1).normal(size=shape).astype(np.float32)
  unit = ffc.FourierUnit(features=3)
  variables = randomized(jit_init(unit.init)(jax.random.key(0), jnp.asarray(x)))
  out = apply_train(unit, variables, jnp.asarray(x))
  assert out.shape == shape[:3] + (3,)
  np.testing.assert_allclose(
    np.asarray(out), np_fourier_unit(x.astype(np.float64), variables["params"]), rtol=1e-4, atol=1e-4
  )


@pytest.mark.parametrize("stride,shape", [(1, (2, 7, 9, 6)), (2, (2, 8, 10, 6))])
def test_spectral_transform_matches_numpy(stride, shape):
  x = np.random.default_rng(2).normal(size=shape).astype(np.float32)
  layer = ffc.SpectralTransform(features=4, stride=stride)
  variables = randomized(jit_init(layer.init)(jax.random.key(0), jnp.asarray(x)), seed=3)
  out = apply_train(layer, variables, jnp.asarray(x))
  np.testing.assert_allclose(
    np.asarray(out), np_spectral(x.astype(np.float64), variables["params"], stride), rtol=1e-4, atol=1e-4
  )


def test_ffc_four_paths_match_numpy_at_odd_size_with_dilation():
  rng = np.random.default_rng(4)
  x_l, x_g = (rng.normal(size=(2, 9, 7, c)).astype(np.float32) for c in (2, 6))
  layer = ffc.FFC(features=8, kernel_size=3, ratio_gout=0.75, padding=2, dilation=2)
  variables = randomized(jit_init(layer.init)(jax.random.key(0), jnp.asarray(x_l), jnp.asarray(x_g)), seed=5)
  y_l, y_g = apply_train(layer, variables, jnp.asarray(x_l), jnp.asarray(x_g))
  p = variables["params"]
  xl, xg = x_l.astype(np.float64), x_g.astype(np.float64)
  conv = lambda x, name: np_conv(x, p[name]["kernel"], dilation=2, pad=2)
  assert y_l.shape == (2, 9, 7, 2) and y_g.shape == (2, 9, 7, 6)  # int(8 * 0.75) = 6 global channels
  np.testing.assert_allclose(np.asarray(y_l), conv(xl, "conv_l2l") + conv(xg, "conv_g2l"), rtol=1e-4, atol=1e-4)
  np.testing.assert_allclose(
    np.asarray(y_g), conv(xl, "conv_l2g") + np_spectral(xg, p["conv_g2g"], 1), rtol=1e-4, atol=1e-4
  )


def test_last_downsampling_splits_a_local_input_into_local_and_global_parts():
  x = np.random.default_rng(6).normal(size=(2, 9, 11, 4)).astype(np.float32)
  layer = ffc.FFCBNAct(features=8, kernel_size=3, ratio_gout=0.75, stride=2, padding=1)
  variables = randomized(layer.init(jax.random.key(0), jnp.asarray(x), None), seed=7)
  y_l, y_g = apply_train(layer, variables, jnp.asarray(x), None)
  p = variables["params"]
  relu = lambda v: np.maximum(v, 0.0)
  for y, conv, bn in ((y_l, "conv_l2l", "bn_l"), (y_g, "conv_l2g", "bn_g")):
    want = relu(np_bn(np_conv(x.astype(np.float64), p["ffc"][conv]["kernel"], stride=2, pad=1), p[bn]))
    assert y.shape == want.shape == (2, 5, 6, 2 if bn == "bn_l" else 6)  # PyTorch's floor((9 + 2 - 3) / 2) + 1
    np.testing.assert_allclose(np.asarray(y), want, rtol=1e-4, atol=1e-4)


def test_resnet_block_adds_its_input_to_each_part_and_checks_the_split():
  rng = np.random.default_rng(8)
  x_l, x_g = jnp.asarray(rng.normal(size=(2, 6, 6, 2)), jnp.float32), jnp.asarray(rng.normal(size=(2, 6, 6, 6)))
  block = ffc.FFCResnetBlock(ratio=0.75)
  variables = jit_init(block.init)(jax.random.key(0), x_l, x_g)
  y_l, y_g = apply_train(block, variables, x_l, x_g)
  inner = ffc.FFCBNAct(8, 3, 0.75, padding=1)
  h = apply_train(
    inner, {"params": variables["params"]["conv1"], "batch_stats": variables["batch_stats"]["conv1"]}, x_l, x_g
  )
  h = apply_train(inner, {"params": variables["params"]["conv2"], "batch_stats": variables["batch_stats"]["conv2"]}, *h)
  np.testing.assert_allclose(np.asarray(y_l), np.asarray(x_l + h[0]), rtol=1e-5, atol=1e-5)
  np.testing.assert_allclose(np.asarray(y_g), np.asarray(x_g + h[1]), rtol=1e-5, atol=1e-5)
  with pytest.raises(ValueError, match=r"needs the input split \(2, 6\); got 4 \+ 4"):
    block.init(jax.random.key(0), x_l[..., :1].repeat(4, -1), x_g[..., :4])


def test_fourier_unit_runs_its_fft_in_float32_under_bfloat16_activations():
  x = jnp.asarray(np.random.default_rng(9).normal(size=(2, 8, 8, 4)), jnp.bfloat16)
  unit16, unit32 = ffc.FourierUnit(4, dtype=jnp.bfloat16), ffc.FourierUnit(4)
  variables = randomized(jit_init(unit32.init)(jax.random.key(0), x.astype(jnp.float32)))
  ffts = list(eqns_named(jax.make_jaxpr(lambda v, x: unit16.apply(v, x))(variables, x).jaxpr, "fft"))
  assert len(ffts) == 2  # forward and inverse
  for eqn in ffts:
    assert all(v.aval.dtype in (jnp.float32, jnp.complex64) for v in eqn.invars), eqn
    assert all(v.aval.dtype in (jnp.float32, jnp.complex64) for v in eqn.outvars), eqn
  out16 = unit16.apply(variables, x)
  assert out16.dtype == jnp.bfloat16
  out32 = unit32.apply(variables, x.astype(jnp.float32))
  np.testing.assert_allclose(np.asarray(out16, np.float32), np.asarray(out32), rtol=2e-2, atol=2e-2)


def test_reflection_padding_mirrors_without_the_edge_and_refuses_tiny_inputs():
  x = jnp.arange(12.0).reshape(1, 3, 4, 1)
  np.testing.assert_array_equal(
    np.asarray(ffc.reflect_pad(x, 2))[0, ..., 0], np.pad(np.arange(12.0).reshape(3, 4), 2, mode="reflect")
  )
  with pytest.raises(ValueError, match="needs H and W > 3"):
    ffc.reflect_pad(x, 3)
  assert ffc.split_channels(512, 0.75) == (128, 384) and ffc.split_channels(10, 0.75) == (3, 7)
