"""Export a trained run for use without this codebase: a `jax.export` StableHLO artifact and a TF SavedModel.

  python -m jaxinpaint.export --workdir=RUN --out=DIR [--platforms=cpu,cuda] [--size=HxW]

Both hold one function, with the weights inside:

  fill(image: uint8[B, H, W, 3], hole: uint8[B, H, W]) -> uint8[B, H, W, 3]

`hole` is nonzero for a pixel to fill (0/1 or 0/255 both work). The composite is done inside: every known pixel is
returned untouched, and pixels under the hole never reach the model (zeroed first). B is symbolic; H and W are
symbolic multiples of the model's stride (2**depth for a U-Net, 8 for DeepFill) when its shape logic allows it,
else fixed at the training size or at --size (the manifest says which). Files written to DIR:

  fill.stablehlo   `jax.export.serialize` bytes: `jax.export.deserialize(data).call(image, hole)` in any JAX
  saved_model/     `tf.saved_model.load(path).signatures['serving_default'](image=..., hole=...)['filled']`
  manifest.json    family, config name, step, input/output shapes and dtypes, stride, training size, platforms

DIR is written whole or not at all; an existing DIR is replaced only when it holds an earlier export.
"""

from __future__ import annotations

import contextlib
import functools
import importlib
import json
import os
import shutil
from typing import Any, Callable
from unittest import mock

import jax
import jax.numpy as jnp
import numpy as np
from absl import logging

from jaxinpaint import inpaint

# the module (jaxinpaint.layers re-exports a function of the same name)
attention_lib = importlib.import_module("jaxinpaint.layers.contextual_attention")

STABLEHLO_FILE = "fill.stablehlo"
SAVED_MODEL_DIR = "saved_model"
MANIFEST_FILE = "manifest.json"
PLATFORMS = ("cpu", "cuda", "rocm", "tpu")
SIGNATURE = "serving_default"
OUTPUT_KEY = "filled"


def fill_function(model: inpaint.Inpainter) -> tuple[Callable[..., jax.Array], Any]:
  """The exported function with its weights as an argument: (fill(weights, image, hole), weights).

  image uint8[B, H, W, 3], hole uint8[B, H, W] (nonzero = hole) -> uint8[B, H, W, 3]; the maths of
  `inpaint.inpaint` at a size the model takes whole (holes zeroed, model output clipped, rounded, composited).
  """
  task = model.run.task
  weights = {"params": model.run.params, "model_state": model.run.model_state}

  def fill(weights, image, hole):
    is_hole = (hole != 0)[..., None]
    valid = (~is_hole).astype(jnp.float32)
    x = (image.astype(jnp.float32) / 127.5 - 1.0) * valid  # no pixel under the hole reaches the model
    output = task.predict(weights["params"], weights["model_state"], {"image": x, "valid": valid})["output"]
    filled = jnp.round((jnp.clip(output, -1.0, 1.0) + 1.0) * 127.5).astype(jnp.uint8)  # = visualize.to_uint8
    return jnp.where(is_hole, filled, image)

  return fill, weights


Shape = int | tuple[int, int]  # a stride s (H = s*h, W = s*w, h and w symbolic) or a fixed (H, W)


def input_specs(shape: Shape) -> tuple[str, str]:
  """Polymorphic shape strings for (image, hole): batch symbolic; H, W symbolic multiples of a stride or fixed."""
  if isinstance(shape, tuple):
    return f"b, {shape[0]}, {shape[1]}, 3", f"b, {shape[0]}, {shape[1]}"
  return f"b, {shape}*h, {shape}*w, 3", f"b, {shape}*h, {shape}*w"


@contextlib.contextmanager
def without_host_callbacks():
  """Traces contextual attention without its 'no patch to copy from' warning: a host callback, which neither
  `jax.export` nor TF can serialise (the output, zeros for such an example, is the same)."""
  quiet = functools.partial(attention_lib.contextual_attention, warn=False)
  with mock.patch.object(attention_lib, "contextual_attention", quiet):
    yield


def _export(model: inpaint.Inpainter, shape: Shape, platforms: tuple[str, ...]) -> jax.export.Exported:
  with without_host_callbacks():
    return _export_traced(model, shape, platforms)


def _export_traced(model, shape, platforms) -> jax.export.Exported:
  fill, weights = fill_function(model)
  image_spec, hole_spec = input_specs(shape)
  scope = jax.export.SymbolicScope()
  image = jax.ShapeDtypeStruct(jax.export.symbolic_shape(image_spec, scope=scope), jnp.uint8)
  hole = jax.ShapeDtypeStruct(jax.export.symbolic_shape(hole_spec, scope=scope), jnp.uint8)
  bound = jax.jit(lambda image, hole: fill(weights, image, hole))  # the weights become constants of the module
  return jax.export.export(bound, platforms=platforms)(image, hole)


def find_shape(model: inpaint.Inpainter, platforms=("cpu",)) -> tuple[Shape, jax.export.Exported]:
  """(shape, the export at it): the smallest power of two s <= the training size S for which the model traces with
  H, W symbolic multiples of s (and takes an s x s input), else the fixed (S, S) when its shape logic needs
  concrete sizes (e.g. the push-pull fill's pyramid, as deep as H and W are divisible by 2)."""
  s = 1
  while s <= model.size:
    if model.size % s == 0 and model.accepts(s, s):
      try:
        return s, _export(model, s, tuple(platforms))
      except Exception as error:  # a shape the model cannot reason about symbolically: try a coarser stride
        logging.info("stride %d does not export symbolically: %s", s, str(error).splitlines()[0][:200])
    s *= 2
  return (model.size, model.size), _export(model, (model.size, model.size), tuple(platforms))


def export_saved_model(model: inpaint.Inpainter, shape: Shape, path: str, platforms=("cpu",)) -> None:
  """A TF SavedModel at `path` with a 'serving_default' signature (image, hole) -> {'filled'}, the weights held as
  tf.Variables (the graph stays small; jax2tf native serialization wraps the StableHLO in an XlaCallModule op)."""
  import tensorflow as tf
  from jax.experimental import jax2tf

  fill, weights = fill_function(model)
  image_spec, hole_spec = input_specs(shape)
  converted = jax2tf.convert(
    fill,
    polymorphic_shapes=[None, image_spec, hole_spec],
    with_gradient=False,
    native_serialization_platforms=tuple(platforms),
  )
  module = tf.Module()
  module.weights = tf.nest.map_structure(lambda w: tf.Variable(np.asarray(w), trainable=False), weights)
  height, width = shape if isinstance(shape, tuple) else (None, None)

  @tf.function(
    autograph=False,
    input_signature=[
      tf.TensorSpec([None, height, width, 3], tf.uint8, name="image"),
      tf.TensorSpec([None, height, width], tf.uint8, name="hole"),
    ],
  )
  def serve(image, hole):
    return {OUTPUT_KEY: converted(module.weights, image, hole)}

  module.serve = serve
  with without_host_callbacks():  # saving traces `serve`
    tf.saved_model.save(module, path, signatures={SIGNATURE: serve})


CONFIG_NAMES = {
  "unet/weighted": "wconv",
  "unet/partial": "pconv",
  "unet/plain": "plain",
  "deepfill/deepfill_v2": "gated",
  "deepfill/deepfill_v1": "deepfill_v1",
  "lama/lama": "lama",
  "inpainting/diffusion": "diffusion",
}


def family(config) -> str:
  """'unet/<conv>' for the U-Nets, '<task>/<model name>' for the others ('deepfill/deepfill_v2', ...)."""
  if config.task == "inpainting" and config.model.name == "unet":
    return f"unet/{config.model.conv}"
  return f"{config.task}/{config.model.name}"


def manifest(model: inpaint.Inpainter, shape: Shape, platforms) -> dict[str, Any]:
  config = model.run.config
  image_spec, hole_spec = input_specs(shape)
  stride = None if isinstance(shape, tuple) else shape
  return {
    "family": family(config),
    # the run saves its config, not the file's name: the file whose model this is, and the model's own keys
    "config": f"configs/{CONFIG_NAMES.get(family(config), 'unknown')}.py",
    "model": config.model.to_dict(),
    "workdir": os.path.abspath(model.workdir),
    "step": int(model.run.step),
    "training_size": model.size,
    "stride": stride,
    "symbolic_height_width": stride is not None,
    "shape_note": (
      f"H and W: any multiples of {stride}"
      if stride is not None
      else f"fixed H x W = {shape[0]} x {shape[1]}: other sizes need another export (--size)"
    ),
    "inputs": {
      "image": {"shape": image_spec, "dtype": "uint8", "meaning": "RGB, 0..255"},
      "hole": {"shape": hole_spec, "dtype": "uint8", "meaning": "nonzero = fill this pixel"},
    },
    "output": {
      "shape": image_spec,
      "dtype": "uint8",
      "meaning": "the model's fill in the hole, the input's pixels elsewhere",
    },
    "platforms": list(platforms),
    "files": {"stablehlo": STABLEHLO_FILE, "saved_model": SAVED_MODEL_DIR},
    "saved_model": {"signature": SIGNATURE, "inputs": ["image", "hole"], "output": OUTPUT_KEY},
    "jax_version": jax.__version__,
  }


def _check_out(out: str) -> None:
  """ValueError unless `out` is free, an empty folder, or an earlier export (which will be replaced)."""
  if os.path.isfile(out):
    raise ValueError(f"--out {out!r} is a file; give a folder to write the export into")
  if os.path.isdir(out) and os.listdir(out) and not os.path.isfile(os.path.join(out, MANIFEST_FILE)):
    raise ValueError(f"--out {out!r} is a folder that holds other files, not an earlier export; choose another")


def export_run(
  workdir: str | inpaint.Inpainter,
  out: str,
  platforms=("cpu",),
  saved_model: bool = True,
  size: tuple[int, int] | None = None,
) -> dict[str, Any]:
  """Writes the export of a run (or a loaded `Inpainter`) to `out`; returns the manifest.

  `size` (H, W) exports that fixed size instead of symbolic ones: for a model whose shape logic is not symbolic,
  at a size other than its training size.
  """
  platforms = tuple(platforms)
  if not platforms or any(p not in PLATFORMS for p in platforms):
    raise ValueError(f"platforms must name some of {', '.join(PLATFORMS)}; got {','.join(platforms)!r}")
  _check_out(out)
  model = workdir if isinstance(workdir, inpaint.Inpainter) else inpaint.load(workdir)
  if model.run.config.task == "dcgan":
    raise ValueError(
      "a DCGAN run completes an image by optimising a latent per image: there is no feed-forward "
      "fill to export (export a U-Net or DeepFill run)"
    )
  if size is not None:
    size = (int(size[0]), int(size[1]))
    if not model.accepts(*size):
      raise ValueError(
        f"the model cannot take {size[0]} x {size[1]} (height x width) whole; give a size it "
        f"takes, e.g. a multiple of its training size {model.size}"
      )
    shape, exported = size, _export(model, size, platforms)
  else:
    shape, exported = find_shape(model, platforms)
    if isinstance(shape, tuple):
      logging.warning(
        "the model does not trace with symbolic H, W: exporting %d x %d only (--size=HxW for another)", *shape
      )
  info = manifest(model, shape, platforms)
  parent = os.path.dirname(os.path.abspath(out))
  os.makedirs(parent, exist_ok=True)
  partial = os.path.join(parent, f".{os.path.basename(os.path.abspath(out))}.{os.getpid()}.partial")
  shutil.rmtree(partial, ignore_errors=True)
  try:
    os.makedirs(partial)
    with open(os.path.join(partial, STABLEHLO_FILE), "wb") as f:
      f.write(exported.serialize())
    if saved_model:
      export_saved_model(model, shape, os.path.join(partial, SAVED_MODEL_DIR), platforms)
    else:
      info["files"].pop("saved_model")
    with open(os.path.join(partial, MANIFEST_FILE), "w") as f:
      json.dump(info, f, indent=2)
    old = partial + ".old"
    if os.path.exists(out):
      os.replace(out, old)
    os.replace(partial, out)
    shutil.rmtree(old, ignore_errors=True)
  except BaseException:
    with contextlib.suppress(OSError):
      shutil.rmtree(partial)
    raise
  return info


def parse_size(text: str | None) -> tuple[int, int] | None:
  """'512x768' -> (512, 768); ValueError naming the flag for anything else."""
  if text is None:
    return None
  parts = text.lower().split("x")
  if len(parts) != 2 or not all(p.strip().isdigit() and int(p) > 0 for p in parts):
    raise ValueError(f"--size must be HEIGHTxWIDTH in pixels, e.g. 512x768; got {text!r}")
  return int(parts[0]), int(parts[1])


def main(argv=None) -> None:
  from absl import flags

  from jaxinpaint import cli

  flags.DEFINE_string("workdir", None, "Trained run directory (config.json + checkpoints).")
  flags.DEFINE_string("out", None, "Folder to write fill.stablehlo, saved_model/ and manifest.json into.")
  flags.DEFINE_list("platforms", ["cpu"], "Platforms to lower for: cpu, cuda, rocm, tpu (one artifact serves all).")
  flags.DEFINE_bool("saved_model", True, "Also write the TensorFlow SavedModel.")
  flags.DEFINE_string(
    "size",
    None,
    "HxW, e.g. 512x768: export this fixed size, not symbolic ones (for models whose "
    "shape logic is not symbolic, such as the demo U-Net's push-pull fill).",
  )
  flags.mark_flags_as_required(["workdir", "out"])
  FLAGS = flags.FLAGS

  def run() -> None:
    info = export_run(FLAGS.workdir, FLAGS.out, FLAGS.platforms, FLAGS.saved_model, parse_size(FLAGS.size))
    print(
      f"exported {info['family']} (step {info['step']}) to {FLAGS.out}: {info['shape_note']}; "
      f"platforms {','.join(info['platforms'])}"
    )

  cli.run_main(run, argv, errors=(ValueError, FileNotFoundError, OSError))


if __name__ == "__main__":
  main()
