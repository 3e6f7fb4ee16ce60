"""VisA, twelve classes incl. PCBs and macaroni (Zou et al., ECCV 2022).

The split is given by ``split_csv/1cls.csv`` beside the class folders, one row
per image: object, split (train/test), label (normal/anomaly), image path,
mask path (relative to the dataset root). Masks hold a class id per defect
region, so every non-zero pixel is defective. VisA names no defect types in
that file: anomalies get the type 'anomaly'. Examples carry the CSV's split.
"""

import csv
import os
from typing import Dict, List

from tfds_mvtec import layout

SPLIT_CSV = os.path.join('split_csv', '1cls.csv')
_COLUMNS = ('object', 'split', 'label', 'image', 'mask')


def scan(dataset, category_dir, category, masks_required) -> Dict[str, List[layout.Record]]:
  root = os.path.dirname(category_dir)
  table = os.path.join(root, SPLIT_CSV)
  if not os.path.isdir(category_dir):
    raise dataset.missing('no folder', category_dir, category)
  if not os.path.isfile(table):
    raise dataset.missing(f'no split file {table}', root, category)
  with open(table, newline='') as f:
    reader = csv.DictReader(f)
    if tuple(reader.fieldnames or ()) != _COLUMNS:
      raise dataset.missing(f'{table} has columns {reader.fieldnames}, not {list(_COLUMNS)}',
                            root, category)
    rows = [row for row in reader if row['object'] == category]
  splits: Dict[str, List[layout.Record]] = {'train': [], 'test': []}
  for row in rows:
    image = os.path.join(root, row['image'])
    if not os.path.isfile(image):
      raise dataset.missing(f'no image {image} (listed in {table})', root, category)
    anomalous = row['label'] == 'anomaly'
    masks = ()
    if anomalous and row['mask']:
      masks = (os.path.join(root, row['mask']),)
      if not os.path.isfile(masks[0]):
        raise dataset.missing(f'no mask {masks[0]} (listed in {table})', root, category)
    if anomalous and not masks and masks_required:
      raise dataset.missing(f'no mask listed for {row["image"]} in {table}', root, category)
    if row['split'] not in splits:
      raise dataset.missing(f'split {row["split"]!r} of {row["image"]} in {table}', root,
                            category)
    splits[row['split']].append(layout.Record(
        image_path=image, mask_paths=masks, label=int(anomalous),
        defect_type='anomaly' if anomalous else 'good',
        filename=os.path.relpath(image, category_dir).replace(os.sep, '/'),
        split=row['split']))
  for split, records in splits.items():
    if not records:
      raise dataset.missing(f'no {split} rows for {category} in {table}', root, category)
    records.sort(key=lambda r: r.filename)
  return splits


VISA = layout.Dataset(
    name='visa', title='VisA', builder_name='visa',
    categories=('candle', 'capsules', 'cashew', 'chewinggum', 'fryum', 'macaroni1',
                'macaroni2', 'pcb1', 'pcb2', 'pcb3', 'pcb4', 'pipe_fryum'),
    archives=('VisA_20220922.tar',), top_folders=('VisA_20220922', 'VisA'), marker='Data',
    shared=('split_csv/',), scan=scan, mask_threshold=0, split_field=True,
    layout_help='<root>/split_csv/1cls.csv, <root>/<category>/Data/Images/{Normal,Anomaly}, '
                '<root>/<category>/Data/Masks/Anomaly',
    download_page='https://github.com/amazon-science/spot-diff',
    licence='CC BY-NC-SA 4.0', inp_size=256)
