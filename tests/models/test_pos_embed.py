"""bgad_jax.models.pos_embed: known values of the reference's channel layout."""

import math

import numpy as np
import pytest

import jax
import jax.numpy as jnp

from bgad_jax.models.pos_embed import (PositionalCondition, condition_tables, flow_condition,
                                       positional_encoding_2d)


def test_known_values():
  pe = np.asarray(positional_encoding_2d(128, 6, 9))   # [h, w, D]
  assert pe.shape == (6, 9, 128)
  freq_1 = 1e4 ** (-2 / 64)   # frequency of channel pair k = 1 in a half of 64
  # (row, col, channel) -> value; columns in channels 0..63, rows in 64..127.
  known = {
      (0, 0, 0): 0.0, (0, 0, 1): 1.0, (5, 1, 0): math.sin(1.0),
      (2, 3, 1): math.cos(3.0), (4, 7, 2): math.sin(7 * freq_1),
      (4, 7, 3): math.cos(7 * freq_1), (2, 8, 64): math.sin(2.0),
      (3, 0, 65): math.cos(3.0), (5, 4, 66): math.sin(5 * freq_1),
      (1, 2, 127): math.cos(1 * 1e4 ** (-62 / 64)),
      (5, 8, 62): math.sin(8 * 1e4 ** (-62 / 64)),
  }
  for (row, col, channel), value in known.items():
    assert pe[row, col, channel] == pytest.approx(value, abs=1e-6), (row, col, channel)


def test_halves_depend_on_one_axis_only():
  pe = np.asarray(positional_encoding_2d(16, 5, 7))
  np.testing.assert_array_equal(pe[:, :, :8], np.broadcast_to(pe[:1, :, :8], pe[:, :, :8].shape))
  np.testing.assert_array_equal(pe[:, :, 8:], np.broadcast_to(pe[:, :1, 8:], pe[:, :, 8:].shape))


def test_rejects_dim_not_multiple_of_four():
  with pytest.raises(ValueError, match='multiple of 4'):
    positional_encoding_2d(126, 2, 2)


@pytest.mark.parametrize('factored', [True, False])
def test_flow_condition_gives_each_vector_its_positional_code(factored):
  # A 3 x 5 level: position p = r * 5 + c must get concat(col_code[c], row_code[r]).
  encoding = np.asarray(positional_encoding_2d(16, 3, 5)).reshape(15, 16)
  tables = condition_tables(16, 3, 5)
  assert tables[0].shape == (5, 8) and tables[1].shape == (3, 8)
  positions = jnp.asarray([14, 0, 7, 5, 4, 7], jnp.int32)
  condition = flow_condition(tables, positions, factored)
  if factored:
    rows = np.concatenate([np.asarray(t)[np.asarray(i)]
                           for t, i in zip(condition['cond'], condition['cond_index'])], -1)
  else:
    assert condition['cond_index'] is None
    rows = np.asarray(condition['cond'])
  np.testing.assert_array_equal(rows, encoding[np.asarray(positions)])


@pytest.mark.parametrize('factored', [True, False])
def test_image_kwargs_repeat_one_image_of_positions(factored):
  condition = PositionalCondition(dim=16, factored=factored)
  tables = condition.tables(3, 5)
  expected = condition.flow_kwargs(tables, jnp.tile(jnp.arange(15), 2))
  got = condition.image_kwargs(tables, 2)
  for want, have in zip(jax.tree.leaves(expected), jax.tree.leaves(got)):
    np.testing.assert_array_equal(np.asarray(have), np.asarray(want))
  # A symbolic number of images (an exported batch) traces.
  images, = jax.export.symbolic_shape('images')
  shapes = jax.eval_shape(lambda x: condition.image_kwargs(tables, x.shape[0]),
                          jax.ShapeDtypeStruct((images,), jnp.float32))
  assert all(leaf.shape[0] in (5, 3, 15 * images) for leaf in jax.tree.leaves(shapes))


def test_unconditional_flow_gets_no_condition():
  condition = PositionalCondition(dim=16, conditional=False)
  assert condition.flow_kwargs(condition.tables(3, 5), jnp.arange(4)) == {}
  hash(condition)   # a static field of the train state
