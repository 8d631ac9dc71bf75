"""The generic, sharded trainer: one pure train step under `jax.jit`, any task (U-Net, GAN, DCGAN).

big_vision / flax-examples style: the state is a plain pytree whose shapes come from `jax.eval_shape(init)`, its
shardings from the mesh; the update is one pure function jitted with `donate_argnums=(0,)`, its key
`fold_in(seed_key, step)`. Metrics are `clu.metrics` collections merged on device and fetched only every
`log_every` steps; a non-finite loss, or a non-finite value in the state about to be saved, stops the run with
an error naming the step before any checkpoint of it is written, so the last good checkpoint stays the latest.
"""

from __future__ import annotations

import collections
import contextlib
import functools
import json
import os
import time
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
from absl import logging
from clu import metric_writers, metrics as clu_metrics, periodic_actions

from jaxinpaint import checkpointing, configs_lib, metrics, progress, sharding, visualize, workdir_lock
from jaxinpaint.configs_lib import validate_config
from jaxinpaint.data import pipeline
from jaxinpaint.imaging import to01
from jaxinpaint.runs import (
  TrainState,
  check_same_run,
  example_batch,
  has_checkpoints,
  init_state,
  jit_init,
  save_config,
  seed_keys,
)
from jaxinpaint.tasks import make_task

PyTree = Any


class TrainingHalted(RuntimeError):
  """The run stopped itself before saving a bad state; the message names the step and the latest checkpoint."""


class NonFiniteLossError(TrainingHalted):
  """Raised when a train step produced a NaN/inf loss or state; names the step."""


def train_step(
  state: TrainState,
  batch: dict[str, jax.Array],
  *,
  task,
  tx: optax.GradientTransformation,
  schedule: optax.Schedule,
  ema_decay: float,
  key: jax.Array,
  metrics_cls,
) -> tuple[TrainState, Any]:
  """One optimisation step. Pure: the same state, batch and key give the same result on any mesh."""
  rng = jax.random.fold_in(key, state.step)
  grad_fn = jax.value_and_grad(task.loss_fn, has_aux=True)
  (loss, (model_state, terms)), grads = grad_fn(state.params, state.model_state, batch, rng, state.step)
  updates, opt_state = tx.update(grads, state.opt_state, state.params)
  params = optax.apply_updates(state.params, updates)
  ema = state.ema_params
  if ema_decay > 0:
    ema = jax.tree.map(lambda e, p: ema_decay * e + (1.0 - ema_decay) * p, ema, params)
  new_state = state.replace(
    step=state.step + 1, params=params, model_state=model_state, opt_state=opt_state, ema_params=ema
  )
  values = {"loss": loss, **terms, "grad_norm": optax.tree.norm(grads), "learning_rate": schedule(state.step)}
  return new_state, metrics_cls.single_from_model_output(**values)


def make_train_metrics_cls(task) -> type[clu_metrics.Collection]:
  names = ("loss", *task.metric_names, "grad_norm")
  fields = {n: clu_metrics.Average.from_output(n) for n in names}
  fields["learning_rate"] = clu_metrics.LastValue.from_output("learning_rate")
  return clu_metrics.Collection.create(**fields)


def eval_step(params: PyTree, model_state: PyTree, batch: dict[str, jax.Array], *, task):
  """Seed 004's protocol on one batch; returns (metric collection, predictions in [-1, 1])."""
  pred = task.predict(params, model_state, batch)
  image, output = (to01(jnp.clip(x, -1.0, 1.0)) for x in (batch["image"], pred["output"]))
  return metrics.collect_inpainting_metrics(image, output, batch["valid"]), pred


class Trainer:
  """Builds everything a run needs once; `train_and_evaluate` drives it."""

  def __init__(self, config: ml_collections.ConfigDict, devices: list | None = None):
    validate_config(config)
    self.config = config
    self.mesh = sharding.make_mesh(devices, config.get("mesh", sharding.DEFAULT_MESH))
    sharding.check_batch_size(config.batch_size, self.mesh)
    self.num_steps = config.num_train_steps
    self.task = make_task(config)
    self.tx, self.schedule = self.task.make_optimizer(self.num_steps)
    self.init_key, self.step_key = seed_keys(config)
    self.metrics_cls = make_train_metrics_cls(self.task)

    init = functools.partial(init_state, task=self.task, tx=self.tx, config=config)
    self.abstract_state = jax.eval_shape(init, self.init_key)
    self.state_shardings = sharding.state_shardings(
      self.abstract_state, self.mesh, config.get("fsdp_min_size", sharding.FSDP_MIN_SIZE)
    )
    self._init = jit_init(init, out_shardings=self.state_shardings)
    self.batch_shardings = {k: sharding.batch_sharding(self.mesh) for k in ("image", "valid")}
    self.eval_step = jax.jit(functools.partial(eval_step, task=self.task))

  def _jit_train_step(self, task):
    step = functools.partial(
      train_step,
      task=task,
      tx=self.tx,
      schedule=self.schedule,
      ema_decay=self.config.train.ema_decay,
      key=self.step_key,
      metrics_cls=self.metrics_cls,
    )
    return jax.jit(
      step,
      donate_argnums=(0,),
      in_shardings=(self.state_shardings, self.batch_shardings),
      out_shardings=(self.state_shardings, sharding.replicated(self.mesh)),
    )

  def initial_state(self) -> TrainState:
    # Init runs once, so it is compiled without LLVM optimisation: its per-leaf threefry / truncated-normal
    # kernels otherwise take ~10x longer to compile (e.g. 3 s instead of 28 s for :tiny), for the same values.
    if getattr(self, "_init_compiled", None) is None:
      self._init_compiled = self._init.lower(self.init_key).compile(
        compiler_options={"xla_backend_optimization_level": 0}
      )
    return self._init_compiled(self.init_key)

  def compile_step(self, task, state: TrainState):
    """Lowers and compiles the step once (AOT) and logs what XLA says it needs per device, as maxtext does."""
    batch = {
      k: jax.ShapeDtypeStruct(v.shape, v.dtype, sharding=self.batch_shardings[k])
      for k, v in example_batch(self.config, self.config.batch_size).items()
    }
    t0 = time.perf_counter()
    compiled = self._jit_train_step(task).lower(state, batch).compile()
    self.memory = None
    try:
      mem = compiled.memory_analysis()
    except Exception as e:  # best-effort on some backends
      mem = None
      logging.info("memory analysis unavailable: %s", e)
    if mem is not None:
      self.memory = {
        k: int(getattr(mem, k))
        for k in ("argument_size_in_bytes", "output_size_in_bytes", "temp_size_in_bytes", "alias_size_in_bytes")
        if hasattr(mem, k)
      }
    logging.info(
      "compiled the train step in %.1f s; memory per device (bytes): %s", time.perf_counter() - t0, self.memory
    )
    self.train_step = compiled
    return compiled

  def evaluate_baseline(self, eval_batches: list[dict[str, np.ndarray]]) -> dict[str, float]:
    """What the masked input itself scores (holes at 0, mid-grey): the floor a trained model must clear."""
    fn = jax.jit(
      lambda b: metrics.collect_inpainting_metrics((b["image"] + 1) / 2, (b["image"] * b["valid"] + 1) / 2, b["valid"])
    )
    total = MetricsTotal()
    for batch in eval_batches:
      total.add(fn(sharding.to_global(batch, self.mesh)))
    return total.compute()

  def evaluate(self, state: TrainState, eval_batches: list[dict[str, np.ndarray]]):
    """Averages seed 004's metrics over the fixed eval set; returns (metrics dict, first batch's predictions)."""
    params = state.ema_params if state.ema_params is not None else state.params
    total, first = MetricsTotal(), None
    for batch in eval_batches:
      gbatch = sharding.to_global(batch, self.mesh)
      m, pred = self.eval_step(params, state.model_state, gbatch)
      total.add(m)
      if first is None:
        first = (gbatch, pred)
    return total.compute(), first


@jax.jit
def merge_metrics(total: clu_metrics.Collection, m: clu_metrics.Collection) -> clu_metrics.Collection:
  """`total.merge(m)` as one program (unjitted, every field of every metric would be a program of its own)."""
  return total.merge(m)


class MetricsTotal:
  """The merge of the metric collections a loop's steps return, each merged by `merge_metrics` as it arrives,
  with the loop kept one step ahead of the devices (`sharding.RunAhead`: a longer queue of programs can deadlock
  XLA's CPU client). `add(m)` after step k is dispatched waits for step k-1; `compute()` reads the values back."""

  def __init__(self):
    self.total: clu_metrics.Collection | None = None
    self._ahead = sharding.RunAhead()

  def add(self, m: clu_metrics.Collection) -> None:
    self.total = m if self.total is None else merge_metrics(self.total, m)
    self._ahead.after(self.total)  # step k-1's merge (not its state, which step k was given and may have donated)

  def compute(self) -> dict[str, float]:
    return {k: float(v) for k, v in self.total.compute().items()}


def write_samples(writer, workdir: str, step: int, first) -> str | None:
  gbatch, pred = first
  image, valid, output = (sharding.gather(a) for a in (gbatch["image"], gbatch["valid"], pred["output"]))
  stages = {
    k: sharding.gather(v)
    for k, v in pred.items()
    if k != "output" and getattr(v, "ndim", 0) == 4 and v.shape[:3] == pred["output"].shape[:3] and v.shape[-1] == 3
  }
  if jax.process_index() != 0:
    return None
  grid = visualize.sample_grid(image, valid, output)
  writer.write_images(step, {"samples": grid[None]})
  if stages:  # tasks that predict more images (DeepFill's coarse stage and attention) get a second grid
    stage_grid = visualize.stage_grid(image, valid, {"output": output, **stages})
    writer.write_images(step, {"stages": stage_grid[None]})
    visualize.save_png(stage_grid, os.path.join(workdir, "samples", f"stages_step_{step:07d}.png"))
  return visualize.save_png(grid, os.path.join(workdir, "samples", f"step_{step:07d}.png"))


TIMELINE_FILE = "timeline.jsonl"


def read_timeline(workdir: str) -> list[dict[str, float]]:
  """The lines of `workdir/timeline.jsonl` ({'step', 'train_seconds', 'time'}), sorted by step; a line that does
  not parse (a torn last line left by a kill mid-write) is skipped, and a step written twice keeps its last line."""
  path = os.path.join(workdir, TIMELINE_FILE)
  if not os.path.isfile(path):
    return []
  by_step = {}
  with open(path) as f:
    lines = f.read().split("\n")
  for number, line in enumerate(lines, 1):
    if not line.strip():
      continue
    try:
      entry = json.loads(line)
      by_step[int(entry["step"])] = {
        "step": int(entry["step"]),
        "train_seconds": float(entry["train_seconds"]),
        "time": float(entry["time"]),
      }
    except (ValueError, KeyError, TypeError):
      if number < len(lines) - 1:  # only the last line can be torn by a kill; say so for any other
        logging.warning("%s line %d cannot be read; skipping it: %r", path, number, line[:80])
  return [by_step[s] for s in sorted(by_step)]


class Timeline:
  """Appends `{"step", "train_seconds", "time"}` to `workdir/timeline.jsonl` at each checkpoint save (process 0).

  train_seconds is the run's training wall-clock accumulated across resumes: the time inside the train loop
  (steps, data loading, the periodic eval with its first compile, sample grids, checkpoint writes and stage
  recompiles), not the one-off set-up of each invocation (data checks, restore, the first compile of the step, the
  masked-input eval of a fresh run). A resumed run continues from the line of the step it restored (lines of later
  steps, whose checkpoints were lost, are dropped, so steps and seconds only grow); a fork starts at 0. Each line
  goes out in one `write` of a few dozen bytes followed by fsync, and the file is otherwise only replaced whole
  (`os.replace`), so a kill leaves at worst a torn last line, which `read_timeline` skips and the next resume drops.
  """

  def __init__(self, workdir: str, start_step: int, enabled: bool = True):
    self.path = os.path.join(workdir, TIMELINE_FILE)
    self.enabled = enabled
    kept = [e for e in read_timeline(workdir) if e["step"] <= start_step] if start_step > 0 else []
    self.offset = kept[-1]["train_seconds"] if kept else 0.0
    self.started = time.perf_counter()
    if enabled and os.path.exists(self.path):  # rewrite without the dropped and torn lines before appending
      with open(self.path + ".tmp", "w") as f:
        f.writelines(json.dumps(e) + "\n" for e in kept)
        f.flush()
        os.fsync(f.fileno())
      os.replace(self.path + ".tmp", self.path)

  def start(self) -> None:
    """Starts this invocation's clock (when the train loop begins)."""
    self.started = time.perf_counter()

  def record(self, step: int) -> None:
    if not self.enabled:
      return
    seconds = self.offset + time.perf_counter() - self.started
    line = json.dumps({"step": int(step), "train_seconds": round(seconds, 3), "time": round(time.time(), 3)}) + "\n"
    fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
      os.write(fd, line.encode())
      os.fsync(fd)
    finally:
      os.close(fd)


def train_and_evaluate(
  config: ml_collections.ConfigDict,
  workdir: str,
  *,
  stop_at: int | None = None,
  devices: list | None = None,
  restore_step: int | None = None,
  fork_from: str | None = None,
) -> dict[str, Any]:
  """Trains `config` in `workdir`, resuming from its latest readable checkpoint (or `restore_step`).

  Before anything is written: the config, the workdir and the data are checked (first training batch, eval set),
  the workdir is locked (`workdir_lock`), and a workdir with checkpoints must hold a run of the same config
  (`configs_lib.run_differences`). `fork_from=OLD` starts a run of this config in `workdir` from OLD's latest
  (or `restore_step`) checkpoint: state only, so step and optimiser continue and the data stream starts afresh.
  `stop_at` ends this invocation after that step exactly as a preemption would (checkpoint, then return): a
  later call continues the same run. Returns {'state', 'step', 'eval': last eval metrics, 'history': {step:
  averaged train metrics at each log step}, 'baseline': the masked input's eval metrics (fresh runs only),
  'preempted': True when SIGTERM stopped it}.
  Each checkpoint save appends the step and the training wall-clock so far to `workdir/timeline.jsonl`
  (`Timeline`; `jaxinpaint.curves` plots the eval metrics against it).
  """
  validate_config(config)
  sharding.check_batch_size(config.batch_size, sharding.make_mesh(devices, config.get("mesh", sharding.DEFAULT_MESH)))
  check_workdir(workdir)
  pidx, pcount = jax.process_index(), jax.process_count()
  pipeline.check_train_data(config, process_index=pidx, process_count=pcount)
  eval_batches = pipeline.make_eval_batches(config, process_index=pidx, process_count=pcount)
  trainer = Trainer(config, devices)
  with workdir_lock.WorkdirLock(workdir) if pidx == 0 else contextlib.nullcontext():
    return _train_locked(
      trainer, config, workdir, eval_batches, stop_at=stop_at, restore_step=restore_step, fork_from=fork_from
    )


def _train_locked(trainer: Trainer, config, workdir: str, eval_batches, *, stop_at, restore_step, fork_from):
  pidx, pcount = jax.process_index(), jax.process_count()
  resuming = has_checkpoints(workdir)
  if resuming:
    check_same_run(config, workdir)
  target = checkpointing.abstract_with_shardings(trainer.abstract_state, trainer.state_shardings)
  forked = None
  if fork_from is not None and not resuming:
    forked = fork_state(fork_from, target, restore_step)
  writer = metric_writers.create_default_writer(workdir, just_logging=pidx > 0)
  writer.write_hparams({k: str(v) for k, v in configs_lib.flatten(config.to_dict()).items()})
  if pidx == 0:
    save_config(config, workdir)

  train_iter = pipeline.make_train_iterator(config, process_index=pidx, process_count=pcount)
  ckpt = checkpointing.Checkpointer(
    workdir, max_to_keep=config.train.keep_checkpoints, async_save=config.train.async_checkpointing
  )
  restored = forked or ckpt.restore(target, train_iter, step=None if fork_from is not None else restore_step)
  if restored is None:
    state, start = trainer.initial_state(), 0
  else:
    start, state = restored
  stage = trainer.task.stage(start)
  trainer.compile_step(trainer.task.for_stage(stage), state)
  timeline = Timeline(workdir, start if forked is None else 0, enabled=pidx == 0)
  logging.info(
    "training %s from step %d to %d on %d devices (%d processes); global batch %d",
    config.model.name,
    start,
    trainer.num_steps,
    trainer.mesh.devices.size,
    pcount,
    config.batch_size,
  )

  preempted = checkpointing.PreemptionFlag().install()
  report = periodic_actions.ReportProgress(num_train_steps=trainer.num_steps, writer=writer)
  bar = progress.bar(trainer.num_steps, initial=start, desc="train", unit="step")  # a TTY on process 0 only
  guard = LossGuard(config.train.get("loss_spike_factor", 0.0), config.train.get("stop_on_loss_spike", False))
  train_metrics, pending, eval_values, history, baseline = MetricsTotal(), [], {}, {}, {}
  if start == 0:
    baseline = trainer.evaluate_baseline(eval_batches)
    writer.write_scalars(0, {f"eval_masked_input/{k}": v for k, v in baseline.items()})
    logging.info("masked input (holes grey) scores: %s", baseline)
  step = start
  timeline.start()
  try:
    with jax.set_mesh(trainer.mesh):
      while step < trainer.num_steps:
        if trainer.task.stage(step) != stage:  # the task's next stage (the U-Net's fine-tuning): recompile
          stage = trainer.task.stage(step)
          logging.info("step %d: training stage %r", step, stage)
          trainer.compile_step(trainer.task.for_stage(stage), state)
        batch = sharding.to_global(next(train_iter), trainer.mesh)
        state, m = trainer.train_step(state, batch)
        step += 1
        pending.append((step, m.loss.total))
        train_metrics.add(m)
        report(step)
        bar.update(1)
        last = step == trainer.num_steps
        if step % config.train.log_every == 0 or last:
          guard.check(pending, ckpt.latest_step())
          history[step] = train_metrics.compute()
          bar.set_postfix(loss=f"{history[step]['loss']:.4g}")
          writer.write_scalars(step, {f"train/{k}": v for k, v in history[step].items()})
          train_metrics = MetricsTotal()
        if step % config.train.eval_every == 0 or last:
          eval_values, first = trainer.evaluate(state, eval_batches)
          writer.write_scalars(step, {f"eval/{k}": v for k, v in eval_values.items()})
          write_samples(writer, workdir, step, first)
          logging.info("step %d eval: %s", step, eval_values)
        stop = preempted.is_set() or ckpt.reached_preemption(step) or step == stop_at
        if step % config.train.checkpoint_every == 0 or last or stop:
          guard.check(pending, ckpt.latest_step())
          # Step k's loss comes from the params before its update: check the state itself before saving it.
          check_state_finite(state, step, ckpt.latest_step())
          if ckpt.save(step, state, train_iter, force=True):
            timeline.record(step)
        if stop:
          logging.warning("stopping at step %d (preemption or stop_at): its checkpoint is written", step)
          break
  finally:
    bar.close()
    preempted.uninstall()
    ckpt.close()
    writer.flush()
  return {
    "state": state,
    "step": step,
    "eval": eval_values,
    "history": history,
    "baseline": baseline,
    "preempted": preempted.is_set(),
  }


class LossSpikeError(TrainingHalted):
  """Raised, with `train.stop_on_loss_spike`, when a loss exceeds `train.loss_spike_factor` x the running
  median; names the step."""


def _latest_note(latest: int | None) -> str:
  return (
    f"the latest checkpoint is step {latest}, from before it"
    if latest is not None
    else "no checkpoint of this run was written"
  )


class LossGuard:
  """Host-side checks of the per-step losses, fetched in one sync at log and checkpoint steps: a non-finite
  loss raises NonFiniteLossError; a loss whose magnitude is above `factor` x the median magnitude of the last
  `window` losses is warned about, or raises LossSpikeError when `stop` is set."""

  def __init__(self, factor: float, stop: bool, window: int = 200, min_history: int = 10):
    self.factor, self.stop, self.min_history = factor, stop, min_history
    self.recent = collections.deque(maxlen=window)

  def check(self, pending: list[tuple[int, jax.Array]], latest: int | None) -> None:
    if not pending:
      return
    steps = [s for s, _ in pending]
    values = np.asarray(jax.device_get([v for _, v in pending]), np.float64)
    pending.clear()
    bad = np.flatnonzero(~np.isfinite(values))
    if bad.size:
      raise NonFiniteLossError(
        f"non-finite loss ({values[bad[0]]}) at step {steps[bad[0]]}; stopping without "
        f"checkpointing it — {_latest_note(latest)}."
      )
    for step, value in zip(steps, values):
      # Magnitudes: GAN and log losses can be negative, and a median near 0 would flag any value.
      if self.factor > 0 and len(self.recent) >= self.min_history:
        median = float(np.median(self.recent))
        if median > 0 and abs(value) > self.factor * median:
          message = (
            f"loss {value:.4g} at step {step} is {value / median:.3g}x the running median {median:.4g} "
            f"(config.train.loss_spike_factor={self.factor:g})"
          )
          if self.stop:
            raise LossSpikeError(
              f"{message}; stopping (config.train.stop_on_loss_spike) without checkpointing "
              f"it — {_latest_note(latest)}."
            )
          logging.warning("%s; config.train.stop_on_loss_spike=True stops the run on this", message)
      self.recent.append(abs(value))


@jax.jit
def _all_finite(tree: PyTree) -> jax.Array:
  finite = [jnp.all(jnp.isfinite(x)) for x in jax.tree.leaves(tree) if jnp.issubdtype(x.dtype, jnp.inexact)]
  return jnp.all(jnp.stack(finite)) if finite else jnp.array(True)


def check_state_finite(state: TrainState, step: int, latest: int | None) -> None:
  """Raises NonFiniteLossError unless every float leaf of the state about to be saved is finite."""
  if not bool(jax.device_get(_all_finite(state))):
    raise NonFiniteLossError(
      f"non-finite values in the train state after step {step} (params or optimiser "
      f"state); not saving it — {_latest_note(latest)}."
    )


def check_workdir(workdir: str) -> None:
  """One ValueError line for a workdir that is a file or cannot be written; creates nothing."""
  path = os.path.abspath(workdir)
  if os.path.exists(path) and not os.path.isdir(path):
    raise ValueError(f"--workdir {workdir} is a file, not a directory")
  existing = path
  while not os.path.exists(existing):
    existing = os.path.dirname(existing)
  if not os.path.isdir(existing):
    raise ValueError(f"--workdir {workdir} cannot be created: {existing} is a file")
  if not os.access(existing, os.W_OK | os.X_OK):
    raise ValueError(f"--workdir {workdir} is not writable ({existing} does not allow writing)")


def fork_state(fork_from: str, target: PyTree, step: int | None) -> tuple[int, TrainState]:
  """The state of `fork_from`'s latest (or `step`) checkpoint, restored onto this config's `target`."""
  if not has_checkpoints(fork_from):
    raise ValueError(f"cannot fork from {fork_from}: it has no checkpoints")
  ckpt = checkpointing.Checkpointer(fork_from, async_save=False)
  try:
    step, state = ckpt.restore_state_only(target, step)
  except ValueError as e:
    raise ValueError(f"cannot fork from {fork_from} into this config: {e}") from None
  finally:
    ckpt.close()
  logging.warning("forked from %s at step %d: state restored, the data stream starts afresh", fork_from, step)
  return int(step), state
