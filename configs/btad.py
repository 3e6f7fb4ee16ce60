"""BTAD with the published settings: configs/btad.py:<class> or :all.

Needs data.root (the folder with btad.zip or its BTech_Dataset_transformed folder) the
first time, or a dataset built by `python -m tfds_mvtec.build --dataset btad` into
data.tfds_dir. The paper's backbone needs its weights file
(--config.backbone.weights=PATH); --config.backbone.name=efficientnet_lite0 runs
offline.
"""

from configs import common


def get_config(arg='01'):
  """The class ``arg`` (checked with the rest of the config when a run starts)."""
  return common.benchmark_dataset_config('btad', arg or '01', inp_size=256)
