"""Regenerates the tiny fake MVTec tree beside this file (python make_dummy_data.py).

bottle: RGB 16x16; grid: greyscale 12x12. Anomalies carry a bright square that
their mask marks exactly.
"""

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


if __name__ == '__main__':
  main()
