"""bgad_jax.evaluation.metrics: exact AUPRO against the 1000-threshold loop and known answers."""

import numpy as np
import pytest
from scipy import ndimage

from bgad_jax.evaluation import metrics
from references.reference_metrics import loop_aupro


def _synthetic_set(seed, n=12, size=48):
  rng = np.random.default_rng(seed)
  masks = np.zeros((n, size, size), bool)
  for i in range(n // 2, n):   # anomalous half: one or two blobs each
    for _ in range(rng.integers(1, 3)):
      r, c = rng.integers(6, size - 6, size=2)
      masks[i, r - rng.integers(2, 6):r + rng.integers(2, 6), c - 3:c + rng.integers(2, 7)] = True
  signal = ndimage.gaussian_filter(masks.astype(float), sigma=(0, 2, 2)) * 1.2
  scores = signal + ndimage.gaussian_filter(rng.standard_normal(masks.shape), sigma=(0, 1, 1))
  return scores, masks


@pytest.mark.parametrize('seed', [0, 1, 2])
def test_exact_aupro_matches_1000_threshold_loop(seed):
  scores, masks = _synthetic_set(seed, n=20, size=96)
  exact = metrics.aupro(scores, masks)
  assert 0.2 < exact < 0.99
  assert abs(exact - loop_aupro(scores, masks)) < 1e-3


@pytest.mark.parametrize('seed,steps,ties', [(0, 1000, False), (1, 37, True), (2, 500, True)])
def test_reference_thresholds_option_equals_the_loop(seed, steps, ties):
  scores, masks = _synthetic_set(seed, n=10, size=40)
  if ties:
    scores = (np.round(scores * 8) / 8).astype(np.float32)
  expected = loop_aupro(scores, masks, max_steps=steps)
  assert abs(metrics.aupro(scores, masks, num_thresholds=steps) - expected) < 1e-12
  assert metrics.aupro(scores, masks) != pytest.approx(expected, abs=1e-12)


def test_threshold_loop_converges_to_exact_aupro():
  # The 1000-step loop is ~1e-3 low (coarse thresholds); finer loops close the gap.
  scores, masks = _synthetic_set(0)
  exact = metrics.aupro(scores, masks)
  assert abs(exact - loop_aupro(scores, masks, max_steps=16000)) < 1e-4


def test_aupro_known_answers():
  masks = np.zeros((2, 8, 8), bool)
  masks[1, 2:5, 2:5] = True
  perfect = masks.astype(float) + 0.01 * np.arange(128).reshape(2, 8, 8) / 128
  assert metrics.aupro(perfect, masks) == pytest.approx(1.0)
  assert metrics.aupro(-perfect, masks) == pytest.approx(0.0)
  # Scores independent of the mask: PRO follows FPR, area 0.3^2 / 2 over 0.3.
  rng = np.random.default_rng(0)
  many = np.zeros((40, 32, 32), bool)
  many[:, 8:24, 8:24] = True
  assert metrics.aupro(rng.random(many.shape), many) == pytest.approx(0.15, abs=0.01)
  assert metrics.aupro(perfect, np.zeros_like(masks)) is None


def test_regions_are_weighted_equally():
  # Two regions (1 pixel and 9 pixels); only the small one is detected first.
  masks = np.zeros((1, 10, 10), bool)
  masks[0, 0, 0] = True
  masks[0, 5:8, 5:8] = True
  scores = np.zeros((1, 10, 10))
  scores[0, 0, 0] = 2.0                    # small region found at FPR 0
  scores[0, 5:8, 5:8] = -1.0               # big region only after every normal pixel
  # PRO = 0.5 on [0, 0.3]: area 0.15, normalised 0.5.
  assert metrics.aupro(scores, masks) == pytest.approx(0.5)


@pytest.mark.parametrize('num_thresholds', [0, 100])
def test_ranked_aupro_of_a_subset_is_aupro_of_its_images(num_thresholds):
  scores, masks = _synthetic_set(3)
  scores = np.round(scores, 1)   # many tied scores, inside and across the subsets
  ranked, regions = metrics.RankedScores(scores), metrics.mask_regions(masks)
  for images in ([0, 1, 2, 6, 7], [3, 8, 9, 10, 11], list(range(12))):
    chosen = np.zeros(len(scores), bool)
    chosen[images] = True
    select = np.broadcast_to(chosen[:, None, None], scores.shape)
    expected = metrics.aupro(scores[chosen], masks[chosen], num_thresholds=num_thresholds)
    assert ranked.aupro(regions, select, num_thresholds=num_thresholds) == pytest.approx(
        expected, abs=1e-12)
  assert ranked.aupro(regions, regions == 0) is None   # normal pixels only


def test_mask_regions_are_per_image_and_numbered_over_the_set():
  masks = np.zeros((2, 4, 4), bool)
  masks[0, 0, 0] = masks[0, 1, 1] = True   # diagonal neighbours: one region
  masks[0, 3, 3] = True
  masks[1, 0, 0] = True                    # same place, other image: its own region
  regions = metrics.mask_regions(masks)
  assert regions[0, 0, 0] == regions[0, 1, 1] == 1 and regions[0, 3, 3] == 2
  assert regions[1, 0, 0] == 3 and regions.max() == 3 and (regions[~masks] == 0).all()


def test_per_type_aupro_weighs_only_that_types_regions():
  # 'spot' is found before any normal pixel (AUPRO 1), 'warp' after all of them
  # (AUPRO 0); the overall AUPRO is the share of spot regions (1 of 4).
  labels = np.array([0, 0, 1, 1])
  types = np.array(['good', 'good', 'spot', 'warp'], object)
  masks = np.zeros((4, 12, 12), bool)
  masks[2, 4:8, 4:8] = True
  masks[3, 1, 1] = masks[3, 5, 5] = masks[3, 9, 9] = True   # three specks
  maps = np.full((4, 12, 12), 1.0)
  maps[2][masks[2]] = 2.0
  maps[3][masks[3]] = 0.0
  result = metrics.detection_metrics(maps, masks, labels, types, np.ones(4, bool),
                                     known_types=['spot'])
  assert result['per_type']['spot']['aupro'] == pytest.approx(1.0)
  assert result['per_type']['warp']['aupro'] == pytest.approx(0.0)
  assert result['seen']['aupro'] == pytest.approx(1.0)
  assert result['unseen']['aupro'] == pytest.approx(0.0)
  assert result['aupro'] == pytest.approx(0.25)


@pytest.mark.parametrize('num_thresholds', [0, 1000])
def test_per_type_aupro_is_aupro_of_the_types_and_the_normal_images(num_thresholds):
  scores, masks = _synthetic_set(4)
  labels = masks.reshape(len(masks), -1).any(axis=1).astype(int)
  types = np.where(labels == 0, 'good', np.where(np.arange(len(masks)) % 2, 'crack', 'hole'))
  result = metrics.detection_metrics(scores, masks, labels, types.astype(object),
                                     np.ones(len(masks), bool), known_types=['crack'],
                                     aupro_thresholds=num_thresholds)
  for defect, group in (('crack', 'seen'), ('hole', 'unseen')):
    own = (types == defect) | (labels == 0)
    expected = metrics.aupro(scores[own], masks[own], num_thresholds=num_thresholds)
    assert 0.1 < expected < 0.99
    assert result['per_type'][defect]['aupro'] == pytest.approx(expected, abs=1e-12)
    assert result[group]['aupro'] == pytest.approx(expected, abs=1e-12)


def test_evaluate_tables():
  rng = np.random.default_rng(0)
  n = 8
  labels = np.array([0, 0, 0, 0, 1, 1, 1, 1])
  types = np.array(['good'] * 4 + ['crack', 'crack', 'hole', 'hole'], object)
  masks = np.zeros((n, 16, 16), bool)
  masks[4:, 4:8, 4:8] = True
  maps = rng.random((n, 16, 16)) + 3 * masks
  has_mask = np.ones(n, bool)
  result = metrics.detection_metrics(maps, masks, labels, types, has_mask, known_types=['crack'])
  assert result['img_auroc'] == 1.0 and result['pix_auroc'] > 0.95
  assert set(result['per_type']) == {'crack', 'hole'} and result['per_type']['hole']['n'] == 2
  assert result['seen']['n'] == 2 and result['unseen']['n'] == 2
  # Image-level-only data: pixel metrics are unavailable, not zero.
  no_masks = metrics.detection_metrics(maps, masks, labels, types, labels == 0,
                                       known_types=['crack'])
  assert no_masks['pix_auroc'] is None and no_masks['aupro'] is None
  assert no_masks['per_type']['crack']['pix_auroc'] is None
  assert no_masks['per_type']['crack']['aupro'] is None and no_masks['seen']['aupro'] is None
  assert no_masks['img_auroc'] == 1.0


def test_evaluate_takes_other_image_scores():
  labels = np.array([0, 0, 1, 1])
  maps = np.zeros((4, 4, 4))
  maps[[0, 2, 3], 0, 0] = 1.0    # the map maxima tie a normal image with the anomalies
  masks = np.zeros((4, 4, 4), bool)
  masks[2:, 0, 0] = True
  types = np.array(['good', 'good', 'crack', 'crack'], object)
  by_max = metrics.detection_metrics(maps, masks, labels, types, np.ones(4, bool))
  assert by_max['img_auroc'] == 0.75
  np.testing.assert_array_equal(by_max['image_scores'], [1, 0, 1, 1])
  chosen = metrics.detection_metrics(maps, masks, labels, types, np.ones(4, bool),
                            image_scores=np.array([0.1, 0.2, 0.8, 0.9]))
  assert chosen['img_auroc'] == 1.0 and chosen['pix_auroc'] == by_max['pix_auroc']
