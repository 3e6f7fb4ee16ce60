"""MVTec AD 2 with the published settings: configs/mvtec_ad2.py:<class> or :all.

Needs data.root (the folder with the extracted MVTec AD 2 class folders) the first time,
or a dataset built by `python -m tfds_mvtec.build --dataset mvtec_ad2` into
data.tfds_dir. The paper's backbone needs its weights file
(--config.backbone.weights=PATH); --config.backbone.name=efficientnet_lite0 runs
offline.
"""

from configs import common


def get_config(arg='can'):
  """The class ``arg`` (checked with the rest of the config when a run starts)."""
  return common.benchmark_dataset_config('mvtec_ad2', arg or 'can', inp_size=256)
