"""Finding the files of one category in an MVTec-layout folder.

  <root>/<category>/train/good/*.png               normal training images
  <root>/<category>/test/<type>/*.png              'good' = normal, other types anomalous
  <root>/<category>/ground_truth/<type>/<stem>_mask.png   (optional for own data)

'ok' is accepted for 'good' (BTAD), ``<stem>.<ext>`` for ``<stem>_mask.png``,
and PNG/JPEG/BMP/TIFF files everywhere.
"""

import dataclasses
import os
import shutil
import tarfile
from typing import Dict, List, Optional

from bgad_jax.data.image_io import IMAGE_EXTENSIONS
from bgad_jax.errors import MissingFileError

CATEGORIES = ('bottle', 'cable', 'capsule', 'carpet', 'grid', 'hazelnut', 'leather',
              'metal_nut', 'pill', 'screw', 'tile', 'toothbrush', 'transistor', 'wood',
              'zipper')
ARCHIVE_NAME = 'mvtec_anomaly_detection.tar.xz'
DOWNLOAD_PAGE = 'https://www.mvtec.com/company/research/datasets/mvtec-ad'
NORMAL_DIRS = ('good', 'ok')


class DatasetFolderError(MissingFileError):
  """A dataset folder is missing or incomplete."""


@dataclasses.dataclass(frozen=True)
class Record:
  """One image of a split."""
  image_path: str
  mask_path: Optional[str]   # None: normal image, or an anomaly without ground truth
  label: int                 # 0 normal, 1 anomalous
  defect_type: str           # 'good' for normal images
  filename: str              # path relative to the category folder, e.g. test/crack/000.png


def _images(folder: str) -> List[str]:
  return sorted(f for f in os.listdir(folder)
                if f.lower().endswith(IMAGE_EXTENSIONS) and not f.startswith('.'))


def _find_mask(gt_dir: str, stem: str) -> Optional[str]:
  for name in (f'{stem}_mask', stem):
    for ext in IMAGE_EXTENSIONS:
      path = os.path.join(gt_dir, name + ext)
      if os.path.isfile(path):
        return path
  return None


def _missing(what: str, category_dir: str, category: str) -> DatasetFolderError:
  return DatasetFolderError(
      f'{what} for category {category!r} under {category_dir}. Expected the MVTec AD '
      f'layout (<root>/{category}/train/good, test/<type>, ground_truth/<type>/'
      f'<name>_mask.png). For MVTec AD, get {ARCHIVE_NAME} from {DOWNLOAD_PAGE} and pass '
      'the folder holding it or its extracted folders as --config.data.root (main.py) or '
      '--manual_dir (python -m tfds_mvtec.build).')


def scan_category(category_dir: str, category: str,
                  masks_required: bool) -> Dict[str, List[Record]]:
  """Lists the train and test records of one category folder.

  Raises:
    DatasetFolderError: naming the folder or file that is missing.
  """
  if not os.path.isdir(category_dir):
    raise _missing('no folder', category_dir, category)
  splits: Dict[str, List[Record]] = {'train': [], 'test': []}
  for split in splits:
    split_dir = os.path.join(category_dir, split)
    if not os.path.isdir(split_dir):
      raise _missing(f'no {split}/ folder', category_dir, category)
    for defect_type in sorted(os.listdir(split_dir)):
      type_dir = os.path.join(split_dir, defect_type)
      if not os.path.isdir(type_dir):
        continue
      normal = defect_type in NORMAL_DIRS
      if split == 'train' and not normal:
        continue   # MVTec has only normal training images
      gt_dir = os.path.join(category_dir, 'ground_truth', defect_type)
      for name in _images(type_dir):
        mask = None
        if not normal:
          mask = _find_mask(gt_dir, os.path.splitext(name)[0])
          if mask is None and masks_required:
            raise _missing(f'no ground-truth mask for {split}/{defect_type}/{name} in {gt_dir}',
                           category_dir, category)
        splits[split].append(Record(
            image_path=os.path.join(type_dir, name), mask_path=mask, label=0 if normal else 1,
            defect_type='good' if normal else defect_type,
            filename=f'{split}/{defect_type}/{name}'))
  if not splits['train']:
    raise _missing('no training images in train/good', category_dir, category)
  if not splits['test']:
    raise _missing('no test images in test/<type>', category_dir, category)
  return splits


def category_source(manual_dir: str, category: str) -> str:
  """Where ``category`` comes from: its folder in manual_dir, or the archive holding it.

  Looks for ``<manual_dir>/<category>``, ``<manual_dir>/mvtec_anomaly_detection/<category>``,
  then ``<manual_dir>/mvtec_anomaly_detection.tar.xz``.

  Raises:
    DatasetFolderError: naming the folders and the archive looked for.
  """
  folder = os.path.join(manual_dir, category)
  for candidate in (folder, os.path.join(manual_dir, 'mvtec_anomaly_detection', category)):
    if os.path.isdir(os.path.join(candidate, 'train')):
      return candidate
  archive = os.path.join(manual_dir, ARCHIVE_NAME)
  if os.path.isfile(archive):
    return archive
  if os.path.isdir(folder):
    return folder   # incomplete: scan_category names what is missing
  raise _missing(f'neither {folder} nor {archive} exists', manual_dir, category)


def resolve_category_dir(manual_dir: str, category: str, extract_dir: str) -> str:
  """The folder of ``category``: in manual_dir, or extracted from the archive.

  From the archive (see `category_source`) only the category's members are
  extracted, into ``extract_dir``, once.
  """
  source = category_source(manual_dir, category)
  extracted = os.path.join(extract_dir, category)
  if os.path.isdir(source):
    return source
  if os.path.isdir(os.path.join(extracted, 'train')):
    return extracted
  os.makedirs(extract_dir, exist_ok=True)
  try:
    with tarfile.open(source, 'r:*') as tar:
      members = [m for m in tar if m.name.lstrip('./').startswith(category + '/')]
      if not members:
        raise _missing(f'no {category}/ in {source}', manual_dir, category)
      tar.extractall(extract_dir, members=members, filter='data')
  except (tarfile.TarError, EOFError, OSError) as err:
    shutil.rmtree(extracted, ignore_errors=True)   # never leave half an extraction
    raise DatasetFolderError(f'cannot read {source} ({err}): the archive is damaged or '
                             f'incomplete; download it again from {DOWNLOAD_PAGE}') from err
  return extracted
