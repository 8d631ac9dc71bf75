"""Device mesh, batch and state shardings, and host batches made global.

One mesh over all devices with a `data` axis; batches are split along it (`P('data')`), the train state is
replicated. Multi-host: every process hands in only its own share of the global batch and
`jax.make_array_from_process_local_data` stitches the global array without any cross-host copy.
"""

from __future__ import annotations

from typing import Any

import jax
import numpy as np
from jax.sharding import AxisType, Mesh, NamedSharding, PartitionSpec as P


def make_mesh(devices: list | None = None) -> Mesh:
  """A 1-D mesh named `data` over `devices` (default: every device of every process)."""
  devices = jax.devices() if devices is None else list(devices)
  return Mesh(np.asarray(devices), ("data",), axis_types=(AxisType.Auto,))


def batch_sharding(mesh: Mesh) -> NamedSharding:
  """Leading (batch) axis split over `data`, the rest whole."""
  return NamedSharding(mesh, P("data"))


def replicated(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, P())


def check_batch_size(global_batch: int, mesh: Mesh, what: str = "config.batch_size") -> None:
  """The global batch must split evenly over devices and processes; one clear line when it does not."""
  devices, processes = mesh.devices.size, jax.process_count()
  if global_batch <= 0 or global_batch % devices:
    raise ValueError(
        f"{what}={global_batch} is not divisible by the {devices} devices of the mesh; use a multiple of "
        f"{devices} (e.g. {max(devices, global_batch // devices * devices or devices)}).")
  if global_batch % processes:
    raise ValueError(f"{what}={global_batch} is not divisible by the {processes} processes.")


def to_global(batch: dict[str, np.ndarray], mesh: Mesh) -> dict[str, jax.Array]:
  """Per-process numpy batch (leading axis = global batch / process count) -> global arrays sharded on `data`."""
  sharding = batch_sharding(mesh)
  return {k: jax.make_array_from_process_local_data(sharding, np.asarray(v)) for k, v in batch.items()}


def state_shardings(abstract_state: Any, mesh: Mesh) -> Any:
  """Sharding for every leaf of the train state: replicated over the `data` axis."""
  rep = replicated(mesh)
  return jax.tree.map(lambda _: rep, abstract_state)
