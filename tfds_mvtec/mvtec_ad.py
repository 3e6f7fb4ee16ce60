"""TFDS builders for MVTec AD, any folder in its layout, and the datasets in
`tfds_mvtec.datasets` (MPDD, BTAD, VisA, MVTec LOCO AD, MVTec AD 2); no TensorFlow needed.

Build with ``python -m tfds_mvtec.build`` (array_record files) and read with
``tfds.data_source`` / ``builder.as_data_source()``; with TensorFlow installed
``tfds.load`` works too. Records come back in hash order: sort by ``filename``.
"""

import contextlib
import os
import shutil
import sys

import numpy as np
import tensorflow_datasets as tfds

try:
  import fcntl
except ImportError:   # Windows: builds are not serialised there
  fcntl = None

from tfds_mvtec import image_io
from tfds_mvtec import fingerprint, layout
from tfds_mvtec.datasets import BTAD, LOCO, MPDD, MVTEC_AD, MVTEC_AD2, VISA

_DESCRIPTION = """MVTec AD: 15 categories of industrial objects and textures with
normal training images and normal/anomalous test images with pixel masks.
Any folder in the same layout (e.g. BTAD, your own products) builds too; its
masks are optional."""

_CITATION = """@inproceedings{bergmann2019mvtec,
  title={MVTec AD -- A Comprehensive Real-World Dataset for Unsupervised Anomaly Detection},
  author={Bergmann, Paul and Fauser, Michael and Sattlegger, David and Steger, Carsten},
  booktitle={CVPR}, year={2019}}"""


def _extract_dir(download_dir: str, dataset: layout.Dataset) -> str:
  return os.path.join(download_dir, 'extracted', dataset.builder_name)


class MvtecAdConfig(tfds.core.BuilderConfig):
  """One category. Masks are required for a dataset's official categories only."""

  def __init__(self, *, category: str, masks_required: bool = False, official: bool = True,
               **kwargs):
    # An official name with optional masks is another dataset: it gets its own name.
    name = category if masks_required or not official else f'{category}_masks_optional'
    super().__init__(name=name, **kwargs)
    self.category = category
    self.masks_required = masks_required


def category_config(category: str, masks_required=None,
                    dataset: layout.Dataset = MVTEC_AD) -> MvtecAdConfig:
  """The config of one of ``dataset``'s categories, or of any other folder name (masks optional)."""
  official = dataset.masks_required(category)
  if masks_required is None:
    masks_required = official
  return MvtecAdConfig(category=category, masks_required=masks_required, official=official,
                       description=f'{dataset.title} category {category}')


class MvtecAd(tfds.core.GeneratorBasedBuilder):
  """MVTec AD anomaly detection (one config per category); the base of the other datasets."""

  DATASET = MVTEC_AD
  VERSION = tfds.core.Version('1.0.0')
  RELEASE_NOTES = {'1.0.0': 'Initial release.'}
  BUILDER_CONFIGS = [category_config(c) for c in MVTEC_AD.categories]
  MANUAL_DOWNLOAD_INSTRUCTIONS = f"""
  Download {layout.ARCHIVE_NAME} from {layout.DOWNLOAD_PAGE} (free registration)
  and place it in the manual_dir, either as the archive itself or extracted
  (manual_dir/<category>/train/good/...). For your own data, point manual_dir at a
  folder holding <category>/train/good, <category>/test/<type> and, optionally,
  <category>/ground_truth/<type>/<name>_mask.png.
  """

  # TFDS announces a build as a download, with sizes it does not know and
  # terminal colour codes; a build here reads a local folder: say that, plainly.
  def _log_download_bytes(self) -> None:
    print(f'Building {self.name}/{self.builder_config.name} in {self.data_dir}', flush=True)

  def _log_download_done(self) -> None:
    for name, split in sorted(self.info.splits.items()):
      print(f'  {name}: {split.num_examples} images', flush=True)

  def _info(self) -> tfds.core.DatasetInfo:
    features = {
        'image': tfds.features.Image(shape=(None, None, 3)),
        'mask': tfds.features.Image(shape=(None, None, 1)),
        'has_mask': tfds.features.Scalar(dtype=np.bool_),
        'label': tfds.features.ClassLabel(names=['good', 'anomalous']),
        'defect_type': tfds.features.Text(),
        'filename': tfds.features.Text(),
    }
    if self.DATASET.split_field:
      features['split'] = tfds.features.Text()   # the dataset's own split name
    return tfds.core.DatasetInfo(
        builder=self,
        description=_DESCRIPTION if self.DATASET is MVTEC_AD else (
            f'{self.DATASET.title} in the MVTec AD example format ({self.DATASET.licence}).'),
        features=tfds.features.FeaturesDict(features),
        homepage=self.DATASET.download_page,
        citation=_CITATION if self.DATASET is MVTEC_AD else '',
    )

  def _split_generators(self, dl_manager):
    config, dataset = self.builder_config, self.DATASET
    category_dir = layout.resolve_category_dir(
        dataset, os.fspath(dl_manager.manual_dir), config.category,
        _extract_dir(os.fspath(dl_manager.download_dir), dataset))
    records = dataset.scan(dataset, category_dir, config.category, config.masks_required)
    return {split: self._generate_examples(split_records)
            for split, split_records in records.items()}

  def _generate_examples(self, records):
    for record in records:
      # Decoded and re-encoded here so that every mode/bit depth is stored as
      # 8-bit RGB PNG, and TFDS never needs TensorFlow to encode it.
      image = image_io.decode_image(record.image_path)
      mask = np.zeros(image.shape[:2], np.uint8)
      for path in record.mask_paths:   # several regions (MVTec LOCO): their union
        mask |= image_io.decode_mask(path, image.shape[:2], self.DATASET.mask_threshold)
      example = {
          'image': image_io.encode_png(image),
          'mask': image_io.encode_png(mask * 255),
          'has_mask': record.label == 0 or bool(record.mask_paths),
          'label': record.label,
          'defect_type': record.defect_type,
          'filename': record.filename,
      }
      if self.DATASET.split_field:
        example['split'] = record.split
      yield record.filename, example


def _dataset_builder(dataset: layout.Dataset, class_name: str) -> type:
  """A registered MvtecAd subclass for ``dataset`` (TFDS names it after the class)."""
  cls = type(class_name, (MvtecAd,), dict(
      DATASET=dataset, BUILDER_CONFIGS=[category_config(c, dataset=dataset)
                                        for c in dataset.categories],
      MANUAL_DOWNLOAD_INSTRUCTIONS=f"""
  Get {" or ".join(dataset.archives) or "the dataset"} from {dataset.download_page} and place
  it in the manual_dir, as the archive or extracted: {dataset.layout_help}.
  """, __module__=__name__))
  assert cls.name == dataset.builder_name, (cls.name, dataset.builder_name)
  return cls


BUILDERS = {MVTEC_AD.name: MvtecAd}
for _dataset, _class_name in ((MPDD, 'Mpdd'), (BTAD, 'Btad'), (VISA, 'Visa'),
                              (LOCO, 'MvtecLoco'), (MVTEC_AD2, 'MvtecAd2')):
  BUILDERS[_dataset.name] = _dataset_builder(_dataset, _class_name)


def builder(category: str, data_dir: str, masks_required=None,
            dataset: str = 'mvtec') -> MvtecAd:
  """An array_record builder of ``category`` of ``dataset`` rooted at ``data_dir``."""
  cls = BUILDERS[dataset]
  config = category_config(category, masks_required, cls.DATASET)
  predefined = {c.name for c in cls.BUILDER_CONFIGS}
  return cls(config=config.name if config.name in predefined else config,
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
          force: bool = False, dataset: str = 'mvtec') -> MvtecAd:
  """Builds the array_record dataset of one category of ``dataset`` from ``manual_dir``.

  A built dataset is reused while its source is unchanged (`fingerprint`); a
  changed source, or ``force``, rebuilds it. Concurrent builds wait on a lock.

  Raises:
    DatasetFolderError: the category is not in ``manual_dir`` (named with the layout).
  """
  layout_ = BUILDERS[dataset].DATASET
  download_dir = os.path.join(data_dir, 'downloads')
  config_name = category_config(category, masks_required, layout_).name
  with _build_lock(data_dir, f'{layout_.builder_name}.{config_name}'):
    # Made under the lock: it reads what a concurrent build may just have written.
    instance = builder(category, data_dir, masks_required, dataset)
    data_path = os.fspath(instance.data_path)
    current = fingerprint.of_source(manual_dir, category, layout_)
    if os.path.isdir(data_path):
      stored = fingerprint.read(data_path)
      if stored == current and not force:
        return instance
      if not force:
        print(f'Rebuilding {category} in {data_dir}: '
              f'{fingerprint.difference(stored, current)}', flush=True)
      shutil.rmtree(data_path)
      # An archive's old extraction would be read again: drop it too.
      extracted = _extract_dir(download_dir, layout_)
      for top in ('',) + layout_.top_folders:
        shutil.rmtree(os.path.join(extracted, top, category), ignore_errors=True)
      instance = builder(category, data_dir, masks_required, dataset)
    tfds.display_progress_bar(sys.stdout.isatty())   # no bars in logs and pipes
    instance.download_and_prepare(
        download_dir=download_dir,
        download_config=tfds.download.DownloadConfig(manual_dir=manual_dir))
    fingerprint.write(data_path, current)
  return instance
