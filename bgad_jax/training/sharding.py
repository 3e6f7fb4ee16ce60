"""The device mesh and host -> device batches (data parallelism over local devices)."""

from typing import Iterator, Tuple

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P


def make_mesh() -> Mesh:
  """A 1-D data-parallel mesh over all local devices, axis 'data'."""
  return Mesh(np.array(jax.devices()), ('data',))


def replicated(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, P())


def sharded_batches(array: np.ndarray, batch_size: int,
                    mesh: Mesh) -> Iterator[Tuple[jax.Array, int]]:
  """Yields (device batch sharded over ``mesh``, number of real rows).

  The batch size is rounded down to a multiple of the device count (at least
  one row per device) and the last batch is padded by repeating its last row,
  so that every call sees the same static shape.
  """
  devices = mesh.devices.size
  batch_size = max(devices, batch_size - batch_size % devices)
  sharding = NamedSharding(mesh, P('data'))
  for start in range(0, len(array), batch_size):
    batch = array[start:start + batch_size]
    real = len(batch)
    if real < batch_size:
      batch = np.concatenate([batch, np.repeat(batch[-1:], batch_size - real, axis=0)])
    yield jax.device_put(batch, sharding), real
