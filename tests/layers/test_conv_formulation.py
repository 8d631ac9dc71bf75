"""The fast formulations behind the masked convs compute exactly what the plain ones do.

- `upsampled_conv3x3` (sub-pixel: 2x2 phase kernels on the low-res map) == a 3x3 'SAME' conv of the
  nearest-upsampled map, checked against an independent float64 numpy evaluation, values and gradients.
- the decoder form `layer(x, valid, skip=(x_skip, valid_skip))` == `layer(concat([upsample2(x), x_skip]), masks)`
  for every masked conv, outputs, masks and gradients (the U-Net's decoder uses it).
- `strided_conv`'s phase-decomposed input gradient == XLA's gradient of the strided conv, at odd sizes and
  strides 2 and 3.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax import lax

from jaxinpaint import layers
from jaxinpaint.layers.masked_conv import same_pads, strided_conv, upsample2, upsampled_conv3x3

NHWC = ("NHWC", "HWIO", "NHWC")


def np_conv3x3_same(x, kernel):
  """Zero-padded 3x3 correlation of x (B, H, W, C) with kernel (3, 3, C, O), float64 loops over taps."""
  b, h, w, _ = x.shape
  padded = np.zeros((b, h + 2, w + 2, x.shape[-1]))
  padded[:, 1:-1, 1:-1] = x
  out = np.zeros((b, h, w, kernel.shape[-1]))
  for ky in range(3):
    for kx in range(3):
      out += padded[:, ky : ky + h, kx : kx + w] @ kernel[ky, kx]
  return out


def test_upsampled_conv_matches_numpy_and_its_gradient_matches_the_plain_form():
  rng = np.random.default_rng(0)
  x = rng.normal(size=(2, 5, 7, 3))
  kernel = rng.normal(size=(3, 3, 3, 4))
  up = np.repeat(np.repeat(x, 2, axis=1), 2, axis=2)
  got = upsampled_conv3x3(jnp.asarray(x, jnp.float32), jnp.asarray(kernel, jnp.float32))
  assert got.shape == (2, 10, 14, 4)
  np.testing.assert_allclose(np.asarray(got), np_conv3x3_same(up, kernel), rtol=1e-5, atol=1e-5)

  plain = lambda x, k: lax.conv_general_dilated(upsample2(x), k, (1, 1), ((1, 1), (1, 1)), dimension_numbers=NHWC)
  weights = jnp.asarray(rng.normal(size=(2, 10, 14, 4)), jnp.float32)
  args = (jnp.asarray(x, jnp.float32), jnp.asarray(kernel, jnp.float32))
  for a, b in zip(
    jax.grad(lambda x, k: jnp.sum(weights * upsampled_conv3x3(x, k)), (0, 1))(*args),
    jax.grad(lambda x, k: jnp.sum(weights * plain(x, k)), (0, 1))(*args),
  ):
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("kind", ["partial", "weighted", "gated", "plain"])
def test_decoder_form_equals_upsample_then_concat(kind):
  rng = np.random.default_rng(1)
  real = kind == "weighted"  # weighted convs carry real-valued masks
  draw = lambda shape: (rng.uniform(size=shape) if real else (rng.uniform(size=shape) > 0.4)).astype(np.float32)
  x = jnp.asarray(rng.normal(size=(2, 3, 5, 6)), jnp.float32)
  valid = jnp.asarray(draw((2, 3, 5, 1)))
  x_skip = jnp.asarray(rng.normal(size=(2, 6, 10, 3)), jnp.float32)
  valid_skip = jnp.asarray(draw((2, 6, 10, 1)))
  valid = valid.at[:, :2, :3].set(0.0)  # a hole larger than a window after upsampling
  valid_skip = valid_skip.at[:, :4, :6].set(0.0)
  cat = jnp.concatenate([upsample2(x), x_skip], axis=-1)
  if kind in ("partial", "weighted"):  # per-channel masks of the concatenated input
    cat_valid = jnp.concatenate(
      [jnp.broadcast_to(upsample2(valid), (2, 6, 10, 6)), jnp.broadcast_to(valid_skip, (2, 6, 10, 3))], axis=-1
    )
  else:
    cat_valid = jnp.maximum(upsample2(valid), valid_skip)
  layer = layers.get_conv(kind)(4, (3, 3))
  shapes = jax.eval_shape(layer.init, jax.random.key(0), cat, cat_valid)
  # same parameter tree either way, so a trained decoder layer can be called in either form
  assert jax.eval_shape(layer.init, jax.random.key(0), x, valid, skip=(x_skip, valid_skip)) == shapes
  params = jax.tree.map(lambda p: jnp.asarray(0.3 * rng.normal(size=p.shape), jnp.float32), shapes)

  def run(params, x, x_skip, fused):
    if fused:
      return layer.apply(params, x, valid, skip=(x_skip, valid_skip))
    return layer.apply(params, jnp.concatenate([upsample2(x), x_skip], axis=-1), cat_valid)

  run = jax.jit(run, static_argnums=3)
  ref_y, ref_m = run(params, x, x_skip, False)
  y, m = run(params, x, x_skip, True)
  np.testing.assert_allclose(np.asarray(y), np.asarray(ref_y), rtol=1e-5, atol=1e-5)
  np.testing.assert_allclose(np.asarray(m), np.asarray(ref_m), rtol=1e-6, atol=1e-6)
  assert float(jnp.min(ref_m)) == 0.0 and float(jnp.max(ref_m)) > 0.0  # both branches of the masks are exercised
  loss = lambda p, a, b, fused: jnp.sum(jnp.tanh(run(p, a, b, fused)[0]))
  grads = [jax.jit(jax.grad(loss, (0, 1, 2)), static_argnums=3)(params, x, x_skip, fused) for fused in (False, True)]
  for a, b in zip(jax.tree.leaves(grads[0]), jax.tree.leaves(grads[1])):
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-4, atol=1e-4)


def test_decoder_form_rejects_what_it_cannot_do():
  x, valid = jnp.ones((1, 3, 4, 2)), jnp.ones((1, 3, 4, 1))
  skip = lambda h, w: (jnp.ones((1, h, w, 2)), jnp.ones((1, h, w, 1)))
  with pytest.raises(ValueError, match=r"skip input \(1, 6, 9, 2\) must be \(B, 2H, 2W, C\)"):
    layers.PartialConv(2, (3, 3)).init(jax.random.key(0), x, valid, skip=skip(6, 9))
  with pytest.raises(ValueError, match="3x3 stride-1"):
    layers.PlainConv(2, (5, 5)).init(jax.random.key(0), x, valid, skip=skip(6, 8))


@pytest.mark.parametrize(
  "size,k,s", [((9, 12), 3, 2), ((8, 8), 5, 2), ((13, 10), 7, 2), ((2, 2), 3, 2), ((11, 7), 4, 3)]
)
def test_strided_conv_gradients_equal_xla(size, k, s):
  rng = np.random.default_rng(2)
  x = jnp.asarray(rng.normal(size=(2, *size, 3)), jnp.float32)
  kernel = jnp.asarray(rng.normal(size=(k, k, 3, 5)), jnp.float32)
  pads = tuple(tuple(p) for p in same_pads(size, (k, k), (s, s), (1, 1)))
  plain = lambda x, kk: lax.conv_general_dilated(x, kk, (s, s), pads, dimension_numbers=NHWC)
  y = strided_conv(x, kernel, (s, s), pads)
  np.testing.assert_array_equal(np.asarray(y), np.asarray(plain(x, kernel)))
  weights = jnp.asarray(rng.normal(size=y.shape), jnp.float32)
  ours = jax.grad(lambda x, kk: jnp.sum(weights * strided_conv(x, kk, (s, s), pads)), (0, 1))(x, kernel)
  xla = jax.grad(lambda x, kk: jnp.sum(weights * plain(x, kk)), (0, 1))(x, kernel)
  np.testing.assert_allclose(np.asarray(ours[0]), np.asarray(xla[0]), rtol=1e-5, atol=1e-5)
  np.testing.assert_array_equal(np.asarray(ours[1]), np.asarray(xla[1]))
