"""MVTec AD with the published settings: configs/mvtec.py:<category> or :all.

Needs data.root (the folder with mvtec_anomaly_detection.tar.xz or its extracted
categories) the first time, or a dataset built by `python -m tfds_mvtec.build`
into data.tfds_dir. The paper's backbone needs its weights file:
--config.backbone.weights=PATH.
"""

from configs import common


def get_config(arg='carpet'):
  """The class ``arg`` (checked with the rest of the config when a run starts).

  The reference trains the flows on every normal image and predict then
  calibrates on them; --config.data.val_fraction=0.1 holds out 10% instead.
  """
  return common.benchmark_dataset_config('mvtec', arg or 'carpet')
