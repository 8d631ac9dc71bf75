"""Device mesh from a config string, batch and state shardings, host batches made global, multi-host start-up.

`config.mesh` names the mesh: `data=-1` (pure data parallelism: batch split, state replicated) or
`data=-1,fsdp=2` (the batch split over both axes; every state leaf with at least `config.fsdp_min_size`
elements sharded over `fsdp` along its largest dimension that `fsdp` divides: ZeRO-3 / FSDP, so params, Adam
moments and EMA of big kernels take 1/fsdp of the memory per device and are all-gathered inside the step).
`-1` means "all remaining devices". `fsdp` is the inner (fastest-varying) axis, so an FSDP group lies within a
host when the group fits on one.

Multi-host: every process hands in only its own share of the global batch and
`jax.make_array_from_process_local_data` stitches the global array without any cross-host copy.

Loops that dispatch step after step (training, evaluation) stay one step ahead of the devices (`RunAhead`).
"""

from __future__ import annotations

import collections
import math
import os
from typing import Any

import jax
import numpy as np
from jax.sharding import AxisType, Mesh, NamedSharding, PartitionSpec as P

MESH_AXES = ("data", "fsdp")  # outer to inner; both split the batch
DEFAULT_MESH = "data=-1"
FSDP_MIN_SIZE = 1 << 16  # elements: smaller leaves (biases, norms, small kernels) stay replicated


def parse_mesh(spec: str) -> dict[str, int]:
  """'data=-1,fsdp=2' -> {'data': -1, 'fsdp': 2} (in MESH_AXES order); one ValueError line when malformed."""
  sizes = {}
  for part in str(spec).replace(" ", "").split(","):
    name, sep, value = part.partition("=")
    if not sep or name not in MESH_AXES or name in sizes:
      raise ValueError(
        f"config.mesh={spec!r}: expected comma-separated axis=size with axes from {MESH_AXES}, "
        f"each once (e.g. 'data=-1' or 'data=-1,fsdp=2')"
      )
    try:
      size = int(value)
    except ValueError:
      raise ValueError(f"config.mesh={spec!r}: size of {name!r} must be an integer; got {value!r}") from None
    if size == 0 or size < -1:
      raise ValueError(f"config.mesh={spec!r}: size of {name!r} must be positive or -1 (the rest); got {size}")
    sizes[name] = size
  if list(sizes.values()).count(-1) > 1:
    raise ValueError(f"config.mesh={spec!r}: at most one axis may be -1")
  return {name: sizes[name] for name in MESH_AXES if name in sizes}


def mesh_shape(spec: str, num_devices: int) -> dict[str, int]:
  """Axis sizes of `spec` over `num_devices`, the -1 axis resolved; ValueError when they do not multiply out."""
  sizes = parse_mesh(spec)
  fixed = math.prod(v for v in sizes.values() if v != -1)
  if -1 in sizes.values():
    if num_devices % fixed:
      raise ValueError(f"config.mesh={spec!r}: {num_devices} devices do not split into axes of size {fixed}")
    sizes = {k: (num_devices // fixed if v == -1 else v) for k, v in sizes.items()}
  elif fixed != num_devices:
    raise ValueError(f"config.mesh={spec!r} has {fixed} devices in all, but there are {num_devices}")
  return sizes


def make_mesh(devices: list | None = None, spec: str = DEFAULT_MESH) -> Mesh:
  """The mesh `spec` over `devices` (default: every device of every process, in process order)."""
  devices = jax.devices() if devices is None else list(devices)
  sizes = mesh_shape(spec, len(devices))
  grid = np.asarray(devices, dtype=object).reshape(tuple(sizes.values()))
  return Mesh(grid, tuple(sizes), axis_types=(AxisType.Auto,) * len(sizes))


def batch_axes(mesh: Mesh) -> tuple[str, ...]:
  """The mesh axes the batch is split over: every axis of MESH_AXES the mesh has."""
  return tuple(a for a in MESH_AXES if a in mesh.axis_names)


def batch_sharding(mesh: Mesh) -> NamedSharding:
  """Leading (batch) axis split over `data` (and `fsdp`), the rest whole."""
  axes = batch_axes(mesh)
  return NamedSharding(mesh, P(axes if len(axes) > 1 else axes[0]))


def replicated(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, P())


def check_batch_size(global_batch: int, mesh: Mesh, what: str = "config.batch_size") -> None:
  """The global batch must split evenly over devices and processes; one clear line when it does not."""
  devices, processes = mesh.devices.size, jax.process_count()
  if global_batch <= 0 or global_batch % devices:
    raise ValueError(
      f"{what}={global_batch} is not divisible by the {devices} devices of the mesh; use a multiple of "
      f"{devices} (e.g. {max(devices, global_batch // devices * devices or devices)})."
    )
  if global_batch % processes:
    raise ValueError(f"{what}={global_batch} is not divisible by the {processes} processes.")


def to_global(batch: dict[str, np.ndarray], mesh: Mesh) -> dict[str, jax.Array]:
  """Per-process numpy batch (leading axis = global batch / process count) -> global arrays split on the batch
  axes of the mesh."""
  sharding = batch_sharding(mesh)
  return {k: jax.make_array_from_process_local_data(sharding, np.asarray(v)) for k, v in batch.items()}


def fsdp_spec(shape: tuple[int, ...], fsdp: int, min_size: int = FSDP_MIN_SIZE) -> P:
  """The partition of one state leaf: over `fsdp` along its largest dimension divisible by `fsdp` (the last
  such on ties, i.e. output channels of an HWIO kernel) when it has >= min_size elements, else replicated."""
  if fsdp <= 1 or math.prod(shape) < min_size:
    return P()
  dims = [i for i, n in enumerate(shape) if n % fsdp == 0]
  if not dims:
    return P()
  dim = max(dims, key=lambda i: (shape[i], i))
  return P(*([None] * dim), "fsdp")


def state_shardings(abstract_state: Any, mesh: Mesh, min_size: int = FSDP_MIN_SIZE) -> Any:
  """Sharding for every leaf of the train state: replicated, except large leaves over `fsdp` (see fsdp_spec).

  The rule looks at shapes only, so a kernel, its Adam moments and its EMA get the same sharding.
  """
  fsdp = mesh.shape.get("fsdp", 1)
  return jax.tree.map(lambda x: NamedSharding(mesh, fsdp_spec(tuple(x.shape), fsdp, min_size)), abstract_state)


def gather(x: Any) -> Any:
  """A global array (or a pytree of them) as numpy arrays on every process's host (an all-gather across hosts)."""
  if jax.process_count() == 1:
    return jax.tree.map(np.asarray, jax.device_get(x))
  from jax.experimental import multihost_utils  # multi-host only

  return jax.tree.map(np.asarray, multihost_utils.process_allgather(x, tiled=True))


class RunAhead:
  """Keeps a loop at most `depth` dispatched steps ahead of the devices.

  `after(x)`, called with an output of the step just dispatched, waits until the output given `depth` calls
  earlier is computed. Without it a loop dispatches until its next host read (the log step), and XLA's CPU client
  deadlocks under such a queue: it lets at most 32 unfinished programs wait per device, and its launch threads
  take those slots in no fixed order, so later programs (waiting on an earlier one's outputs) can hold every slot
  of one device while the earlier program, already in an all-reduce on the other devices, waits for a slot on it.
  On an accelerator the wait costs nothing: the next step is already queued behind the one waited for.
  """

  def __init__(self, depth: int = 1):
    if depth < 1:
      raise ValueError(f"depth must be at least 1, got {depth}")
    self.depth = depth
    self._outputs: collections.deque = collections.deque()

  def after(self, output: Any) -> None:
    self._outputs.append(output)
    while len(self._outputs) > self.depth:
      jax.block_until_ready(self._outputs.popleft())


def initialize_distributed() -> None:
  """`jax.distributed.initialize()`, with the process set taken from JAX_COORDINATOR_ADDRESS, JAX_NUM_PROCESSES
  and JAX_PROCESS_ID when they are set (launch/local.sh), else detected from the cluster (SLURM, ...)."""
  env = os.environ
  if env.get("JAX_COORDINATOR_ADDRESS") and env.get("JAX_NUM_PROCESSES") and env.get("JAX_PROCESS_ID"):
    try:
      num, pid = int(env["JAX_NUM_PROCESSES"]), int(env["JAX_PROCESS_ID"])
    except ValueError:
      raise ValueError(
        f"JAX_NUM_PROCESSES={env['JAX_NUM_PROCESSES']!r} and JAX_PROCESS_ID={env['JAX_PROCESS_ID']!r} must be integers"
      ) from None
    jax.distributed.initialize(env["JAX_COORDINATOR_ADDRESS"], num_processes=num, process_id=pid)
  else:
    jax.distributed.initialize()
