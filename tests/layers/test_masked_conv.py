"""Masked convolutions against an independent float64 numpy evaluation (seed 004 eqs. 1-3, Fig. 2)."""

import math
import zlib

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxinpaint import layers
from jaxinpaint.layers import GatedConv, PartialConv, PlainConv, WeightedConv
from jaxinpaint.runs import jit_init


def np_same_pad(size, k, s, d):
  """TF/XLA 'SAME': output ceil(size / s), padding split low = total // 2 on the dilated kernel."""
  out = -(-size // s)
  total = max((out - 1) * s + (k - 1) * d + 1 - size, 0)
  return out, total // 2, total - total // 2


def np_windows(a, k, s, d):
  """Zero-padded windows of a (B, H, W, C) -> (B, H', W', kh, kw, C), float64, explicit loops."""
  b, h, w, c = a.shape
  oh, ph, _ = np_same_pad(h, k[0], s[0], d[0])
  ow, pw, _ = np_same_pad(w, k[1], s[1], d[1])
  big = np.zeros((b, h + 2 * k[0] * d[0], w + 2 * k[1] * d[1], c))
  big[:, ph : ph + h, pw : pw + w] = a  # a padded copy; anything outside the image stays 0 (a hole)
  out = np.zeros((b, oh, ow, k[0], k[1], c))
  for i in range(oh):
    for j in range(ow):
      for r in range(k[0]):
        for q in range(k[1]):
          out[:, i, j, r, q] = big[:, i * s[0] + r * d[0], j * s[1] + q * d[1]]
  return out


def np_masked_conv(kind, x, valid, kernel, bias, k, s, d):
  """Independent evaluation of one layer: returns (y, valid_out) in float64."""
  x, valid, kernel, bias = (np.asarray(a, np.float64) for a in (x, valid, kernel, bias))
  m = np.broadcast_to(valid, x.shape) if valid.shape[-1] == 1 else valid
  mwin = np_windows(valid, k, s, d)
  msum = mwin.sum(axis=(3, 4, 5))[..., None]
  sum1 = k[0] * k[1] * valid.shape[-1]
  touched = (msum > 0).astype(np.float64)
  if kind in ("partial", "weighted"):
    conv = np.einsum("bijrqc,rqco->bijo", np_windows(x * m, k, s, d), kernel)
    with np.errstate(divide="ignore", invalid="ignore"):
      y = np.where(msum > 0, conv * sum1 / msum + bias, 0.0)
    return y, (touched if kind == "partial" else msum / sum1)
  conv = np.einsum("bijrqc,rqco->bijo", np_windows(x, k, s, d), kernel) + bias
  if kind == "plain":
    return conv, touched
  f, g = np.split(conv, 2, axis=-1)
  elu = np.where(f > 0, f, np.expm1(np.minimum(f, 0)))
  return elu / (1 + np.exp(-g)), touched


def make_params(rng, kind, k, cin, features, bias_scale=0.1):
  """Random `kernel`/`bias` with the layer's param names (cheaper than `init` in tests)."""
  out = 2 * features if kind == "gated" else features
  kernel = rng.normal(size=(*k, cin, out)) / np.sqrt(k[0] * k[1] * cin)
  bias = bias_scale * rng.normal(size=(out,))
  return {"params": {"kernel": jnp.asarray(kernel, jnp.float32), "bias": jnp.asarray(bias, jnp.float32)}}


def make_valid(rng, shape, real):
  """Random mask with a solid hole block (so some windows see only holes) plus scattered holes."""
  v = rng.uniform(0.0, 1.0, shape) if real else (rng.uniform(size=shape) > 0.35).astype(np.float64)
  v[:, 1:7, 2:9] = 0.0
  return v.astype(np.float32)


# (kernel, stride, dilation, mask channels = 1 or Cin, real-valued mask, H x W): every value of each axis
# appears; the even sizes make stride-2 'SAME' padding asymmetric (low = total // 2).
CONFIGS = [
  (3, 1, 1, 1, False, (9, 13)),
  (3, 2, 1, "cin", True, (9, 12)),
  (5, 1, 2, 1, True, (9, 13)),
  (5, 2, 2, "cin", False, (10, 13)),
  (7, 1, 1, "cin", False, (9, 13)),
  (7, 2, 2, 1, True, (10, 12)),
  (3, 1, 2, "cin", True, (9, 13)),
  (5, 2, 1, 1, False, (9, 13)),
]


@pytest.mark.parametrize("kind", ["partial", "weighted", "gated", "plain"])
@pytest.mark.parametrize("k,s,d,mc,real,hw", CONFIGS)
def test_matches_numpy(kind, k, s, d, mc, real, hw):
  rng = np.random.default_rng(zlib.crc32(repr((kind, k, s, d, mc, real)).encode()))
  cin, features = 3, 4
  x = rng.normal(size=(2, *hw, cin)).astype(np.float32)
  valid = make_valid(rng, (2, *hw, cin if mc == "cin" else 1), real)
  layer = layers.get_conv(kind)(features, (k, k), strides=(s, s), kernel_dilation=(d, d))
  # A non-zero bias so the "exactly 0 where sum(M) = 0" branch is visible.
  params = make_params(rng, kind, (k, k), cin, features)
  y, valid_out = jax.jit(layer.apply)(params, x, valid)
  p = params["params"]
  want_y, want_valid = np_masked_conv(kind, x, valid, p["kernel"], p["bias"], (k, k), (s, s), (d, d))
  assert y.shape == want_y.shape == (2, math.ceil(hw[0] / s), math.ceil(hw[1] / s), features)
  assert valid_out.shape == want_valid.shape and valid_out.dtype == jnp.float32
  np.testing.assert_allclose(np.asarray(y), want_y, rtol=2e-4, atol=2e-4)
  np.testing.assert_allclose(np.asarray(valid_out), want_valid, rtol=1e-6, atol=1e-6)
  if kind in ("partial", "weighted"):
    assert np.all(np.asarray(y)[want_valid[..., 0] == 0] == 0.0)


@pytest.mark.parametrize("s,d", [(1, 1), (2, 2)])
def test_partial_all_valid_is_conv_inside_and_rescaled_at_borders(s, d):
  rng = np.random.default_rng(1)
  x = rng.normal(size=(2, 11, 12, 3)).astype(np.float32)
  ones = np.ones((2, 11, 12, 1), np.float32)
  pconv = PartialConv(5, (5, 5), strides=(s, s), kernel_dilation=(d, d))
  conv = nn.Conv(5, (5, 5), strides=(s, s), kernel_dilation=(d, d), padding="SAME")
  params = make_params(rng, "partial", (5, 5), 3, 5, bias_scale=1.0)
  y, valid_out = jax.jit(pconv.apply)(params, x, ones)
  ref = np.asarray(conv.apply(params, x), np.float64)
  # Fraction of each window inside the image: the padding counts as holes.
  inside = np_windows(ones, (5, 5), (s, s), (d, d)).sum(axis=(3, 4, 5))[..., None] / 25
  bias = np.asarray(params["params"]["bias"])
  np.testing.assert_allclose(np.asarray(y), (ref - bias) / inside + bias, rtol=1e-4, atol=1e-4)
  interior = inside[..., 0] == 1
  assert interior.sum() > 0 and (~interior).sum() > 0
  np.testing.assert_allclose(np.asarray(y)[interior], ref[interior], rtol=1e-5, atol=1e-5)
  assert np.all(np.asarray(valid_out) == 1)


def averaging_stack(cls, signal, valid):
  """Seed 004 Fig. 2: a width-2, stride-2 averaging filter applied 3 times to a 1x8 signal."""
  layer = cls(1, (1, 2), strides=(1, 2), use_bias=False)
  params = {"params": {"kernel": jnp.full((1, 2, 1, 1), 0.5)}}
  x, m = jnp.asarray(signal, jnp.float32).reshape(1, 1, 8, 1), jnp.asarray(valid, jnp.float32).reshape(1, 1, 8, 1)
  apply = jax.jit(layer.apply)
  for _ in range(3):
    x, m = apply(params, x, m)
  assert x.shape == (1, 1, 1, 1)
  return float(x[0, 0, 0, 0]), float(m[0, 0, 0, 0])


@pytest.mark.parametrize("valid", [[1, 0, 1, 1, 0, 0, 1, 0], [0, 1, 1, 0, 1, 0, 0, 1], [1, 1, 1, 0, 0, 0, 0, 1]])
def test_fig2_weighted_gives_mean_of_valid_pixels(valid):
  signal = np.array([1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0])
  want = signal[np.array(valid) == 1].mean()
  got, mask = averaging_stack(WeightedConv, signal, valid)
  assert got == pytest.approx(want, abs=1e-6)
  assert mask == pytest.approx(0.5)  # 4 of 8 pixels known


def test_fig2_partial_differs():
  signal = np.array([1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0])
  valid = [1, 0, 1, 1, 0, 0, 1, 0]
  got, mask = averaging_stack(PartialConv, signal, valid)
  # Pairs -> [1, 3.5, hole, 7] with binarised masks -> [2.25, 7] -> 4.625, not the valid mean 3.75.
  assert got == pytest.approx(4.625, abs=1e-6)
  assert abs(got - 3.75) > 0.5 and mask == 1.0


@pytest.mark.parametrize("kind", ["partial", "weighted", "gated", "plain"])
@pytest.mark.parametrize("mc", [1, 3])
def test_all_holes(kind, mc):
  x = jnp.asarray(np.random.default_rng(2).normal(size=(2, 8, 10, 3)), jnp.float32)
  holes = jnp.zeros((2, 8, 10, mc))
  layer = layers.get_conv(kind)(4, (3, 3), strides=(2, 2))
  params = make_params(np.random.default_rng(5), kind, (3, 3), 3, 4, bias_scale=1.0)
  y, valid_out = jax.jit(layer.apply)(params, x, holes)
  assert np.all(np.asarray(valid_out) == 0.0)
  if kind in ("partial", "weighted"):
    assert np.all(np.asarray(y) == 0.0)  # bias included

  def loss(p, x):
    y, _ = layer.apply(p, x, holes)
    return jnp.sum(y**2)

  grads = jax.jit(jax.grad(loss, argnums=(0, 1)))(params, x)
  assert all(bool(jnp.all(jnp.isfinite(g))) for g in jax.tree.leaves(grads))
  if kind in ("partial", "weighted"):
    assert all(bool(jnp.all(g == 0)) for g in jax.tree.leaves(grads))


@pytest.mark.parametrize("kind", ["partial", "weighted", "gated", "plain"])
def test_gradients_finite_for_random_masks(kind):
  rng = np.random.default_rng(3)
  x = jnp.asarray(rng.normal(size=(2, 9, 13, 3)), jnp.float32)
  valid = jnp.asarray(make_valid(rng, (2, 9, 13, 1), real=True))
  layer = layers.get_conv(kind)(4, (3, 3), strides=(2, 2), kernel_dilation=(2, 2))
  params = make_params(rng, kind, (3, 3), 3, 4)

  def loss(p, x, valid):
    y, m = layer.apply(p, x, valid)
    return jnp.sum(jnp.tanh(y)) + jnp.sum(m)

  grads = jax.jit(jax.grad(loss, argnums=(0, 1, 2)))(params, x, valid)
  assert all(bool(jnp.all(jnp.isfinite(g))) for g in jax.tree.leaves(grads))
  assert float(jnp.abs(grads[0]["params"]["kernel"]).sum()) > 0


def test_bf16_activations_with_f32_params():
  rng = np.random.default_rng(4)
  x = jnp.asarray(rng.normal(size=(2, 9, 13, 3)), jnp.float32)
  valid = jnp.asarray(make_valid(rng, (2, 9, 13, 1), real=True))
  layer32 = WeightedConv(4, (3, 3))
  layer16 = WeightedConv(4, (3, 3), dtype=jnp.bfloat16)
  params = make_params(rng, "weighted", (3, 3), 3, 4)
  y32, m32 = jax.jit(layer32.apply)(params, x, valid)
  y16, m16 = jax.jit(layer16.apply)(params, x, valid)
  assert y16.dtype == jnp.bfloat16 and m16.dtype == jnp.float32
  np.testing.assert_array_equal(np.asarray(m16), np.asarray(m32))
  np.testing.assert_allclose(np.asarray(y16, np.float32), np.asarray(y32), rtol=5e-2, atol=5e-2)


@pytest.mark.parametrize(
  "x_shape,valid_shape",
  [
    ((9, 13, 3), (9, 13, 1)),  # rank 3
    ((2, 9, 13, 3), (2, 9, 13)),  # valid rank 3
    ((2, 9, 13, 3), (2, 9, 12, 1)),  # W mismatch
    ((2, 9, 13, 3), (2, 8, 13, 1)),  # H mismatch
    ((2, 9, 13, 3), (1, 9, 13, 1)),  # B mismatch
    ((2, 9, 13, 3), (2, 9, 13, 2)),  # channels neither 1 nor Cin
  ],
)
@pytest.mark.parametrize("kind", ["partial", "gated"])
def test_bad_shapes_raise(kind, x_shape, valid_shape):
  layer = layers.get_conv(kind)(4, (3, 3))
  with pytest.raises(ValueError, match="valid"):
    jax.eval_shape(layer.init, jax.random.key(0), jnp.zeros(x_shape), jnp.ones(valid_shape))


@pytest.mark.parametrize("bad", [-0.1, 1.5, np.nan, np.inf])
def test_out_of_range_values_raise(bad):
  valid = np.ones((1, 5, 5, 1), np.float32)
  valid[0, 2, 3, 0] = bad
  with pytest.raises(ValueError, match="valid"):
    layers.check_valid(valid)
  with pytest.raises(ValueError, match="valid"):
    params = make_params(np.random.default_rng(0), "partial", (3, 3), 2, 2)
    PartialConv(2, (3, 3)).apply(params, jnp.zeros((1, 5, 5, 2)), valid)
  layers.check_valid(np.clip(np.nan_to_num(valid), 0, 1))


def test_registry():
  assert layers.get_conv("partial") is PartialConv and layers.get_conv("weighted") is WeightedConv
  assert layers.get_conv("gated") is GatedConv and layers.get_conv("plain") is PlainConv
  with pytest.raises(ValueError, match="gated.*partial.*plain.*weighted"):
    layers.get_conv("dilated")


@pytest.mark.parametrize("kind,out", [("partial", 3), ("weighted", 3), ("gated", 6), ("plain", 3)])
def test_param_names_match_flax_conv(kind, out):
  x, valid = jnp.ones((1, 6, 7, 5)), jnp.ones((1, 6, 7, 1))
  shapes = jax.eval_shape(layers.get_conv(kind)(3, (3, 3)).init, jax.random.key(0), x, valid)
  assert jax.tree.map(jnp.shape, shapes) == {"params": {"kernel": (3, 3, 5, out), "bias": (out,)}}
  no_bias = jax.eval_shape(layers.get_conv(kind)(3, (3, 3), use_bias=False).init, jax.random.key(0), x, valid)
  assert jax.tree.map(jnp.shape, no_bias) == {"params": {"kernel": (3, 3, 5, out)}}


def test_gated_without_activation():
  rng = np.random.default_rng(6)
  x = jnp.asarray(rng.normal(size=(1, 6, 7, 5)), jnp.float32)
  params = make_params(rng, "gated", (3, 3), 5, 3)
  y, _ = jax.jit(GatedConv(3, (3, 3), activation=None).apply)(params, x, jnp.ones((1, 6, 7, 1)))
  f, g = np.split(np.asarray(nn.Conv(6, (3, 3)).apply(params, x), np.float64), 2, axis=-1)
  np.testing.assert_allclose(np.asarray(y), f / (1 + np.exp(-g)), rtol=1e-5, atol=1e-5)


def test_init_and_apply():
  x, valid = jnp.ones((1, 6, 7, 2)), jnp.ones((1, 6, 7, 1))
  layer = PartialConv(3, (3, 3), kernel_init=nn.initializers.normal(0.1))  # lecun_normal compiles slowly on CPU
  params = jit_init(layer.init)(jax.random.key(0), x, valid)
  y, _ = jax.jit(layer.apply)(params, x, valid)
  assert y.shape == (1, 6, 7, 3) and bool(jnp.all(jnp.isfinite(y)))
  assert params["params"]["kernel"].dtype == jnp.float32 and float(jnp.abs(params["params"]["kernel"]).sum()) > 0
  assert np.all(np.asarray(params["params"]["bias"]) == 0)
