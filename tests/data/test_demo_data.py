"""bgad_jax.data.demo_data: deterministic, exact masks, a valid MVTec-layout class."""

import filecmp
import os

import numpy as np
import pytest

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
