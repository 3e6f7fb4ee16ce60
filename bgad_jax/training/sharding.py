"""The device mesh and host <-> device arrays, for one process or several.

Every process of a run (`jax.distributed`, see `bgad_jax.distributed`) sees
the same mesh: all devices of all processes on one axis, 'data'. Work over
images is split in process shares (`process_share`): each process prepares
only its rows, `local_batches` assembles them into global batches sharded
over the mesh, and `gather_rows` hands every process all rows back. Alone,
a process's share is every row and gathering changes nothing.
"""

from typing import Any, Callable, Iterator, List, Sequence, Tuple

import jax
import numpy as np
from jax.experimental import multihost_utils
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P


AXIS = 'data'   # the mesh's one axis: images and vectors are split along it


def make_mesh() -> Mesh:
  """A 1-D data-parallel mesh over the devices of every process, axis 'data'."""
  return Mesh(np.array(jax.devices()), (AXIS,))


def replicated(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, P())


def replicate(tree: Any, mesh: Mesh) -> Any:
  """A tree of arrays replicated on every device of ``mesh`` (the same on every process).

  Leaves already placed so are kept; the others go through host memory,
  because `jax.device_put` of a single-device jax.Array onto devices of
  several processes builds an array that Orbax cannot save (jax 0.10).
  """
  sharding = replicated(mesh)
  def one(x):
    if isinstance(x, jax.Array) and x.sharding == sharding:
      return x
    return jax.device_put(np.asarray(x), sharding)
  return jax.tree.map(one, tree)


def is_main_process() -> bool:
  """Whether this process writes the run's files (process 0; the only one when alone)."""
  return jax.process_index() == 0


def sync(name: str) -> None:
  """Waits until every process reaches the point called ``name`` (no-op when alone)."""
  if jax.process_count() > 1:
    multihost_utils.sync_global_devices(name)


def process_share(num_rows: int) -> np.ndarray:
  """This process's rows of ``num_rows``: a contiguous block, equal in size for all processes.

  Blocks are ceil(num_rows / processes) long; a block that runs past the end
  repeats the last row (its copies are dropped again by `gather_rows`).
  Returns int64 [block] row indices.
  """
  size = -(-num_rows // jax.process_count()) if num_rows else 0
  start = jax.process_index() * size
  return np.minimum(np.arange(start, start + size), max(num_rows - 1, 0))


def gather_rows(local: np.ndarray, num_rows: int) -> np.ndarray:
  """Every process's `process_share` rows, in order: [num_rows, ...] on every process."""
  if jax.process_count() == 1:
    return local[:num_rows]
  return np.asarray(multihost_utils.process_allgather(local, tiled=True))[:num_rows]


def to_host(tree: Any) -> Any:
  """numpy copies of a tree of (replicated or local) arrays, on every process."""
  def one(x):
    if isinstance(x, jax.Array) and not (x.is_fully_addressable or x.is_fully_replicated):
      return np.asarray(multihost_utils.process_allgather(x, tiled=True))
    return np.asarray(x)
  return jax.tree.map(one, tree)


def local_rows(x: jax.Array) -> np.ndarray:
  """This process's rows of an array sharded along its first axis, in order."""
  if x.is_fully_addressable:
    return np.asarray(x)
  if x.is_fully_replicated:   # every process holds the whole batch: take its own part
    part = x.shape[0] // jax.process_count()
    return np.asarray(x)[jax.process_index() * part:(jax.process_index() + 1) * part]
  shards = {}
  for shard in x.addressable_shards:
    shards.setdefault(shard.index[0].start or 0, np.asarray(shard.data))
  return np.concatenate([shards[start] for start in sorted(shards)])


def local_batches(local: np.ndarray, batch_size: int,
                  mesh: Mesh) -> Iterator[Tuple[jax.Array, int]]:
  """Yields (global batch sharded over ``mesh``, real rows of this process's part).

  Args:
    local: this process's rows (`process_share`; all rows when alone). Every
      process must pass the same number of rows.
    batch_size: rows per global batch, rounded down to a multiple of the
      device count (at least one row per device).
    mesh: the mesh; each process's part of a batch lands on its own devices.

  The last batch is padded by repeating its last row, so that every call sees
  the same static shape; take `local_rows(output)[:real]`.
  """
  devices = mesh.devices.size
  batch_size = max(devices, batch_size - batch_size % devices)
  part = batch_size // jax.process_count()
  sharding = NamedSharding(mesh, P(AXIS))
  for start in range(0, len(local), part):
    batch = local[start:start + part]
    real = len(batch)
    if real < part:
      batch = np.concatenate([batch, np.repeat(batch[-1:], part - real, axis=0)])
    yield jax.make_array_from_process_local_data(sharding, batch), real


def map_local_rows(fn: Callable[[jax.Array], Sequence[jax.Array]], local: np.ndarray,
                   batch_size: int, mesh: Mesh) -> List[np.ndarray]:
  """``fn`` over this process's rows in global batches (`local_batches`).

  Args:
    fn: jitted; a [B, ...] batch -> a sequence of [B, ...] outputs.

  Returns:
    Each output of ``fn`` for this process's rows, concatenated (host memory).
  """
  outputs = [[local_rows(out)[:real] for out in fn(batch)]
             for batch, real in local_batches(local, batch_size, mesh)]
  return [np.concatenate(parts) for parts in zip(*outputs)]
