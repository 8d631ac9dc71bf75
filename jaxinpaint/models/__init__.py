"""Inpainting models: the U-Net, the DeepFill v1/v2 generators and their critics, the DCGAN, the learned diffusion
fill; `MODELS` by config name."""

from jaxinpaint.layers.diffusion import DiffusionFill
from jaxinpaint.models.dcgan import DCGANDiscriminator, DCGANGenerator
from jaxinpaint.models.deepfill import DeepFillV1Generator, DeepFillV2Generator
from jaxinpaint.models.discriminators import GlobalCritic, LocalCritic, SNPatchGAN
from jaxinpaint.models.lama import LamaGenerator, NLayerDiscriminator
from jaxinpaint.models.unet import InpaintingUNet, composite, upsample2

MODELS = {"unet": InpaintingUNet}
MODELS.update({"dcgan_generator": DCGANGenerator, "dcgan_discriminator": DCGANDiscriminator})
MODELS.update({"deepfill_v2": DeepFillV2Generator, "deepfill_v1": DeepFillV1Generator})
MODELS.update({"lama": LamaGenerator, "diffusion": DiffusionFill})


def make_model(name: str, **kwargs):
  """Builds a model from its registry name and constructor kwargs (`config.model` minus `name`)."""
  if name not in MODELS:
    raise ValueError(f"unknown model {name!r}; known models: {sorted(MODELS)}")
  return MODELS[name](**kwargs)


__all__ = [
  "DCGANDiscriminator",
  "DCGANGenerator",
  "DeepFillV1Generator",
  "DeepFillV2Generator",
  "DiffusionFill",
  "GlobalCritic",
  "InpaintingUNet",
  "LamaGenerator",
  "LocalCritic",
  "NLayerDiscriminator",
  "SNPatchGAN",
  "MODELS",
  "composite",
  "make_model",
  "upsample2",
]
