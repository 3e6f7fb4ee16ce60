"""bgad_jax.input_pipeline: reference transforms, batching, known-anomaly selection."""

import collections

import numpy as np
import pytest
from PIL import Image

from bgad_jax import input_pipeline
from tests.support.timm_shim import import_timm


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
      input_pipeline.resize_and_center_crop(image, 24, Image.LANCZOS), np.asarray(ref_image))
  np.testing.assert_array_equal(
      input_pipeline.resize_and_center_crop(mask, 24, Image.NEAREST), np.asarray(ref_mask))


def _example(label, defect_type, name, size=8, value=100):
  mask = np.zeros((size, size), np.uint8)
  if label:
    mask[:2, :2] = 1
  return dict(image=np.full((size, size, 3), value, np.uint8), mask=mask, has_mask=True,
              label=label, defect_type=defect_type, filename=name)


def test_preprocess_normalises_and_keeps_masks_binary():
  arrays = input_pipeline.preprocess([_example(1, 'crack', 'a'), _example(0, 'good', 'b')],
                                     inp_size=4, mean=(0.5, 0.5, 0.5), std=(0.25, 0.5, 1.0))
  assert arrays['images'].shape == (2, 4, 4, 3) and arrays['images'].dtype == np.float32
  np.testing.assert_allclose(arrays['images'][0, 0, 0], (100 / 255 - 0.5) / np.array([0.25, 0.5, 1.0]),
                             rtol=1e-6)
  assert set(np.unique(arrays['masks'])) == {0, 1} and arrays['masks'][1].sum() == 0
  assert list(arrays['labels']) == [1, 0] and list(arrays['filenames']) == ['a', 'b']


def test_batches_pad_shuffle_and_reproduce():
  arrays = dict(x=np.arange(10))
  plain = list(input_pipeline.batches(arrays, 4))
  assert [b['x'].shape for b in plain] == [(4,)] * 3
  assert plain[-1]['valid'].tolist() == [True, True, False, False]
  assert sorted(np.concatenate([b['x'][b['valid']] for b in plain])) == list(range(10))
  first = [b['x'] for b in input_pipeline.batches(arrays, 4, shuffle=True, seed=3)]
  again = [b['x'] for b in input_pipeline.batches(arrays, 4, shuffle=True, seed=3)]
  other = [b['x'] for b in input_pipeline.batches(arrays, 4, shuffle=True, seed=4)]
  assert all(np.array_equal(a, b) for a, b in zip(first, again))
  assert not all(np.array_equal(a, b) for a, b in zip(first, other))
  dropped = list(input_pipeline.batches(arrays, 4, drop_remainder=True))
  assert len(dropped) == 2 and all(b['valid'].all() for b in dropped)


def _test_set():
  examples = [_example(0, 'good', f'test/good/{i:03d}.png') for i in range(6)]
  for defect_type, count in (('crack', 5), ('hole', 4), ('stain', 2)):
    examples += [_example(1, defect_type, f'test/{defect_type}/{i:03d}.png') for i in range(count)]
  return examples


def test_known_anomalies_reproducible_and_excluded():
  test = _test_set()
  known, rest = input_pipeline.select_known_anomalies(test, 7, seed=5)
  again, _ = input_pipeline.select_known_anomalies(list(reversed(test)), 7, seed=5)
  assert [e['filename'] for e in known] == [e['filename'] for e in again]
  assert len(known) == 7 and all(e['label'] == 1 for e in known)
  assert len(rest) == len(test) - 7
  assert not {e['filename'] for e in known} & {e['filename'] for e in rest}
  counts = collections.Counter(e['defect_type'] for e in known)
  assert sorted(counts.values()) == [2, 2, 3]   # 7 over 3 types: 2 each, one extra at random
  others = {tuple(e['filename'] for e in input_pipeline.select_known_anomalies(test, 7, seed=s)[0])
            for s in range(6)}
  assert len(others) > 1


def test_total_spread_respects_small_types():
  known, _ = input_pipeline.select_known_anomalies(_test_set(), 10, seed=0)
  counts = collections.Counter(e['defect_type'] for e in known)
  assert counts['stain'] == 2 and counts['crack'] + counts['hole'] == 8


def test_per_type_and_known_defect_types():
  known, rest = input_pipeline.select_known_anomalies(
      _test_set(), 2, count_mode='per_type', known_defect_types=['crack', 'hole'], seed=1)
  counts = collections.Counter(e['defect_type'] for e in known)
  assert counts == {'crack': 2, 'hole': 2}
  assert sum(e['defect_type'] == 'stain' for e in rest) == 2   # never seen in training


def test_too_few_anomalies_is_an_error():
  with pytest.raises(input_pipeline.NotEnoughAnomaliesError, match='stain'):
    input_pipeline.select_known_anomalies(_test_set(), 3, count_mode='per_type')
  with pytest.raises(input_pipeline.NotEnoughAnomaliesError, match='12 anomalies asked'):
    input_pipeline.select_known_anomalies(_test_set(), 12)
  with pytest.raises(ValueError, match='scratch'):
    input_pipeline.select_known_anomalies(_test_set(), 1, known_defect_types=['scratch'])
