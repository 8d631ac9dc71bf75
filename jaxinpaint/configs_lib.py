"""Shared config pieces: the full default config every method file starts from, the `demo`/`tiny` variants, and
validation that turns a bad value into one clear line before any work starts.

Each `configs/<method>.py` builds on `base_config()`, sets what its paper says, and ends with
`return apply_variant(config, arg)`. Configs are locked by `config_flags`, so unknown keys and wrong types fail at
parse time; `validate_config` catches unknown names and impossible sizes.
"""

from __future__ import annotations

import importlib.util
import math
import os
import types

import ml_collections
from ml_collections import config_dict

VARIANTS = ("demo", "tiny")
DATA_SOURCES = ("demo", "folder", "tfds", "lfw")


def load_config_module(path: str) -> types.ModuleType:
  """A config file (e.g. configs/wconv.py) as a module; config files are loaded by path, not imported."""
  if not os.path.isfile(path):
    raise ValueError(f"config file {path!r} does not exist")
  name = os.path.splitext(os.path.basename(path))[0]
  spec = importlib.util.spec_from_file_location(f"jaxinpaint_config_{name}", path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


def load_config_file(path: str, variant: str | None = None) -> ml_collections.ConfigDict:
  """`get_config(variant)` of a config file such as configs/wconv.py (a ':variant' suffix also works)."""
  if ":" in os.path.basename(path):
    path, variant = path.rsplit(":", 1)
  return load_config_module(path).get_config(variant or None)


def base_config() -> ml_collections.ConfigDict:
  """Seed 004's setup (WConv U-Net, partial-conv loss, CelebA 256 px, free-form masks); methods override."""
  c = ml_collections.ConfigDict()
  c.seed = 0
  c.task = "inpainting"
  c.batch_size = 25  # global, over all devices and processes
  c.num_train_steps = 300_000
  # Device mesh (jaxinpaint/sharding.py): "data=-1" splits the batch over every device; "data=-1,fsdp=2" also
  # shards each state leaf of >= fsdp_min_size elements over pairs of devices (FSDP) to save memory.
  c.mesh = "data=-1"
  c.fsdp_min_size = 1 << 16

  c.model = ml_collections.ConfigDict(
    dict(
      name="unet",
      conv="weighted",
      depth=7,
      features=(64, 128, 256, 512),
      kernel_sizes=(7, 5, 5, 3),
      norm="",  # '' = the conv's default: weighted BatchNorm for 'weighted', BatchNorm otherwise
      norm_momentum=0.999,
      norm_epsilon=1e-8,
      freeze_encoder_norm=False,
      out_channels=3,
      # stride-1 3x3 convs at the input's resolution before the strided encoder, and one more at the end of the
      # decoder (models/unet.py); 0 = the paper's net, whose features all live at half resolution or below
      full_res=0,
      # CPU fast paths, 'auto' = measured best on CPU, XLA's plain form elsewhere (layers/masked_conv.FAST_PATHS):
      # decoder 'subpixel' | 'concat' (models/unet.py), strided_grad 'subpixel' | 'xla', pad_barrier 'on' | 'off'
      decoder="auto",
      strided_grad="auto",
      pad_barrier="auto",
    )
  )

  c.loss = ml_collections.ConfigDict(
    dict(
      name="pconv",  # 'pconv' (Liu et al. total loss), 'mse' (seed 002), 'l1'
      weights=ml_collections.ConfigDict(dict(valid=1.0, hole=6.0, perceptual=0.05, style=120.0, tv=0.1)),
      vgg_weights="",
    )
  )  # local .npz from scripts/convert_vgg16.py; '' = perceptual/style off (logged)

  c.optim = ml_collections.ConfigDict(
    dict(
      name="adam",
      learning_rate=5e-4,
      end_learning_rate=1e-5,
      schedule="exponential",
      warmup_steps=0,
      b1=0.9,
      b2=0.999,
      eps=1e-8,
      grad_clip_norm=0.0,
      weight_decay=0.0,
      finetune_step=0,
      finetune_learning_rate=5e-5,
    )
  )

  c.data = ml_collections.ConfigDict(
    dict(
      source="tfds",
      name="celeb_a",
      path="",
      train_split="train",
      eval_split="validation",
      image_size=256,
      resize=config_dict.placeholder(tuple),
      shorter_side=0,
      random_flip=True,
      num_workers=2,
      eval_examples=200,
      # source='demo' only: a folder whose images join the demo's training photos (the held-out photos stay)
      extra_train_path="",
      # the fraction of training crops replaced by procedural dead-leaves images (data/synthetic.py); 0 = none
      dead_leaves=0.0,
    )
  )
  c.data.resize = (313, 256)  # seed 004: CelebA scaled to 256x313 (w x h), then random 256x256 crops

  c.masks = ml_collections.ConfigDict(dict(kind="free_form", eval_kind="free_form", folder=""))

  # keep_checkpoints: how many of the newest checkpoints stay on disk; 0 = keep all. A loss above
  # loss_spike_factor x the running median of the last 200 step losses is warned about (0 = never), and ends the
  # run when stop_on_loss_spike is set.
  c.train = ml_collections.ConfigDict(
    dict(
      log_every=100,
      eval_every=5000,
      checkpoint_every=5000,
      keep_checkpoints=3,
      async_checkpointing=True,
      ema_decay=0.0,
      activation_dtype="float32",
      loss_spike_factor=100.0,
      stop_on_loss_spike=False,
      remat="none",
    )
  )  # jax.checkpoint over the generator: 'none', 'blocks' (keep block outputs), 'full' (tasks/base.py)

  # `python -m jaxinpaint.evaluate` / `ablate` (jaxinpaint/eval/): mask sets, classical peers, perceptual
  # weights. masks: comma list of mask kinds, 'buckets' = every hole-ratio bucket; 0 = data.eval_examples /
  # batch_size; '' weights = that metric left out (noted in the table).
  c.eval = ml_collections.ConfigDict(
    dict(
      masks="centre,free_form,buckets",
      examples=0,
      batch_size=0,
      baselines="telea,navier_stokes,biharmonic,mean_fill",
      inception_weights="",
      lpips_weights="",
    )
  )
  return c


def apply_variant(c: ml_collections.ConfigDict, arg: str | None) -> ml_collections.ConfigDict:
  """`demo`: offline photos, 64 px, a few minutes on 2 CPU cores. `tiny`: 32 px, seconds, for tests."""
  if arg in (None, ""):
    return c
  if arg not in VARIANTS:
    raise ValueError(f"unknown config variant {arg!r}; variants: {', '.join(VARIANTS)}")
  c.data.source, c.data.name, c.data.resize = "demo", "demo", None
  c.data.shorter_side = 2 * (64 if arg == "demo" else 32)  # crops show a quarter of a photo, not a detail
  c.data.train_split, c.data.eval_split = "train", "eval"
  if arg == "demo":
    c.batch_size = 8
    c.num_train_steps = 1200
    c.model.depth = 6
    c.model.full_res = 2  # at 64 px half resolution is 32 px: two full-resolution layers gave +0.8 dB (README)
    c.model.norm_momentum = 0.9  # running statistics must settle within a short run
    c.model.features = (32, 64, 128, 128)
    c.data.image_size = 64
    c.data.eval_examples = 32
    c.data.num_workers = 2
    c.optim.learning_rate, c.optim.end_learning_rate = 1e-3, 1e-4
    c.train.update(log_every=50, eval_every=300, checkpoint_every=300)
  else:
    c.batch_size = 8
    c.num_train_steps = 20
    c.model.depth = 5
    c.model.features = (8, 16, 16, 16)
    c.model.norm_momentum = 0.9
    c.data.image_size = 32
    c.data.eval_examples = 8
    c.data.num_workers = 0
    c.optim.learning_rate, c.optim.end_learning_rate = 2e-3, 1e-3
    c.train.update(log_every=5, eval_every=10, checkpoint_every=10, async_checkpointing=False)
  if c.optim.schedule == "finetune":
    c.optim.finetune_step = c.num_train_steps * 3 // 4
  return c


def check_image_size(size: int, step: int, divisor: str, hint: str = "") -> None:
  """ValueError 'config.data.image_size=S is not divisible by <divisor>; use a multiple of <step><hint>' unless
  `step` divides `size` (`divisor` names the step and why a model needs it)."""
  if size % step:
    raise ValueError(f"config.data.image_size={size} is not divisible by {divisor}; use a multiple of {step}{hint}")


def validate_config(c: ml_collections.ConfigDict) -> None:
  """One clear ValueError line for values the config type checks cannot catch."""
  from jaxinpaint import layers, sharding  # late imports: configs files import this module without jax set-up
  from jaxinpaint.data import pipeline

  if c.batch_size <= 0:
    raise ValueError(f"config.batch_size must be positive; got {c.batch_size}")
  if c.num_train_steps <= 0:
    raise ValueError(f"config.num_train_steps must be positive; got {c.num_train_steps}")
  sharding.parse_mesh(c.get("mesh", sharding.DEFAULT_MESH))
  if c.get("fsdp_min_size", 0) < 0:
    raise ValueError(f"config.fsdp_min_size must be >= 0; got {c.fsdp_min_size}")
  for key in ("log_every", "eval_every", "checkpoint_every"):
    if c.train[key] <= 0:
      raise ValueError(f"config.train.{key} must be positive; got {c.train[key]}")
  if c.train.keep_checkpoints < 0:
    raise ValueError(f"config.train.keep_checkpoints must be >= 0 (0 = keep all); got {c.train.keep_checkpoints}")
  spike = c.train.get("loss_spike_factor", 0.0)
  if not (math.isfinite(spike) and (spike == 0 or spike > 1)):
    raise ValueError(f"config.train.loss_spike_factor must be 0 (off) or a finite number > 1; got {spike}")
  for name in ("optim", "d_optim"):
    if name in c:
      validate_optim(c[name], f"config.{name}")
  if c.data.source not in DATA_SOURCES:
    raise ValueError(f"config.data.source must be one of {DATA_SOURCES}; got {c.data.source!r}")
  if c.data.get("extra_train_path") and c.data.source != "demo":
    raise ValueError(
      f"config.data.extra_train_path adds training photos to the demo source only; data.source is {c.data.source!r}"
    )
  pipeline._dead_leaves_option(c.data)
  if c.data.source == "folder" and not c.data.path:
    raise ValueError("config.data.source='folder' needs config.data.path (a folder of images)")
  if c.data.image_size <= 0:
    raise ValueError(f"config.data.image_size must be positive; got {c.data.image_size}")
  for choice, forms in layers.masked_conv.FAST_PATHS.items():  # backend-aware fast paths: 'auto' or a named form
    if c.model.get(choice, "auto") not in ("auto", *forms):
      raise ValueError(f"config.model.{choice} must be 'auto' or one of {forms}; got {c.model[choice]!r}")
  from jaxinpaint.tasks.base import REMAT_POLICIES

  if c.train.get("remat", "none") not in REMAT_POLICIES:
    raise ValueError(f"config.train.remat must be one of {tuple(REMAT_POLICIES)}; got {c.train.remat!r}")
  if c.loss.get("name") == "hole_log_mse_ssim":
    weight = c.loss.get("ssim_weight", None)
    if not (isinstance(weight, (int, float)) and math.isfinite(weight) and weight >= 0):
      raise ValueError(f"config.loss.ssim_weight must be a finite number >= 0; got {weight!r}")
  if c.model.name == "diffusion":
    from jaxinpaint.layers.diffusion import check_options

    check_options("config.model.", **{k: v for k, v in c.model.items() if k != "name"})
  if c.model.name == "unet":
    layers.get_conv(c.model.conv)
    from jaxinpaint.models.unet import DECODERS

    if c.model.get("decoder", DECODERS[0]) not in DECODERS:
      raise ValueError(f"config.model.decoder must be one of {DECODERS}; got {c.model.decoder!r}")
    step = 2**c.model.depth
    check_image_size(c.data.image_size, step, f"2**model.depth={step}", " or change model.depth")
  for key in ("kind", "eval_kind"):
    pipeline.configured_mask_fn(c.masks, c.masks[key])


def validate_optim(optim: ml_collections.ConfigDict, name: str = "config.optim") -> None:
  """Adam's values: a negative rate trains uphill, b >= 1 never forgets, eps <= 0 divides by zero; one line each."""

  def number(key, ok, what):
    value = optim.get(key, None)
    if value is None:
      return
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or not ok(value):
      raise ValueError(f"{name}.{key} must be {what}; got {value!r}")

  number("learning_rate", lambda v: v > 0, "a finite number > 0")
  for key in ("end_learning_rate", "finetune_learning_rate", "discriminator_learning_rate"):
    number(key, lambda v: v >= 0, "a finite number >= 0")
  for key in ("b1", "b2"):
    number(key, lambda v: 0 <= v < 1, "in [0, 1)")
  number("eps", lambda v: v > 0, "a finite number > 0")
  for key in ("grad_clip_norm", "weight_decay", "warmup_steps", "finetune_step"):
    number(key, lambda v: v >= 0, "a finite number >= 0 (0 = off)")


# Keys that change how a run is evaluated, laid out or computed, not what it learns: a finished run serves an
# ablation (`ablate`) of a config that differs from it only in these.
LAYOUT_KEYS = (
  "eval",
  "mesh",
  "fsdp_min_size",
  "model.decoder",
  "model.strided_grad",
  "model.pad_barrier",
  "train.remat",  # same maths, other compute
)

# Keys a restarted run may change without changing what its checkpoint means: LAYOUT_KEYS, run length, logging and
# checkpoint cadence, data loading workers, evaluation settings.
RESUMABLE_KEYS = LAYOUT_KEYS + (
  "num_train_steps",
  "data.num_workers",
  "data.eval_examples",
  "data.eval_split",  # which held-out set scores the run, not what it learned
  "train.log_every",
  "train.eval_every",
  "train.checkpoint_every",
  "train.keep_checkpoints",
  "train.async_checkpointing",
  "train.loss_spike_factor",
  "train.stop_on_loss_spike",
  "completion",  # how a trained DCGAN completes images (latent search), not what it learned
)


# Keys added after runs were saved, with the value that reproduces what those runs did: a saved config without
# the key equals a wanted one holding that value (so older runs still resume, evaluate and join ablations).
ADDED_KEYS = {"model.fill": "push_pull", "model.full_res": 0, "data.extra_train_path": "", "data.dead_leaves": 0.0}


def flatten(tree: dict, prefix: str = "") -> dict:
  """{'a': {'b': 1}} -> {'a.b': 1}: a nested config dict as dotted keys."""
  out = {}
  for key, value in tree.items():
    if isinstance(value, dict):
      out.update(flatten(value, f"{prefix}{key}."))
    else:
      out[f"{prefix}{key}"] = value
  return out


def run_differences(
  saved: ml_collections.ConfigDict, wanted: ml_collections.ConfigDict, ignore: tuple[str, ...] = RESUMABLE_KEYS
) -> list[str]:
  """Dotted keys whose values differ between a run's saved config and `wanted`, except `ignore` (and below)."""
  import json

  a = flatten(json.loads(saved.to_json_best_effort()))
  b = flatten(json.loads(wanted.to_json_best_effort()))
  for key, value in ADDED_KEYS.items():
    if key in b and key not in a:
      a[key] = value
  skipped = lambda key: any(key == k or key.startswith(k + ".") for k in ignore)
  return sorted(k for k in set(a) | set(b) if not skipped(k) and a.get(k, None) != b.get(k, None))
