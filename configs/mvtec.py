"""MVTec AD with the published settings: configs/mvtec.py:<category> or :all.

Needs data.root (the folder with mvtec_anomaly_detection.tar.xz or its extracted
categories) the first time, or a dataset built by `python -m tfds_mvtec.build`
into data.tfds_dir. The paper's backbone needs its weights file:
--config.backbone.weights=PATH.
"""

from configs import common
from tfds_mvtec.layout import CATEGORIES


def get_config(arg='carpet'):
  category = arg or 'carpet'
  if category != 'all' and category not in CATEGORIES:
    raise ValueError(f'unknown MVTec category {category!r}; one of {CATEGORIES} or all')
  config = common.get_config()
  config.data.source = 'mvtec'
  config.data.category = category
  return config
