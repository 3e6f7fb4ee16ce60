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


def test_reference_permutation_gives_the_reference_loop_our_chunks():
  positions, num_vectors = 6, 5
  batches = plan.image_batches(10, 4, np.random.default_rng(0))
  chunks, owners = plan.chunk_plan(batches, positions, num_vectors, np.random.default_rng(1))
  features = np.arange(10 * positions) * 10   # vector v's value: 10 v
  for b, batch in enumerate(batches):
    mine = chunks[owners == b]
    perm = plan.reference_permutation(batch, mine, positions)
    assert sorted(perm.tolist()) == list(range(len(batch) * positions))   # a permutation
    # The reference's rows: the batch's images in order, each image's positions in order.
    rows = features.reshape(10, positions)[batch].reshape(-1)
    for k, chunk in enumerate(mine):
      np.testing.assert_array_equal(rows[perm[k * num_vectors:(k + 1) * num_vectors]],
                                    features[chunk])


def test_untrained_level_notes_name_exactly_the_levels_the_plan_gives_no_chunk():
  # 128-px input, strides 4 / 8 / 16: 32 x 32, 16 x 16 and 8 x 8 vectors per image.
  positions = [1024, 256, 64]
  batches = plan.image_batches(80, 32, np.random.default_rng(0))
  for num_vectors, untrained in ((4096, [2]), (1024, []), (16384, [1, 2]), (65536, [0, 1, 2])):
    notes = plan.untrained_level_notes(positions, 80, 32, num_vectors)
    assert [int(note.split()[1]) for note in notes] == untrained
    for level, p in enumerate(positions):
      chunks, _ = plan.chunk_plan(batches, p, num_vectors, np.random.default_rng(level))
      assert (len(chunks) == 0) == (level in untrained)
  (note,) = plan.untrained_level_notes(positions, 80, 32, 4096)
  assert '2048 per batch of 32' in note and 'num_vectors=2048' in note
  # On 8 devices the suggestion divides among them: 36 vectors -> 32.
  (note,) = plan.untrained_level_notes([144, 36, 9], 10, 4, 64, num_devices=8)
  assert '36 per batch of 4' in note
  assert 'num_vectors=32 or less (a multiple of the 8 devices)' in note
  # Fewer vectors than devices: no chunk size fits, only more vectors per batch.
  (note,) = plan.untrained_level_notes([144, 36, 1], 10, 4, 64, num_devices=8)
  assert 'num_vectors=' not in note.split('Set ')[1]
  assert note.endswith('Set a larger train.batch_size or data.inp_size (no multiple of the 8 '
                       'devices fits).')


def test_untrained_level_notes_fewer_images_than_a_batch():
  (note,) = plan.untrained_level_notes([1024, 256, 64], 20, 32, 1024)
  assert plan.image_batches(20, 32, np.random.default_rng(0)) == []
  assert '20 normal training images' in note and 'batch_size=20' in note
