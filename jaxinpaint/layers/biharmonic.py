"""Biharmonic hole filling in JAX: the smooth interpolation scikit-image's `inpaint_biharmonic` computes, as a
batched, jit-able conjugate-gradient solve (a fill a network can correct, on any backend, inside the step).

The hole pixels u minimise ||L u||^2, L the 5-point Laplacian of the 4-neighbour grid with reflecting (Neumann)
borders (symmetric, so the normal equations are H L L H x = -H L L k, H the hole indicator, k the known pixels).
Conjugate gradients solve them per image and channel from the push-pull fill (`push_pull.push_pull_fill`), whose
low frequencies are already right; a fixed iteration count keeps the cost static. Stopped early (the default 100
steps at 64 px) the fill is smoother than the converged solve.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from jaxinpaint.layers.push_pull import push_pull_fill

ITERATIONS = 100


def laplacian(u: jnp.ndarray) -> jnp.ndarray:
  """f32[B, H, W, C] -> the grid-graph Laplacian (4-neighbour sum minus 4u, borders reflecting): symmetric."""
  p = jnp.pad(u, ((0, 0), (1, 1), (1, 1), (0, 0)), mode="edge")
  return p[:, :-2, 1:-1] + p[:, 2:, 1:-1] + p[:, 1:-1, :-2] + p[:, 1:-1, 2:] - 4.0 * u


def biharmonic_fill(image: jnp.ndarray, valid: jnp.ndarray, iterations: int = ITERATIONS) -> jnp.ndarray:
  """image f32[B, H, W, C] (holes may hold anything), valid f32[B, H, W, 1] (known where > 0.5) -> f32[B, H, W, C]:
  known pixels unchanged, holes the biharmonic interpolation after `iterations` conjugate-gradient steps. No
  gradient flows through it (it is a fixed function of the known pixels)."""
  image = jax.lax.stop_gradient(jnp.asarray(image, jnp.float32))
  known_mask = (jax.lax.stop_gradient(jnp.asarray(valid, jnp.float32)) > 0.5).astype(jnp.float32)
  hole = 1.0 - known_mask
  known = image * known_mask
  axes = (1, 2)

  def normal(v):
    return hole * laplacian(laplacian(hole * v))

  def dot(a, b):
    return jnp.sum(a * b, axis=axes, keepdims=True)

  x = hole * push_pull_fill(image, known_mask)
  r = -hole * laplacian(laplacian(known)) - normal(x)
  p, rr = r, dot(r, r)

  def step(_, carry):
    x, r, p, rr = carry
    ap = normal(p)
    pap = dot(p, ap)
    alpha = jnp.where(pap > 0, rr / jnp.where(pap > 0, pap, 1.0), 0.0)  # 0 once a channel has converged
    x, r = x + alpha * p, r - alpha * ap
    rr_new = dot(r, r)
    p = r + jnp.where(rr > 0, rr_new / jnp.where(rr > 0, rr, 1.0), 0.0) * p
    return x, r, p, rr_new

  x, *_ = jax.lax.fori_loop(0, iterations, step, (x, r, p, rr))
  return known + hole * x
