"""Mesh from `config.mesh`, the FSDP rule, the compiled step's collectives, and bf16 activations.

- `data=-1`: the compiled step all-reduces every gradient exactly once (XLA may fuse several into one op) and
  all-gathers nothing: no activation or parameter crosses devices except through those reductions and the
  per-channel BatchNorm statistics.
- `data=-1,fsdp=2`: large kernels and their Adam moments are split over `fsdp` (half the argument memory per
  device for them), the step gathers them, and it computes what the data-parallel step computes.
- bf16 activations: the convolutions run in bf16, params, gradients and the loss stay f32.
"""

import collections
import json
import math
import os
import re
import subprocess
import sys

import jax
import jax.extend
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from jax.sharding import PartitionSpec as P

import helpers  # tests/helpers.py
from jaxinpaint import sharding, train
from jaxinpaint.data import pipeline

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
COLLECTIVE = re.compile(
  r"^\s*(?:ROOT )?%?\S+ = (.*?) "
  r"(all-reduce|all-gather|reduce-scatter|all-to-all|collective-permute)(?:-start)?\("
)
SHAPE = re.compile(r"\b(?:f64|f32|bf16|f16|s32|u32|pred)\[([\d,]*)\]")


def load_config(variant="tiny"):
  config = helpers.load_config("wconv", variant)
  config.optim.eps = 1.0  # updates linear in the gradient: comparisons check maths, not float-noise signs
  return config


def collectives(hlo_text: str) -> tuple[collections.Counter, list[tuple[int, ...]]]:
  """(count of each collective op, the shapes each one returns) in an optimised HLO module's text."""
  ops, shapes = collections.Counter(), []
  for line in hlo_text.splitlines():
    match = COLLECTIVE.match(line)
    if match:
      ops[match.group(2)] += 1
      if match.group(2) == "all-reduce":
        shapes += [tuple(int(d) for d in dims.split(",") if d) for dims in SHAPE.findall(match.group(1))]
  return ops, shapes


# --- config string -> mesh --------------------------------------------------------------------------------------
def test_mesh_spec_parsing_and_errors():
  assert sharding.parse_mesh("data=-1") == {"data": -1}
  assert sharding.parse_mesh("fsdp=2, data=-1") == {"data": -1, "fsdp": 2}  # always data outer, fsdp inner
  assert sharding.mesh_shape("data=-1,fsdp=2", 8) == {"data": 4, "fsdp": 2}
  assert sharding.mesh_shape("data=2,fsdp=4", 8) == {"data": 2, "fsdp": 4}
  for spec, message in [
    ("model=2", "axes from"),
    ("data=-1,data=2", "each once"),
    ("data", "axis=size"),
    ("data=x", "must be an integer"),
    ("data=0", "positive or -1"),
    ("data=-1,fsdp=-1", "at most one"),
  ]:
    with pytest.raises(ValueError, match=message):
      sharding.parse_mesh(spec)
  with pytest.raises(ValueError, match="8 devices do not split into axes of size 3"):
    sharding.mesh_shape("data=-1,fsdp=3", 8)
  with pytest.raises(ValueError, match="has 4 devices in all, but there are 8"):
    sharding.mesh_shape("data=2,fsdp=2", 8)
  config = load_config()
  config.mesh = "data=-1,tensor=2"
  with pytest.raises(ValueError, match="config.mesh='data=-1,tensor=2'"):
    train.Trainer(config)


def test_mesh_layout_and_batch_split():
  mesh = sharding.make_mesh(spec="data=-1,fsdp=2")
  assert dict(mesh.shape) == {"data": 4, "fsdp": 2}
  # fsdp is the inner axis: an FSDP pair is two neighbouring devices (the same host when it can be)
  assert [d.id for d in mesh.devices[0]] == [jax.devices()[0].id, jax.devices()[1].id]
  batch = {"image": np.arange(8 * 2 * 2 * 3, dtype=np.float32).reshape(8, 2, 2, 3)}
  image = sharding.to_global(batch, mesh)["image"]
  assert image.sharding.spec == P(("data", "fsdp"))
  shards = sorted(image.addressable_shards, key=lambda s: s.index[0].start)
  assert [s.data.shape[0] for s in shards] == [1] * 8  # every device holds its own example
  np.testing.assert_array_equal(np.asarray(image), batch["image"])


def test_fsdp_rule():
  assert sharding.fsdp_spec((3, 3, 256, 512), 2) == P(None, None, None, "fsdp")  # output channels
  assert sharding.fsdp_spec((3, 3, 512, 256), 2) == P(None, None, "fsdp")  # the largest divisible dimension
  assert sharding.fsdp_spec((3, 3, 1024, 1025), 2) == P(None, None, "fsdp")  # 1025 does not split in two
  assert sharding.fsdp_spec((3, 3, 63, 65), 2, min_size=100) == P()  # nothing splits: replicated
  assert sharding.fsdp_spec((512,), 2) == P()  # small: replicated
  assert sharding.fsdp_spec((3, 3, 256, 512), 1) == P()  # no fsdp axis
  assert sharding.fsdp_spec((), 2, min_size=0) == P()  # scalars (step, Adam count)


class Pending:
  """A step output whose wait is recorded (jax.block_until_ready calls a leaf's block_until_ready)."""

  def __init__(self, name, log):
    self.name, self.log = name, log

  def block_until_ready(self):
    self.log.append(self.name)
    return self


def test_run_ahead_waits_for_the_output_depth_steps_back():
  log = []
  ahead = sharding.RunAhead()
  ahead.after(Pending(1, log))
  assert log == []  # the first step may run while the loop goes on
  ahead.after({"m": Pending(2, log)})
  assert log == [1]  # step 2 dispatched: step 1 is waited for, step 2 is not
  ahead.after(Pending(3, log))
  assert log == [1, 2]
  deeper, log = sharding.RunAhead(depth=2), []
  for k in range(1, 6):
    deeper.after(Pending(k, log))
  assert log == [1, 2, 3]
  with pytest.raises(ValueError, match="depth must be at least 1"):
    sharding.RunAhead(depth=0)


def test_the_deadlock_reproduction_runs_to_the_end_in_bounded_mode():
  # bench/cpu_queue_deadlock.py --mode=queue is the race RunAhead avoids (minutes to hit; not run here); the
  # bounded mode is the train loop's pattern on real arrays and must finish
  script = os.path.join(helpers.ROOT, "bench", "cpu_queue_deadlock.py")
  env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
  proc = subprocess.run(
    [sys.executable, script, "--mode=bounded", "--iterations=300", "--size=64", "--ops=5"],
    env=env,
    capture_output=True,
    text=True,
    timeout=300,
  )
  assert proc.returncode == 0, proc.stderr[-3000:]
  line = json.loads(proc.stdout.strip().splitlines()[-1])
  assert line["mode"] == "bounded" and line["iterations"] == 300 and line["seconds"] > 0


def test_merge_metrics_in_one_program_equals_the_collection_merge():
  trainer = train.Trainer(load_config())
  rng = np.random.default_rng(0)
  outputs = [
    {n: jnp.float32(rng.normal()) for n in ("loss", *trainer.task.metric_names, "grad_norm")} for _ in range(3)
  ]
  for o in outputs:
    o["learning_rate"] = jnp.float32(rng.uniform())
  parts = [trainer.metrics_cls.single_from_model_output(**o) for o in outputs]
  jitted, plain = parts[0], parts[0]
  for m in parts[1:]:
    jitted, plain = train.merge_metrics(jitted, m), plain.merge(m)
  got, want = ({k: float(v) for k, v in c.compute().items()} for c in (jitted, plain))
  assert got == pytest.approx(want, rel=1e-6) and set(got) == set(outputs[0])
  assert got["loss"] == pytest.approx(np.mean([float(o["loss"]) for o in outputs]), rel=1e-6)
  assert got["learning_rate"] == pytest.approx(float(outputs[-1]["learning_rate"]))  # LastValue keeps the last


# --- the compiled step ------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def runs():
  """The same two :tiny steps with mesh data=-1 and with data=-1,fsdp=2 (kernels of >= 2048 elements split)."""
  out = {}
  base = load_config()
  batches = [next(it) for it in [pipeline.make_train_iterator(base)] for _ in range(2)]
  for name, mesh in (("data", "data=-1"), ("fsdp", "data=-1,fsdp=2")):
    config = load_config()
    config.mesh, config.fsdp_min_size = mesh, 2048
    trainer = train.Trainer(config)
    state = trainer.initial_state()
    step = trainer.compile_step(trainer.task, state)
    for batch in batches:
      state, metrics = step(state, sharding.to_global(batch, trainer.mesh))
    out[name] = dict(trainer=trainer, step=step, state=state, loss=float(metrics.loss.compute()))
  return out


def test_data_parallel_step_reduces_each_gradient_once_and_gathers_nothing(runs):
  trainer, step = runs["data"]["trainer"], runs["data"]["step"]
  ops, shapes = collectives(step.as_text())
  assert set(ops) == {"all-reduce"}, ops  # no all-gather of params, no reduce-scatter, no all-to-all
  params = jax.tree.leaves(runs["data"]["state"].params)
  # every kernel's gradient is all-reduced exactly once (rank 4 only occurs for kernels). A decoder kernel
  # (3, 3, Cx + Cs, Co) acts on concat([upsample2(x), skip]) through its sub-pixel form (layers.masked_conv), and
  # XLA may reduce its gradient as the two parts it is computed in: the 2x2 phase kernels (2, 2, Cx, 4 Co) of
  # the upsampled half and the (3, 3, Cs, Co) skip half (16/9 of the elements for the upsampled half).
  reduced4 = [s for s in shapes if len(s) == 4]
  extra = 0
  for kernel in sorted((p.shape for p in params if p.ndim == 4), reverse=True):
    if kernel in reduced4:
      reduced4.remove(kernel)
      continue
    kh, kw, cin, co = kernel
    halves = [
      ((2, 2, cx, 4 * co), (3, 3, cin - cx, co))
      for cx in range(1, cin)
      if (2, 2, cx, 4 * co) in reduced4 and (3, 3, cin - cx, co) in reduced4
    ]
    assert (kh, kw) == (3, 3) and halves, (kernel, reduced4)
    for half in halves[0]:
      reduced4.remove(half)
    extra += 7 * halves[0][0][2] * co
  assert not reduced4, reduced4  # no rank-4 reduction that is not a kernel's gradient (no activation)
  # ... and what else crosses devices is the gradients of biases/scales, a few per-channel sums per norm layer
  # (weighted BatchNorm's sum(M), sum(XM), sum((X - mu)^2 M) forward and their cotangents) and scalars:
  # never an activation, nothing gathered.
  n_params = sum(p.size for p in params)
  norm_channels = sum(v.size for v in jax.tree.leaves(runs["data"]["state"].model_state)) // 2  # mean, var
  reduced = sum(math.prod(s) for s in shapes)
  assert n_params + extra <= reduced <= n_params + extra + 6 * norm_channels + 64, (reduced, n_params, extra)
  assert trainer.memory["argument_size_in_bytes"] > 0  # the compiled step's memory is recorded (and logged)


def test_concat_decoder_reduces_every_kernel_gradient_in_its_own_shape():
  config = load_config()
  config.model.decoder = "concat"
  trainer = train.Trainer(config)
  step = trainer.compile_step(trainer.task, trainer.initial_state())
  ops, shapes = collectives(step.as_text())
  assert set(ops) == {"all-reduce"}, ops
  kernels = sorted(x.shape for x in jax.tree.leaves(trainer.abstract_state.params) if x.ndim == 4)
  assert sorted(s for s in shapes if len(s) == 4) == kernels


def test_fsdp_shards_large_kernels_and_matches_data_parallel(runs):
  trainer = runs["fsdp"]["trainer"]
  params, shardings = runs["fsdp"]["state"].params, trainer.state_shardings
  split = [s.spec for p, s in zip(jax.tree.leaves(params), jax.tree.leaves(shardings.params)) if p.size >= 2048]
  assert split and all("fsdp" in spec for spec in split)
  is_adam = lambda x: isinstance(x, optax.ScaleByAdamState)
  adam = [s for s in jax.tree.leaves(shardings.opt_state, is_leaf=is_adam) if is_adam(s)]
  for moments in (adam[0].mu, adam[0].nu):  # Adam's moments follow their params
    assert jax.tree.leaves(moments) == jax.tree.leaves(shardings.params)
  kernel = params["dec3"]["kernel"]  # (3, 3, 32, 16): its largest dimension, input channels, split in two
  assert kernel.sharding.spec == P(None, None, "fsdp")
  assert {s.data.shape for s in kernel.addressable_shards} == {(3, 3, 16, 16)}
  assert trainer.memory["argument_size_in_bytes"] < runs["data"]["trainer"].memory["argument_size_in_bytes"]
  ops, _ = collectives(runs["fsdp"]["step"].as_text())
  assert ops["all-gather"] > 0, ops  # the sharded kernels are gathered for the convolutions
  # same maths as the data-parallel run
  assert runs["fsdp"]["loss"] == pytest.approx(runs["data"]["loss"], rel=1e-5)
  for a, b in zip(jax.tree.leaves(params), jax.tree.leaves(runs["data"]["state"].params)):
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-5, atol=1e-5)


# --- bf16 activations -------------------------------------------------------------------------------------------
def test_bf16_activations_keep_params_grads_and_loss_in_f32():
  config = load_config()
  config.train.activation_dtype = "bfloat16"
  trainer = train.Trainer(config, jax.devices()[:1])
  state = trainer.abstract_state
  batch = train.example_batch(config, 2)
  grad_fn = jax.value_and_grad(trainer.task.loss_fn, has_aux=True)
  args = (state.params, state.model_state, batch, jax.random.key(0), jnp.zeros((), jnp.int32))
  (loss, (model_state, terms)), grads = jax.eval_shape(grad_fn, *args)
  assert loss.dtype == jnp.float32 and all(t.dtype == jnp.float32 for t in terms.values())
  assert {g.dtype for g in jax.tree.leaves(grads)} == {jnp.dtype(jnp.float32)}
  assert {v.dtype for v in jax.tree.leaves(model_state)} == {jnp.dtype(jnp.float32)}
  jaxpr = jax.make_jaxpr(grad_fn)(*args)
  conv_dtypes = collections.Counter(
    eqn.invars[0].aval.dtype.name for eqn in _eqns(jaxpr.jaxpr) if eqn.primitive.name == "conv_general_dilated"
  )
  assert conv_dtypes and set(conv_dtypes) == {"bfloat16"}, conv_dtypes  # every conv, forward and backward


def _eqns(jaxpr):
  for eqn in jaxpr.eqns:
    yield eqn
    for sub in jax.extend.core.jaxprs_in_params(eqn.params):
      yield from _eqns(sub)
