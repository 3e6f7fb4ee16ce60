"""Which vectors form each optimiser step: the host-side plan of a sub-epoch.

As in the reference, the images are shuffled into batches (the last partial
batch dropped); per level, each batch's vectors are shuffled and cut into
chunks of ``num_vectors`` (the remainder dropped); each chunk is one step.
Shuffles are drawn from ``(seed, epoch, sub_epoch, stream)``, so a run resumed
from a meta-epoch checkpoint replays exactly the same steps.
"""

import dataclasses
from typing import List, Sequence, Tuple

import numpy as np


def plan_rng(seed: int, epoch: int, sub_epoch: int, stream: int) -> np.random.Generator:
  """Independent, reproducible generator for one (epoch, sub_epoch, stream)."""
  return np.random.default_rng([seed, epoch, sub_epoch, stream])


def image_batches(num_images: int, batch_size: int, rng: np.random.Generator) -> List[np.ndarray]:
  """Shuffled image batches, the last partial batch dropped (the reference's loaders)."""
  order = rng.permutation(num_images)
  return [order[i:i + batch_size] for i in range(0, num_images - batch_size + 1, batch_size)]


def chunk_plan(batches: Sequence[np.ndarray], positions: int, num_vectors: int,
               rng: np.random.Generator) -> Tuple[np.ndarray, np.ndarray]:
  """Chunks of one level for a sub-epoch.

  Returns:
    (chunks int32 [n_chunks, num_vectors] of flat vector ids (image * positions
     + position), batch_of_chunk int32 [n_chunks]: index of each chunk's batch).
  """
  chunks, owners = [], []
  for b, images in enumerate(batches):
    vectors = (images[:, None] * positions + np.arange(positions)[None]).reshape(-1)
    vectors = vectors[rng.permutation(len(vectors))]
    for start in range(0, len(vectors) - num_vectors + 1, num_vectors):
      chunks.append(vectors[start:start + num_vectors])
      owners.append(b)
  if not chunks:
    return np.zeros((0, num_vectors), np.int32), np.zeros((0,), np.int32)
  return np.stack(chunks).astype(np.int32), np.array(owners, np.int32)


def untrained_level_notes(level_positions: Sequence[int], num_normal: int, batch_size: int,
                          num_vectors: int, num_devices: int = 1) -> List[str]:
  """Why a level's flow would get no optimiser step at all, one note per such level.

  The plan drops a partial image batch and a partial chunk, as the reference
  does: with fewer normal images than ``batch_size`` nothing trains, and a
  level whose batch holds fewer than ``num_vectors`` vectors (``batch_size *
  positions``) trains no step in any meta-epoch, its maps then those of the
  initial flow. The suggested ``num_vectors`` is a multiple of ``num_devices``
  (a step's vectors are split over them). Empty when every level trains.
  """
  if num_normal < batch_size:
    return [f'{num_normal} normal training images, fewer than train.batch_size={batch_size}: '
            'the last partial batch is dropped, so no flow trains. Set '
            f'--config.train.batch_size={num_normal} or less.']
  notes = []
  for level, positions in enumerate(level_positions):
    vectors = batch_size * positions
    if vectors < num_vectors:
      fits = vectors - vectors % num_devices   # the largest chunk the devices can split
      if fits:
        devices = f' (a multiple of the {num_devices} devices)' if num_devices > 1 else ''
        fix = (f'--config.train.num_vectors={fits} or less{devices}, or a larger '
               'train.batch_size or data.inp_size')
      else:
        fix = (f'a larger train.batch_size or data.inp_size (no multiple of the {num_devices} '
               'devices fits)')
      notes.append(f'level {level} has {positions} feature vectors per image, {vectors} per batch '
                   f'of {batch_size} images, fewer than train.num_vectors={num_vectors}: the '
                   f'remainder of a batch is dropped, so this flow never trains. Set {fix}.')
  return notes


@dataclasses.dataclass(frozen=True)
class SubEpochPlan:
  """Every optimiser step of one sub-epoch.

  batches: the image batches (`image_batches`); levels: per level, its
  (chunks, batch_of_chunk) of `chunk_plan`.
  """
  batches: List[np.ndarray]
  levels: List[Tuple[np.ndarray, np.ndarray]]

  def reference_permutations(self, level: int, positions: int) -> List[np.ndarray]:
    """`reference_permutation` of each batch at ``level`` (positions: its h * w)."""
    chunks, owners = self.levels[level]
    return [reference_permutation(batch, chunks[owners == b], positions)
            for b, batch in enumerate(self.batches)]


def sub_epoch_plan(seed: int, epoch: int, sub_epoch: int, num_images: int, batch_size: int,
                   level_positions: Sequence[int], num_vectors: int) -> SubEpochPlan:
  """The plan of sub-epoch ``sub_epoch`` of meta-epoch ``epoch`` over ``num_images``
  training images (stream 0 shuffles the images, stream l + 1 level l's vectors)."""
  batches = image_batches(num_images, batch_size, plan_rng(seed, epoch, sub_epoch, 0))
  return SubEpochPlan(batches, [
      chunk_plan(batches, positions, num_vectors, plan_rng(seed, epoch, sub_epoch, level + 1))
      for level, positions in enumerate(level_positions)])


def reference_permutation(batch: np.ndarray, chunks: np.ndarray, positions: int) -> np.ndarray:
  """This plan's chunks of one image batch as the reference loop draws them.

  The reference orders a batch's vectors image by image (as ``batch`` lists
  them), shuffles them with one ``torch.randperm(len(batch) * positions)`` and
  cuts consecutive chunks out of it. Handing it this permutation makes it
  train on exactly these chunks (benchmarks/lockstep.py).

  Args:
    batch: int [B] the batch's image ids.
    chunks: int [n, num_vectors] the batch's chunks of `chunk_plan` (flat ids
      image * positions + position), in order.
    positions: vectors per image (h * w).

  Returns:
    int64 [B * positions]: the chunks' batch-local ids (slot in ``batch`` *
    positions + position), then the vectors no chunk took.
  """
  slot = np.zeros(int(np.max(batch)) + 1, np.int64)
  slot[batch] = np.arange(len(batch))
  used = np.asarray(chunks, np.int64).reshape(-1)
  local = slot[used // positions] * positions + used % positions
  rest = np.setdiff1d(np.arange(len(batch) * positions), local)
  return np.concatenate([local, rest])
