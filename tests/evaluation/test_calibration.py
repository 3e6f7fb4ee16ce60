"""evaluation.calibration: threshold rules, predict constants, verdict metrics (known answers)."""

import numpy as np
import pytest
from scipy import ndimage

from bgad_jax.evaluation import calibration
from bgad_jax.evaluation import maps as maps_lib


def test_val_max_flags_no_calibration_image():
  scores = [3.0, 7.5, 1.0, 7.4]
  assert calibration.threshold(scores, 'val_max') == 7.5


def test_val_fpr_flags_at_most_the_target_fraction():
  scores = np.arange(1, 101, dtype=np.float64)          # 100 normal images
  threshold = calibration.threshold(scores, 'val_fpr', 0.05)
  assert threshold == 95.0 and np.sum(scores > threshold) == 5
  assert calibration.threshold(scores, 'val_fpr', 0.001) == 100.0   # below 1/N: the maximum
  for fpr in (0.01, 0.1, 0.37):
    assert np.mean(scores > calibration.threshold(scores, 'val_fpr', fpr)) <= fpr
  with pytest.raises(ValueError, match='val_max'):
    calibration.threshold(scores, 'median')


def test_verdict_metrics_known_answer():
  scores = np.array([0.1, 0.9, 0.8, 0.2, 0.7, 0.3])
  labels = np.array([0, 1, 1, 1, 0, 0])
  got = calibration.verdict_metrics(scores, labels, 0.5)   # flags 0.9, 0.8, 0.7
  assert (got['tp'], got['fp'], got['fn'], got['tn']) == (2, 1, 1, 2)
  assert got['precision'] == pytest.approx(2 / 3) and got['recall'] == pytest.approx(2 / 3)
  assert got['f1'] == pytest.approx(2 / 3) and got['fpr'] == pytest.approx(1 / 3)
  nothing = calibration.verdict_metrics(scores, labels, 1.0)
  assert nothing['precision'] is None and nothing['recall'] == 0.0 and nothing['f1'] is None


def test_predict_constants_score_their_own_images_at_the_threshold():
  rng = np.random.RandomState(0)
  lp = [rng.normal(-1.0, 0.3, (5, 8, 8)).astype(np.float32),
        rng.normal(-1.0, 0.3, (5, 4, 4)).astype(np.float32)]
  constants = calibration.predict_constants(lp, 16, 'val_max', 0.01, 'held-out')
  nll = maps_lib.nll_scores(lp, 16, constants)
  np.testing.assert_allclose(constants['calibration_nll_scores'], nll)
  assert constants['nll_threshold'] == pytest.approx(nll.max())
  scores = maps_lib.anomaly_maps(lp, 16, constants).reshape(5, -1).max(axis=1)
  assert constants['score_threshold'] == pytest.approx(scores.max())
  assert constants['calibration'] == dict(source='held-out', images=5, rule='val_max',
                                          target_fpr=0.01)
  # Another rule at predict time, from the stored scores.
  assert calibration.nll_threshold(constants, 'val_fpr', 0.5) == pytest.approx(np.sort(nll)[2])
  older = dict(nll_threshold=4.25)   # a workdir written before the stored scores
  assert calibration.nll_threshold(older, 'val_fpr', 0.5) == 4.25


def test_predict_constants_follow_the_map_options():
  rng = np.random.RandomState(1)
  lp = [rng.normal(-1.0, 0.3, (4, 8, 8)).astype(np.float32)]
  options = dict(smoothing_sigma=2.0, image_score='top_k_mean', top_k_fraction=0.05,
                 level_aggregation='sum', score_unsmoothed=False, max_filter=0)
  constants = calibration.predict_constants(lp, 16, 'val_max', 0.01, 'held-out',
                                            maps_lib.MapOptions(**options))
  assert constants['scoring'] == options
  # Known answer: the reference maps, smoothed (scipy), minus the smoothed maximum ...
  reference = maps_lib.test_set_anomaly_maps(lp, 16).astype(np.float64)
  smoothed = ndimage.gaussian_filter(reference, (0, 2, 2), mode='mirror', truncate=4.0)
  maps = smoothed - smoothed.min()
  np.testing.assert_allclose(maps_lib.anomaly_maps(lp, 16, constants), maps,
                             atol=1e-5)
  # ... scored by the mean of their 13 highest pixels (5% of 256).
  top = np.sort(maps.reshape(4, -1), axis=1)[:, -13:].mean(axis=1)
  np.testing.assert_allclose(constants['calibration_scores'], top, atol=1e-5)
  assert constants['score_threshold'] == pytest.approx(top.max(), abs=1e-5)
