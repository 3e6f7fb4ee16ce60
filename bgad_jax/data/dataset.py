"""Where a run's images come from: the demo class, MVTec AD or an MVTec-layout folder.

The TFDS dataset of a category is built on first use from ``data.root`` (the
manual_dir); later runs read the built dataset.
"""

import os
from typing import Dict, List, Tuple

from bgad_jax.data import demo_data
from bgad_jax.data import pipeline

SOURCES = ('demo', 'mvtec', 'folder')


def expand_path(path: str) -> str:
  """An absolute path with ~ expanded."""
  return os.path.abspath(os.path.expanduser(path))


def dataset_location(data_config) -> Tuple[str, str, str]:
  """(manual_dir, tfds data_dir, category) of ``config.data``."""
  if data_config.source == 'demo':
    root = expand_path(data_config.root or '~/.cache/bgad_jax/demo')
    return os.path.join(root, 'images'), os.path.join(root, 'tfds'), data_config.category
  if data_config.source in ('mvtec', 'folder'):
    manual_dir = expand_path(data_config.root) if data_config.root else ''
    return manual_dir, expand_path(data_config.tfds_dir), data_config.category
  raise ValueError(f'data.source must be one of {SOURCES}, got {data_config.source!r}')


def load_splits(data_config, seed: int) -> Tuple[List[Dict], List[Dict]]:
  """Train and test examples (see `pipeline.load_examples`), building the dataset when needed.

  The demo class is generated from ``seed`` first; a demo folder regenerated
  after its dataset was built triggers a rebuild.
  """
  import tfds_mvtec   # slow import, only where data is read
  manual_dir, data_dir, category = dataset_location(data_config)
  built = os.fspath(tfds_mvtec.builder(category, data_dir).data_path)
  stale = False
  if data_config.source == 'demo':
    demo = data_config.demo
    category_dir = demo_data.generate(manual_dir, category, demo.size, demo.num_train,
                                      demo.num_test_good, demo.num_per_defect, seed)
    stamp = os.path.join(category_dir, 'demo_settings.json')
    stale = os.path.isdir(built) and os.path.getmtime(stamp) > os.path.getmtime(built)
  if manual_dir and (stale or not os.path.isdir(built)):
    tfds_mvtec.build(category, data_dir, manual_dir, force=stale)
  return (pipeline.load_examples(data_dir, category, 'train'),
          pipeline.load_examples(data_dir, category, 'test'))
