"""Contextual attention against a loop-by-loop numpy evaluation of its equations; fills a hole surrounded by one
colour with that colour; never reads a hole; each example's mask is its own; an all-hole input is finite and
logs a warning."""

import importlib

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxinpaint.layers import ContextualAttention, contextual_attention, flow_to_rgb

ca_lib = importlib.import_module("jaxinpaint.layers.contextual_attention")  # the package exports a same-named function


def ca_numpy(f, b, valid, rate=2, k=3, fuse_k=3, scale=10.0, cosine=False):
  """The module docstring's steps 1-4, one position at a time (edge-extended borders, exact overlap average).

  cosine=False: the reference's score <f_p, b_q / max(|b_q|, 1e-4)>; True: both patches normalised (eq. 1).
  """
  batch, height, width, _ = f.shape
  hh, wh = height // rate, width // rate
  fs, bs = f[:, ::rate, ::rate], b[:, ::rate, ::rate]
  known = valid[..., 0].reshape(batch, hh, rate, wh, rate).min(axis=(2, 4)) > 0.5
  r, fr = k // 2, fuse_k // 2
  positions = [(i, j) for i in range(hh) for j in range(wh)]

  def at(x, i, j):
    return x[min(max(i, 0), x.shape[0] - 1), min(max(j, 0), x.shape[1] - 1)]

  def patch(x, i, j):
    return np.concatenate([np.ravel(at(x, i + di, j + dj)) for di in range(-r, r + 1) for dj in range(-r, r + 1)])

  def unit(p):
    return p / max(np.linalg.norm(p), 1e-4)

  ys, offsets, counts = np.zeros_like(f), np.zeros((batch, hh, wh, 2), np.int64), []
  for n in range(batch):
    cand = np.array(
      [
        all(at(known[n], qi + di, qj + dj) for di in range(-r, r + 1) for dj in range(-r, r + 1))
        for qi, qj in positions
      ]
    )
    counts.append(int(cand.sum()))
    s = np.zeros((hh, wh, hh, wh))
    for pi, pj in positions:
      for qi, qj in positions:
        fp = patch(fs[n], pi, pj)
        s[pi, pj, qi, qj] = (unit(fp) if cosine else fp) @ unit(patch(bs[n], qi, qj)) * cand[qi * wh + qj]
    fused = np.zeros_like(s)  # along width pairs, then along height pairs
    for pi, pj in positions:
      for qi, qj in positions:
        fused[pi, pj, qi, qj] = sum(
          s[pi, pj + d, qi, qj + d] for d in range(-fr, fr + 1) if 0 <= pj + d < wh and 0 <= qj + d < wh
        )
    s2 = np.zeros_like(s)
    for pi, pj in positions:
      for qi, qj in positions:
        s2[pi, pj, qi, qj] = sum(
          fused[pi + d, pj, qi + d, qj] for d in range(-fr, fr + 1) if 0 <= pi + d < hh and 0 <= qi + d < hh
        )
    out, count = np.zeros_like(f[n]), np.zeros(f.shape[1:3] + (1,))
    low = rate // 2
    for p, (pi, pj) in enumerate(positions):
      logits = scale * s2[pi, pj].ravel()
      a = np.zeros(len(positions))
      if cand.any():
        e = np.exp(logits[cand] - logits[cand].max())
        a[cand] = e / e.sum()
        best = int(np.argmax(a))
        offsets[n, pi, pj] = (best // wh - pi, best % wh - pj)
      for dy in range(2 * rate):
        for dx in range(2 * rate):
          y, x = rate * pi - low + dy, rate * pj - low + dx
          if 0 <= y < height and 0 <= x < width:
            out[y, x] += sum(
              a[q] * at(b[n], rate * qi - low + dy, rate * qj - low + dx)
              for q, (qi, qj) in enumerate(positions)
              if a[q]
            )
            count[y, x] += 1
    ys[n] = out / count
  return ys, offsets, counts


def random_case(seed, batch=2, size=8, channels=3):
  rng = np.random.default_rng(seed)
  f = rng.normal(size=(batch, size, size, channels)).astype(np.float32)
  b = rng.normal(size=(batch, size, size, channels)).astype(np.float32)
  valid = np.ones((batch, size, size, 1), np.float32)
  valid[0, 2:6, 1:4] = 0
  valid[1, 0:3, 4:8] = 0
  return f, b, valid


def test_default_matches_the_reference_temperature_in_numpy():
  # default: only background patches normalised, logit 10 <f, b/|b|> (JiahuiYu inpaint_ops.py)
  f, b, valid = random_case(0)
  f = 0.3 * f  # |f_p| ~ 1.5: softmax neither flat nor one-hot, so a wrong temperature shows in y
  y, offsets, count = contextual_attention(jnp.asarray(f), jnp.asarray(b), jnp.asarray(valid))
  y_np, offsets_np, counts_np = ca_numpy(f, b, valid, cosine=False)
  np.testing.assert_allclose(np.asarray(y), y_np, rtol=1e-4, atol=1e-5)
  np.testing.assert_array_equal(np.asarray(offsets), offsets_np)
  assert np.asarray(count).tolist() == counts_np and min(counts_np) > 0
  y_cos, _, _ = ca_numpy(f, b, valid, cosine=True)
  assert np.abs(y_cos - y_np).max() > 1e-2  # the two choices really differ on this input


def test_cosine_choice_matches_the_paper_in_numpy():
  f, b, valid = random_case(0)
  y, offsets, _ = contextual_attention(jnp.asarray(f), jnp.asarray(b), jnp.asarray(valid), similarity="cosine")
  y_np, offsets_np, _ = ca_numpy(f, b, valid, cosine=True)
  np.testing.assert_allclose(np.asarray(y), y_np, rtol=1e-4, atol=1e-5)
  np.testing.assert_array_equal(np.asarray(offsets), offsets_np)
  layer = ContextualAttention(similarity="cosine")
  y_layer, _ = layer.apply({}, jnp.asarray(f), jnp.asarray(b), jnp.asarray(valid))
  np.testing.assert_allclose(np.asarray(y_layer), y_np, rtol=1e-4, atol=1e-5)
  with pytest.raises(ValueError, match="similarity must be one of"):
    contextual_attention(jnp.asarray(f), jnp.asarray(b), jnp.asarray(valid), similarity="dot")


@pytest.mark.parametrize("similarity", ["reference", "cosine"])
def test_dead_features_have_finite_gradients(similarity):
  # ReLU features with an 8x8 all-zero region: a norm floored by max() has a 0/0 derivative there
  rng = np.random.default_rng(7)
  x = np.maximum(rng.normal(size=(2, 16, 16, 4)), 0.1).astype(np.float32)
  x[:, 4:12, 2:10] = 0.0
  valid = np.ones((2, 16, 16, 1), np.float32)
  valid[:, 10:16, 10:16] = 0
  weights = jnp.asarray(rng.normal(size=x.shape).astype(np.float32))

  def loss(x):
    return jnp.sum(weights * contextual_attention(x, x, jnp.asarray(valid), similarity=similarity)[0])

  grads = np.asarray(jax.grad(loss)(jnp.asarray(x)))
  assert np.isfinite(grads).all(), f"{np.sum(~np.isfinite(grads))} of {grads.size} gradients are not finite"
  assert np.abs(grads).max() > 0


def test_hole_surrounded_by_one_colour_is_filled_with_it():
  rng = np.random.default_rng(1)
  colour = np.array([0.3, -0.7, 1.2, 0.05], np.float32)
  x = np.broadcast_to(colour, (1, 16, 16, 4)).copy()
  valid = np.ones((1, 16, 16, 1), np.float32)
  valid[:, 5:11, 4:12] = 0
  x[valid[..., 0] == 0] = rng.normal(size=(int((valid == 0).sum()), 4)) * 5  # garbage in the hole
  y, _, count = contextual_attention(jnp.asarray(x), jnp.asarray(x), jnp.asarray(valid))
  assert int(count[0]) > 0
  np.testing.assert_allclose(
    np.asarray(y)[0][valid[0, ..., 0] == 0], np.broadcast_to(colour, (48, 4)), rtol=1e-5, atol=1e-5
  )


def test_blind_to_what_the_hole_contained():
  f, b, valid = random_case(2, size=12)
  y1, o1, _ = contextual_attention(jnp.asarray(f), jnp.asarray(b), jnp.asarray(valid))
  b2 = np.where(valid > 0, b, 100.0 * np.random.default_rng(3).normal(size=b.shape)).astype(np.float32)
  y2, o2, _ = contextual_attention(jnp.asarray(f), jnp.asarray(b2), jnp.asarray(valid))
  np.testing.assert_allclose(np.asarray(y1), np.asarray(y2), rtol=1e-6, atol=1e-6)
  np.testing.assert_array_equal(np.asarray(o1), np.asarray(o2))
  assert np.abs(np.asarray(y2)).max() < 10  # none of the 100-sigma hole values leaked


def test_each_example_uses_its_own_mask():
  f, b, valid = random_case(4, size=12)
  y, _, count = contextual_attention(jnp.asarray(f), jnp.asarray(b), jnp.asarray(valid))
  for n in range(2):
    yn, _, cn = contextual_attention(
      jnp.asarray(f[n : n + 1]), jnp.asarray(b[n : n + 1]), jnp.asarray(valid[n : n + 1])
    )
    np.testing.assert_allclose(np.asarray(y[n : n + 1]), np.asarray(yn), rtol=1e-5, atol=1e-6)
    assert int(count[n]) == int(cn[0])
  # the reference's bug (example 0's mask for the whole batch) would give example 1 another result
  wrong, _, _ = contextual_attention(jnp.asarray(f[1:]), jnp.asarray(b[1:]), jnp.asarray(valid[:1]))
  assert np.abs(np.asarray(wrong) - np.asarray(y[1:])).max() > 1e-2


def test_all_hole_input_is_finite_and_warns(monkeypatch, caplog):
  monkeypatch.setattr(ca_lib, "WARN_EVERY_SECONDS", 0.0)
  f, b, valid = random_case(5)
  valid[1] = 0  # example 1 has nothing to copy from
  layer = jax.jit(lambda f, b, v: ContextualAttention().apply({}, f, b, v))
  with caplog.at_level("WARNING"):
    y, offsets = layer(jnp.asarray(f), jnp.asarray(b), jnp.asarray(valid))
    jax.effects_barrier()
  assert np.isfinite(np.asarray(y)).all()
  np.testing.assert_array_equal(np.asarray(y[1]), 0.0)
  np.testing.assert_array_equal(np.asarray(offsets[1]), 0)
  assert np.abs(np.asarray(y[0])).max() > 0
  assert any("1 of 2 examples have no known 3x3 patch" in r.getMessage() for r in caplog.records), caplog.text
  grads = jax.grad(lambda f: jnp.sum(contextual_attention(f, f, jnp.zeros_like(jnp.asarray(valid)))[0]))(jnp.asarray(f))
  assert np.isfinite(np.asarray(grads)).all()


def test_flow_colours():
  offsets = jnp.asarray([[[[0, 0], [0, 3]], [[0, -3], [3, 0]]]], jnp.int32)
  rgb = np.asarray(flow_to_rgb(offsets))
  assert rgb.shape == (1, 2, 2, 3) and rgb.min() >= -1 and rgb.max() <= 1
  np.testing.assert_allclose(rgb[0, 0, 0], [1, 1, 1])  # copies from itself: white
  colours = {tuple(np.round(rgb[0, i, j], 3)) for i, j in ((0, 1), (1, 0), (1, 1))}
  assert len(colours) == 3  # three directions, three hues


def test_bad_input_is_one_line():
  x = jnp.zeros((1, 7, 8, 2))
  with pytest.raises(ValueError, match="multiples of rate=2"):
    contextual_attention(x, x, jnp.ones((1, 7, 8, 1)))
  with pytest.raises(ValueError, match="valid"):
    contextual_attention(jnp.zeros((1, 8, 8, 2)), jnp.zeros((1, 8, 8, 2)), jnp.ones((1, 8, 8, 2)))
