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


MASK_POOLINGS = ('nearest', 'max')


def _cell_max(masks: np.ndarray, axis: int, cells: int) -> np.ndarray:
  """torch ``adaptive_max_pool`` along one axis of size S cut into n = ``cells``:
  cell i spans [floor(i S / n), ceil((i + 1) S / n))."""
  size = masks.shape[axis]
  starts = np.arange(cells) * size // cells
  ends = -((-(np.arange(cells) + 1) * size) // cells)
  return np.stack([masks.take(np.arange(a, b), axis=axis).max(axis=axis)
                   for a, b in zip(starts, ends)], axis=axis)


def downsample_masks(masks: np.ndarray, height: int, width: int,
                     pooling: str = 'nearest') -> np.ndarray:
  """[N, S, S] pixel masks -> [N, height, width] vector masks.

  'nearest': torch ``F.interpolate(mode='nearest')``, the reference: each vector
  takes one pixel of its cell, so a thin defect crossing a cell may leave it
  normal. 'max': a vector is abnormal when any pixel of its cell is (torch
  ``adaptive_max_pool2d``).
  """
  if pooling == 'max':
    return _cell_max(_cell_max(masks, 1, height), 2, width)
  if pooling != 'nearest':
    raise ValueError(f'mask pooling {pooling!r}: one of {MASK_POOLINGS}')
  rows = np.floor(np.arange(height) * (masks.shape[1] / height)).astype(int)
  cols = np.floor(np.arange(width) * (masks.shape[2] / width)).astype(int)
  return masks[:, rows][:, :, cols]


def level_data(features: np.ndarray, masks: np.ndarray, pos_embed_dim: int,
               mesh: Mesh, mask_pooling: str = 'nearest') -> LevelData:
  """Flattens one level's features [N, h, w, C] and pixel masks [N, S, S]
  (``mask_pooling``: see `downsample_masks`)."""
  n, h, w, c = features.shape
  on_devices = replicated(mesh)
  vector_masks = downsample_masks(masks, h, w, mask_pooling)
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
    self._cached_masks = images.masks[order]
    self._cached = [level_data(f, self._cached_masks, pos_embed_dim, backbone.mesh,
                               mask_pooling) for f in self._cached_features]
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
    all_masks = np.concatenate([self._cached_masks, np.stack(masks)])
    return [level_data(np.concatenate([cached, new]), all_masks, self._pos_embed_dim,
                       self._backbone.mesh, self._mask_pooling)
            for cached, new in zip(self._cached_features, features)]
