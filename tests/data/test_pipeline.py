"""bgad_jax.data.pipeline: reference transforms and batching."""

import numpy as np
import pytest
from PIL import Image

from bgad_jax.data import pipeline
from references.timm_shim import import_timm
from tests.data.helpers import example


def _torchvision():
  import_timm()   # makes torchvision importable beside CPU torch
  import torchvision.transforms as T
  return T


@pytest.mark.parametrize('shape', [(40, 40, 3), (37, 52, 3), (61, 45, 3)])
def test_resize_crop_equals_torchvision(shape):
  T = _torchvision()
  image = np.random.default_rng(0).integers(0, 256, size=shape, dtype=np.uint8)
  mask = (image[..., 0] > 128).astype(np.uint8) * 255
  ref_image = T.Compose([T.Resize(24, T.InterpolationMode.LANCZOS), T.CenterCrop(24)])(
      Image.fromarray(image))
  ref_mask = T.Compose([T.Resize(24, T.InterpolationMode.NEAREST), T.CenterCrop(24)])(
      Image.fromarray(mask))
  np.testing.assert_array_equal(
      pipeline.resize_and_center_crop(image, 24, Image.LANCZOS), np.asarray(ref_image))
  np.testing.assert_array_equal(
      pipeline.resize_and_center_crop(mask, 24, Image.NEAREST), np.asarray(ref_mask))


def test_preprocess_normalises_and_keeps_masks_binary():
  arrays = pipeline.preprocess([example(1, 'crack', 'a'), example(0, 'good', 'b')],
                                     inp_size=4, mean=(0.5, 0.5, 0.5), std=(0.25, 0.5, 1.0))
  assert arrays['images'].shape == (2, 4, 4, 3) and arrays['images'].dtype == np.float32
  np.testing.assert_allclose(arrays['images'][0, 0, 0], (100 / 255 - 0.5) / np.array([0.25, 0.5, 1.0]),
                             rtol=1e-6)
  assert set(np.unique(arrays['masks'])) == {0, 1} and arrays['masks'][1].sum() == 0
  assert list(arrays['labels']) == [1, 0] and list(arrays['filenames']) == ['a', 'b']

