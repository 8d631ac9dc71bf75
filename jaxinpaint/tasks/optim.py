"""Optimisers and learning-rate schedules from `config.optim` / `config.d_optim`, shared by every task.

`make_schedule` and `make_adam` build one network's optimiser; GAN tasks give each network its own through
`optax.multi_transform` with `group_labels`, and DeepFill v1's n_critic is `update_every` on the generator's.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import ml_collections
import optax

PyTree = Any


def make_schedule(optim: ml_collections.ConfigDict, num_steps: int) -> optax.Schedule:
  """Learning-rate schedule from `config.optim`.

  constant; cosine / exponential decay from `learning_rate` to `end_learning_rate` over the run (seed 004:
  5e-4 "decreased gradually" to 1e-5); finetune: `learning_rate` until `finetune_step`, then
  `finetune_learning_rate` (the partial-conv paper's two stages). Optional linear warm-up.
  """
  lr, end = optim.learning_rate, optim.end_learning_rate
  decay_steps = max(1, num_steps - optim.warmup_steps)
  if optim.schedule == "constant":
    sched = optax.constant_schedule(lr)
  elif optim.schedule == "cosine":
    sched = optax.cosine_decay_schedule(lr, decay_steps, alpha=end / lr)
  elif optim.schedule == "exponential":
    sched = optax.exponential_decay(lr, transition_steps=decay_steps, decay_rate=end / lr, end_value=end)
  elif optim.schedule == "finetune":
    sched = optax.piecewise_constant_schedule(lr, {optim.finetune_step: optim.finetune_learning_rate / lr})
  else:
    raise ValueError(f"config.optim.schedule must be constant, cosine, exponential or finetune; got {optim.schedule!r}")
  if optim.warmup_steps:
    sched = optax.join_schedules([optax.linear_schedule(0.0, lr, optim.warmup_steps), sched], [optim.warmup_steps])
  return sched


def make_adam(optim: ml_collections.ConfigDict, schedule: optax.Schedule) -> optax.GradientTransformation:
  """Adam (or AdamW when weight_decay > 0) behind optional global-norm gradient clipping."""
  if optim.name != "adam":
    raise ValueError(f"config.optim.name must be 'adam'; got {optim.name!r}")
  parts = []
  if optim.grad_clip_norm > 0:
    parts.append(optax.clip_by_global_norm(optim.grad_clip_norm))
  if optim.weight_decay > 0:
    parts.append(optax.adamw(schedule, b1=optim.b1, b2=optim.b2, eps=optim.eps, weight_decay=optim.weight_decay))
  else:
    parts.append(optax.adam(schedule, b1=optim.b1, b2=optim.b2, eps=optim.eps))
  return optax.chain(*parts)


class UpdateEveryState(NamedTuple):
  count: jax.Array  # i32[], updates seen so far
  inner: Any


def update_every(inner: optax.GradientTransformation, every: int) -> optax.GradientTransformation:
  """Applies `inner` on updates 0, every, 2 every, ...; on the others returns zero updates and keeps `inner`'s
  state (Adam moments and count) exactly as it was. WGAN's n_critic for the generator's optimiser."""
  if every < 1:
    raise ValueError(f"update_every needs every >= 1; got {every}")

  def init(params):
    return UpdateEveryState(count=jnp.zeros((), jnp.int32), inner=inner.init(params))

  def update(updates, state, params=None):
    new_updates, new_inner = inner.update(updates, state.inner, params)
    take = state.count % every == 0
    updates = jax.tree.map(lambda u: jnp.where(take, u, jnp.zeros_like(u)), new_updates)
    kept = jax.tree.map(lambda n, o: jnp.where(take, n, o), new_inner, state.inner)
    return updates, UpdateEveryState(count=state.count + 1, inner=kept)

  return optax.GradientTransformation(init, update)


def group_labels(params: PyTree) -> PyTree:
  """{group: subtree} params -> the same tree of group names, the labels `optax.multi_transform` takes."""
  return {group: jax.tree.map(lambda _: group, subtree) for group, subtree in params.items()}
