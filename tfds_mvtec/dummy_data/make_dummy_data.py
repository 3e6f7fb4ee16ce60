"""Regenerates the tiny fake datasets beside this file (python make_dummy_data.py).

MVTec AD: bottle (RGB 16x16) and grid (greyscale 12x12) in this folder. The
other datasets, each in its own real layout under <dataset>/ (one class, 48 px
so that a test can train on it): mpdd/tubes, btad/01 (BMP images, PNG masks),
visa/candle (JPEG images, masks holding a class id, split_csv/1cls.csv),
loco/pushpins (48x64, validation/good, two mask files for one image),
mvtec_ad2/can (validation/good, test_public with its ground_truth). Anomalies
carry a bright square that their mask marks exactly.
"""

import csv
import os

import numpy as np
from PIL import Image

HERE = os.path.dirname(os.path.abspath(__file__))
LAYOUT = {'bottle': ((16, 16, 3), {'train/good': 3, 'test/good': 2, 'test/broken_large': 2,
                                   'test/contamination': 1}),
          'grid': ((12, 12), {'train/good': 2, 'test/good': 1, 'test/bent': 2})}


def main():
  rng = np.random.default_rng(0)
  for category, (shape, folders) in LAYOUT.items():
    for folder, count in folders.items():
      os.makedirs(os.path.join(HERE, category, folder), exist_ok=True)
      defect = folder.split('/')[1]
      for i in range(count):
        image = rng.integers(0, 100, size=shape, dtype=np.uint8)
        name = f'{i:03d}.png'
        if defect != 'good':
          mask = np.zeros(shape[:2], np.uint8)
          mask[2 + i:6 + i, 3:8] = 255
          image[mask > 0] = 250
          gt_dir = os.path.join(HERE, category, 'ground_truth', defect)
          os.makedirs(gt_dir, exist_ok=True)
          Image.fromarray(mask).save(os.path.join(gt_dir, f'{i:03d}_mask.png'))
        Image.fromarray(image).save(os.path.join(HERE, category, folder, name))


def _square(shape, i):
  """The defect square of the i-th anomaly: a {0, 255} mask."""
  mask = np.zeros(shape[:2], np.uint8)
  mask[4 + 2 * i:16 + 2 * i, 6:20] = 255
  return mask


def _save(path, array):
  os.makedirs(os.path.dirname(path), exist_ok=True)
  Image.fromarray(array).save(path)


def _image(rng, shape, mask=None):
  image = rng.integers(40, 120, size=shape, dtype=np.uint8)
  if mask is not None:
    image[mask > 0] = 250
  return image


def mvtec_like(root, category, rng, normal='good', ext='.png', mask_ext='.png',
               mask_suffix='_mask', defects=('crack', 'dent'), shape=(48, 48, 3),
               extra_normal=(), test_dir='test', gt_dir='ground_truth'):
  """train/<normal> 6, <extra_normal> 2 each, <test_dir>/<normal> 3, 2 per defect."""
  folders = [('train', normal, 6)] + [(split, normal, 2) for split in extra_normal]
  folders += [(test_dir, normal, 3)] + [(test_dir, d, 2) for d in defects]
  for split, kind, count in folders:
    for i in range(count):
      mask = None if kind == normal else _square(shape, i)
      _save(os.path.join(root, category, split, kind, f'{i:03d}{ext}'), _image(rng, shape, mask))
      if mask is not None:
        _save(os.path.join(root, category, gt_dir, kind, f'{i:03d}{mask_suffix}{mask_ext}'), mask)


def visa(root, rng):
  """candle: 6 train + 3 test normal JPEGs, 4 anomalies; masks hold class id 1 or 2."""
  rows, shape = [], (48, 48, 3)
  for split, label, count in (('train', 'normal', 6), ('test', 'normal', 3),
                              ('test', 'anomaly', 4)):
    for i in range(count):
      kind = 'Normal' if label == 'normal' else 'Anomaly'
      number = len(rows)
      image = f'candle/Data/Images/{kind}/{number:04d}.JPG'
      mask_name = ''
      mask = None
      if label == 'anomaly':
        mask = (_square(shape, i) > 0).astype(np.uint8) * (1 + i % 2)   # ids, not 255
        mask_name = f'candle/Data/Masks/Anomaly/{number:04d}.png'
        _save(os.path.join(root, mask_name), mask)
      _save(os.path.join(root, image), _image(rng, shape, mask))
      rows.append(['candle', split, label, image, mask_name])
  os.makedirs(os.path.join(root, 'split_csv'), exist_ok=True)
  with open(os.path.join(root, 'split_csv', '1cls.csv'), 'w', newline='') as f:
    writer = csv.writer(f)
    writer.writerow(['object', 'split', 'label', 'image', 'mask'])
    writer.writerows(rows)


def loco(root, rng):
  """pushpins 48x64: logical/structural anomalies; image 000 of each has two mask files."""
  shape = (48, 64, 3)
  mvtec_like(root, 'pushpins', rng, defects=(), shape=shape, extra_normal=('validation',))
  for kind in ('logical_anomalies', 'structural_anomalies'):
    for i in range(2):
      regions = [_square(shape, i)]
      if i == 0:
        second = np.zeros(shape[:2], np.uint8)
        second[30:40, 40:56] = 255
        regions.append(second)
      _save(os.path.join(root, 'pushpins', 'test', kind, f'{i:03d}.png'),
            _image(rng, shape, np.maximum.reduce(regions)))
      for j, region in enumerate(regions):
        _save(os.path.join(root, 'pushpins', 'ground_truth', kind, f'{i:03d}', f'{j:03d}.png'),
              region)


def other_datasets():
  """The datasets beyond MVTec AD, each with its own seed."""
  mvtec_like(os.path.join(HERE, 'mpdd'), 'tubes', np.random.default_rng(1))
  mvtec_like(os.path.join(HERE, 'btad'), '01', np.random.default_rng(2), normal='ok',
             ext='.bmp', mask_suffix='', defects=('ko',))
  visa(os.path.join(HERE, 'visa'), np.random.default_rng(3))
  loco(os.path.join(HERE, 'loco'), np.random.default_rng(4))
  mvtec_like(os.path.join(HERE, 'mvtec_ad2'), 'can', np.random.default_rng(5),
             defects=('bad',), extra_normal=('validation',), test_dir='test_public',
             gt_dir='test_public/ground_truth')


if __name__ == '__main__':
  main()
  other_datasets()
