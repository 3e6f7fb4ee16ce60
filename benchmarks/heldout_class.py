"""A real-photograph class that `best` was not tuned on, for a held-out check.

  python benchmarks/heldout_class.py --out /tmp/heldout      # seconds; offline
  python benchmarks/quality.py --data /tmp/heldout --classes fundus --inp_size 128 \
      --seeds 0,1,2 --runs patchcore,patchcore_own_norm,faithful,best
  python benchmarks/heldout_class.py --out /tmp/heldout256 --size 256
  python benchmarks/quality.py --data /tmp/heldout256 --classes fundus \
      --seeds 0,1,2 --runs patchcore_own_norm,patchcore,faithful,best    # 256 px

Writes ``<out>/fundus`` in the MVTec layout: 128-px grayscale crops of
scikit-image's retina photograph (the green channel at half size, contrast
stretched: vessels on a smooth background), 80 normal training crops, 64
normal test crops and 16 test crops of each of four defect types. A defect's
centre lies anywhere in the crop (the border cuts some), and its mask is the
region it visibly changed: the pixels it moved by at least 8 grey levels,
closed and filled, inside the area it acts on. ``--size 256`` takes crops of
the same extent from the full-resolution photograph, at twice the detail,
with every defect length below doubled: quality.py's default input size for
``--data``, the size of the images in the issue that set the quality goals.
``--num_train N`` (N > 80) adds training crops, as many as a larger class
has (the issue's had about 400); the first 80 and the test set stay as they are.
``--min_region N`` leaves out a mask's regions under N px (of a 128-px crop),
its largest kept: a blur or a warp moves scattered single pixels by the visible
step beside the region it changed, and AUPRO counts each such speck as a
defect of its own. The images stay the same.
None of the defect generators is one of the demo classes'
(bgad_jax.data.demo_data), and quality.py leaves the last type by name, warp,
unseen (lengths in px of a 128-px crop):

  blur     an elliptic patch (radius 10-18 px) blurred with sigma 3 px, faded in
           at its edge: only what it blurs (vessels, the disc's rim) is a defect;
  scratch  a bright line 2-3 px wide and 25-50 px long;
  spot     a dark or bright elliptic spot (radius 4-9 px) with a soft edge;
  warp     a local pinch or bulge (radius 10-16 px) that bends the vessels it
           meets (the "local warp" of the issue that set the quality goals).

Training and test crops come from the fundus's disc alternately by 4 x 4
blocks of the photograph (a checkerboard), so both splits see the same
structures (the optic disc, the large vessels, the macula), and each crop is
turned, flipped and scaled in brightness by up to 5%. Crops with a defect are
test crops. The files depend on ``--seed`` only.
"""

import argparse
import os
import sys
from typing import Callable, Dict, Tuple

import numpy as np
from PIL import Image
from scipy import ndimage

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from bgad_jax.data import demo_data  # noqa: E402

CLASS = 'fundus'
SIZE = 128   # the default crop side; lengths below are px at this size
SIZES = (128, 256)
NUM_TRAIN, NUM_TEST_GOOD, NUM_PER_DEFECT = 80, 64, 16
_PHOTO_SIDE = 705   # the retina photograph (1411 px) at half size (SIZE's scale)
_DISC_CENTRE, _DISC_RADIUS = 352, 330   # px of the half-size photograph
_MIN_MASK_PIXELS = 15   # a defect that leaves fewer changed pixels is drawn again
# A pixel belongs to a defect's mask when the defect moved it by at least this
# many grey levels (of 255): a blur or a warp on smooth background changes
# nothing, and a soft edge fades out; the mask is what visibly changed.
_VISIBLE_CHANGE = 8


def fundus_photograph(size: int = SIZE) -> np.ndarray:
  """float32 [705 * s, 705 * s] in [0, 255], s = size / SIZE: the retina's green
  channel, stretched; at half size for 128-px crops, full for 256."""
  import skimage.data   # bundled with scikit-image: no download
  green = Image.fromarray(skimage.data.retina()[:, :, 1])
  side = _PHOTO_SIDE * _scale(size)
  photo = np.asarray(green.resize((side, side), Image.BILINEAR), np.float32)
  return np.clip((photo - 15) * 2.2, 0, 255)


def _scale(side: int) -> int:
  """How many px of a crop of ``side`` px (one of SIZES) one px of a SIZE crop is."""
  return side // SIZE


def crop(photo: np.ndarray, rng: np.random.Generator, split: str,
         size: int = SIZE) -> np.ndarray:
  """float [size, size]: a crop inside the disc from SPLIT's checkerboard blocks of
  ``photo`` (`fundus_photograph(size)`)."""
  height, width = photo.shape
  centre, radius = _DISC_CENTRE * _scale(size), _DISC_RADIUS * _scale(size)
  while True:
    top, left = int(rng.integers(0, height - size)), int(rng.integers(0, width - size))
    if np.hypot(top + size / 2 - centre, left + size / 2 - centre) > radius - size * 0.75:
      continue   # part of the crop would be outside the disc
    block_row, block_col = (top + size // 2) * 4 // height, (left + size // 2) * 4 // width
    if ((block_row + block_col) % 2 == 0) == (split == 'train'):
      break
  image = np.rot90(photo[top:top + size, left:left + size], int(rng.integers(4)))
  if rng.random() < 0.5:
    image = image[:, ::-1]
  return image * rng.uniform(0.95, 1.05)


def _ellipse(rng, radius_low: float, radius_high: float, size: int = SIZE):
  """(squared elliptic radius float [size, size], centre (row, col)) of a random
  ellipse; radii in px of a SIZE crop."""
  rows, cols = np.mgrid[:size, :size]
  centre_row, centre_col = rng.uniform(0, size, 2)   # anywhere: the border cuts some
  radius_a, radius_b = rng.uniform(radius_low, radius_high, 2) * _scale(size)
  angle = rng.uniform(0, np.pi)
  d_row, d_col = rows - centre_row, cols - centre_col
  u = (d_row * np.cos(angle) + d_col * np.sin(angle)) / radius_a
  v = (-d_row * np.sin(angle) + d_col * np.cos(angle)) / radius_b
  return u * u + v * v, (centre_row, centre_col)


def _visible(image: np.ndarray, out: np.ndarray, support: np.ndarray):
  """(out, bool mask [S, S]): the region the defect visibly changed, as an
  annotator would draw it: the changed pixels closed and filled, inside
  ``support`` (bool [S, S], where the defect acts)."""
  changed = np.abs(np.clip(out, 0, 255) - np.clip(image, 0, 255)) >= _VISIBLE_CHANGE
  # (The closing erodes at the image border, so the changed pixels are added back.)
  closed = ndimage.binary_closing(changed, iterations=2 * _scale(image.shape[0]))
  region = ndimage.binary_fill_holes(closed | changed)
  return out, region & support


def _spot(image, rng):
  radius2, _ = _ellipse(rng, 4, 9, image.shape[0])
  soft = np.clip(1.5 - radius2, 0, 1)
  sign = rng.choice([-1, 1])
  return _visible(image, image + sign * rng.uniform(40, 70) * soft, soft > 0)


def _blur(image, rng):
  radius2, _ = _ellipse(rng, 10, 18, image.shape[0])
  weight = np.clip((1.2 - radius2) / 0.4, 0, 1)
  blurred = ndimage.gaussian_filter(image, 3 * _scale(image.shape[0]))
  return _visible(image, image * (1 - weight) + blurred * weight, weight > 0)


def _scratch(image, rng):
  size = image.shape[0]
  scale = _scale(size)
  start = rng.uniform(0, size, 2)
  angle, length = rng.uniform(0, np.pi), rng.uniform(25, 50) * scale
  end = start + length * np.array([np.sin(angle), np.cos(angle)])
  rows, cols = np.mgrid[:size, :size].astype(np.float32)
  along = np.clip(((rows - start[0]) * (end[0] - start[0]) +
                   (cols - start[1]) * (end[1] - start[1])) / (length * length), 0, 1)
  distance = np.hypot(rows - (start[0] + along * (end[0] - start[0])),
                      cols - (start[1] + along * (end[1] - start[1])))
  line = distance <= 1.2 * scale
  out = image.copy()
  out[line] = rng.uniform(200, 240)
  return _visible(image, out, line)


def _warp(image, rng):
  size = image.shape[0]
  radius2, (centre_row, centre_col) = _ellipse(rng, 10, 16, size)
  weight = np.clip(1 - radius2, 0, 1) ** 2
  rows, cols = np.mgrid[:size, :size].astype(np.float32)
  strength = rng.uniform(0.4, 0.6) * rng.choice([-1, 1])   # a pinch or a bulge
  return _visible(image, ndimage.map_coordinates(
      image, [rows + strength * weight * (rows - centre_row),
              cols + strength * weight * (cols - centre_col)], order=1, mode='reflect'),
      weight > 0)


DEFECTS: Dict[str, Callable[[np.ndarray, np.random.Generator],
                            Tuple[np.ndarray, np.ndarray]]] = {
    'blur': _blur, 'scratch': _scratch, 'spot': _spot, 'warp': _warp}


def without_specks(mask: np.ndarray, min_region: int) -> np.ndarray:
  """bool [S, S]: ``mask`` without its 8-connected regions under ``min_region`` px,
  the largest region always kept (0: the mask as it is)."""
  if min_region <= 0:
    return mask
  regions, count = ndimage.label(mask, structure=np.ones((3, 3), bool))
  sizes = np.bincount(regions.ravel(), minlength=count + 1)
  keep = sizes >= min_region
  keep[0] = False   # the background
  if count:
    keep[1 + np.argmax(sizes[1:])] = True
  return keep[regions]


def _as_uint8(image: np.ndarray) -> np.ndarray:
  return np.clip(np.round(image), 0, 255).astype(np.uint8)


def write(root: str, seed: int = 123, size: int = SIZE, num_train: int = NUM_TRAIN,
          min_region: int = 0) -> str:
  """Writes ``<root>/fundus`` with ``size``-px crops (see the module doc) and returns
  that folder. ``num_train`` above NUM_TRAIN adds training crops from a second
  random stream, so the first NUM_TRAIN and every test file stay the same.
  ``min_region`` > 0 leaves a mask's regions under that many px of a SIZE crop out
  (`without_specks`); the images stay the same."""
  if size not in SIZES:
    raise ValueError(f'size {size}: one of {SIZES}')
  if num_train < NUM_TRAIN:
    raise ValueError(f'num_train {num_train}: at least {NUM_TRAIN}')
  rng = np.random.default_rng(seed)
  photo = fundus_photograph(size)
  min_mask_pixels = _MIN_MASK_PIXELS * _scale(size) ** 2
  min_region_pixels = min_region * _scale(size) ** 2

  def normal(split):
    return _as_uint8(crop(photo, rng, split, size))

  def defective(defect_type):
    while True:
      image, mask = DEFECTS[defect_type](crop(photo, rng, 'test', size), rng)
      if mask.sum() >= min_mask_pixels:   # before the specks go: the same draws
        return _as_uint8(image), without_specks(mask, min_region_pixels)
  class_dir = os.path.join(root, CLASS)
  demo_data.write_class(class_dir, list(DEFECTS), (NUM_TRAIN, NUM_TEST_GOOD, NUM_PER_DEFECT),
                        normal, defective)
  extra_rng = np.random.default_rng([seed, 1])
  for i in range(NUM_TRAIN, num_train):
    Image.fromarray(_as_uint8(crop(photo, extra_rng, 'train', size))).save(
        os.path.join(class_dir, 'train', 'good', f'{i:03d}.png'), format='PNG')
  return class_dir


def main(argv=None) -> str:
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--out', required=True, help='root folder; writes <out>/fundus')
  parser.add_argument('--seed', type=int, default=123)
  parser.add_argument('--size', type=int, default=SIZE, choices=SIZES,
                      help='crop side in px (256: the full-resolution photograph)')
  parser.add_argument('--num_train', type=int, default=NUM_TRAIN,
                      help='normal training crops; more than the default adds crops and '
                           'leaves the others and the test set as they are')
  parser.add_argument('--min_region', type=int, default=0,
                      help='leave mask regions under this many px (of a 128-px crop) out, '
                           'the largest kept: specks an annotator would not draw. The '
                           'images stay the same')
  args = parser.parse_args(argv)
  class_dir = write(args.out, args.seed, args.size, args.num_train, args.min_region)
  print(f'wrote {class_dir}: {args.size}-px crops, {args.num_train} training, '
        f'{NUM_TEST_GOOD} normal test and '
        f'{NUM_PER_DEFECT} x {len(DEFECTS)} defective test images')
  return class_dir


if __name__ == '__main__':
  sys.exit(0 if main() else 1)
