"""bgad_jax.training.training_set: level vectors, masks, and the per-sub-epoch images."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from bgad_jax.training import training_set


@pytest.mark.parametrize('size,out', [(48, 12), (50, 7), (32, 32)])
def test_downsample_masks_equals_torch_nearest(size, out):
  masks = (np.random.default_rng(0).random((2, size, size)) > 0.7).astype(np.uint8)
  ref = F.interpolate(torch.from_numpy(masks[:, None].astype(np.float32)), size=(out, out),
                      mode='nearest')[:, 0].numpy()
  np.testing.assert_array_equal(training_set.downsample_masks(masks, out, out), ref)


@pytest.mark.parametrize('size,out', [(48, 12), (50, 7), (32, 32)])
def test_max_pooled_masks_equal_torch_adaptive_max_pool(size, out):
  masks = (np.random.default_rng(1).random((2, size, size)) > 0.97).astype(np.uint8)
  ref = F.adaptive_max_pool2d(torch.from_numpy(masks[:, None].astype(np.float32)),
                              (out, out))[:, 0].numpy()
  pooled = training_set.downsample_masks(masks, out, out, 'max')
  np.testing.assert_array_equal(pooled, ref)
  # Every pixel of a defect reaches a vector; nearest sampling loses some.
  nearest = training_set.downsample_masks(masks, out, out)
  assert np.all(pooled >= nearest)
  if out < size:
    assert pooled.sum() > nearest.sum()


def test_a_thin_line_marks_every_cell_it_crosses_only_when_max_pooled():
  masks = np.zeros((1, 16, 16), np.uint8)
  masks[0, 5, :] = 1   # a one-pixel line through row 1 of 4 x 4 cells, off the sampled pixel
  assert training_set.downsample_masks(masks, 4, 4).sum() == 0
  expected = np.zeros((4, 4), np.uint8)
  expected[1] = 1
  np.testing.assert_array_equal(training_set.downsample_masks(masks, 4, 4, 'max')[0], expected)
  with pytest.raises(ValueError, match="mask pooling 'mean'"):
    training_set.downsample_masks(masks, 4, 4, 'mean')


@pytest.mark.parametrize('rows,cols', [(2, 2), (4, 3), (1, 6), (6, 6)])
def test_thin_parts_are_the_mask_less_its_opening(rows, cols):
  from scipy import ndimage
  field = ndimage.gaussian_filter(np.random.default_rng(rows * 7 + cols).random((40, 37)), 2)
  masks = field > 0.52
  opened = ndimage.binary_opening(masks, structure=np.ones((rows, cols), bool))
  thin = training_set.thin_parts(masks[None], rows, cols)[0]
  assert thin.any() and not thin.all()
  np.testing.assert_array_equal(thin, masks & ~opened)


def test_thin_pooling_marks_a_line_everywhere_and_a_blob_by_its_covered_share():
  line = np.zeros((1, 16, 16), np.uint8)
  line[0, 5, :] = 1   # one pixel wide: every cell it crosses, as with max pooling
  np.testing.assert_array_equal(training_set.downsample_masks(line, 4, 4, 'thin'),
                                training_set.downsample_masks(line, 4, 4, 'max'))
  blob = np.zeros((1, 16, 16), np.uint8)
  blob[0, 3:13, 2:13] = 1   # 10 x 11 pixels: covers cells by 1/4, 1/2 or all
  expected = np.zeros((4, 4), np.uint8)
  expected[1:3, 1:3] = 1    # wholly covered
  expected[1:3, 0] = 1      # columns 2-3 of 0-3: half covered
  np.testing.assert_array_equal(training_set.downsample_masks(blob, 4, 4, 'thin')[0], expected)
  assert training_set.downsample_masks(blob, 4, 4, 'max').sum() == 16
  # Two pixels wide is half a cell: judged by the share it covers, here a quarter
  # of each of the two rows of cells it straddles.
  wide_line = np.zeros((1, 16, 16), np.uint8)
  wide_line[0, 3:5, :] = 1
  assert training_set.downsample_masks(wide_line, 4, 4, 'thin').sum() == 0
  wide_line[0, 4:6, :] = 1   # rows 3-5: half of row 1 of cells
  np.testing.assert_array_equal(training_set.downsample_masks(wide_line, 4, 4, 'thin'),
                                training_set.downsample_masks(line, 4, 4, 'max'))
  both = np.concatenate([line, blob])   # images are pooled independently
  np.testing.assert_array_equal(training_set.downsample_masks(both, 4, 4, 'thin'),
                                np.stack([training_set.downsample_masks(line, 4, 4, 'max')[0],
                                          expected]))


class _FakeBackbone:
  """Features = the mean pixel value per 2x2 cell (one channel); records its calls."""

  def __init__(self, mesh):
    self.mesh, self.calls = mesh, 0

  def pixel_features(self, pixels):
    self.calls += 1
    n, s = pixels.shape[:2]
    cells = pixels.astype(np.float32).mean(-1).reshape(n, s // 2, 2, s // 2, 2).mean((2, 4))
    return [cells[..., None]]


class _Stamp:
  """A synthetic strategy: normal image 0 with a white square, its mask."""
  cached = np.zeros(0, int)
  num_synthetic = 2

  def __init__(self, images):
    self.images = images

  def draw(self, rng):
    out, masks = [], []
    for _ in range(self.num_synthetic):
      image = self.images.pixels[0].copy()
      r = int(rng.integers(0, 4))
      image[r:r + 2, :2] = 255
      mask = np.zeros(image.shape[:2], np.uint8)
      mask[r:r + 2, :2] = 1
      out.append(image)
      masks.append(mask)
    return out, masks


def test_levels_order_normal_cached_synthetic_and_redraw_per_sub_epoch():
  from bgad_jax.data.strategies import RealAnomalies, TrainingImages
  from bgad_jax.training.sharding import make_mesh
  pixels = np.random.default_rng(0).integers(0, 200, (4, 8, 8, 3)).astype(np.uint8)
  masks = np.zeros((4, 8, 8), np.uint8)
  masks[3, :4, :4] = 1   # image 3 is the one known anomaly
  images = TrainingImages(pixels, masks, [f'{i}.png' for i in range(4)], num_normal=3)
  backbone = _FakeBackbone(make_mesh())
  features = backbone.pixel_features(pixels)
  strategies = [RealAnomalies(cached=np.array([3, 3])), _Stamp(images)]
  data = training_set.TrainingSet(backbone, images, features, strategies, pos_embed_dim=8,
                                  seed=0)
  assert data.num_normal == 3 and data.num_images == 3 + 2 + 2
  first = data.levels(0, 0)   # first meta-epoch: no synthesis
  assert backbone.calls == 1 and first[0].positions == 16
  assert first[0].features.shape == (5 * 16, 1)
  np.testing.assert_array_equal(np.asarray(first[0].masks).reshape(5, 16).sum(1),
                                [0, 0, 0, 4, 4])
  later = data.levels(1, 0)
  assert backbone.calls == 2 and later[0].features.shape == (7 * 16, 1)
  np.testing.assert_array_equal(np.asarray(later[0].features)[:80], np.asarray(first[0].features))
  assert np.asarray(later[0].masks).reshape(7, 16)[5:].sum() == 2   # one cell each
  again = data.levels(1, 0)
  np.testing.assert_array_equal(np.asarray(again[0].features), np.asarray(later[0].features))


@pytest.mark.parametrize('pooling,abnormal_vectors', [('nearest', 0), ('max', 4), ('thin', 4)])
def test_training_set_pools_the_masks_as_configured(pooling, abnormal_vectors):
  from bgad_jax.data.strategies import RealAnomalies, TrainingImages
  from bgad_jax.training.sharding import make_mesh
  pixels = np.random.default_rng(0).integers(0, 200, (2, 8, 8, 3)).astype(np.uint8)
  masks = np.zeros((2, 8, 8), np.uint8)
  masks[1, 3, :] = 1   # a thin line off the pixels nearest sampling reads
  images = TrainingImages(pixels, masks, ['0.png', '1.png'], num_normal=1)
  backbone = _FakeBackbone(make_mesh())
  data = training_set.TrainingSet(backbone, images, backbone.pixel_features(pixels),
                                  [RealAnomalies(cached=np.array([1]))], pos_embed_dim=8,
                                  seed=0, mask_pooling=pooling)
  assert float(np.asarray(data.levels(0, 0)[0].masks).sum()) == abnormal_vectors


@pytest.mark.parametrize('pooling', training_set.MASK_POOLINGS)
def test_every_sub_epoch_pools_its_synthetic_masks_beside_the_cached_ones(pooling):
  from bgad_jax.data.strategies import RealAnomalies, TrainingImages
  from bgad_jax.training.plan import plan_rng
  from bgad_jax.training.sharding import make_mesh
  pixels = np.random.default_rng(0).integers(0, 200, (3, 8, 8, 3)).astype(np.uint8)
  masks = np.zeros((3, 8, 8), np.uint8)
  masks[2, 3, :] = 1
  masks[2, 4:8, 4:7] = 1
  images = TrainingImages(pixels, masks, ['0.png', '1.png', '2.png'], num_normal=2)
  backbone = _FakeBackbone(make_mesh())
  stamp = _Stamp(images)
  data = training_set.TrainingSet(backbone, images, backbone.pixel_features(pixels),
                                  [RealAnomalies(cached=np.array([2])), stamp],
                                  pos_embed_dim=8, seed=3, mask_pooling=pooling)
  for epoch, sub_epoch in [(1, 0), (2, 1)]:
    _, drawn = stamp.draw(plan_rng(3, epoch, sub_epoch, training_set.SYNTHESIS_STREAM))
    expected = training_set.downsample_masks(np.concatenate([masks, np.stack(drawn)]),
                                             4, 4, pooling)
    assert expected[3:].sum() > 0
    np.testing.assert_array_equal(np.asarray(data.levels(epoch, sub_epoch)[0].masks),
                                  expected.reshape(-1))
