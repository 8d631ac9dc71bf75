"""Weighted normalisation (seed 004 eqs. 4 and 6) against flax at M = 1 and a float64 numpy evaluation."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import NamedSharding, PartitionSpec as P

from jaxinpaint.layers import WeightedBatchNorm, WeightedGroupNorm, WeightedInstanceNorm, WeightedLayerNorm
from jaxinpaint.runs import jit_init

B, H, W, C, GROUPS = 4, 5, 7, 8, 4

# name -> (weighted layer, flax counterpart, reduction axes of x reshaped to (B, H, W, G, C/G), G)
NORMS = {
  "instance": (WeightedInstanceNorm(), nn.InstanceNorm(), (1, 2), C),
  "group": (WeightedGroupNorm(num_groups=GROUPS), nn.GroupNorm(num_groups=GROUPS), (1, 2, 4), GROUPS),
  "layer": (WeightedLayerNorm(), nn.LayerNorm(reduction_axes=(1, 2, 3), feature_axes=-1), (1, 2, 3, 4), 1),
  "batch": (WeightedBatchNorm(momentum=0.9), nn.BatchNorm(momentum=0.9), (0, 1, 2), C),
}


def np_weighted_stats(x, valid, axes, groups):
  """Eq. 4 mean and eq. 6 variance in float64 over `axes` of x viewed as (B, H, W, G, C/G), per channel (C,)."""
  x = np.asarray(x, np.float64)
  m = np.broadcast_to(np.asarray(valid, np.float64), x.shape)
  xg, mg = (a.reshape(*a.shape[:3], groups, C // groups) for a in (x, m))
  total = mg.sum(axis=axes, keepdims=True)
  mu = (xg * mg).sum(axis=axes, keepdims=True) / total
  var = ((xg - mu) ** 2 * mg).sum(axis=axes, keepdims=True) / total
  return np.broadcast_to(mu, xg.shape).reshape(x.shape), np.broadcast_to(var, xg.shape).reshape(x.shape)


def random_variables(rng, name):
  variables = {"params": {"scale": rng.uniform(0.5, 1.5, C), "bias": rng.normal(size=C)}}
  if name == "batch":
    variables["batch_stats"] = {"mean": rng.normal(size=C), "var": rng.uniform(0.5, 2.0, C)}
  return jax.tree.map(lambda a: jnp.asarray(a, jnp.float32), variables)


def apply(layer, variables, x, valid=None, flax_layer=False, **kwargs):
  """Jitted apply (train mode for batch norm); returns (y, new batch_stats or None)."""
  has_stats = "batch_stats" in variables

  def run(variables, x, valid):
    args = (x,) if flax_layer else (x, valid)
    if has_stats:
      kwargs.setdefault("use_running_average", False)
      y, updates = layer.apply(variables, *args, mutable=["batch_stats"], **kwargs)
      return y, updates["batch_stats"]
    return layer.apply(variables, *args, **kwargs), None

  return jax.jit(run)(variables, x, valid)


@pytest.mark.parametrize("name", list(NORMS))
@pytest.mark.parametrize("mask_channels", [1, C])
def test_equals_flax_when_all_valid(name, mask_channels):
  rng = np.random.default_rng(0)
  weighted, reference, _, _ = NORMS[name]
  x = jnp.asarray(rng.normal(1.0, 2.0, size=(B, H, W, C)), jnp.float32)
  variables = random_variables(rng, name)
  y, stats = apply(weighted, variables, x, jnp.ones((B, H, W, mask_channels)))
  want, want_stats = apply(reference, variables, x, flax_layer=True)
  np.testing.assert_allclose(np.asarray(y), np.asarray(want), rtol=1e-5, atol=1e-5)
  if name == "batch":
    for key in ("mean", "var"):
      np.testing.assert_allclose(np.asarray(stats[key]), np.asarray(want_stats[key]), rtol=1e-5, atol=1e-5)
    # Inference with the updated running statistics.
    updated = {**variables, "batch_stats": stats}
    y_eval, _ = apply(weighted, updated, x, jnp.ones((B, H, W, 1)), use_running_average=True)
    want_eval, _ = apply(reference, updated, x, flax_layer=True, use_running_average=True)
    np.testing.assert_allclose(np.asarray(y_eval), np.asarray(want_eval), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("name", list(NORMS))
@pytest.mark.parametrize("mask_channels", [1, C])
def test_matches_numpy_with_random_mask(name, mask_channels):
  rng = np.random.default_rng(1)
  weighted, _, axes, groups = NORMS[name]
  x = rng.normal(1.0, 2.0, size=(B, H, W, C)).astype(np.float32)
  valid = rng.uniform(size=(B, H, W, mask_channels)) * (rng.uniform(size=(B, H, W, mask_channels)) > 0.3)
  valid = valid.astype(np.float32)
  variables = random_variables(rng, name)
  y, stats = apply(weighted, variables, x, valid)
  mu, var = np_weighted_stats(x, valid, axes, groups)
  scale, bias = (np.asarray(variables["params"][k], np.float64) for k in ("scale", "bias"))
  eps = weighted.epsilon
  np.testing.assert_allclose(np.asarray(y), (x - mu) / np.sqrt(var + eps) * scale + bias, rtol=1e-4, atol=1e-4)
  if name == "batch":
    old = variables["batch_stats"]
    want_mean, want_var = 0.9 * old["mean"] + 0.1 * mu[0, 0, 0], 0.9 * old["var"] + 0.1 * var[0, 0, 0]
    np.testing.assert_allclose(np.asarray(stats["mean"]), want_mean, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(np.asarray(stats["var"]), want_var, rtol=1e-5, atol=1e-5)


def test_batch_norm_with_binary_mask_equals_flax_masked_batch_norm():
  rng = np.random.default_rng(2)
  weighted, reference, _, _ = NORMS["batch"]
  x = jnp.asarray(rng.normal(size=(B, H, W, C)), jnp.float32)
  valid = jnp.asarray(rng.uniform(size=(B, H, W, 1)) > 0.4, jnp.float32)
  variables = random_variables(rng, "batch")
  y, stats = apply(weighted, variables, x, valid)
  want, want_stats = apply(reference, variables, x, flax_layer=True, mask=jnp.broadcast_to(valid > 0, x.shape))
  np.testing.assert_allclose(np.asarray(y), np.asarray(want), rtol=1e-4, atol=1e-4)
  np.testing.assert_allclose(np.asarray(stats["var"]), np.asarray(want_stats["var"]), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("name", list(NORMS))
def test_hole_values_do_not_change_statistics(name):
  rng = np.random.default_rng(3)
  weighted, _, _, _ = NORMS[name]
  x = rng.normal(size=(B, H, W, C)).astype(np.float32)
  valid = (rng.uniform(size=(B, H, W, 1)) > 0.5).astype(np.float32)
  junk = np.where(valid > 0, x, 100.0 * rng.normal(size=x.shape)).astype(np.float32)
  variables = random_variables(rng, name)
  y, stats = apply(weighted, variables, x, valid)
  y_junk, stats_junk = apply(weighted, variables, junk, valid)
  known = np.broadcast_to(valid > 0, x.shape)
  np.testing.assert_allclose(np.asarray(y_junk)[known], np.asarray(y)[known], rtol=1e-5, atol=1e-5)
  assert not np.allclose(np.asarray(y_junk), np.asarray(y))  # the holes themselves did change
  if name == "batch":
    for key in ("mean", "var"):
      np.testing.assert_allclose(np.asarray(stats_junk[key]), np.asarray(stats[key]), rtol=1e-6)


@pytest.mark.parametrize("name", list(NORMS))
def test_all_holes_no_nan(name):
  rng = np.random.default_rng(4)
  weighted, _, _, _ = NORMS[name]
  x = jnp.asarray(rng.normal(size=(B, H, W, C)), jnp.float32)
  # Example 0 entirely a hole, the rest partly: per-example norms mix both cases.
  holes = jnp.zeros((B, H, W, 1))
  partial = jnp.asarray(rng.uniform(size=(B, H, W, 1)) > 0.5, jnp.float32).at[0].set(0.0)
  variables = random_variables(rng, name)
  for valid in (holes, partial):
    y, stats = apply(weighted, variables, x, valid)
    assert bool(jnp.all(jnp.isfinite(y)))

    def loss(variables, x):
      return jnp.sum(jnp.sin(apply(weighted, variables, x, valid)[0]))

    grads = jax.jit(jax.grad(loss, argnums=(0, 1)))(variables, x)
    assert all(bool(jnp.all(jnp.isfinite(g))) for g in jax.tree.leaves(grads))
  y, stats = apply(weighted, variables, x, holes)
  scale, bias = variables["params"]["scale"], variables["params"]["bias"]
  # identity statistics (mu = 0, var = 1) for every group: y = x / sqrt(1 + eps) * scale + bias
  np.testing.assert_allclose(np.asarray(y), x / np.sqrt(1.0 + weighted.epsilon) * scale + bias, rtol=1e-5, atol=1e-6)
  if name == "batch":
    # No valid pixel: running statistics are kept, not pulled towards 0.
    for key in ("mean", "var"):
      np.testing.assert_array_equal(np.asarray(stats[key]), np.asarray(variables["batch_stats"][key]))


@pytest.mark.parametrize("name", list(NORMS))
@pytest.mark.parametrize("epsilon", [1e-5, 1e-8])  # 1e-8: the WConv config's, where x / sqrt(eps) is x 10^4
def test_all_hole_region_gives_the_identity_fallback_bounded(name, epsilon):
  rng = np.random.default_rng(5)
  layer = NORMS[name][0].clone(epsilon=epsilon)
  x = rng.normal(size=(B, H, W, C)).astype(np.float32)
  valid = (rng.uniform(size=(B, H, W, 1)) > 0.5).astype(np.float32)
  if name == "batch":
    valid[:] = 0.0  # batch norm reduces over the batch: its all-hole region is the whole batch
  valid[0] = 0.0  # the per-example norms: example 0 is all hole, the others are not
  variables = random_variables(rng, name)
  y = np.asarray(apply(layer, variables, x, valid)[0], np.float64)
  scale, bias = (np.asarray(variables["params"][k], np.float64) for k in ("scale", "bias"))
  fallback = x[0] / np.sqrt(1.0 + epsilon) * scale + bias  # eqs. 4-6 with mu = 0, var = 1
  np.testing.assert_allclose(y[0], fallback, rtol=1e-5, atol=1e-6)
  assert np.abs(y[0]).max() <= np.abs(x[0]).max() * scale.max() + np.abs(bias).max() + 1e-5
  if name != "batch":  # the examples with known pixels still get their own eq. 4 / eq. 6 statistics
    with np.errstate(invalid="ignore"):  # example 0's 0 / 0, not compared
      mu, var = np_weighted_stats(x, valid, NORMS[name][2], NORMS[name][3])
    np.testing.assert_allclose(y[1:], ((x - mu) / np.sqrt(var + epsilon) * scale + bias)[1:], rtol=1e-4, atol=1e-4)


def test_batch_norm_sharded_batch_equals_single_device():
  rng = np.random.default_rng(5)
  weighted = NORMS["batch"][0]
  x = jnp.asarray(rng.normal(size=(8, H, W, C)), jnp.float32)
  valid = jnp.asarray(rng.uniform(size=(8, H, W, 1)), jnp.float32)
  variables = random_variables(rng, "batch")
  y, stats = apply(weighted, variables, x, valid)
  mesh = jax.make_mesh((8,), ("data",))
  with jax.set_mesh(mesh):
    shard = NamedSharding(mesh, P("data"))
    y_sh, stats_sh = apply(weighted, variables, jax.device_put(x, shard), jax.device_put(valid, shard))
  np.testing.assert_allclose(np.asarray(y_sh), np.asarray(y), rtol=1e-5, atol=1e-5)
  np.testing.assert_allclose(np.asarray(stats_sh["mean"]), np.asarray(stats["mean"]), rtol=1e-5, atol=1e-6)


def test_init_names_and_no_update_during_init():
  x, valid = jnp.ones((2, 3, 4, C)), jnp.ones((2, 3, 4, 1))
  variables = jit_init(WeightedBatchNorm(use_running_average=False).init)(jax.random.key(0), x, valid)
  assert jax.tree.map(jnp.shape, variables) == {
    "params": {"scale": (C,), "bias": (C,)},
    "batch_stats": {"mean": (C,), "var": (C,)},
  }
  np.testing.assert_array_equal(np.asarray(variables["batch_stats"]["mean"]), 0.0)
  np.testing.assert_array_equal(np.asarray(variables["batch_stats"]["var"]), 1.0)
  for layer in (WeightedInstanceNorm(), WeightedGroupNorm(num_groups=2), WeightedLayerNorm()):
    shapes = jax.eval_shape(layer.init, jax.random.key(0), x, valid)
    assert jax.tree.map(jnp.shape, shapes) == {"params": {"scale": (C,), "bias": (C,)}}
  no_affine = jax.eval_shape(WeightedLayerNorm(use_scale=False, use_bias=False).init, jax.random.key(0), x, valid)
  assert jax.tree.leaves(no_affine) == []


def test_bf16_output_dtype():
  rng = np.random.default_rng(6)
  x = jnp.asarray(rng.normal(size=(B, H, W, C)), jnp.bfloat16)
  valid = jnp.asarray(rng.uniform(size=(B, H, W, 1)), jnp.float32)
  variables = random_variables(rng, "group")
  y16 = jax.jit(WeightedGroupNorm(num_groups=GROUPS, dtype=jnp.bfloat16).apply)(variables, x, valid)
  y32 = jax.jit(WeightedGroupNorm(num_groups=GROUPS).apply)(variables, x.astype(jnp.float32), valid)
  assert y16.dtype == jnp.bfloat16 and y32.dtype == jnp.float32
  np.testing.assert_allclose(np.asarray(y16, np.float32), np.asarray(y32), rtol=3e-2, atol=3e-2)


@pytest.mark.parametrize(
  "x_shape,valid_shape", [((H, W, C), (H, W, 1)), ((B, H, W, C), (B, H, W + 1, 1)), ((B, H, W, C), (B, H, W, 3))]
)
def test_bad_shapes_raise(x_shape, valid_shape):
  for layer in (WeightedBatchNorm(use_running_average=False), WeightedInstanceNorm()):
    with pytest.raises(ValueError, match="valid"):
      jax.eval_shape(layer.init, jax.random.key(0), jnp.zeros(x_shape), jnp.ones(valid_shape))


def test_bad_group_count_and_values_raise():
  x = jnp.zeros((B, H, W, C))
  with pytest.raises(ValueError, match="num_groups 3"):
    jax.eval_shape(WeightedGroupNorm(num_groups=3).init, jax.random.key(0), x, jnp.ones((B, H, W, 1)))
  with pytest.raises(ValueError, match="valid"):
    WeightedInstanceNorm().init(jax.random.key(0), x, jnp.full((B, H, W, 1), 2.0))
