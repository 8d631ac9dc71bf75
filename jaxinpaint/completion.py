"""Semantic inpainting by latent optimisation (Yeh et al. 2017), as seed 001 uses it with a trained DCGAN.

For an image y with known-pixel mask M (`valid`, 1 = known) and a trained generator G and discriminator D:

  z* = argmin_{z in [-1, 1]^d}  L_context(z) + lambda L_perceptual(z)
  L_context(z)    = sum_pixels |W * (G(z) - y)|            (W = M: seed 001's ||M*G(z) - M*y||_1;
                                                            Yeh's weighting: W = M * box7(1 - M), see below)
  L_perceptual(z) = the generator's GAN loss on D(G(z))    (sigmoid CE: -log D(G(z)), the form the reference
                                                            code optimises for the paper's log(1 - D(G(z))))
  x = M * y + (1 - M) * G(z*)                              (or Poisson blending of G(z*) into the hole)

Adam on z (lr 0.01, betas 0.9/0.999, ~1000 iterations), z clipped to [-1, 1] after every step, lambda 0.1, as in
Yeh et al. and bamos' reference. Each image has its own z and its own Adam moments (Adam is elementwise, so one
Adam on the stacked z f32[B, d] is B independent ones); the batch is sharded over devices.

D's BatchNorm (`discriminator_stats`): 'batch' (default, as bamos' reference, whose D stays in training mode
while completing) normalises with the statistics of the batch being completed, so the perceptual term of one
image depends on the other images of its batch; 'running' uses the running averages collected in training
(then every image is an independent problem). G always runs on its running statistics.

`jaxinpaint.complete.complete_run(config, workdir)` is `--mode=complete`: it restores a trained DCGAN run and
writes completed images and their metrics under `workdir/completion/`.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
from absl import logging
from jax.sharding import NamedSharding, PartitionSpec as P

from jaxinpaint import gan_losses, progress, sharding
from jaxinpaint.imaging import composite
from jaxinpaint.models.dcgan import check_image_size

BLENDS = ("composite", "poisson")
DISCRIMINATOR_STATS = ("batch", "running")


# ----------------------------------------------------------------------------------------------------------------
# Losses


def context_weights(valid: jax.Array, weighted: bool = False, window: int = 7) -> jax.Array:
  """W for the context loss, f32[B, H, W, 1], from valid f32[B, H, W, 1] (1 = known).

  Plain: W = M. Weighted (Yeh et al. eq. 4): W_i = M_i * (1/|N|) sum_{j in N(i)} (1 - M_j) over the window x
  window neighbourhood N(i), padded by symmetric reflection at the image border (scipy's boundary='symm', as the
  reference implementations do): known pixels count by how many holes surround them; known pixels far from any
  hole get weight 0.
  """
  if window <= 0 or window % 2 == 0:
    raise ValueError(f"context window must be a positive odd number of pixels; got {window}")
  valid = jnp.asarray(valid, jnp.float32)
  if not weighted:
    return valid
  r = window // 2
  hole = jnp.pad(1.0 - valid, ((0, 0), (r, r), (r, r), (0, 0)), mode="symmetric")
  # A single-channel window sum: a reduction, not a conv with a ones kernel.
  count = jax.lax.reduce_window(hole, 0.0, jax.lax.add, (1, window, window, 1), (1, 1, 1, 1), "VALID")
  return valid * count / float(window * window)


def context_loss(generated: jax.Array, image: jax.Array, weights: jax.Array) -> jax.Array:
  """sum over pixels and channels of |W * (G(z) - y)|, per image: f32[B] (the reference sums, not averages)."""
  return jnp.sum(jnp.abs(weights * (generated - image)), axis=(1, 2, 3))


def perceptual_loss(logits: jax.Array, gan_loss: str = "sigmoid_ce") -> jax.Array:
  """The generator's GAN loss of each image's discriminator logits f32[B, K] -> f32[B]."""
  _, g_loss = gan_losses.get_gan_loss(gan_loss)
  return jax.vmap(g_loss)(logits)


# ----------------------------------------------------------------------------------------------------------------
# Reconstruction


def _neighbour_sum(x: jax.Array) -> jax.Array:
  """Sum of the 4 neighbours of each pixel of f32[B, H, W, C]; outside the image counts as absent (0)."""
  p = jnp.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)))
  return p[:, :-2, 1:-1] + p[:, 2:, 1:-1] + p[:, 1:-1, :-2] + p[:, 1:-1, 2:]


def conjugate_gradient(apply_a, b: jax.Array, x0: jax.Array, max_iterations: int, tol: float) -> jax.Array:
  """Solves A x = b for every (image, channel) of f32[B, H, W, C] at once: one CG per channel of each image
  (its own step sizes), stopping when all reach ||r|| <= tol ||b|| or after `max_iterations`."""
  dot = lambda u, v: jnp.sum(u * v, axis=(1, 2), keepdims=True)
  safe = lambda d: jnp.where(d > 0, d, 1.0)
  r = b - apply_a(x0)
  stop = tol * tol * dot(b, b)

  def cond(state):
    i, _, _, _, rs = state
    return (i < max_iterations) & jnp.any(rs > stop)

  def body(state):
    i, x, r, p, rs = state
    ap = apply_a(p)
    pap = dot(p, ap)
    active = (rs > stop) & (pap > 0)  # converged systems stand still
    alpha = jnp.where(active, rs / safe(pap), 0.0)
    x, r = x + alpha * p, r - alpha * ap
    rs_next = dot(r, r)
    p = r + jnp.where(active, rs_next / safe(rs), 0.0) * p
    return i + 1, x, r, p, rs_next

  return jax.lax.while_loop(cond, body, (0, x0, r, r, dot(r, r)))[1]


def poisson_blend(
  image: jax.Array, generated: jax.Array, valid: jax.Array, max_iterations: int = 2000, tol: float = 1e-6
) -> jax.Array:
  """Poisson blending (Perez et al. 2003) of G(z) into the hole, as Yeh et al. post-process: f32[B, H, W, C].

  Inside the hole Omega the result x solves the discrete Poisson equation with the generated image's gradients
  and the known pixels as Dirichlet boundary:
    |N_p| x_p - sum_{q in N_p} x_q = sum_{q in N_p} (g_p - g_q)   for p in Omega, x_q = y_q for q not in Omega,
  with N_p the 4-neighbours of p inside the image. Outside the hole x = y exactly. Solved per image and channel
  by conjugate gradients (the system is SPD whenever the image has a known pixel).
  """
  known = jnp.broadcast_to(valid, image.shape)
  hole = 1.0 - known
  n = _neighbour_sum(jnp.ones_like(image))  # in-image neighbours: 4 inside, 3 on edges, 2 in corners

  def laplace(u):  # the system restricted to hole pixels (symmetric positive definite there)
    return hole * (n * u - _neighbour_sum(hole * u))

  rhs = hole * (_neighbour_sum(known * image) + n * generated - _neighbour_sum(generated))
  u = conjugate_gradient(laplace, rhs, hole * generated, max_iterations, tol)
  return known * image + hole * u


# ----------------------------------------------------------------------------------------------------------------
# Latent optimisation


@dataclasses.dataclass(frozen=True)
class Completion:
  """Latent-optimisation completion with a trained DCGAN. Hashable: a static argument of `jax.jit`.

  generator: z f32[B, latent_dim] -> f32[B, S, S, 3]; discriminator: f32[B, S, S, 3] -> logits f32[B, K].
  Call it (pure, jit-able) or use `run` (checks the inputs, shards the batch over a mesh and jits).
  """

  generator: nn.Module
  discriminator: nn.Module
  gan_loss: str = "sigmoid_ce"
  iterations: int = 1000
  learning_rate: float = 0.01
  b1: float = 0.9
  b2: float = 0.999
  lam: float = 0.1
  weighted: bool = False
  window: int = 7
  blend: str = "composite"
  poisson_iterations: int = 2000
  discriminator_stats: str = "batch"  # D's BatchNorm: 'batch' (bamos' reference) or 'running' (eval mode)
  progress: bool = False  # `run` sets it on a terminal: host callbacks move a progress bar

  def __post_init__(self):
    gan_losses.get_gan_loss(self.gan_loss)
    if self.blend not in BLENDS:
      raise ValueError(f"completion blend must be one of {BLENDS}; got {self.blend!r}")
    if self.discriminator_stats not in DISCRIMINATOR_STATS:
      raise ValueError(
        f"completion discriminator_stats must be one of {DISCRIMINATOR_STATS}; got {self.discriminator_stats!r}"
      )
    if self.iterations < 0:
      raise ValueError(f"completion iterations must be >= 0; got {self.iterations}")

  @property
  def image_size(self) -> int:
    return self.generator.image_size

  def check_inputs(self, image, valid, z_init) -> None:
    """Static shape checks (also under jit): ValueError naming what is wrong and the size that is needed."""
    check_image_size(image, self.image_size, "DCGAN completion (the generator's output size)")
    if valid.shape != image.shape[:3] + (1,):
      raise ValueError(f"valid must be f32[B, H, W, 1] matching image {tuple(image.shape)}; got {tuple(valid.shape)}")
    if z_init.shape != (image.shape[0], self.generator.latent_dim):
      raise ValueError(
        f"z_init must be f32[{image.shape[0]}, {self.generator.latent_dim}] (one latent per image); "
        f"got {tuple(z_init.shape)}"
      )

  def __call__(
    self, variables: dict[str, Any], image: jax.Array, valid: jax.Array, z_init: jax.Array
  ) -> dict[str, jax.Array]:
    """Completes each image independently.

    variables: {'generator': flax variables, 'discriminator': flax variables} (G on its running statistics; D on
    the batch's own with discriminator_stats='batch', so the batch is one coupled problem, or on its running
    statistics with 'running', so each image's completion is independent). image f32[B, S, S, 3] in [-1, 1];
    valid f32[B, S, S, 1]; z_init f32[B, latent_dim]. Returns z f32[B, d], generated G(z*) f32[B, S, S, 3],
    output (the composite or Poisson blend), context and perceptual f32[iterations + 1, B]: the losses at
    every iterate z_0 .. z_T (so history[-1] belongs to the returned z).
    """
    self.check_inputs(image, valid, z_init)
    weights = context_weights(valid, self.weighted, self.window)
    _, g_loss = gan_losses.get_gan_loss(self.gan_loss)
    tx = optax.adam(self.learning_rate, b1=self.b1, b2=self.b2)

    def logits_of(x):  # f32[B, S, S, 3] -> f32[B, K]
      if self.discriminator_stats == "running":
        return self.discriminator.apply(variables["discriminator"], x, train=False)
      # training-mode BatchNorm: this batch's statistics; the running-average update is discarded
      return self.discriminator.apply(variables["discriminator"], x, train=True, mutable=["batch_stats"])[0]

    def losses(z):  # z f32[B, d]; summed over images, so d/dz_i is image i's own gradient (+ D's BN coupling)
      x = self.generator.apply(variables["generator"], z, train=False)
      ctx, per = context_loss(x, image, weights), jax.vmap(g_loss)(logits_of(x))
      return jnp.sum(ctx + self.lam * per), (ctx, per)

    def step(carry, i):
      if self.progress:
        progress.device_tick(i, max(1, self.iterations // 100))
      z, opt = carry
      (_, terms), grad = jax.value_and_grad(losses, has_aux=True)(z)
      updates, opt = tx.update(grad, opt, z)
      return (jnp.clip(optax.apply_updates(z, updates), -1.0, 1.0), opt), terms

    z0 = jnp.clip(z_init, -1.0, 1.0)
    (z, _), (ctx, per) = jax.lax.scan(step, (z0, tx.init(z0)), jnp.arange(self.iterations))
    _, (ctx_t, per_t) = losses(z)
    ctx, per = jnp.concatenate([ctx, ctx_t[None]]), jnp.concatenate([per, per_t[None]])  # [iterations + 1, B]
    generated = self.generator.apply(variables["generator"], z, train=False)
    if self.blend == "poisson":
      output = poisson_blend(image, generated, valid, self.poisson_iterations)
    else:
      output = composite(image, generated, valid)
    return {"z": z, "generated": generated, "output": output, "context": ctx, "perceptual": per}

  def run(self, variables: dict[str, Any], image, valid, z_init, mesh: jax.sharding.Mesh | None = None):
    """Checks the inputs, splits the batch over `mesh` (default: all devices) and runs the jitted completion.

    A batch that does not divide over the devices is padded with copies of its last image (dropped again) when
    D runs on running statistics; with batch statistics copies would change them, so the batch is split over the
    most devices that divide it instead. Returns numpy arrays as `__call__` does.
    """
    image, valid, z_init = (np.asarray(a, np.float32) for a in (image, valid, z_init))
    self.check_inputs(image, valid, z_init)
    check_has_known_pixels(valid)
    mesh = mesh if mesh is not None else sharding.make_mesh()
    n, devices = image.shape[0], mesh.devices.size
    if self.discriminator_stats == "batch" and n % devices:
      devices = max(k for k in range(1, devices + 1) if n % k == 0)
      mesh = sharding.make_mesh(list(mesh.devices.flat)[:devices])
    pad = -n % devices
    if pad:
      image, valid, z_init = (np.concatenate([a, np.repeat(a[-1:], pad, 0)]) for a in (image, valid, z_init))
    batch = NamedSharding(mesh, P("data"))
    image, valid, z_init = (jax.device_put(a, batch) for a in (image, valid, z_init))
    variables = jax.device_put(variables, NamedSharding(mesh, P()))
    with progress.bar(self.iterations, desc="complete", unit="iter") as bar, progress.fed_from_device(bar):
      out = jax.device_get(
        _jitted_call(dataclasses.replace(self, progress=bar.enabled), variables, image, valid, z_init)
      )
      bar.update(self.iterations - bar.n)
    return {k: (np.asarray(v)[:, :n] if k in ("context", "perceptual") else np.asarray(v)[:n]) for k, v in out.items()}


_jitted_call = jax.jit(lambda completion, *args: completion(*args), static_argnums=0)


def check_has_known_pixels(valid) -> None:
  """ValueError naming the images whose mask has no known pixel: there is nothing to complete them from."""
  valid = np.asarray(valid)
  empty = np.flatnonzero(valid.reshape(valid.shape[0], -1).max(axis=1) <= 0)
  if empty.size:
    raise ValueError(
      f"image(s) {empty.tolist()} have no known pixels (valid is 0 everywhere): nothing to complete from"
    )


def initial_latents(seed: int, num: int, latent_dim: int) -> jax.Array:
  """z_0 ~ U(-1, 1)^d per image, the prior the DCGAN was trained with; f32[num, latent_dim]."""
  return jax.random.uniform(jax.random.key(seed), (num, latent_dim), minval=-1.0, maxval=1.0)


# ----------------------------------------------------------------------------------------------------------------
# --mode=complete


def seed001_scores(image: np.ndarray, completed: np.ndarray) -> dict[str, np.ndarray]:
  """Seed 001's metrics per image, from scikit-image on 8-bit images (as the seed computed them): f64[B] each.

  mse: mean squared error in 0..255 units; ssim: `structural_similarity` with its defaults (7x7 uniform window,
  data range 255, averaged over channels); psnr in dB. image, completed: f32[B, H, W, 3] in [-1, 1].
  """
  from skimage import metrics as skm

  from jaxinpaint.visualize import to_uint8

  a, b = to_uint8(image), to_uint8(completed)
  return {
    "mse": np.array([skm.mean_squared_error(x, y) for x, y in zip(a, b)]),
    "ssim": np.array([skm.structural_similarity(x, y, channel_axis=-1) for x, y in zip(a, b)]),
    "psnr": np.array(
      [skm.peak_signal_noise_ratio(x, y, data_range=255) if np.any(x != y) else 100.0 for x, y in zip(a, b)]
    ),
  }


def completion_images(config, num: int) -> tuple[np.ndarray, np.ndarray]:
  """The first `num` held-out examples, as the trainer's eval set prepares them (image f32[n, S, S, 3] in [-1, 1],
  valid f32[n, S, S, 1] from `config.masks.eval_kind`); images repeat when the eval split has fewer."""
  from jaxinpaint.data import pipeline, sources

  source = sources.make_source(config.data, "eval")
  if num > len(source):
    logging.warning("completion: %d images asked, the eval split has %d; images repeat", num, len(source))
  resize = config.data.get("resize", None)
  examples = [
    pipeline.eval_example(
      i,
      source=source,
      size=config.data.image_size,
      resize=None if resize is None else tuple(resize),
      mask_fn=pipeline.configured_mask_fn(config.masks, config.masks.eval_kind),
      shorter_side=config.data.get("shorter_side", 0),
    )
    for i in range(num)
  ]
  return np.stack([e["image"] for e in examples]), np.stack([e["valid"] for e in examples])


def tile(images: np.ndarray, columns: int = 8, pad: int = 2) -> np.ndarray:
  """uint8[N, H, W, 3] -> one uint8 image, `columns` per row, white padding."""
  n, h, w, c = images.shape
  rows = -(-n // columns)
  grid = np.full((rows * (h + 2 * pad), columns * (w + 2 * pad), c), 255, np.uint8)
  for i, im in enumerate(images):
    top, left = (i // columns) * (h + 2 * pad) + pad, (i % columns) * (w + 2 * pad) + pad
    grid[top : top + h, left : left + w] = im
  return grid
