"""TFDS builder for MVTec AD and any MVTec-layout folder; TensorFlow not required."""

from tfds_mvtec.layout import CATEGORIES, DatasetFolderError, scan_category
from tfds_mvtec.mvtec_ad import MvtecAd, build, builder, category_config

__all__ = ['CATEGORIES', 'DatasetFolderError', 'MvtecAd', 'build', 'builder',
           'category_config', 'scan_category']
