"""The training vectors of every level, for every (meta-epoch, sub-epoch).

For every feature level l the frozen backbone's features of the training
images are flattened to ``[N_images * h_l * w_l, C_l]`` and kept on the
devices, with each vector's abnormal flag. Images are ordered: the normal
ones first (the first meta-epoch uses only them), then the cached images of
the anomaly strategies (e.g. the known anomalies repeated), then the
synthetic ones, drawn anew every sub-epoch from ``(seed, epoch, sub_epoch)``.
"""

from typing import List, Sequence, Tuple

import flax
import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh

from bgad_jax.data import strategies as strategies_lib
from bgad_jax.models.pos_embed import condition_tables
from bgad_jax.training.features import FrozenBackbone
from bgad_jax.training.plan import plan_rng
from bgad_jax.training.sharding import replicated

SYNTHESIS_STREAM = 1000   # plan_rng stream of the synthetic images (levels use 0..L)


class LevelData(flax.struct.PyTreeNode):
  """One level's training vectors on the devices."""
  features: jnp.ndarray                    # [V, C] float32
  masks: jnp.ndarray                       # [V] float32, 1 = abnormal
  cond: Tuple[jnp.ndarray, jnp.ndarray]    # `condition_tables` of the level
  positions: int = flax.struct.field(pytree_node=False)   # h * w


MASK_POOLINGS = ('nearest', 'max', 'thin')


def _cell_reduce(masks: np.ndarray, axis: int, cells: int, reduce=np.max) -> np.ndarray:
  """torch ``adaptive_{max,avg}_pool`` along one axis of size S cut into n = ``cells``:
  cell i spans [floor(i S / n), ceil((i + 1) S / n))."""
  size = masks.shape[axis]
  starts = np.arange(cells) * size // cells
  ends = -((-(np.arange(cells) + 1) * size) // cells)
  return np.stack([reduce(masks.take(np.arange(a, b), axis=axis), axis=axis)
                   for a, b in zip(starts, ends)], axis=axis)


def _pool_cells(masks: np.ndarray, height: int, width: int, reduce=np.max) -> np.ndarray:
  """[N, S, S] -> [N, height, width]: ``reduce`` over each adaptive-pooling cell."""
  return _cell_reduce(_cell_reduce(masks, 1, height, reduce), 2, width, reduce)


def _box_sums(masks: np.ndarray, rows: int, cols: int) -> np.ndarray:
  """[N, H, W] -> [N, H - rows + 1, W - cols + 1]: the sum of every rows x cols window."""
  integral = np.pad(masks.astype(np.int32).cumsum(1).cumsum(2), ((0, 0), (1, 0), (1, 0)))
  return (integral[:, rows:, cols:] - integral[:, :-rows, cols:]
          - integral[:, rows:, :-cols] + integral[:, :-rows, :-cols])


def thin_parts(masks: np.ndarray, rows: int, cols: int) -> np.ndarray:
  """[N, H, W] 0/1 masks -> the defect pixels that no rows x cols rectangle lying
  wholly inside the defect covers (the mask less its morphological opening):
  the parts of a defect narrower than such a rectangle."""
  masks = masks > 0
  rows, cols = min(rows, masks.shape[1]), min(cols, masks.shape[2])
  if rows * cols <= 1:
    return np.zeros_like(masks)
  inside = _box_sums(masks, rows, cols) == rows * cols   # top-left corners of rectangles
  padded = np.pad(inside, ((0, 0), (rows - 1, rows - 1), (cols - 1, cols - 1)))
  return masks & (_box_sums(padded, rows, cols) == 0)


def downsample_masks(masks: np.ndarray, height: int, width: int,
                     pooling: str = 'nearest') -> np.ndarray:
  """[N, S, S] pixel masks -> [N, height, width] vector masks.

  'nearest': torch ``F.interpolate(mode='nearest')``, the reference: each vector
  takes one pixel of its cell, so a thin defect crossing a cell may leave it
  normal. 'max': a vector is abnormal when any pixel of its cell is (torch
  ``adaptive_max_pool2d``), which also marks the mostly normal cells on a large
  defect's edge. 'thin': abnormal when the defect covers at least half of the
  cell, or when a part of it narrower than half a cell (too narrow to cover
  half of any) crosses the cell (docs/METHOD.md, "Quality options").
  """
  if pooling not in MASK_POOLINGS:
    raise ValueError(f'mask pooling {pooling!r}: one of {MASK_POOLINGS}')
  # Only images with a defect pixel need pooling: normal images make most of a run.
  defective = masks.reshape(len(masks), -1).any(axis=1)
  vector_masks = np.zeros((len(masks), height, width), masks.dtype)
  if defective.any():
    vector_masks[defective] = _pool_masks(masks[defective], height, width, pooling)
  return vector_masks


def _pool_masks(masks: np.ndarray, height: int, width: int, pooling: str) -> np.ndarray:
  if pooling == 'max':
    return _pool_cells(masks, height, width)
  if pooling == 'thin':
    # A part narrower than half a cell can never cover half of one.
    half_rows = -(-masks.shape[1] // (2 * height))
    half_cols = -(-masks.shape[2] // (2 * width))
    share = _pool_cells((masks > 0).astype(np.float32), height, width, np.mean)
    crossed = _pool_cells(thin_parts(masks, half_rows, half_cols), height, width)
    return (share >= 0.5) | crossed
  rows = np.floor(np.arange(height) * (masks.shape[1] / height)).astype(int)
  cols = np.floor(np.arange(width) * (masks.shape[2] / width)).astype(int)
  return masks[:, rows][:, :, cols]


def level_data(features: np.ndarray, masks: np.ndarray, pos_embed_dim: int,
               mesh: Mesh, mask_pooling: str = 'nearest') -> LevelData:
  """Flattens one level's features [N, h, w, C] and pixel masks [N, S, S]
  (``mask_pooling``: see `downsample_masks`)."""
  _, h, w, _ = features.shape
  return _on_devices(features, downsample_masks(masks, h, w, mask_pooling), pos_embed_dim,
                     mesh)


def _on_devices(features: np.ndarray, vector_masks: np.ndarray, pos_embed_dim: int,
                mesh: Mesh) -> LevelData:
  """`level_data` from features [N, h, w, C] and vector masks [N, h, w]."""
  n, h, w, c = features.shape
  on_devices = replicated(mesh)
  return LevelData(
      features=jax.device_put(features.reshape(n * h * w, c), on_devices),
      masks=jax.device_put(vector_masks.reshape(-1).astype(np.float32), on_devices),
      cond=jax.device_put(condition_tables(pos_embed_dim, h, w), on_devices),
      positions=h * w)


class TrainingSet:
  """Every training image of a run, as per-level vectors (see the module docstring).

  Args:
    backbone: extracts the features of synthetic images.
    images: the normal training images and the known anomalies.
    features: the backbone features of ``images`` ([N, h_l, w_l, C_l] per level).
    strategies: from `data.strategies.build`.
    pos_embed_dim: channels of the positional condition.
    seed: the run's seed (synthetic images depend on it, epoch and sub-epoch).
    mask_pooling: how pixel masks become vector masks (`downsample_masks`).
  """

  def __init__(self, backbone: FrozenBackbone, images: strategies_lib.TrainingImages,
               features: Sequence[np.ndarray], strategies: Sequence[object],
               pos_embed_dim: int, seed: int, mask_pooling: str = 'nearest'):
    self._backbone = backbone
    self._strategies = [s for s in strategies if s.num_synthetic]
    self._pos_embed_dim = pos_embed_dim
    self._seed = seed
    self._mask_pooling = mask_pooling
    self.num_normal = images.num_normal
    order = np.concatenate([np.arange(images.num_normal)]
                           + [s.cached for s in strategies]).astype(int)
    self._cached_features = [f[order] for f in features]
    cached_masks = images.masks[order]
    # Pooled once: every sub-epoch appends only its synthetic images' masks.
    self._cached_vector_masks = [downsample_masks(cached_masks, f.shape[1], f.shape[2],
                                                  mask_pooling)
                                 for f in self._cached_features]
    self._cached = [_on_devices(f, m, pos_embed_dim, backbone.mesh)
                    for f, m in zip(self._cached_features, self._cached_vector_masks)]
    self.num_images = len(order) + sum(s.num_synthetic for s in self._strategies)

  @property
  def mesh(self) -> Mesh:
    return self._backbone.mesh

  def levels(self, epoch: int, sub_epoch: int) -> List[LevelData]:
    """Per-level vectors of one sub-epoch: the first ``num_normal`` images are normal."""
    if epoch == 0 or not self._strategies:   # the first meta-epoch sees normal images only
      return self._cached
    rng = plan_rng(self._seed, epoch, sub_epoch, SYNTHESIS_STREAM)
    images, masks = [], []
    for strategy in self._strategies:
      drawn_images, drawn_masks = strategy.draw(rng)
      images += drawn_images
      masks += drawn_masks
    features = self._backbone.pixel_features(np.stack(images))
    masks = np.stack(masks)
    return [_on_devices(np.concatenate([cached, new]),
                        np.concatenate([cached_masks, downsample_masks(
                            masks, new.shape[1], new.shape[2], self._mask_pooling)]),
                        self._pos_embed_dim, self._backbone.mesh)
            for cached, new, cached_masks in zip(self._cached_features, features,
                                                 self._cached_vector_masks)]
