"""bgad_jax.training.state: per-level flows and Adam states, static flow/optimiser."""

import jax
import pytest
import numpy as np

from bgad_jax.training.state import FlowTrainState
from configs import test as test_config


def test_levels_have_independent_adam_states():
  config = test_config.get_config()
  state = FlowTrainState.create(config, (5, 8), jax.random.key(0))
  assert set(state.opt_state) == {'level_0', 'level_1'}
  assert set(state.params) == set(state.constants) == {'level_0', 'level_1'}
  rotation = state.constants['level_1']['blocks_0']['rotation']
  assert rotation.shape == (8, 8)
  assert state.num_levels == 2


def test_level_round_trip_and_static_fields_stay_out_of_the_arrays():
  config = test_config.get_config()
  state = FlowTrainState.create(config, (5, 8), jax.random.key(0))
  level = state.level(1)
  assert level.flow is state.flow and level.tx is state.tx
  assert level.condition.dim == config.flow.pos_embed_dim
  bumped = level.replace(params=jax.tree.map(lambda p: p + 1.0, level.params))
  updated = state.with_level(1, bumped)
  assert jax.tree.leaves(updated.params['level_0']) == jax.tree.leaves(state.params['level_0'])
  for new, old in zip(jax.tree.leaves(updated.params['level_1']),
                      jax.tree.leaves(state.params['level_1'])):
    np.testing.assert_allclose(new - old, 1.0, rtol=1e-6)
  # Only arrays are pytree leaves (what checkpoints hold): no module, no optimiser.
  assert all(hasattr(leaf, 'shape') for leaf in jax.tree.leaves(state))


def test_with_flows_starts_from_given_flows_with_a_fresh_optimiser():
  config = test_config.get_config()
  state = FlowTrainState.create(config, (5, 8), jax.random.key(0))
  other = FlowTrainState.create(config, (5, 8), jax.random.key(1))
  trained = state.replace(opt_state=jax.tree.map(lambda x: x + 1, state.opt_state))
  given = [dict(params=other.params[k], constants=other.constants[k]) for k in other.params]
  started = trained.with_flows(given)
  for k in ('level_0', 'level_1'):
    for a, b in zip(jax.tree.leaves((started.params[k], started.constants[k])),
                    jax.tree.leaves((other.params[k], other.constants[k]))):
      np.testing.assert_array_equal(a, b)
  for a, b in zip(jax.tree.leaves(started.opt_state), jax.tree.leaves(state.opt_state)):
    np.testing.assert_array_equal(a, b)   # fresh: zero moments and count
  with pytest.raises(ValueError, match='level 1'):
    state.with_flows([given[0], given[0]])   # level 1 has 8 channels, not 5
  with pytest.raises(ValueError, match='1 flows given for 2 levels'):
    state.with_flows(given[:1])
