"""bgad_jax.data.demo_data: deterministic, exact masks, a valid MVTec-layout class."""

import filecmp
import json
import os

import numpy as np
import pytest
from PIL import Image

from bgad_jax.data import demo_data
from tfds_mvtec.datasets import MVTEC_AD

SMALL = dict(size=48, num_train=4, num_test_good=2, num_per_defect=2)


def _files(root):
  return sorted(os.path.relpath(os.path.join(d, f), root)
                for d, _, files in os.walk(root) for f in files)


def test_generates_bit_identically_twice(tmp_path):
  first = demo_data.generate(str(tmp_path / 'a'), 'gravel', **SMALL)
  second = demo_data.generate(str(tmp_path / 'b'), 'gravel', **SMALL)
  names = _files(first)
  assert names == _files(second) and len(names) == 4 + 2 + 2 * 2 * 4 + 1
  _, mismatch, errors = filecmp.cmpfiles(first, second, names, shallow=False)
  assert not mismatch and not errors


def test_layout_is_a_valid_mvtec_class(tmp_path):
  category_dir = demo_data.generate(str(tmp_path), 'tissue', **SMALL)
  records = MVTEC_AD.scan(MVTEC_AD, category_dir, 'tissue', masks_required=True)
  assert len(records['train']) == 4
  types = sorted({r.defect_type for r in records['test']})
  assert types == ['crack', 'good', 'hole', 'scratch', 'stain']


@pytest.mark.parametrize('defect_type', demo_data.DEFECT_TYPES)
def test_defect_changes_exactly_its_mask(defect_type):
  rng = np.random.default_rng(0)
  base = np.full((64, 64, 3), 120, np.uint8)
  base[::3] = 90   # some structure, not a flat image
  image, mask = demo_data.add_defect(base, defect_type, rng)
  assert mask.dtype == bool and 0 < mask.sum() < 0.3 * mask.size
  np.testing.assert_array_equal(image[~mask], base[~mask])
  changed = np.any(image != base, axis=-1)
  assert changed[mask].mean() > 0.9   # the mask is not larger than the defect


def _touches_band(mask, band):
  return bool(mask[:band].any() or mask[-band:].any() or mask[:, :band].any()
              or mask[:, -band:].any())


@pytest.mark.parametrize('defect_type', demo_data.DEFECT_TYPES + demo_data.SURFACE_DEFECT_TYPES)
def test_anywhere_placement_reaches_the_border_and_keeps_the_defect(defect_type):
  """'centre' keeps a defect's centre in the middle of the image; 'anywhere' draws
  it over the whole image, so defects reach the outer eighth far more often."""
  base = np.repeat(np.random.default_rng(1).integers(60, 200, size=(64, 64, 1)), 3, axis=2)
  base = base.astype(np.uint8)
  touching = {}
  for placement in demo_data.PLACEMENTS:
    rng = np.random.default_rng(0)
    draws = [demo_data.add_defect(base, defect_type, rng, placement) for _ in range(40)]
    for image, mask in draws:
      assert mask.any()
      np.testing.assert_array_equal(image[~mask], base[~mask])
    touching[placement] = np.mean([_touches_band(mask, 8) for _, mask in draws])
  assert touching['anywhere'] >= touching['centre'] + 0.3, touching


def test_anywhere_placement_changes_only_the_defects(tmp_path):
  centre = demo_data.generate(str(tmp_path / 'c'), 'tissue', **SMALL)
  anywhere = demo_data.generate(str(tmp_path / 'a'), 'tissue', **SMALL,
                                defect_placement='anywhere')
  names = _files(centre)
  _, mismatch, _ = filecmp.cmpfiles(centre, anywhere, names, shallow=False)
  assert 'demo_settings.json' in mismatch
  assert not [n for n in mismatch if n.startswith(('train', 'test/good'))]
  assert [n for n in mismatch if n.startswith('ground_truth')]
  with pytest.raises(ValueError, match="defect_placement must be one of"):
    demo_data.generate(str(tmp_path / 'x'), 'tissue', **SMALL, defect_placement='edge')


def test_quadrant_split_crops_each_split_from_its_own_quarters(tmp_path, monkeypatch):
  # A photograph whose quarters are flat greys far apart: a crop's grey (after the
  # +-5% brightness change) names the quarter it came from.
  quarter_greys = np.array([[40, 90], [160, 220]], np.uint8)   # [row, col] of the quarter
  photo = np.kron(quarter_greys, np.ones((32, 32), np.uint8))
  monkeypatch.setitem(demo_data._PHOTOGRAPHS, 'tissue', lambda: photo)
  category_dir = demo_data.generate(str(tmp_path), 'tissue', size=16, num_train=24,
                                    num_test_good=24, num_per_defect=0, split='quadrants')

  def quarters(split):
    folder = os.path.join(category_dir, split, 'good')
    greys = [np.asarray(Image.open(os.path.join(folder, name)))
             for name in sorted(os.listdir(folder))]
    assert all(g.min() == g.max() for g in greys)   # wholly inside one quarter
    return {int(np.abs(quarter_greys.ravel().astype(int) - g.mean()).argmin()) for g in greys}

  assert quarters('train') == {0, 3} and quarters('test') == {1, 2}   # diagonal / anti-diagonal
  with open(os.path.join(category_dir, 'demo_settings.json')) as f:
    assert json.load(f)['split'] == 'quadrants'


def test_split_errors_name_the_field(tmp_path):
  with pytest.raises(ValueError, match="data.demo.split must be one of"):
    demo_data.generate(str(tmp_path / 'a'), 'tissue', **SMALL, split='columns')
  with pytest.raises(ValueError, match="coins poses every coin in both splits"):
    demo_data.generate(str(tmp_path / 'b'), 'coins', **SMALL, split='quadrants')
  # tissue's photograph is 512 px: 256 fits a quarter, not 300.
  with pytest.raises(ValueError, match=r'demo images of 300 px do not fit a quarter'):
    demo_data.generate(str(tmp_path / 'c'), 'tissue', size=300, split='quadrants')


def test_unknown_category_is_an_error(tmp_path):
  with pytest.raises(ValueError, match='tissue'):
    demo_data.generate(str(tmp_path), 'marble')


def test_size_beyond_the_texture_is_a_clear_error(tmp_path):
  with pytest.raises(ValueError, match=r'demo images of 256 px do not fit the tissue texture'):
    demo_data.generate(str(tmp_path), 'tissue', size=256)


def test_surface_class_has_its_own_defect_types(tmp_path):
  category_dir = demo_data.generate(str(tmp_path), 'surface', **SMALL)
  records = MVTEC_AD.scan(MVTEC_AD, category_dir, 'surface', masks_required=True)
  types = sorted({r.defect_type for r in records['test']})
  assert types == sorted(demo_data.SURFACE_DEFECT_TYPES + ('good',))
  assert not set(demo_data.SURFACE_DEFECT_TYPES) & set(demo_data.DEFECT_TYPES)
  assert demo_data.defect_types('surface') == demo_data.SURFACE_DEFECT_TYPES
  assert demo_data.defect_types('tissue') == demo_data.DEFECT_TYPES


@pytest.mark.parametrize('defect_type', demo_data.SURFACE_DEFECT_TYPES)
def test_surface_defect_stays_in_its_region_and_fills_it(defect_type):
  rng = np.random.default_rng(0)
  grey = np.random.default_rng(1).integers(60, 200, size=(64, 64, 1)).astype(np.uint8)
  base = np.repeat(grey, 3, axis=2)   # textured grey, like the surface photograph
  image, mask = demo_data.add_defect(base, defect_type, rng)
  assert mask.dtype == bool and 0 < mask.sum() < 0.3 * mask.size
  np.testing.assert_array_equal(image[~mask], base[~mask])
  changed = np.any(image != base, axis=-1)
  assert changed[mask].mean() > 0.6   # the region is the defect, not a loose outline
  assert np.array_equal(image[..., 0], image[..., 2])   # grey stays grey


def test_coins_photograph_gives_24_coins():
  from skimage import data as skdata
  labels, coin_labels, centres = demo_data.coin_regions(demo_data.coin_masks(skdata.coins()))
  assert len(coin_labels) == len(centres) == 24 == labels.max()
  areas = np.bincount(labels.ravel())[coin_labels]
  assert areas.min() > 1000 and areas.max() < 3500   # 37-63 px across, none merged
  rows = np.sort(centres[:, 0])
  assert np.all(rows[[5, 11, 17]] + 40 < rows[[6, 12, 18]])   # four rows of six


def test_coins_class_is_a_product_with_its_own_defect_types(tmp_path):
  category_dir = demo_data.generate(str(tmp_path), 'coins', **SMALL)
  records = MVTEC_AD.scan(MVTEC_AD, category_dir, 'coins', masks_required=True)
  assert len(records['train']) == 4
  types = sorted({r.defect_type for r in records['test']})
  assert types == sorted(demo_data.COIN_DEFECT_TYPES + ('good',))
  assert demo_data.defect_types('coins') == demo_data.COIN_DEFECT_TYPES
  again = demo_data.generate(str(tmp_path / 'again'), 'coins', **SMALL)
  names = _files(category_dir)
  _, mismatch, errors = filecmp.cmpfiles(category_dir, again, names, shallow=False)
  assert not mismatch and not errors


def _coin(seed=0, size=64):
  return demo_data.coin_poser(size, np.random.default_rng(seed))(seed)


def test_coin_pose_is_centred_and_its_mask_is_one_coin():
  from skimage import measure
  image, coin = _coin()
  assert image.shape == (64, 64, 3) and coin.shape == (64, 64)
  assert measure.label(coin).max() == 1
  centre = np.argwhere(coin).mean(axis=0)
  assert np.all(np.abs(centre - 31.5) < 64 * 4 / 72 + 1)   # 2 px jitter at 72 px, resized
  assert image[coin].mean() > image[~coin].mean() + 40      # a bright coin on dark ground


@pytest.mark.parametrize('defect_type', demo_data.COIN_DEFECT_TYPES)
def test_coin_defect_lies_on_the_coin_and_changes_exactly_its_mask(defect_type):
  image, coin = _coin(seed=3)
  out, mask = demo_data.add_coin_defect(image, coin, defect_type, np.random.default_rng(0))
  assert mask.dtype == bool and mask.sum() >= 0.002 * mask.size
  assert not np.any(mask & ~coin)
  np.testing.assert_array_equal(out[~mask], image[~mask])
  assert np.any(out != image, axis=-1)[mask].mean() > 0.6


def test_coin_too_small_for_a_defect_raises_instead_of_drawing_for_ever():
  image, coin = _coin(seed=3)
  speck = np.zeros_like(coin)
  speck[30:32, 30:32] = True   # 4 px: under the 0.2% (8 px) every defect must cover
  with pytest.raises(ValueError, match=r'no scratch of at least 0.2% .* on a coin of 4 px'):
    demo_data.add_coin_defect(image, speck, 'scratch', np.random.default_rng(0))
