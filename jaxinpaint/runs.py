"""A run directory: the one way to save and open one (its config, its abstract state, its latest checkpoint).

  workdir/config.json     the config it was trained with (`save_config` / `load_config`)
  workdir/checkpoints/N/  orbax steps of {'state': TrainState, 'data': grain iterator} (`checkpointing`)

Training (`jaxinpaint.train`) writes it; evaluation, inference, completion, ablation, export and serving open it
with `restore`, which builds the task and the sharded restore target without a `Trainer` (no optimiser step is
compiled) and takes the newest readable step and the EMA params when the run kept them.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import os
from typing import Any

import flax
import jax
import jax.numpy as jnp
import ml_collections
import optax

from jaxinpaint import checkpointing, configs_lib, sharding
from jaxinpaint.tasks import make_task

PyTree = Any
CONFIG_FILE = "config.json"


@flax.struct.dataclass
class TrainState:
  """step: i32[]; params; model_state: non-param collections (batch_stats, spectral-norm vectors, ...);
  opt_state; ema_params: exponential moving average of params, or None when EMA is off."""

  step: jax.Array
  params: PyTree
  model_state: PyTree
  opt_state: PyTree
  ema_params: PyTree = None


# ------------------------------------------------------------------------------------------------ config


def save_config(config: ml_collections.ConfigDict, workdir: str) -> str:
  """Writes the run's config beside its checkpoints, so tools can rebuild the model from the workdir alone."""
  os.makedirs(workdir, exist_ok=True)
  path = os.path.join(workdir, CONFIG_FILE)
  with open(path + ".tmp", "w") as f:
    f.write(config.to_json_best_effort(indent=2, sort_keys=True))
  os.replace(path + ".tmp", path)
  return path


def load_config(workdir: str) -> ml_collections.ConfigDict:
  """The config a run in `workdir` was trained with (see `save_config`), exactly as saved."""
  path = os.path.join(workdir, CONFIG_FILE)
  if not os.path.isfile(path):
    raise FileNotFoundError(f"{path} not found: {workdir} is not a jaxinpaint run directory")
  with open(path) as f:
    data = json.load(f)

  def tuples(x):  # JSON has no tuples; configs use them for sizes and feature lists
    if isinstance(x, dict):
      return {k: tuples(v) for k, v in x.items()}
    return tuple(tuples(v) for v in x) if isinstance(x, list) else x

  return ml_collections.ConfigDict(tuples(data))


def with_defaults(config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
  """A copy of `config` with every `eval` key of the base config that it lacks (runs saved before a key existed,
  or configs of other families, whose `eval` section is the U-Net's)."""
  config = ml_collections.ConfigDict(config.to_dict())
  defaults = configs_lib.base_config().eval
  if "eval" not in config:
    config.eval = defaults
  for key, value in defaults.items():
    if key not in config.eval:
      config.eval[key] = value
  return config


def load_run_config(workdir: str) -> ml_collections.ConfigDict:
  """The config a run was trained with (`load_config`), tolerating keys added since it was saved."""
  return with_defaults(load_config(workdir))


def has_checkpoints(workdir: str) -> bool:
  folder = os.path.join(workdir, "checkpoints")
  return os.path.isdir(folder) and any(name.isdigit() for name in os.listdir(folder))


FORK_HINT = "use another --workdir, or --fork_to=NEWDIR to start a run of this config there from this run's checkpoint"


def check_same_run(config: ml_collections.ConfigDict, workdir: str, hint: str = FORK_HINT) -> None:
  """ValueError naming the differing keys when `workdir`'s checkpoints were trained with another config (keys
  that only change a run's length, cadence or layout may differ: `configs_lib.RESUMABLE_KEYS`)."""
  if not os.path.isfile(os.path.join(workdir, CONFIG_FILE)):
    return
  try:
    saved = load_config(workdir)
  except ValueError as e:  # json.JSONDecodeError
    raise ValueError(
      f"{os.path.join(workdir, CONFIG_FILE)} cannot be read ({e}); restore it or use another --workdir"
    ) from None
  diffs = configs_lib.run_differences(saved, config)
  if diffs:
    shown = ", ".join(diffs[:6]) + (f" and {len(diffs) - 6} more" if len(diffs) > 6 else "")
    raise ValueError(f"{workdir} holds checkpoints of another config (differs in {shown}); {hint}")


# ------------------------------------------------------------------------------------------------ state


def example_batch(config: ml_collections.ConfigDict, batch_size: int) -> dict[str, jax.ShapeDtypeStruct]:
  s = config.data.image_size
  return {
    "image": jax.ShapeDtypeStruct((batch_size, s, s, 3), jnp.float32),
    "valid": jax.ShapeDtypeStruct((batch_size, s, s, 1), jnp.float32),
  }


INIT_OPT_LEVEL = "JAXINPAINT_INIT_OPT_LEVEL"


def jit_init(fn, **jit_kwargs):
  """`jax.jit` for a function that runs once per run, a parameter initialiser (`Trainer`'s initial state).

  With JAXINPAINT_INIT_OPT_LEVEL=0 in the environment and the CPU backend, it is compiled at XLA's LLVM -O0 (the
  tests compile everything at -O0 through XLA_FLAGS instead): a U-Net's initialiser then compiles in ~1 s instead
  of ~5 s (six lecun-normal kernels take most of it at -O2) and runs as fast as it needs to. Not the default: the
  initialisers' values then differ from the -O2 ones by float rounding (an ulp in ~4 % of the kernel entries), so
  a run would not reproduce an -O2 run, e.g. the README's tables, bit for bit. GPU/TPU backends ignore it.
  """
  level = os.environ.get(INIT_OPT_LEVEL, "")
  if level not in ("", "0", "1", "2", "3"):
    raise ValueError(f"{INIT_OPT_LEVEL} must be one of 0, 1, 2, 3 (XLA's LLVM level), got {level!r}")
  if level and jax.default_backend() == "cpu":
    jit_kwargs["compiler_options"] = {"xla_backend_optimization_level": int(level)}
  return jax.jit(fn, **jit_kwargs)


def init_state(rng: jax.Array, *, task, tx: optax.GradientTransformation, config) -> TrainState:
  """Initial state from a one-example dummy batch (variable shapes do not depend on the batch size)."""
  batch = {k: jnp.zeros(v.shape, v.dtype) for k, v in example_batch(config, 1).items()}
  variables = dict(task.init(rng, batch))
  params = variables.pop("params")
  ema = params if config.train.ema_decay > 0 else None
  return TrainState(
    step=jnp.zeros((), jnp.int32), params=params, model_state=variables, opt_state=tx.init(params), ema_params=ema
  )


def seed_keys(config: ml_collections.ConfigDict) -> tuple[jax.Array, jax.Array]:
  """(init key, train-step key) from `config.seed`, as every run of the config draws them."""
  init_key, step_key = jax.random.split(jax.random.key(config.seed))
  return init_key, step_key


def abstract_state(config: ml_collections.ConfigDict, task, tx: optax.GradientTransformation) -> TrainState:
  """The state's ShapeDtypeStructs (nothing is computed): what a checkpoint of this config holds."""
  init = functools.partial(init_state, task=task, tx=tx, config=config)
  return jax.eval_shape(init, seed_keys(config)[0])


# ------------------------------------------------------------------------------------------------ restore


@dataclasses.dataclass
class Restored:
  """An opened run: its config, task, mesh, checkpoint step and the params predictions use (EMA when kept)."""

  config: ml_collections.ConfigDict
  task: Any
  step: int
  params: Any
  model_state: Any
  mesh: Any


def restore(
  workdir: str,
  config: ml_collections.ConfigDict | None = None,
  devices=None,
  batch_size: int | None = None,
  step: int | None = None,
) -> Restored:
  """Rebuilds the model of the run in `workdir` and restores its newest readable checkpoint, or `step` (state
  only; ValueError naming the kept steps when there is no such step).

  `config` defaults to the run's saved config (with eval defaults filled in). `batch_size` (or, when the config's
  does not split over `devices`, one per device) replaces the config's, for tools that pick their own.
  FileNotFoundError (naming the directory) when the run does not exist or has no config or no checkpoint.
  """
  if not os.path.isdir(workdir):
    raise FileNotFoundError(f"run directory {workdir} does not exist")
  config = with_defaults(load_run_config(workdir) if config is None else config)
  devices = jax.devices() if devices is None else devices
  if batch_size is not None or config.batch_size % len(devices):
    config.batch_size = batch_size or len(devices)
  configs_lib.validate_config(config)
  mesh = sharding.make_mesh(devices, config.get("mesh", sharding.DEFAULT_MESH))
  sharding.check_batch_size(config.batch_size, mesh)
  task = make_task(config)
  tx, _ = task.make_optimizer(config.num_train_steps)
  abstract = abstract_state(config, task, tx)
  shardings = sharding.state_shardings(abstract, mesh, config.get("fsdp_min_size", sharding.FSDP_MIN_SIZE))
  ckpt = checkpointing.Checkpointer(workdir, async_save=False)
  try:
    step, state = ckpt.restore_state_only(checkpointing.abstract_with_shardings(abstract, shardings), step)
  finally:
    ckpt.close()
  params = state.ema_params if state.ema_params is not None else state.params
  return Restored(config, task, int(step), params, state.model_state, mesh)
