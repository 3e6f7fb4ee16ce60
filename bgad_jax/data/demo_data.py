"""Embedded demo dataset: an MVTec-layout class made offline from real textures.

Normal images are random crops (flips, 90-degree turns, slight brightness
changes) of a texture photograph that ships with scikit-image; training crops
come from the top 60% of the photograph and test crops from the rest, so test
normals are unseen (``split='rows'``). A photograph's top and bottom may hold
different shares of its structures (tissue's lower half has about four times
the pale stroma of its upper half), so ``split='quadrants'`` takes training
crops from the top-left and bottom-right quarters and test crops from the
other two instead (`SPLITS`). Anomalous test images get one of four
procedural defects, drawn here with numpy/scikit-image; the mask marks the
defect's region (for cracks, holes, scratches and stains exactly the pixels
it changed). A defect's centre lies in the middle of the image unless
``defect_placement`` is 'anywhere' (`PLACEMENTS`).
Generation is deterministic: the same arguments give byte-identical PNG files.

The texture classes (tissue, brick, grass, gravel) get cracks, holes, scratches
and stains. The 'surface' class is harder and closer to a real inspection task:
a photograph of a cratered rock surface (its normal images already hold
craters and boulders) with four other defect types: contamination (a patch of
another photograph), discoloration, deformation (a local swirl) and smudge (a
local blur).

The 'coins' class is a product: each image is one of the 24 coins of
scikit-image's coins photograph, centred (within 2 px) and turned by a random
angle, as parts on a conveyor. Every coin appears in training and in the
test set, in new poses (the coins differ from each other as much as a
product's variants do). Its defects lie on the coin only: chip (a piece of
the rim missing, background showing), deformation (a local swirl), scratch
and stain.
"""

import json
import os
import shutil
from typing import Callable, Dict, Sequence, Tuple

import numpy as np
from PIL import Image
from skimage import data as skdata
from scipy import ndimage
from skimage import draw, filters, measure, morphology, segmentation, transform

from bgad_jax.errors import ConfigError

TEXTURES: Dict[str, Callable[[], np.ndarray]] = {
    'brick': skdata.brick, 'grass': skdata.grass, 'gravel': skdata.gravel,
    'tissue': skdata.immunohistochemistry,
}
DEFECT_TYPES = ('crack', 'hole', 'scratch', 'stain')
_FORMAT_VERSION = 2   # 2: the surface class
# Where a defect's centre is drawn: 'centre' (the middle of the image, as the
# classes were made from the start) or 'anywhere' (uniform over the whole
# image, so defects also touch and cross the border, as real ones may).
PLACEMENTS = ('centre', 'anywhere')
_TRAIN_ROWS = 0.6   # split 'rows': the share of the photograph's rows training crops come from
# Which parts of a texture photograph the training and the test crops come
# from: 'rows' (top 60% / the rest, as the classes were made from the start) or
# 'quadrants' (top-left and bottom-right quarters / the other two).
SPLITS = ('rows', 'quadrants')
# Classes with their own photograph and defect types (not strategy 2's textures).
SURFACE_DEFECT_TYPES = ('contamination', 'deformation', 'discoloration', 'smudge')
PHOTO_CLASSES: Dict[str, Callable[[], np.ndarray]] = {'surface': skdata.moon}
_PHOTOGRAPHS = {**TEXTURES, **PHOTO_CLASSES}
# Product classes: one object per image, defects on the object only.
COIN_DEFECT_TYPES = ('chip', 'deformation', 'scratch', 'stain')
PRODUCT_CLASSES = ('coins',)
CATEGORIES = tuple(_PHOTOGRAPHS) + PRODUCT_CLASSES


def defect_types(category: str) -> tuple:
  """The defect types of a demo category's test set."""
  if category in PRODUCT_CLASSES:
    return COIN_DEFECT_TYPES
  return SURFACE_DEFECT_TYPES if category in PHOTO_CLASSES else DEFECT_TYPES


def as_rgb(texture: np.ndarray) -> np.ndarray:
  return np.repeat(texture[:, :, None], 3, axis=2) if texture.ndim == 2 else texture[:, :, :3]


def _normal_crop(texture, rng, size, region) -> np.ndarray:
  """A size x size crop of ``texture`` inside ``region`` = (top, bottom, left, right)."""
  top = int(rng.integers(region[0], region[1] - size + 1))
  left = int(rng.integers(region[2], region[3] - size + 1))
  crop = texture[top:top + size, left:left + size].astype(np.float32)
  crop = np.rot90(crop, int(rng.integers(4)))
  if rng.random() < 0.5:
    crop = crop[:, ::-1]
  crop = crop * rng.uniform(0.95, 1.05)
  return np.clip(np.round(crop), 0, 255).astype(np.uint8)


def _check_placement(placement: str) -> None:
  if placement not in PLACEMENTS:
    raise ConfigError(f'data.demo.defect_placement must be one of {PLACEMENTS}, '
                      f'got {placement!r}')


def _check_split(split: str, category: str) -> None:
  if split not in SPLITS:
    raise ConfigError(f'data.demo.split must be one of {SPLITS}, got {split!r}')
  if split != 'rows' and category in PRODUCT_CLASSES:
    raise ConfigError(f'data.demo.split={split!r}: {category} poses every coin in both splits; '
                      'the split of a photograph applies to the texture classes')


def _split_regions(texture: np.ndarray, size: int, split: str, category: str):
  """{'train': [(top, bottom, left, right), ...], 'test': [...]}: the parts of
  ``texture`` each split crops from; a ConfigError when ``size`` does not fit them."""
  height, width = texture.shape[:2]
  if split == 'rows':
    split_row = int(height * _TRAIN_ROWS)
    largest = min(height - split_row, width)   # the test rows are the fewer
    if size > largest:
      raise ConfigError(f'data.demo.size: demo images of {size} px do not fit the {category} '
                        f'texture: use a size up to {largest} (data.demo.size) and let '
                        'data.inp_size resize them')
    return dict(train=[(0, split_row, 0, width)], test=[(split_row, height, 0, width)])
  half_height, half_width = height // 2, width // 2
  if size > min(half_height, half_width):
    raise ConfigError(f'data.demo.size: demo images of {size} px do not fit a quarter of the '
                      f'{category} texture ({half_height} x {half_width} px) of '
                      "data.demo.split='quadrants': use a size up to "
                      f'{min(half_height, half_width)}')
  quarter = lambda row, col: (row * half_height, (row + 1) * half_height,
                              col * half_width, (col + 1) * half_width)
  return dict(train=[quarter(0, 0), quarter(1, 1)], test=[quarter(0, 1), quarter(1, 0)])


def _defect_centre(rng, size: int, centre_range: Tuple[float, float], placement: str):
  """(row, col) float [2] of a defect: ``centre_range`` (fractions of the side,
  the defect's own) with placement 'centre', the whole image with 'anywhere'.
  Both draw the same numbers from ``rng``, so the rest of a class is unchanged."""
  low, high = (0.0, 1.0) if placement == 'anywhere' else centre_range
  return rng.uniform(low, high, size=2) * size


def _thicken(mask: np.ndarray, radius: int) -> np.ndarray:
  return morphology.dilation(mask, morphology.disk(radius)) if radius > 0 else mask


def _scratch(image, rng, placement):
  size = image.shape[0]
  length = rng.uniform(0.4, 0.8) * size
  angle = rng.uniform(0, np.pi)
  cy, cx = _defect_centre(rng, size, (0.3, 0.7), placement)
  dy, dx = 0.5 * length * np.sin(angle), 0.5 * length * np.cos(angle)
  mask = np.zeros(image.shape[:2], bool)
  rr, cc = draw.line(*[int(np.clip(v, 0, size - 1)) for v in (cy - dy, cx - dx, cy + dy, cx + dx)])
  mask[rr, cc] = True
  mask = _thicken(mask, 1)
  out = image.copy()
  out[mask] = rng.integers(215, 250)
  return out, mask


def _stain(image, rng, placement):
  size = image.shape[0]
  mask = np.zeros(image.shape[:2], bool)
  cy, cx = _defect_centre(rng, size, (0.3, 0.7), placement)
  for _ in range(3):   # a blob of overlapping ellipses
    rr, cc = draw.ellipse(cy + rng.normal(0, 4), cx + rng.normal(0, 4),
                          rng.uniform(0.05, 0.12) * size, rng.uniform(0.05, 0.12) * size,
                          shape=mask.shape, rotation=rng.uniform(0, np.pi))
    mask[rr, cc] = True
  tint = rng.uniform(40, 200, size=3)
  if np.array_equal(image[..., 0], image[..., 1]):   # grey texture: grey stain
    tint[:] = tint[0]
  out = image.astype(np.float32)
  out[mask] = 0.4 * out[mask] + 0.6 * tint
  return np.clip(np.round(out), 0, 255).astype(np.uint8), mask


def _hole(image, rng, placement):
  size = image.shape[0]
  radius = rng.uniform(0.04, 0.09) * size
  cy, cx = _defect_centre(rng, size, (0.25, 0.75), placement)
  mask = np.zeros(image.shape[:2], bool)
  rr, cc = draw.disk((cy, cx), radius, shape=mask.shape)
  mask[rr, cc] = True
  dist = np.hypot(rr - cy, cc - cx) / radius   # darker towards the centre
  out = image.copy()
  out[rr, cc] = (np.clip(10 + 40 * dist, 0, 255)[:, None]).astype(np.uint8)
  return out, mask


def _crack(image, rng, placement):
  size = image.shape[0]
  mask = np.zeros(image.shape[:2], bool)
  y, x = _defect_centre(rng, size, (0.25, 0.75), placement)
  heading = rng.uniform(0, 2 * np.pi)
  for _ in range(int(rng.integers(6, 10))):   # a jagged random walk
    heading += rng.normal(0, 0.6)
    step = rng.uniform(0.04, 0.08) * size
    ny = float(np.clip(y + step * np.sin(heading), 0, size - 1))
    nx = float(np.clip(x + step * np.cos(heading), 0, size - 1))
    rr, cc = draw.line(int(y), int(x), int(ny), int(nx))
    mask[rr, cc] = True
    y, x = ny, nx
  out = image.copy()
  out[mask] = (out[mask].astype(np.float32) * 0.15).astype(np.uint8)
  return out, mask


def _blob(size: int, rng, low: float, high: float, placement: str) -> np.ndarray:
  """A random blob of overlapping ellipses (radii low..high of the image side)."""
  mask = np.zeros((size, size), bool)
  cy, cx = _defect_centre(rng, size, (0.3, 0.7), placement)
  for _ in range(3):
    rr, cc = draw.ellipse(cy + rng.normal(0, 0.03 * size), cx + rng.normal(0, 0.03 * size),
                          rng.uniform(low, high) * size, rng.uniform(low, high) * size,
                          shape=mask.shape, rotation=rng.uniform(0, np.pi))
    mask[rr, cc] = True
  return mask


def _contamination(image, rng, placement):
  """A patch of another photograph (a cat's fur) lying on the surface."""
  size = image.shape[0]
  fur = as_rgb(skdata.chelsea())
  top = int(rng.integers(0, fur.shape[0] - size + 1))
  left = int(rng.integers(0, fur.shape[1] - size + 1))
  patch = fur[top:top + size, left:left + size]
  if np.array_equal(image[..., 0], image[..., 1]):   # grey surface: grey debris
    patch = np.repeat(patch.mean(axis=2, keepdims=True), 3, axis=2)
  mask = _blob(size, rng, 0.04, 0.09, placement)
  out = image.copy()
  out[mask] = np.round(patch[mask]).astype(np.uint8)
  return out, mask


def _discoloration(image, rng, placement):
  """A region darker or brighter by 25-45%."""
  mask = _blob(image.shape[0], rng, 0.06, 0.12, placement)
  factor = rng.uniform(0.55, 0.75) if rng.random() < 0.5 else rng.uniform(1.25, 1.45)
  out = image.astype(np.float32)
  out[mask] *= factor
  out = np.clip(np.round(out), 0, 255).astype(np.uint8)
  return out, mask


def _deformation(image, rng, placement):
  """A local swirl, as if the surface were pressed and twisted; the mask is
  where the swirl moves the surface by at least one pixel."""
  size = image.shape[0]
  radius = rng.uniform(0.2, 0.3) * size
  strength = rng.uniform(4, 7)
  centre = _defect_centre(rng, size, (0.3, 0.7), placement)
  swirled = transform.swirl(image.astype(np.float64) / 255.0, center=centre[::-1],
                            strength=strength, radius=radius, mode='reflect')
  # scikit-image turns a point at distance rho by strength * exp(-rho / (radius
  # ln2 / 5)); it moves along the chord 2 rho sin(angle / 2).
  rows, cols = np.mgrid[:size, :size]
  rho = np.hypot(rows - centre[0], cols - centre[1])
  angle = strength * np.exp(-rho / (radius * np.log(2) / 5))
  mask = (2 * rho * np.sin(np.minimum(angle, np.pi) / 2) >= 1.0) | (rho < 1.0)   # + the pivot
  out = np.clip(np.round(swirled * 255.0), 0, 255).astype(np.uint8)
  out[~mask] = image[~mask]   # moved by under a pixel: imperceptible
  return out, mask


def _smudge(image, rng, placement):
  """A blurred region, as if something were smeared over it."""
  mask = _blob(image.shape[0], rng, 0.06, 0.12, placement)
  blurred = filters.gaussian(image.astype(np.float64), sigma=rng.uniform(3, 5),
                             channel_axis=2, preserve_range=True)
  out = image.copy()
  out[mask] = np.clip(np.round(blurred[mask]), 0, 255).astype(np.uint8)
  return out, mask


_DEFECTS = {'crack': _crack, 'hole': _hole, 'scratch': _scratch, 'stain': _stain,
            'contamination': _contamination, 'deformation': _deformation,
            'discoloration': _discoloration, 'smudge': _smudge}


def add_defect(image: np.ndarray, defect_type: str, rng: np.random.Generator,
               placement: str = 'centre'):
  """Draws one defect, its centre placed by ``placement`` (`PLACEMENTS`). Returns
  (image uint8 [S, S, 3], mask bool [S, S]); pixels outside the mask are unchanged."""
  _check_placement(placement)
  return _DEFECTS[defect_type](image, rng, placement)


# --- the coins product class ---

_COIN_CROP = 72   # px around a coin centre in the photograph (the largest coin: 63 px)


def coin_masks(photo: np.ndarray) -> np.ndarray:
  """bool [H, W]: the coins of scikit-image's coins photograph, a watershed of its
  gradient from dark-background and bright-coin markers (24 coins)."""
  markers = np.zeros(photo.shape, np.int32)
  markers[photo < 30], markers[photo > 150] = 1, 2
  coins = ndimage.binary_fill_holes(segmentation.watershed(filters.sobel(photo), markers) == 2)
  return morphology.remove_small_objects(coins, max_size=400)


def coin_regions(coins: np.ndarray) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
  """(labels int [H, W], each coin's label [N], its (row, col) centre float [N, 2]) of
  ``coins`` (bool [H, W]), in the order of the centres."""
  labels = measure.label(coins)
  regions = sorted(measure.regionprops(labels), key=lambda r: r.centroid)
  return labels, np.array([r.label for r in regions]), np.array([r.centroid for r in regions])


def _coin_pose(photo, coin_mask, centre, rng, size):
  """One coin, shifted by up to 2 px and turned by a random angle, resized to
  ``size``: (grey image uint8 [S, S, 3], coin mask bool [S, S])."""
  half = _COIN_CROP   # a window twice the crop's side: turning it brings no border in
  row, col = np.round(centre + rng.uniform(-2, 2, size=2)).astype(int)
  window = (slice(row - half, row + half), slice(col - half, col + half))
  angle = rng.uniform(0, 360)
  pose = []
  for layer, order in ((photo, 1), (coin_mask.astype(np.float64), 0)):
    turned = transform.rotate(layer[window].astype(np.float64), angle, order=order,
                              preserve_range=True)
    crop = turned[half // 2:half // 2 + _COIN_CROP, half // 2:half // 2 + _COIN_CROP]
    pose.append(transform.resize(crop, (size, size), order=order, anti_aliasing=order > 0,
                                 preserve_range=True))
  image = np.clip(np.round(pose[0] * rng.uniform(0.95, 1.05)), 0, 255).astype(np.uint8)
  return as_rgb(image), pose[1] > 0.5


def _chip(image, coin, rng):
  """A piece of the rim missing: a disk on the coin's edge shows background."""
  size = image.shape[0]
  edge = np.argwhere(coin & ~ndimage.binary_erosion(coin, morphology.disk(1)))
  cy, cx = edge[rng.integers(len(edge))]
  mask = np.zeros(coin.shape, bool)
  rr, cc = draw.disk((cy, cx), rng.uniform(0.06, 0.1) * size, shape=mask.shape)
  mask[rr, cc] = True
  mask &= coin
  background = image[~coin]
  out = image.copy()
  out[mask] = background[rng.integers(len(background), size=int(mask.sum()))]
  return out, mask


_COIN_DEFECT_DRAWS = 200   # real coins need a few; more means the coin cannot hold one


def add_coin_defect(image: np.ndarray, coin: np.ndarray, defect_type: str,
                    rng: np.random.Generator, placement: str = 'centre'):
  """One defect on the coin (``coin``: bool [S, S]); the same contract as
  `add_defect`. Redrawn until it covers at least 0.2% of the image; a coin too
  small for that raises ValueError instead of drawing for ever."""
  for _ in range(_COIN_DEFECT_DRAWS):
    if defect_type == 'chip':
      out, mask = _chip(image, coin, rng)
    else:
      out, mask = add_defect(image, defect_type, rng, placement)
      mask = mask & coin
      out = np.where(mask[..., None], out, image)
    if mask.sum() >= 0.002 * mask.size:
      return out, mask
  raise ValueError(f'no {defect_type} of at least 0.2% of the image in {_COIN_DEFECT_DRAWS} '
                   f'draws on a coin of {int(coin.sum())} px')


def coin_poser(size: int, rng: np.random.Generator):
  """``pose(k=None)``: coin ``k`` of the coins photograph (a random one by default)
  in a random pose, as `_coin_pose` returns it."""
  photo = skdata.coins()
  labels, coin_labels, centres = coin_regions(coin_masks(photo))
  # Padded: a window around any coin stays inside the photograph.
  photo, labels = np.pad(photo, _COIN_CROP, mode='edge'), np.pad(labels, _COIN_CROP)

  def pose(k=None):   # the coin's own mask: its neighbours' edges may show in the corners
    k = rng.integers(len(centres)) if k is None else k
    return _coin_pose(photo, labels == coin_labels[k], centres[k] + _COIN_CROP, rng, size)
  return pose


def _save(array: np.ndarray, path: str) -> None:
  os.makedirs(os.path.dirname(path), exist_ok=True)
  Image.fromarray(array).save(path, format='PNG')


def _image_sources(category: str, size: int, rng: np.random.Generator, placement: str,
                   photo_split: str = 'rows'):
  """(normal(split) -> image, defective(defect_type) -> (image, mask)) of a class.

  Textures: training and test crops from the parts of the photograph
  ``photo_split`` gives them (`SPLITS`). Coins: any coin in a new pose, for both splits.
  """
  if category in PRODUCT_CLASSES:
    pose = coin_poser(size, rng)

    def normal(split):
      del split
      return pose()[0]

    def defective(defect_type):
      return add_coin_defect(*pose(), defect_type, rng, placement)
    return normal, defective
  texture = as_rgb(_PHOTOGRAPHS[category]())
  regions = _split_regions(texture, size, photo_split, category)   # checks the size

  def crop(split):
    # One region: no draw, so the 'rows' classes keep their files.
    choice = int(rng.integers(len(regions[split]))) if len(regions[split]) > 1 else 0
    return _normal_crop(texture, rng, size, regions[split][choice])

  def defect_on_crop(defect_type):
    return add_defect(crop('test'), defect_type, rng, placement)
  return crop, defect_on_crop


def write_class(category_dir: str, types: Sequence[str], counts: Tuple[int, int, int],
                normal: Callable[[str], np.ndarray],
                defective: Callable[[str], Tuple[np.ndarray, np.ndarray]]) -> None:
  """Writes ``category_dir`` in the MVTec layout from ``normal(split)`` (uint8
  [S, S] or [S, S, 3]) and ``defective(defect_type)`` ((image, bool mask [S, S])),
  ``counts`` = (training, normal test, test per defect type) images, drawn in a
  fixed order (training, test normals, then each of ``types``): the same rng
  gives the same files."""
  num_train, num_test_good, num_per_defect = counts
  for split, count in (('train', num_train), ('test', num_test_good)):
    for i in range(count):
      _save(normal(split), os.path.join(category_dir, split, 'good', f'{i:03d}.png'))
  for defect_type in types:
    for i in range(num_per_defect):
      image, mask = defective(defect_type)
      _save(image, os.path.join(category_dir, 'test', defect_type, f'{i:03d}.png'))
      _save(mask.astype(np.uint8) * 255,
            os.path.join(category_dir, 'ground_truth', defect_type, f'{i:03d}_mask.png'))


def generate(root: str, category: str = 'tissue', size: int = 128, num_train: int = 60,
             num_test_good: int = 16, num_per_defect: int = 8, seed: int = 0,
             defect_placement: str = 'centre', split: str = 'rows') -> str:
  """Writes ``<root>/<category>/{train,test,ground_truth}`` (MVTec layout).

  ``defect_placement``: where defect centres are drawn (`PLACEMENTS`; the
  coins' chips lie on the rim either way). The normal images and every other
  draw are the same for both. ``split``: which parts of a texture photograph
  the training and test crops come from (`SPLITS`; textures only).

  Reuses an existing folder made with the same arguments (a stamp file records
  them). Returns the category folder.
  """
  if category not in CATEGORIES:
    raise ConfigError(f'data.category: a demo category must be one of {sorted(CATEGORIES)}, '
                      f'got {category!r}')
  category_dir = os.path.join(root, category)
  settings = dict(format=_FORMAT_VERSION, size=size, num_train=num_train,
                  num_test_good=num_test_good, num_per_defect=num_per_defect, seed=seed)
  if defect_placement != 'centre':   # folders made before the options stay valid
    settings['defect_placement'] = defect_placement
  if split != 'rows':
    settings['split'] = split
  stamp = os.path.join(category_dir, 'demo_settings.json')
  if os.path.isfile(stamp):
    with open(stamp) as f:
      if json.load(f) == settings:
        return category_dir
  _check_placement(defect_placement)   # before the old folder is removed
  _check_split(split, category)
  sources = _image_sources(category, size, np.random.default_rng(seed),   # checks the size
                           defect_placement, split)
  shutil.rmtree(category_dir, ignore_errors=True)   # no files left from other settings
  write_class(category_dir, defect_types(category), (num_train, num_test_good, num_per_defect),
              *sources)
  with open(stamp, 'w') as f:
    json.dump(settings, f)
  return category_dir
