"""Tiny settings for tests."""

from configs import demo


def get_config(arg=None):
  config = demo.get_config(arg)
  config.flow.coupling_layers = 2
  config.flow.pos_embed_dim = 16
  config.train.num_vectors = 256
  config.flow_check.feature_dims = (5, 8)
  config.flow_check.feature_sizes = (8, 4)
  config.flow_check.images = 8
  config.flow_check.steps = 30
  return config
