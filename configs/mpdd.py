"""MPDD with the published settings: configs/mpdd.py:<class> or :all.

Needs data.root (the folder with the MPDD folders (github.com/stepanje/MPDD)) the first
time, or a dataset built by `python -m tfds_mvtec.build --dataset mpdd` into
data.tfds_dir. The paper's backbone needs its weights file
(--config.backbone.weights=PATH); --config.backbone.name=efficientnet_lite0 runs
offline.
"""

from configs import common


def get_config(arg='tubes'):
  """The class ``arg`` (checked with the rest of the config when a run starts)."""
  return common.benchmark_dataset_config('mpdd', arg or 'tubes', inp_size=256)
