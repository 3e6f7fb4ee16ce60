"""MVTec LOCO AD, logical and structural anomalies (Bergmann et al., IJCV 2022).

Each anomalous test image has a folder of mask PNGs (one per defect region,
ground_truth/<type>/<image stem>/000.png, 001.png, ...): they are merged into
one mask. The defect types are 'logical_anomalies' and 'structural_anomalies',
so per-type tables keep them apart; validation/good is its own split.
"""

import os
from typing import Tuple

from tfds_mvtec.image_io import IMAGE_EXTENSIONS
from tfds_mvtec import layout


def mask_folder(gt_dir: str, stem: str) -> Tuple[str, ...]:
  """Every mask image in ``<gt_dir>/<stem>/``, sorted."""
  folder = os.path.join(gt_dir, stem)
  if not os.path.isdir(folder):
    return ()
  return tuple(os.path.join(folder, name) for name in sorted(os.listdir(folder))
               if name.lower().endswith(IMAGE_EXTENSIONS) and not name.startswith('.'))


def scan(dataset, category_dir, category, masks_required):
  return layout.scan_folders(
      dataset, category_dir, category, masks_required,
      split_dirs={'train': 'train', 'validation': 'validation', 'test': 'test'},
      find_masks=mask_folder)


LOCO = layout.Dataset(
    name='loco', title='MVTec LOCO AD', builder_name='mvtec_loco',
    categories=('breakfast_box', 'juice_bottle', 'pushpins', 'screw_bag', 'splicing_connectors'),
    archives=('mvtec_loco_anomaly_detection.tar.xz',),
    top_folders=('mvtec_loco_anomaly_detection',), marker='train', scan=scan,
    splits=('train', 'validation', 'test'),
    layout_help='<root>/<category>/train/good, validation/good, test/{good,logical_anomalies,'
                'structural_anomalies}, ground_truth/<type>/<image stem>/000.png',
    download_page='https://www.mvtec.com/company/research/datasets/mvtec-loco',
    licence='CC BY-NC-SA 4.0', inp_size=256)
