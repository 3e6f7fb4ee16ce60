"""MVTec LOCO AD with the published settings: configs/loco.py:<class> or :all.

Needs data.root (the folder with mvtec_loco_anomaly_detection.tar.xz) the first time, or
a dataset built by `python -m tfds_mvtec.build --dataset loco` into data.tfds_dir. The
paper's backbone needs its weights file (--config.backbone.weights=PATH);
--config.backbone.name=efficientnet_lite0 runs offline.
"""

from configs import common


def get_config(arg='pushpins'):
  """The class ``arg`` (checked with the rest of the config when a run starts)."""
  return common.benchmark_dataset_config('loco', arg or 'pushpins', inp_size=256)
