"""Lockstep: bgad_jax's training loop against the reference's, step by step.

Both sides start from the same FrEIA flows (converted), train on the same
vectors with bgad_jax's plan (its image batches, and its chunks handed to the
reference loop as its ``torch.randperm``), the reference's learning rates and
one torch Adam over all levels. bgad_jax runs `loop.train_meta_epoch`, i.e.
`step.train_chunks`, the step that training runs. Every step's loss must agree.
"""

import jax
import numpy as np
import pytest
import torch

from bgad_jax.models.pos_embed import condition_tables, flow_condition
from bgad_jax.models.weight_conversion import flow_variables_from_freia
from bgad_jax.training import loop
from bgad_jax.training.plan import sub_epoch_plan
from bgad_jax.training.sharding import make_mesh
from bgad_jax.training.state import FlowTrainState
from bgad_jax.training.step import LossSettings
from bgad_jax.training.training_set import level_data
from configs import test as test_config
from references import freia_reference
from tests.training.test_loop import _CachedOnly

SIDES = (8, 4)          # two levels: 8 x 8 and 4 x 4 vectors per image
CHANNELS = (5, 7)
NUM_NORMAL, NUM_KNOWN = 4, 2


def _setup(supervised: bool, focal: bool):
  config = test_config.get_config()
  config.flow.coupling_layers = 4
  config.train.update(meta_epochs=3, sub_epochs=2, batch_size=2, num_vectors=32, lr=2e-3,
                      lr_warmup='reference')
  config.loss.focal_weighting = focal
  rng = np.random.default_rng(0)
  num_images = NUM_NORMAL + (NUM_KNOWN if supervised else 0)
  masks = np.zeros((num_images, 16, 16), np.uint8)
  masks[NUM_NORMAL:, 3:11, 5:13] = 1   # the known anomalies' defects
  features = []
  for side, channels in zip(SIDES, CHANNELS):
    # Spread scales put lp on both sides of the focal weights' thresholds.
    scale = rng.uniform(0.5, 3.0, (num_images, side, side, 1))
    level = rng.normal(size=(num_images, side, side, channels)) * scale
    level[NUM_NORMAL:] += 2.0 * (masks[NUM_NORMAL:, ::16 // side, ::16 // side, None] > 0)
    features.append(level.astype(np.float32))
  return config, features, masks


def _ours(config, features, masks, flows):
  mesh = make_mesh()
  levels = [level_data(f, masks, config.flow.pos_embed_dim, mesh) for f in features]
  training_set = _CachedOnly(levels, NUM_NORMAL, len(masks), mesh)
  state = FlowTrainState.create(config, CHANNELS, jax.random.key(0)).with_flows(
      [flow_variables_from_freia(flow.state_dict()) for flow in flows])
  losses = {level: [] for level in range(len(levels))}

  def record(sub_epoch, level, metrics):
    losses[level] += metrics['loss'][~metrics['skipped']].tolist()

  for _ in range(config.train.meta_epochs):
    state, _ = loop.train_meta_epoch(state, training_set, config.train,
                                     LossSettings.from_config(config.loss), config.seed,
                                     on_level=record)
  return losses, state


def _reference(config, features, masks, flows):
  positions = [side * side for side in SIDES]
  optimizer = torch.optim.Adam([p for f in flows for p in f.parameters() if p.requires_grad],
                               lr=config.train.lr)
  torch_features = [torch.from_numpy(f.reshape(len(f), -1, f.shape[-1])) for f in features]
  torch_masks = [torch.from_numpy(masks[:, ::16 // side, ::16 // side].reshape(len(masks), -1)
                                  .astype(np.float32)) for side in SIDES]
  conditions = [torch.from_numpy(np.array(flow_condition(
      condition_tables(config.flow.pos_embed_dim, side, side), np.arange(side * side),
      factored=False)['cond'])) for side in SIDES]
  losses = {level: [] for level in range(len(flows))}
  for epoch in range(config.train.meta_epochs):
    plans = []
    for sub_epoch in range(config.train.sub_epochs):
      plan = sub_epoch_plan(config.seed, epoch, sub_epoch,
                            NUM_NORMAL if epoch == 0 else len(masks),
                            config.train.batch_size, positions, config.train.num_vectors)
      plans.append((plan.batches, [plan.reference_permutations(level, p)
                                   for level, p in enumerate(positions)]))
    steps = freia_reference.reference_meta_epoch(flows, optimizer, epoch, plans, torch_features,
                                                 torch_masks, conditions, config.train,
                                                 config.loss)
    for level, value in steps:
      losses[level].append(value)
  return losses


# The supervised, focal case (every loss term) stays in the development tier;
# each case compiles its own steps (~4 s), so the other two run in the full suite.
@pytest.mark.parametrize('supervised,focal', [
    (True, True), pytest.param(True, False, marks=pytest.mark.slow),
    pytest.param(False, True, marks=pytest.mark.slow)])
def test_training_loop_steps_with_the_reference(supervised, focal):
  config, features, masks = _setup(supervised, focal)
  flows = [freia_reference.build_freia_flow(c, config.flow.coupling_layers,
                                            config.flow.clamp_alpha,
                                            cond_dim=config.flow.pos_embed_dim, seed=level)
           for level, c in enumerate(CHANNELS)]
  ours, state = _ours(config, features, masks, flows)   # converts the flows before training
  reference = _reference(config, features, masks, flows)
  # Level 0: 4 chunks per batch, level 1: 1; 2 batches per sub-epoch in the
  # first meta-epoch (normal images), then 3 (with the known anomalies).
  batches = 2 * 2 + 2 * 2 * (3 if supervised else 2)
  assert [len(reference[0]), len(reference[1])] == [4 * batches, batches]
  for level in (0, 1):
    assert len(ours[level]) == len(reference[level])
    np.testing.assert_allclose(ours[level], reference[level], rtol=1e-4, atol=1e-6,
                               err_msg=f'level {level}')
  # And so do the parameters after every step.
  for level, flow in enumerate(flows):
    expected = flow_variables_from_freia(flow.state_dict())['params']
    for a, b in zip(jax.tree.leaves(state.params[f'level_{level}']), jax.tree.leaves(expected)):
      np.testing.assert_allclose(np.asarray(a), b, rtol=1e-3, atol=1e-5)
