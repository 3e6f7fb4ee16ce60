"""TFDS builder for MVTec AD and any folder in its layout (works without TensorFlow).

Build with ``python -m tfds_mvtec.build`` (array_record files) and read with
``tfds.data_source`` / ``builder.as_data_source()``; with TensorFlow installed
``tfds.load`` works too. Records come back in hash order: sort by ``filename``.
"""

import contextlib
import os
import shutil

import numpy as np
import tensorflow_datasets as tfds

try:
  import fcntl
except ImportError:   # Windows: builds are not serialised there
  fcntl = None

from bgad_jax.data import image_io
from tfds_mvtec import fingerprint, layout

_DESCRIPTION = """MVTec AD: 15 categories of industrial objects and textures with
normal training images and normal/anomalous test images with pixel masks.
Any folder in the same layout (e.g. BTAD, your own products) builds too; its
masks are optional."""

_CITATION = """@inproceedings{bergmann2019mvtec,
  title={MVTec AD -- A Comprehensive Real-World Dataset for Unsupervised Anomaly Detection},
  author={Bergmann, Paul and Fauser, Michael and Sattlegger, David and Steger, Carsten},
  booktitle={CVPR}, year={2019}}"""


def _extract_dir(download_dir: str) -> str:
  return os.path.join(download_dir, 'extracted', 'mvtec_ad')


class MvtecAdConfig(tfds.core.BuilderConfig):
  """One category. Masks are required for the 15 MVTec categories only."""

  def __init__(self, *, category: str, masks_required: bool = False, **kwargs):
    # An MVTec name with optional masks is another dataset: it gets its own name.
    name = category
    if category in layout.CATEGORIES and not masks_required:
      name = f'{category}_masks_optional'
    super().__init__(name=name, **kwargs)
    self.category = category
    self.masks_required = masks_required


def category_config(category: str, masks_required=None) -> MvtecAdConfig:
  """The config of an MVTec category, or of any other folder name (masks optional)."""
  if masks_required is None:
    masks_required = category in layout.CATEGORIES
  return MvtecAdConfig(category=category, masks_required=masks_required,
                       description=f'MVTec-layout category {category}')


class MvtecAd(tfds.core.GeneratorBasedBuilder):
  """MVTec AD anomaly detection (one config per category)."""

  VERSION = tfds.core.Version('1.0.0')
  RELEASE_NOTES = {'1.0.0': 'Initial release.'}
  BUILDER_CONFIGS = [category_config(c) for c in layout.CATEGORIES]
  MANUAL_DOWNLOAD_INSTRUCTIONS = f"""
  Download {layout.ARCHIVE_NAME} from {layout.DOWNLOAD_PAGE} (free registration)
  and place it in the manual_dir, either as the archive itself or extracted
  (manual_dir/<category>/train/good/...). For your own data, point manual_dir at a
  folder holding <category>/train/good, <category>/test/<type> and, optionally,
  <category>/ground_truth/<type>/<name>_mask.png.
  """

  def _info(self) -> tfds.core.DatasetInfo:
    return tfds.core.DatasetInfo(
        builder=self,
        description=_DESCRIPTION,
        features=tfds.features.FeaturesDict({
            'image': tfds.features.Image(shape=(None, None, 3)),
            'mask': tfds.features.Image(shape=(None, None, 1)),
            'has_mask': tfds.features.Scalar(dtype=np.bool_),
            'label': tfds.features.ClassLabel(names=['good', 'anomalous']),
            'defect_type': tfds.features.Text(),
            'filename': tfds.features.Text(),
        }),
        homepage=layout.DOWNLOAD_PAGE,
        citation=_CITATION,
    )

  def _split_generators(self, dl_manager):
    config = self.builder_config
    category_dir = layout.resolve_category_dir(
        os.fspath(dl_manager.manual_dir), config.category,
        _extract_dir(os.fspath(dl_manager.download_dir)))
    records = layout.scan_category(category_dir, config.category, config.masks_required)
    return {split: self._generate_examples(split_records)
            for split, split_records in records.items()}

  def _generate_examples(self, records):
    for record in records:
      # Decoded and re-encoded here so that every mode/bit depth is stored as
      # 8-bit RGB PNG, and TFDS never needs TensorFlow to encode it.
      image = image_io.decode_image(record.image_path)
      if record.mask_path is not None:
        mask = image_io.decode_mask(record.mask_path, image.shape[:2]) * 255
      else:
        mask = np.zeros(image.shape[:2], np.uint8)
      yield record.filename, {
          'image': image_io.encode_png(image),
          'mask': image_io.encode_png(mask),
          'has_mask': record.label == 0 or record.mask_path is not None,
          'label': record.label,
          'defect_type': record.defect_type,
          'filename': record.filename,
      }


def builder(category: str, data_dir: str, masks_required=None) -> MvtecAd:
  """An array_record MvtecAd builder of ``category`` rooted at ``data_dir``."""
  config = category_config(category, masks_required)
  predefined = {c.name for c in MvtecAd.BUILDER_CONFIGS}
  return MvtecAd(config=config.name if config.name in predefined else config,
                 data_dir=data_dir, file_format='array_record')


@contextlib.contextmanager
def _build_lock(data_dir: str, name: str):
  """Serialises builds of one dataset across processes: the second waits, then reuses."""
  os.makedirs(data_dir, exist_ok=True)
  if fcntl is None:
    yield
    return
  with open(os.path.join(data_dir, f'.{name}.build.lock'), 'w') as lock:
    try:
      fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
      print(f'Waiting for another process that builds {name} in {data_dir}', flush=True)
      fcntl.flock(lock, fcntl.LOCK_EX)
    try:
      yield
    finally:
      fcntl.flock(lock, fcntl.LOCK_UN)


def build(category: str, data_dir: str, manual_dir: str, masks_required=None,
          force: bool = False) -> MvtecAd:
  """Builds the array_record dataset of one category from ``manual_dir``.

  A built dataset is reused while its source is unchanged (`fingerprint`); a
  changed source, or ``force``, rebuilds it. Concurrent builds wait on a lock.

  Raises:
    DatasetFolderError: the category is not in ``manual_dir`` (named with the layout).
  """
  download_dir = os.path.join(data_dir, 'downloads')
  with _build_lock(data_dir, category_config(category, masks_required).name):
    # Made under the lock: it reads what a concurrent build may just have written.
    instance = builder(category, data_dir, masks_required)
    data_path = os.fspath(instance.data_path)
    current = fingerprint.of_source(manual_dir, category)
    if os.path.isdir(data_path):
      stored = fingerprint.read(data_path)
      if stored == current and not force:
        return instance
      if not force:
        print(f'Rebuilding {category} in {data_dir}: '
              f'{fingerprint.difference(stored, current)}', flush=True)
      shutil.rmtree(data_path)
      # An archive's old extraction would be read again: drop it too.
      shutil.rmtree(os.path.join(_extract_dir(download_dir), category), ignore_errors=True)
      instance = builder(category, data_dir, masks_required)
    instance.download_and_prepare(
        download_dir=download_dir,
        download_config=tfds.download.DownloadConfig(manual_dir=manual_dir))
    fingerprint.write(data_path, current)
  return instance
