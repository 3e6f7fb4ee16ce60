"""bgad_jax.training.features: the taps the flows see, with the neighbourhood option."""

import numpy as np
from PIL import Image
from skimage import data

from bgad_jax.models import backbone as backbone_lib
from bgad_jax.data import demo_data, pipeline
from bgad_jax.training.features import (FrozenBackbone, class_mask_pooling, class_neighbourhood,
                                        training_images)
from bgad_jax.training.sharding import make_mesh
from configs import test as test_config


def _backbone(neighbourhood: int) -> FrozenBackbone:
  config = test_config.get_config()
  config.backbone.neighbourhood = neighbourhood
  return FrozenBackbone.load(config, make_mesh())


def test_neighbourhood_option_pools_every_path_the_same_way():
  """taps (training, evaluation) and pixel_taps (exports) both pool: a model
  exported with the option scores the features it was trained on."""
  pixels = np.random.default_rng(0).integers(0, 256, (2, 48, 48, 3), dtype=np.uint8)
  plain, pooled = _backbone(1), _backbone(3)
  assert pooled.neighbourhood == 3 and plain.neighbourhood == 1
  raw = plain.pixel_features(pixels)
  by_taps = pooled.pixel_features(pixels)
  by_pixel_taps = pooled.pixel_taps(pixels)
  assert len(raw) == len(by_taps) == 3
  for level, (r, t, p) in enumerate(zip(raw, by_taps, by_pixel_taps)):
    expected = np.asarray(backbone_lib.neighbourhood_mean(r, 3))
    np.testing.assert_allclose(t, expected, rtol=1e-5, atol=1e-5, err_msg=f'level {level}')
    np.testing.assert_allclose(np.asarray(p), expected, rtol=1e-5, atol=1e-5)
    assert not np.allclose(t, r)   # the option changes the features


def test_configs_without_the_field_keep_the_reference_taps():
  config = test_config.get_config()
  del config.backbone['neighbourhood']   # a config saved before the option existed
  assert FrozenBackbone.load(config, make_mesh()).neighbourhood == 1


def _examples(images):
  return [dict(image=np.asarray(image), mask=np.zeros(np.asarray(image).shape[:2], np.uint8),
               label=0, has_mask=False, defect_type='good', filename=f'{k}.png')
          for k, image in enumerate(images)]


def _coins_and_grass():
  pose = demo_data.coin_poser(64, np.random.default_rng(0))
  coins = _examples(pose(k)[0] for k in range(8))
  grass = np.asarray(Image.fromarray(data.grass()).convert('RGB'))
  crops = _examples(grass[r:r + 96, c:c + 96] for r in (0, 200, 400) for c in (0, 250))
  return coins, crops


def test_training_images_decode_once_and_hold_the_class_verdict():
  config = test_config.get_config()
  coins, crops = _coins_and_grass()
  config.data.category = 'coins'
  images = training_images(config, coins[:6], coins[6:])
  assert images.texture is False and images.num_normal == 6 and images.num_known == 2
  decoded = pipeline.decode(coins, config.data.inp_size)
  np.testing.assert_array_equal(images.pixels, decoded['pixels'])
  np.testing.assert_array_equal(images.masks, decoded['masks'])
  config.data.category = 'grass'
  assert training_images(config, crops, []).texture is True
  config.data.foreground = 'all'   # the user says every class is a texture
  config.data.category = 'coins'
  assert training_images(config, coins, []).texture is True
  config.data.foreground = 'auto'
  # Only the normal images decide: grass crops labelled as known anomalies of
  # the coins class leave it an object.
  assert training_images(config, coins, crops).texture is False


def test_extract_is_decode_then_pixel_features():
  """extract (decode, then taps of the normalised pixels) equals taps of
  `pipeline.preprocess`'s normalised images."""
  backbone = _backbone(1)
  coins, _ = _coins_and_grass()
  arrays, features = backbone.extract(coins, 48)
  reference = backbone.preprocess(coins, 48)
  for key in ('pixels', 'masks', 'filenames'):
    np.testing.assert_array_equal(arrays[key], reference[key])
  assert 'images' not in arrays
  for ours, theirs in zip(features, backbone.features(reference['images'])):
    np.testing.assert_array_equal(ours, theirs)


def test_texture_only_neighbourhood_leaves_objects_their_taps():
  config = test_config.get_config()
  config.backbone.neighbourhood, config.backbone.neighbourhood_on = 3, 'textures'
  assert class_neighbourhood(config, texture=False) == 1
  assert class_neighbourhood(config, texture=True) == 3
  config.backbone.neighbourhood_on = 'all'
  assert class_neighbourhood(config, texture=False) == 3
  del config.backbone['neighbourhood_on']   # a config saved before the option: every class
  assert class_neighbourhood(config, texture=False) == 3
  config.backbone.neighbourhood = 1
  assert class_neighbourhood(config, texture=True) == 1


def test_object_only_mask_pooling_leaves_textures_nearest_sampling():
  config = test_config.get_config()
  config.data.mask_pooling, config.data.mask_pooling_on = 'thin', 'objects'
  assert class_mask_pooling(config, texture=False) == 'thin'
  assert class_mask_pooling(config, texture=True) == 'nearest'
  config.data.mask_pooling_on = 'all'
  assert class_mask_pooling(config, texture=True) == 'thin'
  del config.data['mask_pooling_on']   # a config saved before the option: every class
  assert class_mask_pooling(config, texture=True) == 'thin'
  config.data.mask_pooling, config.data.mask_pooling_on = 'nearest', 'objects'
  assert class_mask_pooling(config, texture=False) == 'nearest'
