"""TFDS builders for MVTec AD, any MVTec-layout folder, MPDD, BTAD, VisA, MVTec LOCO AD
and MVTec AD 2; TensorFlow not required.

The lowest layer of the repository: it imports nothing from bgad_jax (its
error classes and image decoding live here, in `errors` and `image_io`).
The builders (`mvtec_ad`) import TFDS, which is slow, on first use of one of
their names, so that predict and serve, which decode images, never load it.
"""

import importlib

from tfds_mvtec.datasets import DATASETS
from tfds_mvtec.layout import CATEGORIES, DatasetFolderError

_BUILDER_NAMES = ('BUILDERS', 'MvtecAd', 'build', 'builder', 'category_config')

__all__ = ['CATEGORIES', 'DATASETS', 'DatasetFolderError', *_BUILDER_NAMES]


def __getattr__(name):
  if name in _BUILDER_NAMES:
    return getattr(importlib.import_module('tfds_mvtec.mvtec_ad'), name)
  raise AttributeError(f'module {__name__!r} has no attribute {name!r}')
