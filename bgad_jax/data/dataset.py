"""Where a run's images come from: the demo class, MVTec AD or an MVTec-layout folder.

The TFDS dataset of a category is built on first use from ``data.root`` (the
manual_dir); later runs read the built dataset.
"""

import os
from typing import Dict, List, Sequence, Tuple

import numpy as np

from bgad_jax.data import demo_data
from bgad_jax.data import pipeline

# demo: the generated class; folder: any MVTec-layout folder; the others: the
# datasets of tfds_mvtec.datasets (mvtec = MVTec AD).
SOURCES = ('demo', 'mvtec', 'folder', 'mpdd', 'btad', 'visa', 'loco', 'mvtec_ad2')


def builder_dataset(source: str) -> str:
  """The tfds_mvtec dataset a ``data.source`` is built as (demo and folder: MVTec layout)."""
  return 'mvtec' if source in ('demo', 'folder') else source


def expand_path(path: str) -> str:
  """An absolute path with ~ expanded."""
  return os.path.abspath(os.path.expanduser(path))


def dataset_location(data_config) -> Tuple[str, str, str]:
  """(manual_dir, tfds data_dir, category) of ``config.data``."""
  if data_config.source == 'demo':
    root = expand_path(data_config.root or '~/.cache/bgad_jax/demo')
    return os.path.join(root, 'images'), os.path.join(root, 'tfds'), data_config.category
  if data_config.source in SOURCES:
    manual_dir = expand_path(data_config.root) if data_config.root else ''
    return manual_dir, expand_path(data_config.tfds_dir), data_config.category
  raise ValueError(f'data.source must be one of {SOURCES}, got {data_config.source!r}')


def prepare_dataset(data_config, seed: int) -> None:
  """Generates the demo class and builds or checks the TFDS dataset.

  The demo images come from ``data.demo.seed``, or from ``seed`` (the run's)
  where that is -1 or unset.

  With ``data.root`` set, the built dataset is checked against that folder
  and rebuilt when its images changed (`tfds_mvtec.build`); without it,
  nothing is done (`read_splits` reads what is built in ``data.tfds_dir``).

  Raises:
    DatasetFolderError: ``data.root`` does not exist or lacks the category.
  """
  import tfds_mvtec   # slow import, only where data is read
  manual_dir, data_dir, category = dataset_location(data_config)
  name = builder_dataset(data_config.source)
  if data_config.source == 'demo':
    demo = data_config.demo
    image_seed = demo.get('seed', -1)
    demo_data.generate(manual_dir, category, demo.size, demo.num_train, demo.num_test_good,
                       demo.num_per_defect, seed if image_seed < 0 else image_seed,
                       demo.get('defect_placement', 'centre'), demo.get('split', 'rows'))
  if manual_dir:
    if not os.path.isdir(manual_dir):
      # Never fall back to an earlier build of this category: it came from elsewhere.
      layout = tfds_mvtec.DATASETS[name]
      raise tfds_mvtec.DatasetFolderError(
          f'data.root={data_config.root} does not exist ({manual_dir}): point '
          f'--config.data.root at the folder holding {category}/ ({layout.title} layout) or '
          f'{" or ".join(layout.archives) or "its extracted archive"}')
    tfds_mvtec.build(category, data_dir, manual_dir, dataset=name)


def read_splits(data_config) -> Tuple[List[Dict], List[Dict]]:
  """Train and test examples of the dataset already prepared (`prepare_dataset`).

  Raises:
    DatasetNotBuiltError: nothing built.
  """
  _, data_dir, category = dataset_location(data_config)
  name = builder_dataset(data_config.source)
  return (pipeline.load_examples(data_dir, category, 'train', dataset=name),
          pipeline.load_examples(data_dir, category, 'test', dataset=name))


def read_validation_split(data_config) -> List[Dict]:
  """The normal images of the dataset's own validation split (MVTec LOCO AD, MVTec AD 2),
  or [] when it has none, after `prepare_dataset`."""
  _, data_dir, category = dataset_location(data_config)
  name = builder_dataset(data_config.source)
  if not pipeline.has_split(data_dir, category, 'validation', name):
    return []
  return pipeline.load_examples(data_dir, category, 'validation', dataset=name)


def hold_out_normals(train_examples: Sequence[Dict], fraction: float, min_images: int,
                     seed: int) -> Tuple[List[Dict], List[Dict]]:
  """(the flows' normal training images, held-out normal calibration images).

  ``round(fraction * N)`` images (at least one) drawn with ``seed`` are held
  out when the class has at least ``min_images`` normal training images and
  ``fraction`` > 0; otherwise none are. Both lists keep the dataset's order.
  """
  total = len(train_examples)
  if fraction <= 0 or total < max(min_images, 2):
    return list(train_examples), []
  count = min(total - 1, max(1, int(round(fraction * total))))
  # Its own stream: the draw does not move when other seeded choices change.
  held = set(np.random.RandomState([seed, 0xCA11]).permutation(total)[:count].tolist())
  return ([e for i, e in enumerate(train_examples) if i not in held],
          [e for i, e in enumerate(train_examples) if i in held])


def all_categories(data_config) -> List[str]:
  """What ``data.category='all'`` runs: the dataset's official classes, or for a
  folder source every category folder (with a train/ folder) in ``data.root``."""
  import tfds_mvtec
  if data_config.source == 'folder':
    root = expand_path(data_config.root) if data_config.root else ''
    if not root or not os.path.isdir(root):
      raise tfds_mvtec.DatasetFolderError(
          f'data.category=all with data.source=folder reads the categories of data.root, '
          f'and data.root={data_config.root!r} is not a folder')
    return sorted(d for d in os.listdir(root) if os.path.isdir(os.path.join(root, d, 'train')))
  return list(tfds_mvtec.DATASETS[builder_dataset(data_config.source)].categories)
