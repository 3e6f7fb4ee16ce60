"""Anomaly synthesis (docs/METHOD.md, "Synthetic anomalies"): CutPaste of known anomalies, Perlin pseudo anomalies.

All functions work on uint8 images already resized to the model's input size
and take a numpy Generator, so that a run is reproducible (albumentations is
seeded from it). Pixels outside the returned mask are never changed.
"""

import os
from typing import List, Optional, Sequence, Tuple

import numpy as np
from scipy import ndimage
from PIL import Image
from skimage import filters, measure, morphology

from bgad_jax.data import demo_data
from bgad_jax.data.pipeline import resize_and_center_crop
from bgad_jax.errors import MissingFileError
from tfds_mvtec import image_io

MVTEC_TEXTURES = ('carpet', 'grid', 'leather', 'tile', 'wood')


# ----------------------------------------------------------------------------
# Foreground


def _border_band(shape: Tuple[int, int], border: float) -> np.ndarray:
  h, w = shape
  b = max(1, int(round(border * min(h, w))))
  band = np.zeros((h, w), bool)
  band[:b], band[-b:], band[:, :b], band[:, -b:] = True, True, True, True
  return band


def _unlike_the_border(image: np.ndarray, border: float) -> Optional[np.ndarray]:
  """Pixels farther from the border's median colour than Otsu's threshold on
  that distance: bool [H, W], or None for a flat image."""
  pixels = image.astype(np.float32)
  edge = pixels[_border_band(image.shape[:2], border)]
  distance = np.linalg.norm(pixels - np.median(edge, axis=0), axis=-1)
  if distance.max() - distance.min() < 1e-6:
    return None
  return distance > filters.threshold_otsu(distance)


def looks_like_texture(images: Sequence[np.ndarray], border: float = 0.04) -> bool:
  """Whether a class's images are a texture rather than an object on a background.

  An object photographed on a background leaves the border mostly
  background: the pixels unlike the border colour lie inside. On a texture
  they are spread evenly, border included. Decided over the class (medians
  over its images), as one image of a texture can look like a bright blob
  on a background.

  Args:
    images: uint8 [H, W, 3] each.
  """
  at_border, inside = [], []
  for image in images:
    unlike = _unlike_the_border(image, border)
    band = _border_band(image.shape[:2], border)
    at_border.append(0.0 if unlike is None else unlike[band].mean())
    inside.append(0.0 if unlike is None else unlike[~band].mean())
  return bool(np.median(at_border) >= 0.5 * np.median(inside))


def estimate_foreground(image: np.ndarray, border: float = 0.04) -> np.ndarray:
  """Foreground of an object photographed on a fairly uniform background.

  The background colour is the median of the image border; pixels whose
  colour distance to it exceeds an Otsu threshold are foreground, then
  closed, hole-filled and cleaned of specks. When that finds almost nothing
  or almost everything, the whole image is foreground.

  Args:
    image: uint8 [H, W, 3].

  Returns:
    bool [H, W].
  """
  h, w = image.shape[:2]
  fg = _unlike_the_border(image, border)
  if fg is None:
    return np.ones((h, w), bool)
  radius = max(1, min(h, w) // 64)
  fg = morphology.closing(fg, morphology.disk(radius)).astype(bool)
  fg = ndimage.binary_fill_holes(fg)
  fg = morphology.remove_small_objects(fg, max_size=max(1, (h * w) // 200) - 1)  # drop specks
  fraction = fg.mean()
  if fraction < 0.01 or fraction > 0.95:
    return np.ones((h, w), bool)
  return fg


def treated_as_texture(images: Sequence[np.ndarray], category: str, mode: str = 'auto') -> bool:
  """Whether a class is handled as a texture (its whole image is foreground).

  ``mode`` is ``data.foreground``: 'all' is a texture, 'folder' (masks given)
  an object, 'auto' a texture for MVTec's textures and classes that
  `looks_like_texture`. `foreground_masks` and the options that treat
  textures and objects apart (``backbone.neighbourhood_on``,
  ``data.mask_pooling_on``) follow this one rule, applied once per run.

  Args:
    images: the normal training images, uint8 [H, W, 3] each.
  """
  if mode == 'auto':
    return category in MVTEC_TEXTURES or looks_like_texture(images)
  return mode == 'all'


def foreground_masks(images: Sequence[np.ndarray], category: str, mode: str = 'auto',
                     names: Sequence[str] = (), folder: str = '',
                     size: Optional[int] = None,
                     texture: Optional[bool] = None) -> List[np.ndarray]:
  """Foreground masks of the normal training images.

  Args:
    mode: 'auto' (whole image for MVTec textures and classes that
      `looks_like_texture`, else `estimate_foreground`),
      'all' (whole image), or 'folder' (masks read from ``folder``: a file
      named like each image, any extension; white = foreground).
    names: the images' file names (needed for 'folder').
    size: side of the images (masks from a folder are resized to it).
    texture: `treated_as_texture`'s verdict when the caller holds it; None
      decides it here.
  """
  if texture is None:
    texture = treated_as_texture(images, category, mode)
  if texture:
    return [np.ones(img.shape[:2], bool) for img in images]
  if mode == 'auto':
    return [estimate_foreground(img) for img in images]
  if mode == 'folder':
    masks = []
    for img, name in zip(images, names):
      stem = os.path.splitext(os.path.basename(name))[0]
      found = [f for f in os.listdir(folder) if os.path.splitext(f)[0] == stem]
      if not found:
        raise MissingFileError(f'no foreground mask for {name} in {folder} '
                               '(data.foreground_dir)')
      mask = image_io.decode_mask(os.path.join(folder, found[0])) * 255
      masks.append(resize_and_center_crop(mask, size or img.shape[0], Image.NEAREST) > 127)
    return masks
  raise ValueError(f"foreground mode must be 'auto', 'all' or 'folder', got {mode!r}")


def albumentations_offline():
  """The albumentations module, imported without its update check.

  Importing albumentations asks PyPI for its newest version unless
  NO_ALBUMENTATIONS_UPDATE is set: a network call at run time, and a wait and
  a warning on a machine without network. Every import here goes through this.
  """
  os.environ.setdefault('NO_ALBUMENTATIONS_UPDATE', '1')
  import albumentations
  return albumentations


# ----------------------------------------------------------------------------
# Strategy 1: RandAugmented CutPaste


def cutpaste_augmenters():
  """The reference's augmentation list (albumentations; IAA ops mapped to their successors)."""
  A = albumentations_offline()
  return [
      A.RandomRotate90(),
      A.OneOf([A.HorizontalFlip(p=1), A.VerticalFlip(p=1)]),
      A.Transpose(),
      A.OpticalDistortion(p=1.0, distort_limit=1.0),
      A.GaussNoise(p=0.2),
      A.OneOf([A.MotionBlur(p=0.2), A.MedianBlur(blur_limit=3, p=0.1),
               A.Blur(blur_limit=3, p=0.1)], p=0.2),
      A.Affine(translate_percent=(-0.0625, 0.0625), scale=(0.8, 1.2), rotate=(-45, 45), p=0.2),
      A.OneOf([A.OpticalDistortion(p=0.3), A.GridDistortion(p=0.1),
               A.PiecewiseAffine(p=0.3)], p=0.2),
      A.OneOf([A.CLAHE(clip_limit=2), A.Sharpen(), A.Emboss(),
               A.RandomBrightnessContrast()], p=0.3),
      A.HueSaturationValue(p=0.3),
  ]


def _rand_augment(augmenters, rng: np.random.Generator, count: int = 3):
  A = albumentations_offline()
  picks = rng.choice(len(augmenters), size=count, replace=False)
  return A.Compose([augmenters[i] for i in picks], seed=int(rng.integers(2 ** 31)))


def _move_regions_into(mask: np.ndarray, foreground: np.ndarray, rng: np.random.Generator,
                       reach_border: float = 0.0) -> Tuple[np.ndarray, np.ndarray]:
  """Moves each connected region of ``mask`` so its centre lands on a foreground point.

  The point keeps the whole region inside the image where the foreground
  allows. With probability ``reach_border`` (a share in [0, 1]; True = 1) it
  may be any foreground point instead, and the part of the region that then
  falls outside the image is dropped (only a share strictly between 0 and 1
  draws a number for it).

  Returns:
    (source rows, source cols, destination rows, destination cols) stacked as
    two arrays of [2, K]: where pixels come from and where they go.
  """
  h, w = mask.shape
  labels = measure.label(mask, connectivity=2)
  src, dst = [], []
  for region in measure.regionprops(labels):
    rows, cols = region.coords[:, 0], region.coords[:, 1]
    half_h = (rows.max() - rows.min()) // 2
    half_w = (cols.max() - cols.min()) // 2
    allowed = foreground.copy()
    if not (reach_border >= 1 or (reach_border > 0 and rng.random() < reach_border)):
      allowed[:half_h], allowed[h - half_h:] = False, False
      allowed[:, :half_w], allowed[:, w - half_w:] = False, False
    points = np.argwhere(allowed)
    if not len(points):
      points = np.argwhere(foreground)
    if not len(points):
      src.append(np.stack([rows, cols]))
      dst.append(np.stack([rows, cols]))
      continue
    target = points[rng.integers(len(points))]
    cy, cx = region.centroid
    new_rows = rows + int(round(target[0] - cy))
    new_cols = cols + int(round(target[1] - cx))
    inside = (new_rows >= 0) & (new_rows < h) & (new_cols >= 0) & (new_cols < w)
    src.append(np.stack([rows[inside], cols[inside]]))
    dst.append(np.stack([new_rows[inside], new_cols[inside]]))
  if not src:
    empty = np.zeros((2, 0), int)
    return empty, empty
  return np.concatenate(src, axis=1), np.concatenate(dst, axis=1)


PLACEMENTS = ('in_place', 'random', 'random_on_textures')


def cut_paste(anomaly_image: np.ndarray, anomaly_mask: np.ndarray, normal_image: np.ndarray,
              foreground: Optional[np.ndarray], rng: np.random.Generator,
              augmenters=None, placement: str = 'in_place', reach_border: float = 0.0
              ) -> Tuple[np.ndarray, np.ndarray]:
  """Pastes the augmented defect region of a known anomaly onto a normal image.

  The anomaly image and its mask go through 3 random augmentations together.
  With ``placement='in_place'`` (the reference), if at least 2/3 of the
  augmented region lies in the normal image's foreground it is pasted in
  place, otherwise each of its connected regions is moved to a random
  foreground point first; with 'random' each region is always moved so;
  with 'random_on_textures' only when the foreground is the whole image (a
  texture, where a defect's spot means nothing; on an object it may: a chip
  sits on the rim). A moved region stays whole inside the image, unless the
  placement is random and ``reach_border`` (an option: the share of such
  regions, True = all) lets it: then its centre may be any foreground point
  and the border cuts a region near it, as it cuts real defects there.

  Args:
    anomaly_image, normal_image: uint8 [S, S, 3]; anomaly_mask: {0, 1} [S, S];
    foreground: bool [S, S] of the normal image, or None (anywhere).
    placement: one of ``PLACEMENTS``.

  Returns:
    (image uint8 [S, S, 3], mask uint8 {0, 1} [S, S]); pixels outside the
    mask equal ``normal_image``.
  """
  if placement not in PLACEMENTS:
    raise ValueError(f'placement={placement!r}: one of {", ".join(PLACEMENTS)}')
  augmenters = augmenters or cutpaste_augmenters()
  out = _rand_augment(augmenters, rng)(image=anomaly_image, mask=anomaly_mask.astype(np.uint8) * 255)
  aug_image, aug_mask = out['image'], out['mask'] > 127
  result = normal_image.copy()
  if placement == 'random_on_textures':
    placement = 'random' if foreground is None or foreground.all() else 'in_place'
  if placement == 'in_place' and (
      foreground is None or (aug_mask & foreground).sum() >= 2 / 3 * aug_mask.sum()):
    result[aug_mask] = aug_image[aug_mask]
    return result, aug_mask.astype(np.uint8)
  if foreground is None:
    foreground = np.ones(aug_mask.shape, bool)
  # The reference's fallback move (in_place) keeps the region whole.
  src, dst = _move_regions_into(aug_mask, foreground, rng,
                                float(reach_border) if placement == 'random' else 0.0)
  result[dst[0], dst[1]] = aug_image[src[0], src[1]]
  mask = np.zeros(aug_mask.shape, np.uint8)
  mask[dst[0], dst[1]] = 1
  return result, mask


# ----------------------------------------------------------------------------
# Strategy 2: Perlin pseudo anomalies (DRAEM)


def perlin_noise(shape: Tuple[int, int], res: Tuple[int, int],
                 rng: np.random.Generator) -> np.ndarray:
  """2-D Perlin gradient noise in about [-1, 1]: [H, W] float32.

  ``res`` is the number of noise periods per axis; any shape works (the
  noise is computed on a grid that ``res`` divides and cropped).
  """
  cells = [int(np.ceil(s / r)) for s, r in zip(shape, res)]
  full = (cells[0] * res[0], cells[1] * res[1])
  angles = rng.uniform(0, 2 * np.pi, size=(res[0] + 1, res[1] + 1))
  gradients = np.stack([np.cos(angles), np.sin(angles)], axis=-1)
  ys = np.arange(full[0]) / cells[0]
  xs = np.arange(full[1]) / cells[1]
  yi, xi = np.floor(ys).astype(int), np.floor(xs).astype(int)
  fy, fx = (ys - yi)[:, None], (xs - xi)[None, :]

  def corner(dy, dx):
    g = gradients[(yi + dy)[:, None], (xi + dx)[None, :]]
    return g[..., 0] * (fy - dy) + g[..., 1] * (fx - dx)

  fade = lambda t: t * t * t * (t * (t * 6 - 15) + 10)
  uy, ux = fade(fy), fade(fx)
  top = corner(0, 0) * (1 - ux) + corner(0, 1) * ux
  bottom = corner(1, 0) * (1 - ux) + corner(1, 1) * ux
  noise = np.sqrt(2) * (top * (1 - uy) + bottom * uy)
  return noise[:shape[0], :shape[1]].astype(np.float32)


def pseudo_augmenters():
  """DRAEM's texture augmentations (imgaug in the reference), with albumentations."""
  A = albumentations_offline()
  return [
      A.RandomGamma(gamma_limit=(50, 200), p=1),
      A.RandomBrightnessContrast(brightness_limit=0.12, contrast_limit=0.2, p=1),
      A.Sharpen(p=1),
      A.HueSaturationValue(hue_shift_limit=50, sat_shift_limit=50, val_shift_limit=0, p=1),
      A.Solarize(threshold_range=(32 / 255, 128 / 255), p=1),
      A.Posterize(p=1),
      A.InvertImg(p=1),
      A.AutoContrast(p=1),
      A.Equalize(p=1),
      A.Affine(rotate=(-45, 45), p=1),
  ]


def pseudo_anomaly(image: np.ndarray, texture: np.ndarray, rng: np.random.Generator,
                   augmenters=None) -> Tuple[np.ndarray, np.ndarray]:
  """A Perlin-shaped region of an augmented texture blended into ``image``.

  Args:
    image: uint8 [S, S, 3]; texture: uint8 [H, W, 3] (any size).

  Returns:
    (image uint8 [S, S, 3], mask uint8 {0, 1} [S, S]); pixels outside the
    mask are unchanged; inside, (1 - beta) * texture + beta * image with
    beta in [0, 0.8).
  """
  size = image.shape[:2]
  augmenters = augmenters or pseudo_augmenters()
  texture = np.asarray(Image.fromarray(texture).resize((size[1], size[0]), Image.BILINEAR))
  texture = _rand_augment(augmenters, rng)(image=texture)['image']
  scale = (2 ** int(rng.integers(0, 6)), 2 ** int(rng.integers(0, 6)))
  noise = perlin_noise(size, scale, rng)
  noise = ndimage.rotate(noise, rng.uniform(-90, 90), reshape=False, order=1, mode='reflect')
  mask = noise > 0.5
  beta = rng.uniform(0.0, 0.8)
  out = image.astype(np.float32)
  out[mask] = (1 - beta) * texture[mask] + beta * out[mask]
  return np.clip(np.round(out), 0, 255).astype(np.uint8), mask.astype(np.uint8)


def texture_sources(folder: str = '', limit: int = 200) -> List[np.ndarray]:
  """Anomaly-source textures: images under ``folder`` (recursively, e.g. DTD), or the
  textures that ship with scikit-image when no folder is given."""
  if not folder:
    return [demo_data.as_rgb(load()) for load in demo_data.TEXTURES.values()]
  paths = sorted(os.path.join(d, f) for d, _, files in os.walk(folder) for f in files
                 if f.lower().endswith(image_io.IMAGE_EXTENSIONS))
  if not paths:
    raise MissingFileError(f'no images under {folder} (data.anomaly_source_path)')
  return [image_io.decode_image(p) for p in paths[:limit]]
