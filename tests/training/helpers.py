"""A tiny level of training vectors shared by the training tests."""

import jax
import numpy as np

from bgad_jax.training.sharding import make_mesh
from bgad_jax.training.state import FlowTrainState
from bgad_jax.training.training_set import level_data
from configs import test as test_config


def tiny_level(**flow_overrides):
  """(config, mesh, data, state): 4 images of 4x4 five-channel features (64 vectors);
  the last image's top half is abnormal; chunks of 16 vectors."""
  config = test_config.get_config()
  config.train.num_vectors = 16
  config.flow.update(flow_overrides)
  mesh = make_mesh()
  rng = np.random.default_rng(0)
  feats = rng.normal(size=(4, 4, 4, 5)).astype(np.float32)
  masks = np.zeros((4, 8, 8), np.uint8)
  masks[-1, :4] = 1
  data = level_data(feats, masks, config.flow.pos_embed_dim, mesh)
  state = FlowTrainState.create(config, (5,), jax.random.key(0))
  return config, mesh, data, state
