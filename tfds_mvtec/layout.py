"""Finding the images of one category in a dataset's folder or archive.

Every dataset (`tfds_mvtec.datasets`) is described by a `Dataset`: where its
categories lie in the manual_dir (a folder, a known top folder of its archive,
or the archive itself, extracted one category at a time) and how its files
become `Record`s. The MVTec layout, which most datasets share:

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
import zipfile
from typing import Callable, Dict, List, Mapping, Sequence, Tuple

from tfds_mvtec.image_io import IMAGE_EXTENSIONS
from tfds_mvtec.errors import MissingFileError

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
  mask_paths: Tuple[str, ...]   # () for normal images and anomalies without ground truth;
                                # several (MVTec LOCO) are merged into one mask
  label: int                    # 0 normal, 1 anomalous
  defect_type: str              # 'good' for normal images
  filename: str                 # path relative to the category folder, e.g. test/crack/000.png
  split: str = ''               # the dataset's own split name, where it defines one


Scanner = Callable[['Dataset', str, str, bool], Dict[str, List[Record]]]


@dataclasses.dataclass(frozen=True)
class Dataset:
  """How one dataset is laid out, and where it comes from.

  Attributes:
    name: registry key, ``data.source`` and ``--dataset`` value, e.g. 'visa'.
    title: its published name, e.g. 'VisA'.
    builder_name: the TFDS builder's name (its folder in the data_dir).
    categories: its official classes.
    archives: archive file names accepted in the manual_dir.
    top_folders: folders an archive may extract to (<manual_dir>/<top>/<category>).
    marker: a path every complete category folder has (e.g. 'train').
    shared: paths beside the category folders that a category needs (VisA's CSV folder).
    scan: (dataset, category_dir, category, masks_required) -> {split: records}.
    splits: the TFDS splits it has.
    layout_help: the expected layout in one line, for error messages.
    download_page, licence: where to get it and under which terms.
    inp_size: the input side its benchmarks use.
    mask_threshold: mask pixels above it are defective (VisA's masks hold class ids).
    split_field: whether examples carry the dataset's own split name.
  """
  name: str
  title: str
  builder_name: str
  categories: Tuple[str, ...]
  archives: Tuple[str, ...]
  top_folders: Tuple[str, ...]
  marker: str
  scan: Scanner
  layout_help: str
  download_page: str
  licence: str
  inp_size: int = 256
  shared: Tuple[str, ...] = ()
  splits: Tuple[str, ...] = ('train', 'test')
  mask_threshold: int = 127
  split_field: bool = False

  def masks_required(self, category: str) -> bool:
    """Official classes must have every mask; other folder names (own data) need not."""
    return category in self.categories

  def missing(self, what: str, where: str, category: str) -> DatasetFolderError:
    """The error for an incomplete source: what is missing and the expected layout."""
    return DatasetFolderError(
        f'{what} for category {category!r} under {where}. Expected the {self.title} layout '
        f'({self.layout_help}). Get {" or ".join(self.archives)} from {self.download_page} '
        'and pass the folder holding it or its extracted folders as --config.data.root '
        f'(main.py) or --manual_dir (python -m tfds_mvtec.build --dataset {self.name}).')


def image_names(folder: str) -> List[str]:
  """The image files of ``folder``, sorted (hidden files skipped)."""
  return sorted(f for f in os.listdir(folder)
                if f.lower().endswith(IMAGE_EXTENSIONS) and not f.startswith('.'))


def mask_file(gt_dir: str, stem: str) -> Tuple[str, ...]:
  """``<stem>_mask.<ext>`` or ``<stem>.<ext>`` in ``gt_dir`` as a 1-tuple, or ()."""
  for name in (f'{stem}_mask', stem):
    for ext in IMAGE_EXTENSIONS:
      path = os.path.join(gt_dir, name + ext)
      if os.path.isfile(path):
        return (path,)
  return ()


def scan_folders(dataset: Dataset, category_dir: str, category: str, masks_required: bool,
                 split_dirs: Mapping[str, str] = None, gt_dir: str = 'ground_truth',
                 find_masks: Callable[[str, str], Tuple[str, ...]] = mask_file,
                 with_split: bool = False) -> Dict[str, List[Record]]:
  """Records of an MVTec-style category folder.

  Args:
    split_dirs: TFDS split -> its folder (default train/test); only normal
      images are read from every split but 'test'.
    gt_dir: the masks' folder, relative to ``category_dir``; it holds one
      folder per defect type.
    find_masks: (defect type's mask folder, image stem) -> mask paths.
    with_split: records carry their split folder's name.

  Raises:
    DatasetFolderError: naming the folder or file that is missing.
  """
  if not os.path.isdir(category_dir):
    raise dataset.missing('no folder', category_dir, category)
  split_dirs = split_dirs or {'train': 'train', 'test': 'test'}
  splits: Dict[str, List[Record]] = {split: [] for split in split_dirs}
  for split, folder in split_dirs.items():
    split_dir = os.path.join(category_dir, folder)
    if not os.path.isdir(split_dir):
      raise dataset.missing(f'no {folder}/ folder', category_dir, category)
    for defect_type in sorted(os.listdir(split_dir)):
      type_dir = os.path.join(split_dir, defect_type)
      if not os.path.isdir(type_dir) or (defect_type == gt_dir.split('/')[-1]):
        continue
      normal = defect_type in NORMAL_DIRS
      if split != 'test' and not normal:
        continue   # training and validation images are normal
      masks_dir = os.path.join(category_dir, gt_dir, defect_type)
      for name in image_names(type_dir):
        masks = () if normal else find_masks(masks_dir, os.path.splitext(name)[0])
        if not normal and not masks and masks_required:
          raise dataset.missing(f'no ground-truth mask for {folder}/{defect_type}/{name} in '
                                f'{masks_dir}', category_dir, category)
        splits[split].append(Record(
            image_path=os.path.join(type_dir, name), mask_paths=masks, label=0 if normal else 1,
            defect_type='good' if normal else defect_type,
            filename=f'{folder}/{defect_type}/{name}', split=folder if with_split else ''))
  train_dir = split_dirs['train']
  if not splits['train']:
    raise dataset.missing(f'no training images in {train_dir}/good', category_dir, category)
  if not splits['test']:
    raise dataset.missing(f'no test images in {split_dirs["test"]}/<type>', category_dir,
                          category)
  return splits


def _roots(dataset: Dataset, manual_dir: str) -> List[str]:
  return [manual_dir] + [os.path.join(manual_dir, top) for top in dataset.top_folders]


def category_source(dataset: Dataset, manual_dir: str, category: str) -> str:
  """Where ``category`` comes from: its folder in manual_dir, or the archive holding it.

  Looks for ``<manual_dir>/<category>``, then ``<manual_dir>/<top>/<category>``
  for each of the dataset's top folders, then its archives in manual_dir.

  Raises:
    DatasetFolderError: naming the folders and archives looked for.
  """
  for root in _roots(dataset, manual_dir):
    if os.path.exists(os.path.join(root, category, dataset.marker)):
      return os.path.join(root, category)
  for name in dataset.archives:
    if os.path.isfile(os.path.join(manual_dir, name)):
      return os.path.join(manual_dir, name)
  folder = os.path.join(manual_dir, category)
  if os.path.isdir(folder):
    return folder   # incomplete: the scan names what is missing
  looked = ' nor '.join([folder] + [os.path.join(manual_dir, a) for a in dataset.archives])
  raise dataset.missing(f'neither {looked} exists', manual_dir, category)


def _archive_members(path: str) -> Tuple[Sequence[str], Callable[[str, Sequence[str]], None]]:
  """(member names, extract(folder, names)) of a tar or zip archive."""
  if zipfile.is_zipfile(path):
    archive = zipfile.ZipFile(path)
    return archive.namelist(), lambda folder, names: archive.extractall(folder, names)
  archive = tarfile.open(path, 'r:*')
  members = {m.name: m for m in archive}
  return list(members), lambda folder, names: archive.extractall(
      folder, members=[members[n] for n in names], filter='data')


def resolve_category_dir(dataset: Dataset, manual_dir: str, category: str,
                         extract_dir: str) -> str:
  """The folder of ``category``: in manual_dir, or extracted from the archive.

  From an archive (see `category_source`) only the category's members and
  the dataset's shared paths are extracted, into ``extract_dir``, once.
  """
  source = category_source(dataset, manual_dir, category)
  if os.path.isdir(source):
    return source
  for root in _roots(dataset, extract_dir):
    if os.path.exists(os.path.join(root, category, dataset.marker)):
      return os.path.join(root, category)
  os.makedirs(extract_dir, exist_ok=True)
  tops = ('',) + tuple(f'{top}/' for top in dataset.top_folders)
  wanted = tuple(top + part for top in tops for part in (f'{category}/',) + dataset.shared)
  in_category = tuple(top + f'{category}/' for top in tops)
  try:
    names, extract = _archive_members(source)
    chosen = [n for n in names if n.lstrip('./').startswith(wanted)]
    if any(n.lstrip('./').startswith(in_category) for n in chosen):
      extract(extract_dir, chosen)
  except (tarfile.TarError, zipfile.BadZipFile, EOFError, OSError) as err:
    for root in _roots(dataset, extract_dir):
      shutil.rmtree(os.path.join(root, category), ignore_errors=True)   # never half of one
    raise DatasetFolderError(f'cannot read {source} ({err}): the archive is damaged or '
                             f'incomplete; download it again from {dataset.download_page}'
                             ) from err
  if not any(n.lstrip('./').startswith(in_category) for n in chosen):
    raise dataset.missing(f'no {category}/ in {source}', manual_dir, category)
  for root in _roots(dataset, extract_dir):
    if os.path.exists(os.path.join(root, category, dataset.marker)):
      return os.path.join(root, category)
  raise dataset.missing(f'{source} has {category}/ without {dataset.marker}', manual_dir,
                        category)

