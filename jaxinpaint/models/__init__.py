"""Inpainting models: the U-Net here; GAN generators and critics join the registry as they land."""

from jaxinpaint.models.unet import InpaintingUNet, composite, upsample2

MODELS = {"unet": InpaintingUNet}


def make_model(name: str, **kwargs):
  """Builds a model from its registry name and constructor kwargs (`config.model` minus `name`)."""
  if name not in MODELS:
    raise ValueError(f"unknown model {name!r}; known models: {sorted(MODELS)}")
  return MODELS[name](**kwargs)


__all__ = ["InpaintingUNet", "MODELS", "composite", "make_model", "upsample2"]
