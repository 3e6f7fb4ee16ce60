"""Which vectors form each optimiser step: the host-side plan of a sub-epoch.

As in the reference, the images are shuffled into batches (the last partial
batch dropped); per level, each batch's vectors are shuffled and cut into
chunks of ``num_vectors`` (the remainder dropped); each chunk is one step.
Shuffles are drawn from ``(seed, epoch, sub_epoch, stream)``, so a run resumed
from a meta-epoch checkpoint replays exactly the same steps.
"""

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
