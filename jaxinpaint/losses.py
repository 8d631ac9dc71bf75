"""Training losses: the partial-convolution loss (Liu et al. 2018, eqs. 1-7) and plain MSE (seed 002).

Images are f32[B, H, W, 3] in [-1, 1], as the models emit them; `valid` is f32[B, H, W, 1] (or C),
1 = known pixel, 0 = hole. The composite is I_comp = valid * I_gt + (1 - valid) * I_out. Every loss is a
scalar averaged over the batch.

Perceptual and style terms need VGG16 weights (`scripts/convert_vgg16.py` makes the `.npz`; nothing is
downloaded). Without them `make_perceptual_fn` returns None, logs a warning, and `pconv_loss` leaves those two
terms out of the total and out of its terms dict.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable, Sequence

import jax
import jax.numpy as jnp
from absl import logging

from jaxinpaint import imaging, metrics
from jaxinpaint.models.resnet_pl import load_resnet_pl
from jaxinpaint.models.vgg import VGG16Features, load_vgg16_params, to_imagenet_input


def file_sha256(path: str) -> str:
  """Hex sha256 of a (weights) file, read in 1 MiB chunks: what the loss labels name a perceptual network by."""
  digest = hashlib.sha256()
  with open(path, "rb") as f:
    for chunk in iter(lambda: f.read(1 << 20), b""):
      digest.update(chunk)
  return digest.hexdigest()


PCONV_WEIGHTS = (1.0, 6.0, 0.05, 120.0, 0.1)  # valid, hole, perceptual, style, tv (Liu et al. 2018, eq. 7)
FeatureFn = Callable[[jax.Array], Sequence[jax.Array]]


def _check_images(output, target) -> tuple[jax.Array, jax.Array]:
  output, target = jnp.asarray(output, jnp.float32), jnp.asarray(target, jnp.float32)
  if output.ndim != 4 or output.shape != target.shape:
    raise ValueError(f"output and target must be equal f32[B, H, W, C]; got {output.shape} and {target.shape}")
  return output, target


def _check_valid(valid, like: jax.Array) -> jax.Array:
  valid = jnp.asarray(valid, jnp.float32)
  b, h, w, c = like.shape
  if valid.ndim != 4 or valid.shape[:3] != (b, h, w) or valid.shape[3] not in (1, c):
    raise ValueError(f"valid must be f32[{b}, {h}, {w}, 1 or {c}] to match images {like.shape}; got {valid.shape}")
  return valid


def mse_loss(output, target) -> jax.Array:
  """Mean squared error over all elements (seed 002's training loss)."""
  output, target = _check_images(output, target)
  return jnp.mean(jnp.square(output - target))


def hole_log_mse(output, target, valid, eps: float = 1e-4) -> jax.Array:
  """mean_b log(MSE over example b's hole pixels + eps): minus the mean per-example PSNR on the hole, up to
  scale, so a thin stroke counts as much as a big hole (L_hole's mean over all elements barely sees it)."""
  output, target = _check_images(output, target)
  hole = 1.0 - _check_valid(valid, output)
  sq = jnp.sum(hole * jnp.square(output - target), axis=(1, 2, 3))
  count = jnp.sum(jnp.broadcast_to(hole, output.shape), axis=(1, 2, 3))
  return jnp.mean(jnp.log(sq / jnp.maximum(count, 1.0) + eps))


def hole_log_mse_ssim(output, target, valid, ssim_weight: float) -> jax.Array:
  """hole_log_mse + ssim_weight * mean_b (1 - SSIM(composite_b, target_b)): both of the demo's scores, PSNR on the
  hole and SSIM of the composite (output clipped to [-1, 1] in the holes, the target elsewhere; both in [0, 1]),
  as one loss. With PSNR alone a fill can buy dB by smoothing away structure that SSIM counts."""
  output, target = _check_images(output, target)
  valid = _check_valid(valid, output)
  composite = imaging.composite(target, jnp.clip(output, -1.0, 1.0), valid)
  ssim = metrics.ssim(imaging.to01(target), imaging.to01(composite))
  return hole_log_mse(output, target, valid) + ssim_weight * jnp.mean(1.0 - ssim)


def valid_l1(output, target, valid) -> jax.Array:
  """L_valid = ||M * (I_out - I_gt)||_1 / N_gt (eq. 1), N_gt = C*H*W: a mean over all elements, not holes."""
  output, target = _check_images(output, target)
  valid = _check_valid(valid, output)
  return jnp.mean(jnp.abs(valid * (output - target)))


def hole_l1(output, target, valid) -> jax.Array:
  """L_hole = ||(1 - M) * (I_out - I_gt)||_1 / N_gt (eq. 1), a mean over all elements."""
  output, target = _check_images(output, target)
  valid = _check_valid(valid, output)
  return jnp.mean(jnp.abs((1.0 - valid) * (output - target)))


def dilated_hole(valid: jax.Array) -> jax.Array:
  """P of eq. 6: the hole region dilated by one pixel (3x3 max-pool of 1 - valid), same shape as valid."""
  return jax.lax.reduce_window(1.0 - valid, -jnp.inf, jax.lax.max, (1, 3, 3, 1), (1, 1, 1, 1), "SAME")


def tv_loss(composite, valid) -> jax.Array:
  """L_tv (eq. 6): |I_comp[i, j+1] - I_comp[i, j]| + |I_comp[i+1, j] - I_comp[i, j]| over pairs in P.

  A pair counts when both pixels lie in P, the 1-px dilation of the hole. As in the paper the sum is
  divided by N_comp = C*H*W, the number of elements of the whole image (not of P), then averaged over the
  batch; an image without holes contributes 0.
  """
  composite = jnp.asarray(composite, jnp.float32)
  if composite.ndim != 4:
    raise ValueError(f"composite must be f32[B, H, W, C]; got {composite.shape}")
  p = dilated_hole(_check_valid(valid, composite))
  dh = jnp.abs(composite[:, :, 1:] - composite[:, :, :-1]) * (p[:, :, 1:] * p[:, :, :-1])
  dv = jnp.abs(composite[:, 1:] - composite[:, :-1]) * (p[:, 1:] * p[:, :-1])
  return (dh.sum() + dv.sum()) / composite.size


def gram_matrix(features: jax.Array) -> jax.Array:
  """K_p Psi^T Psi: f32[B, H, W, C] -> f32[B, C, C], divided by C*H*W (the K_p of eqs. 4-5)."""
  _, h, w, c = features.shape
  gram = jnp.einsum("bhwc,bhwd->bcd", features, features, precision=jax.lax.Precision.HIGHEST)
  return gram / (c * h * w)


def _check_features(*feature_lists) -> None:
  shapes = [[f.shape for f in fl] for fl in feature_lists]
  if not shapes[0] or any(s != shapes[0] for s in shapes) or any(len(s) != 4 for s in shapes[0]):
    raise ValueError(f"feature lists must be equal non-empty lists of f32[B, H, W, C]; got shapes {shapes}")


def perceptual_loss(
  out_features: Sequence[jax.Array], comp_features: Sequence[jax.Array], gt_features: Sequence[jax.Array]
) -> jax.Array:
  """L_perceptual (eq. 3): sum_p mean|Psi_p(I_out) - Psi_p(I_gt)| + mean|Psi_p(I_comp) - Psi_p(I_gt)|."""
  _check_features(out_features, comp_features, gt_features)
  return sum(
    jnp.mean(jnp.abs(o - g)) + jnp.mean(jnp.abs(c - g)) for o, c, g in zip(out_features, comp_features, gt_features)
  )


def style_loss(
  out_features: Sequence[jax.Array], comp_features: Sequence[jax.Array], gt_features: Sequence[jax.Array]
) -> jax.Array:
  """L_style_out + L_style_comp (eqs. 4-5): sum_p mean over batch and C_p x C_p entries of |G_p(.) - G_p(gt)|.

  The mean over the C_p^2 Gram entries is the paper's 1 / (C_p C_p); G_p is `gram_matrix` (K_p = 1/(C H W)).
  """
  _check_features(out_features, comp_features, gt_features)
  total = 0.0
  for o, c, g in zip(out_features, comp_features, gt_features):
    gram_gt = gram_matrix(g)
    total += jnp.mean(jnp.abs(gram_matrix(o) - gram_gt)) + jnp.mean(jnp.abs(gram_matrix(c) - gram_gt))
  return total


def make_perceptual_fn(vgg_weights_path: str | os.PathLike | None) -> FeatureFn | None:
  """VGG16 pool1-3 features of [-1, 1] images, from a local weights `.npz`; None (with a warning) without one.

  The returned fn maps f32[N, H, W, 3] in [-1, 1] to [pool1, pool2, pool3]; the weights are closed over as
  constants. A path that exists but is not a VGG16 npz raises ValueError (see `load_vgg16_params`).
  """
  if vgg_weights_path is None or not os.path.isfile(vgg_weights_path):
    where = "no VGG16 weights path given" if vgg_weights_path is None else f"{vgg_weights_path!r} not found"
    logging.warning(
      "%s: the perceptual and style loss terms are switched off (make the weights with scripts/convert_vgg16.py).",
      where,
    )
    return None
  params = load_vgg16_params(vgg_weights_path)
  model = VGG16Features()

  def features(x: jax.Array) -> list[jax.Array]:
    return model.apply({"params": params}, to_imagenet_input(x))

  return features


def pconv_loss(
  output, target, valid, vgg_fn: FeatureFn | None = None, weights: Sequence[float] = PCONV_WEIGHTS
) -> tuple[jax.Array, dict[str, jax.Array]]:
  """Partial-conv total loss (eq. 7): w_v L_valid + w_h L_hole + w_p L_perc + w_s L_style + w_tv L_tv.

  Args:
    output: f32[B, H, W, 3] raw network output in [-1, 1].
    target: f32[B, H, W, 3] ground truth in [-1, 1].
    valid: f32[B, H, W, 1] (or 3), 1 = known pixel.
    vgg_fn: [-1, 1] images -> list of feature maps (`make_perceptual_fn`); None leaves out the perceptual
      and style terms (logged once).
    weights: (valid, hole, perceptual, style, tv); the paper's are (1, 6, 0.05, 120, 0.1).

  Returns:
    (total, terms): terms holds the unweighted values under valid_l1, hole_l1, tv and, with vgg_fn,
    perceptual and style; total is the weighted sum of exactly the terms present.
  """
  output, target = _check_images(output, target)
  valid = _check_valid(valid, output)
  if len(weights) != 5:
    raise ValueError(f"weights must be (valid, hole, perceptual, style, tv); got {tuple(weights)}")
  w_valid, w_hole, w_perc, w_style, w_tv = weights
  composite = valid * target + (1.0 - valid) * output
  terms = {
    "valid_l1": valid_l1(output, target, valid),
    "hole_l1": hole_l1(output, target, valid),
    "tv": tv_loss(composite, valid),
  }
  total = w_valid * terms["valid_l1"] + w_hole * terms["hole_l1"] + w_tv * terms["tv"]
  if vgg_fn is None:
    logging.log_first_n(
      logging.WARNING, "pconv_loss without a VGG feature fn: perceptual and style terms are left out of the total.", 1
    )
    return total, terms
  # One VGG pass over [output; composite; target], split back into three.
  b = output.shape[0]
  feats = vgg_fn(jnp.concatenate([output, composite, jax.lax.stop_gradient(target)]))
  out_f, comp_f, gt_f = ([f[i * b : (i + 1) * b] for f in feats] for i in range(3))
  terms["perceptual"] = perceptual_loss(out_f, comp_f, gt_f)
  terms["style"] = style_loss(out_f, comp_f, gt_f)
  total = total + w_perc * terms["perceptual"] + w_style * terms["style"]
  return total, terms


# ------------------------------------------------------------------------------ LaMa (Suvorov et al. 2022)
# advimman/lama losses/feature_matching.py and losses/adversarial.py (NonSaturatingWithR1). The reference works on
# [0, 1] images; its weights (L1 known 10, adversarial 10, R1 0.001, feature matching 100) assume that range.


def masked_l1(output, target, valid, weight_known: float = 10.0, weight_missing: float = 0.0) -> jax.Array:
  """mean over all elements of (w_known valid + w_missing (1 - valid)) |output - target| (LaMa's `masked_l1_loss`).

  output, target: f32[B, H, W, C]; valid: f32[B, H, W, 1] (1 = known). LaMa-Fourier: known 10, missing 0.
  """
  output, target = _check_images(output, target)
  valid = _check_valid(valid, output)
  weights = weight_known * valid + weight_missing * (1.0 - valid)
  return jnp.mean(weights * jnp.abs(output - target))


def feature_matching_loss(fake_features: Sequence[jax.Array], real_features: Sequence[jax.Array]) -> jax.Array:
  """Discriminator feature matching: the mean over layers of each layer's mean squared difference."""
  _check_features(fake_features, real_features)
  return sum(jnp.mean(jnp.square(f - r)) for f, r in zip(fake_features, real_features)) / len(fake_features)


def resize_nearest(mask: jax.Array, height: int, width: int) -> jax.Array:
  """PyTorch `F.interpolate(mode='nearest')`: out[i, j] = in[floor(i H / h), floor(j W / w)]; f32[B, H, W, 1]."""
  rows = (jnp.arange(height) * mask.shape[1]) // height
  cols = (jnp.arange(width) * mask.shape[2]) // width
  return mask[:, rows][:, :, cols]


def nonsaturating_d_loss(real_logits: jax.Array, fake_logits: jax.Array, hole: jax.Array | None = None) -> jax.Array:
  """D's non-saturating loss: mean softplus(-D(real)) + mean of the fake term, logits f32[B, h, w].

  Without `hole`: softplus(D(fake)). With `hole` f32[B, h, w] (1 = hole, LaMa's `mask_as_fake_target`): only the
  hole's patches are fake, hole softplus(D(fake)) + (1 - hole) softplus(-D(fake)). (R1 is `r1_penalty`.)
  """
  if real_logits.shape != fake_logits.shape:
    raise ValueError(f"real and fake logits must be one shape; got {real_logits.shape} and {fake_logits.shape}")
  fake = jax.nn.softplus(fake_logits)
  if hole is not None:
    fake = hole * fake + (1.0 - hole) * jax.nn.softplus(-fake_logits)
  return jnp.mean(jax.nn.softplus(-real_logits)) + jnp.mean(fake)


def nonsaturating_g_loss(fake_logits: jax.Array) -> jax.Array:
  """G's non-saturating loss mean softplus(-D(G(x))), every patch (LaMa's use_unmasked_for_gen)."""
  return jnp.mean(jax.nn.softplus(-fake_logits))


def r1_penalty(grads: jax.Array) -> jax.Array:
  """R1 (Mescheder et al. 2018) from grads = d sum D(real) / d real, f32[B, ...]: mean_b ||grads_b||^2."""
  return jnp.mean(jnp.sum(jnp.square(grads.reshape(grads.shape[0], -1)), axis=-1))


def feature_mse_sum(out_features: Sequence[jax.Array], gt_features: Sequence[jax.Array]) -> jax.Array:
  """sum over layers of the mean squared feature difference: LaMa's ResNet-PL form, on any feature extractor."""
  _check_features(out_features, gt_features)
  return sum(jnp.mean(jnp.square(o - g)) for o, g in zip(out_features, gt_features))


def make_resnet_pl_fn(weights_path: str | os.PathLike | None) -> FeatureFn | None:
  """LaMa's ResNet-PL features: the ADE20k ResNet-50-dilated's 4 stage outputs of [-1, 1] images; None without
  a weights file (with a warning when a given path does not exist).

  The returned fn maps f32[N, H, W, 3] in [-1, 1] to [f32[N, H/4, W/4, 256], ... f32[N, H/8, W/8, 2048]] on
  ImageNet-normalised [0, 1] input, as `ResNetPL.forward`; eval-mode BN, weights closed over as constants, so
  `perceptual_weight * feature_mse_sum(f(pred), f(target))` is the reference's loss. A path that exists but is
  not such an npz raises ValueError (see `jaxinpaint.models.resnet_pl.load_resnet_pl`).
  """
  if weights_path is None:
    return None
  if not os.path.isfile(weights_path):
    logging.warning(
      "ResNet-PL weights %r not found: no ResNet-PL term (make them with scripts/convert_resnet_pl.py).", weights_path
    )
    return None
  model, variables = load_resnet_pl(weights_path)

  def features(x: jax.Array) -> list[jax.Array]:
    return model.apply(variables, to_imagenet_input(x))

  return features
