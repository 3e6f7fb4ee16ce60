"""VisA with the published settings: configs/visa.py:<class> or :all.

Needs data.root (the folder with VisA_20220922.tar, from
github.com/amazon-science/spot-diff) the first time, or a dataset built by
`python -m tfds_mvtec.build --dataset visa` into data.tfds_dir. The paper's
backbone needs its weights file (--config.backbone.weights=PATH);
--config.backbone.name=efficientnet_lite0 runs offline.
"""

from configs import common


def get_config(arg='candle'):
  """The class ``arg`` (checked with the rest of the config when a run starts)."""
  return common.benchmark_dataset_config('visa', arg or 'candle', inp_size=256)
