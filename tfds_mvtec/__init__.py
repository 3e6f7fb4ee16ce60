"""TFDS builders for MVTec AD, any MVTec-layout folder, MPDD, BTAD, VisA, MVTec LOCO AD
and MVTec AD 2; TensorFlow not required."""

from tfds_mvtec.datasets import DATASETS
from tfds_mvtec.layout import CATEGORIES, DatasetFolderError
from tfds_mvtec.mvtec_ad import BUILDERS, MvtecAd, build, builder, category_config

__all__ = ['BUILDERS', 'CATEGORIES', 'DATASETS', 'DatasetFolderError', 'MvtecAd', 'build',
           'builder', 'category_config']
