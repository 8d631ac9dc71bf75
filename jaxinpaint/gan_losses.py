"""GAN objectives, written once for every adversarial model here (DeepFill v1/v2, DCGAN).

Every function takes raw discriminator outputs (logits / critic values) of any shape and returns a scalar; the
`d_*` functions are the discriminator's loss, the `g_*` functions the generator's. The train step composes them so
that each network receives the gradient of its own loss only (see `jaxinpaint.tasks.deepfill`).

- hinge (SN-PatchGAN, DeepFill v2): D = 0.5 mean(relu(1 - D(x))) + 0.5 mean(relu(1 + D(G(z)))), G = -mean(D(G(z))).
- sigmoid cross-entropy (Goodfellow et al.; G non-saturating): D = BCE(D(x), 1) + BCE(D(G(z)), 0),
  G = BCE(D(G(z)), 1) = mean(softplus(-D(G(z)))).
- softmax cross-entropy over the two classes (real, fake) from two logits per example; with one logit per
  example the logit of the other class is taken as 0, which makes it the sigmoid loss (softmax of [l, 0]).
- least squares (LSGAN; "mean squared error" in seed 001): D = mean((D(x) - 1)^2) + mean(D(G(z))^2),
  G = mean((D(G(z)) - 1)^2), on sigmoid outputs when `on_probabilities` (seed 001's use of MSE on D's
  sigmoid probability) or on raw outputs (Mao et al.).
- WGAN (critic values): D = mean(D(G(z))) - mean(D(x)), G = -mean(D(G(z))), plus `gradient_penalty` (Gulrajani
  et al., lambda 10): lambda * mean((||grad_x D(x_hat)||_2 - 1)^2) at x_hat = eps x + (1 - eps) G(z).
"""

from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp

GAN_LOSSES = ("hinge", "sigmoid_ce", "softmax_ce", "mse", "wgan")


def _two_class_logits(logits: jax.Array) -> jax.Array:
  """[..., 2] (real, fake) logits as given, or [...] / [..., 1] single logits as (l, 0)."""
  if logits.ndim and logits.shape[-1] == 2:
    return logits
  logits = logits[..., 0] if (logits.ndim and logits.shape[-1] == 1) else logits
  return jnp.stack([logits, jnp.zeros_like(logits)], axis=-1)


def d_hinge(real: jax.Array, fake: jax.Array) -> jax.Array:
  return 0.5 * jnp.mean(jax.nn.relu(1.0 - real)) + 0.5 * jnp.mean(jax.nn.relu(1.0 + fake))


def g_hinge(fake: jax.Array) -> jax.Array:
  return -jnp.mean(fake)


def d_sigmoid_ce(real: jax.Array, fake: jax.Array) -> jax.Array:
  # BCE(l, 1) = softplus(-l); BCE(l, 0) = softplus(l): exact and stable for any logit.
  return jnp.mean(jax.nn.softplus(-real)) + jnp.mean(jax.nn.softplus(fake))


def g_sigmoid_ce(fake: jax.Array) -> jax.Array:
  return jnp.mean(jax.nn.softplus(-fake))


def d_softmax_ce(real: jax.Array, fake: jax.Array) -> jax.Array:
  """Class 0 = real, class 1 = fake."""
  real_lp = jax.nn.log_softmax(_two_class_logits(real), axis=-1)
  fake_lp = jax.nn.log_softmax(_two_class_logits(fake), axis=-1)
  return -jnp.mean(real_lp[..., 0]) - jnp.mean(fake_lp[..., 1])


def g_softmax_ce(fake: jax.Array) -> jax.Array:
  return -jnp.mean(jax.nn.log_softmax(_two_class_logits(fake), axis=-1)[..., 0])


def _squash(x: jax.Array, on_probabilities: bool) -> jax.Array:
  if on_probabilities:
    return jax.nn.sigmoid(_two_class_logits(x)[..., 0] - _two_class_logits(x)[..., 1])
  return x


def d_mse(real: jax.Array, fake: jax.Array, on_probabilities: bool = True) -> jax.Array:
  real, fake = _squash(real, on_probabilities), _squash(fake, on_probabilities)
  return jnp.mean(jnp.square(real - 1.0)) + jnp.mean(jnp.square(fake))


def g_mse(fake: jax.Array, on_probabilities: bool = True) -> jax.Array:
  return jnp.mean(jnp.square(_squash(fake, on_probabilities) - 1.0))


def d_wgan(real: jax.Array, fake: jax.Array) -> jax.Array:
  return jnp.mean(fake) - jnp.mean(real)


def g_wgan(fake: jax.Array) -> jax.Array:
  return -jnp.mean(fake)


D_LOSSES: dict[str, Callable[..., jax.Array]] = {
  "hinge": d_hinge,
  "sigmoid_ce": d_sigmoid_ce,
  "softmax_ce": d_softmax_ce,
  "mse": d_mse,
  "wgan": d_wgan,
}
G_LOSSES: dict[str, Callable[..., jax.Array]] = {
  "hinge": g_hinge,
  "sigmoid_ce": g_sigmoid_ce,
  "softmax_ce": g_softmax_ce,
  "mse": g_mse,
  "wgan": g_wgan,
}


def get_gan_loss(name: str) -> tuple[Callable[..., jax.Array], Callable[..., jax.Array]]:
  """(d_loss(real, fake), g_loss(fake)) for `name` in GAN_LOSSES."""
  if name not in D_LOSSES:
    raise ValueError(f"unknown GAN loss {name!r}; known: {', '.join(GAN_LOSSES)}")
  return D_LOSSES[name], G_LOSSES[name]


def gradient_penalty(
  critic: Callable[[jax.Array], jax.Array], real: jax.Array, fake: jax.Array, rng: jax.Array, weight: float = 10.0
) -> jax.Array:
  """WGAN-GP: weight * mean_i (||d critic(x_hat_i) / d x_hat_i||_2 - 1)^2, x_hat = eps real + (1 - eps) fake.

  real, fake: f32[B, ...]; `critic` maps a batch to per-example (or per-patch) values; eps ~ U(0, 1) per example.
  The sum over the critic's outputs makes each example's gradient its own (examples do not interact in a critic
  without batch statistics).
  """
  if real.shape != fake.shape:
    raise ValueError(f"gradient_penalty needs real and fake of one shape; got {real.shape} and {fake.shape}")
  eps = jax.random.uniform(rng, (real.shape[0],) + (1,) * (real.ndim - 1), dtype=real.dtype)
  x_hat = eps * real + (1.0 - eps) * fake
  grads = jax.grad(lambda x: jnp.sum(critic(x)))(x_hat)
  norms = jnp.sqrt(jnp.sum(jnp.square(grads.reshape(grads.shape[0], -1)), axis=-1) + 1e-12)
  return weight * jnp.mean(jnp.square(norms - 1.0))
