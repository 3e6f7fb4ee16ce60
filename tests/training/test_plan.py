"""bgad_jax.training.plan: image batches and vector chunks, reproducible from the seed."""

import numpy as np

from bgad_jax.training import plan


def test_batches_and_chunks():
  batches = plan.image_batches(10, 4, np.random.default_rng(0))
  assert len(batches) == 2 and len(set(np.concatenate(batches))) == 8   # last batch dropped
  chunks, owners = plan.chunk_plan(batches, positions=6, num_vectors=5,
                                   rng=np.random.default_rng(1))
  assert chunks.shape == (8, 5) and owners.tolist() == [0] * 4 + [1] * 4   # 24 // 5 per batch
  for chunk, owner in zip(chunks, owners):
    assert set(chunk // 6) <= set(batches[owner])   # a chunk never mixes batches
  again, _ = plan.chunk_plan(batches, 6, 5, np.random.default_rng(1))
  np.testing.assert_array_equal(chunks, again)


def test_plan_rng_streams_are_independent_and_reproducible():
  a = plan.plan_rng(0, 1, 2, 3).permutation(50)
  np.testing.assert_array_equal(a, plan.plan_rng(0, 1, 2, 3).permutation(50))
  assert not np.array_equal(a, plan.plan_rng(0, 1, 2, 4).permutation(50))
