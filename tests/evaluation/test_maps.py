"""bgad_jax.evaluation.maps: align-corners upsampling against torch, the reference's maps,
the smoothing and image-score options."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from scipy import ndimage

from bgad_jax.evaluation import maps as anomaly_maps


@pytest.mark.parametrize('in_hw,size', [((4, 4), 16), ((5, 7), 32), ((1, 3), 8), ((16, 16), 64)])
def test_upsampling_matches_torch(in_hw, size):
  maps = np.random.default_rng(0).standard_normal((3,) + in_hw).astype(np.float32)
  ref = F.interpolate(torch.from_numpy(maps)[:, None], size=(size, size), mode='bilinear',
                      align_corners=True)[:, 0].numpy()
  ours = np.asarray(anomaly_maps.upsample_align_corners(maps, size))
  np.testing.assert_allclose(ours, ref, rtol=1e-5, atol=3e-6)


def _reference_scores(lp_maps, size):
  """The reference's convert_to_anomaly_scores, restated in torch."""
  total = 0
  for lp in lp_maps:
    lp = torch.from_numpy(lp)
    probs = torch.exp(lp - lp.max())
    total = total + F.interpolate(probs[:, None], size=size, mode='bilinear',
                                  align_corners=True)[:, 0].numpy()
  return total.max() - total


def test_test_set_maps_match_reference():
  rng = np.random.default_rng(1)
  lp_maps = [rng.normal(-2, 0.5, size=(4, h, h)).astype(np.float32) for h in (16, 8, 4)]
  ours = anomaly_maps.test_set_anomaly_maps(lp_maps, 64)
  np.testing.assert_allclose(ours, _reference_scores(lp_maps, 64), rtol=1e-5, atol=1e-5)
  assert ours.min() == pytest.approx(0.0, abs=1e-6)


def test_map_constants_reproduce_test_set_maps_on_the_same_images():
  rng = np.random.default_rng(2)
  lp_maps = [rng.normal(-2, 0.5, size=(3, h, h)).astype(np.float32) for h in (8, 4)]
  constants = anomaly_maps.map_constants(lp_maps, 32)
  np.testing.assert_allclose(anomaly_maps.anomaly_maps(lp_maps, 32, constants),
                             anomaly_maps.test_set_anomaly_maps(lp_maps, 32), rtol=1e-5, atol=1e-5)


def test_log_normality_is_exact_and_never_underflows():
  rng = np.random.default_rng(3)
  lp_maps = [rng.normal(-2, 0.5, size=(3, h, h)).astype(np.float32) for h in (8, 4, 1)]
  level_max = [float(m.max()) for m in lp_maps]
  log_normal = anomaly_maps.log_normality_maps(lp_maps, 32, level_max)
  normal = np.asarray(anomaly_maps.normality_maps(lp_maps, 32, level_max))
  np.testing.assert_allclose(np.exp(log_normal), normal, rtol=1e-5)
  # An image 500 nats below the others: exp underflows, the log form does not.
  far = [m.copy() for m in lp_maps]
  far[0][0] -= 500.0
  far[1][0] -= 500.0
  far[2][0] -= 500.0
  constants = anomaly_maps.map_constants(lp_maps, 32)
  saturated = anomaly_maps.anomaly_maps(far, 32, constants).reshape(3, -1).max(1)
  nll = anomaly_maps.nll_scores(far, 32, constants)
  assert np.all(np.isfinite(nll)) and nll[0] > 400 and nll[0] > nll[1:].max()
  reference = anomaly_maps.anomaly_maps(lp_maps, 32, constants).reshape(3, -1).max(1)
  plain = anomaly_maps.nll_scores(lp_maps, 32, constants)
  assert list(np.argsort(plain)) == list(np.argsort(reference))   # same ranking unsaturated
  assert saturated[0] == pytest.approx(constants['map_max'], rel=1e-6)


@pytest.mark.parametrize('sigma', [1.0, 4.0])
def test_smoothing_matches_scipy_and_log_space_matches_linear(sigma):
  rng = np.random.default_rng(4)
  maps = rng.normal(size=(2, 24, 24))
  expected = ndimage.gaussian_filter(maps, (0, sigma, sigma), mode='mirror', truncate=4.0)
  ours = np.asarray(anomaly_maps.smooth_maps(jnp.asarray(maps, jnp.float32), sigma))
  np.testing.assert_allclose(ours, expected, atol=1e-5)
  # Log space: the log of the smoothed exp, also far below exp's range.
  logs = 3.0 * maps - 800.0
  smoothed_log = anomaly_maps.smooth_maps(logs, sigma, np, log_space=True)
  np.testing.assert_allclose(smoothed_log - (-800.0), np.log(ndimage.gaussian_filter(
      np.exp(3.0 * maps), (0, sigma, sigma), mode='mirror', truncate=4.0)), atol=1e-9)
  assert anomaly_maps.smooth_maps(maps, 0.0, np) is maps   # off: untouched


def test_smoothing_of_a_narrow_map_mirrors_more_than_once():
  maps = np.arange(2 * 5 * 5, dtype=np.float64).reshape(2, 5, 5)   # radius 16 > side 5
  expected = ndimage.gaussian_filter(maps, (0, 4, 4), mode='mirror', truncate=4.0)
  np.testing.assert_allclose(anomaly_maps.smooth_maps(maps, 4.0, np), expected, atol=1e-9)


def test_top_k_mean_image_score():
  maps = np.zeros((2, 10, 10))
  maps[0, 0, :3] = [5.0, 4.0, 3.0]
  maps[1, 5, 5] = 9.0
  np.testing.assert_allclose(anomaly_maps.image_scores(maps, 'top_k_mean', 0.03), [4.0, 3.0])
  np.testing.assert_allclose(anomaly_maps.image_scores(maps, 'max'), [5.0, 9.0])
  np.testing.assert_allclose(anomaly_maps.image_scores(jnp.asarray(maps), 'top_k_mean', 0.03,
                                                       jnp), [4.0, 3.0])
  assert anomaly_maps.top_k_count(100, 0.001) == 1   # never an empty mean
  with pytest.raises(ValueError, match='top_k_mean'):
    anomaly_maps.image_scores(maps, 'mean')


def test_reference_constants_record_no_options_and_options_are_recorded():
  rng = np.random.default_rng(5)
  lp_maps = [rng.normal(-2, 0.5, size=(3, h, h)).astype(np.float32) for h in (8, 4)]
  assert 'scoring' not in anomaly_maps.map_constants(lp_maps, 32)   # files stay as before
  options = anomaly_maps.MapOptions(4.0, 'top_k_mean', 0.05)
  constants = anomaly_maps.map_constants(lp_maps, 32, options)
  assert constants['scoring'] == dict(smoothing_sigma=4.0, image_score='top_k_mean',
                                      top_k_fraction=0.05, level_aggregation='sum',
                                      score_unsmoothed=False, max_filter=0)
  assert anomaly_maps.options_of(constants) == options
  # With smoothing, the deployable maps are the smoothed test-set maps shifted by a constant.
  fixed = anomaly_maps.anomaly_maps(lp_maps, 32, constants)
  test_set = anomaly_maps.test_set_anomaly_maps(lp_maps, 32, anomaly_maps.MapOptions(4.0))
  np.testing.assert_allclose(fixed - fixed.min(), test_set - test_set.min(), atol=1e-5)
  assert fixed.min() == pytest.approx(0.0, abs=1e-6)


def test_traced_outputs_equal_the_host_functions_with_options():
  rng = np.random.default_rng(6)
  lp_maps = [rng.normal(-2, 0.5, size=(3, h, h)).astype(np.float32) for h in (8, 4)]
  options = anomaly_maps.MapOptions(2.0, 'top_k_mean', 0.02)
  constants = anomaly_maps.map_constants(lp_maps, 32, options)
  maps, scores, nll = jax.jit(lambda lp: anomaly_maps.outputs(
      lp, 32, constants, jnp))([jnp.asarray(m) for m in lp_maps])
  host_maps = anomaly_maps.anomaly_maps(lp_maps, 32, constants)
  np.testing.assert_allclose(maps, host_maps, atol=1e-5)
  np.testing.assert_allclose(scores, anomaly_maps.map_scores(lp_maps, 32, constants, host_maps),
                             atol=1e-5)
  np.testing.assert_allclose(nll, anomaly_maps.nll_scores(lp_maps, 32, constants), rtol=1e-5)
  # Smoothing in log space is smoothing of the normality: nll = -log(map_max - map) on average.
  np.testing.assert_allclose(np.log(constants['map_max'] - host_maps).min(axis=(1, 2)),
                             -anomaly_maps.nll_scores(lp_maps, 32, dict(
                                 constants, scoring=dict(smoothing_sigma=2.0))), rtol=1e-5)


def test_mean_log_aggregation_averages_the_levels_log_likelihoods():
  rng = np.random.default_rng(7)
  lp_maps = [rng.normal(-2, 0.5, size=(3, h, h)).astype(np.float32) for h in (8, 4, 1)]
  level_max = [float(m.max()) for m in lp_maps]
  # Direct formula: each level's lp - max, upsampled (aligned corners, as scipy's
  # order-1 zoom with grid_mode off), averaged over the levels.
  expected = np.mean([ndimage.zoom(m.astype(np.float64) - top,
                                   (1, 32 / m.shape[1], 32 / m.shape[2]),
                                   order=1, grid_mode=False, mode='nearest')
                      for m, top in zip(lp_maps, level_max)], axis=0)
  host = anomaly_maps.mean_log_likelihood_maps(lp_maps, 32, level_max, np)
  assert host.dtype == np.float64
  np.testing.assert_allclose(host, expected, atol=1e-9)
  np.testing.assert_allclose(anomaly_maps.mean_log_likelihood_maps(lp_maps, 32, level_max),
                             expected, atol=1e-5)
  # Anomaly maps are its negation shifted, smoothed when asked; nll scores rank
  # as the map scores, and far from normal nothing saturates.
  options = anomaly_maps.MapOptions(2.0, 'top_k_mean', 0.02, 'mean_log')
  constants = anomaly_maps.map_constants(lp_maps, 32, options)
  assert constants['scoring']['level_aggregation'] == 'mean_log'
  maps = anomaly_maps.anomaly_maps(lp_maps, 32, constants)
  smoothed = ndimage.gaussian_filter(-expected, (0, 2, 2), mode='mirror', truncate=4.0)
  np.testing.assert_allclose(maps - maps.min(), smoothed - smoothed.min(), atol=1e-4)
  far = [m.copy() for m in lp_maps]
  for m in far:
    m[0] -= 500.0
  far_maps, far_scores, far_nll = anomaly_maps.outputs(far, 32, constants)
  assert far_scores[0] > 400 and far_nll[0] > 400 + far_nll[1:].max() - 1
  np.testing.assert_allclose(far_nll - far_scores, (far_nll - far_scores)[0], atol=1e-3)
  # Traced (export) equals host.
  traced = jax.jit(lambda lp: anomaly_maps.outputs(lp, 32, constants, jnp))(
      [jnp.asarray(m) for m in lp_maps])
  for got, want in zip(traced, anomaly_maps.outputs(lp_maps, 32, constants)):
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-4)
  # The test-set maps are the deployable ones up to a constant.
  test_set = anomaly_maps.test_set_anomaly_maps(lp_maps, 32, options)
  np.testing.assert_allclose(test_set, maps - maps.min(), atol=1e-4)


@pytest.mark.parametrize('level_aggregation', ['sum', 'mean_log'])
def test_unsmoothed_scores_come_from_the_maps_before_smoothing(level_aggregation):
  rng = np.random.default_rng(8)
  lp_maps = [rng.normal(-2, 0.5, size=(4, h, h)).astype(np.float32) for h in (8, 4)]
  options = anomaly_maps.MapOptions(3.0, 'top_k_mean', 0.02, level_aggregation, True)
  plain = dataclasses.replace(options, smoothing_sigma=0.0)
  constants = anomaly_maps.map_constants(lp_maps, 32, options)
  maps, scores, nll = anomaly_maps.outputs(lp_maps, 32, constants)
  smoothed, _, _ = anomaly_maps.outputs(lp_maps, 32, dict(constants, scoring=dict(
      constants['scoring'], score_unsmoothed=False)))
  np.testing.assert_allclose(maps, smoothed)   # the maps stay smoothed
  unsmoothed = anomaly_maps.anomaly_maps(lp_maps, 32, dict(
      constants, scoring=dataclasses.asdict(plain)))
  assert not np.allclose(unsmoothed, maps, atol=1e-3)
  np.testing.assert_allclose(scores, anomaly_maps.image_scores(unsmoothed, 'top_k_mean', 0.02),
                             atol=1e-6)
  np.testing.assert_allclose(nll, anomaly_maps.nll_scores(lp_maps, 32, dict(
      constants, scoring=dataclasses.asdict(plain))), rtol=1e-6)
  # The evaluation's test-set maps and scores: the same up to constants.
  test_maps, test_scores = anomaly_maps.test_set_outputs(lp_maps, 32, options)
  np.testing.assert_allclose(test_maps, maps - maps.min(), atol=1e-4)
  np.testing.assert_allclose(test_scores - scores, (test_scores - scores)[0], atol=1e-4)
  traced = jax.jit(lambda lp: anomaly_maps.outputs(lp, 32, constants, jnp))(
      [jnp.asarray(m) for m in lp_maps])
  for got, want in zip(traced, (maps, scores, nll)):
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-4)


def test_max_filter_takes_each_windows_highest_value_inside_the_map():
  maps = np.zeros((1, 5, 5), np.float32)
  maps[0, 0, 0], maps[0, 2, 3] = 2.0, 1.0
  expected = np.zeros((1, 5, 5), np.float32)
  expected[0, 1:4, 2:5] = 1.0                  # the 3 x 3 window around (2, 3)
  expected[0, :2, :2] = 2.0                    # around the corner, cut at the edge
  for xp in (np, jnp):
    np.testing.assert_array_equal(anomaly_maps.max_filter_maps(xp.asarray(maps), 3, xp), expected)
    np.testing.assert_array_equal(anomaly_maps.min_filter_maps(xp.asarray(-maps), 3, xp),
                                  -expected)
  for size in (0, 1):
    assert anomaly_maps.max_filter_maps(maps, size, np) is maps


@pytest.mark.parametrize('level_aggregation', ['sum', 'mean_log'])
def test_max_filter_runs_on_the_smoothed_maps_and_scores_follow(level_aggregation):
  rng = np.random.default_rng(9)
  lp_maps = [rng.normal(-2, 0.5, size=(4, h, h)).astype(np.float32) for h in (8, 4)]
  options = anomaly_maps.MapOptions(2.0, 'top_k_mean', 0.05, level_aggregation, False, 5)
  unfiltered = dataclasses.replace(options, max_filter=0)
  constants = anomaly_maps.map_constants(lp_maps, 32, options)
  assert constants['scoring']['max_filter'] == 5
  maps, scores, nll = anomaly_maps.outputs(lp_maps, 32, constants)
  before = anomaly_maps.anomaly_maps(lp_maps, 32, dict(constants,
                                                       scoring=dataclasses.asdict(unfiltered)))
  np.testing.assert_allclose(maps, ndimage.maximum_filter(before, size=(1, 5, 5)), atol=1e-6)
  assert maps.min() >= 0.0   # map_max is the highest filtered normality's complement
  np.testing.assert_allclose(scores, anomaly_maps.image_scores(maps, 'top_k_mean', 0.05),
                             atol=1e-6)
  assert list(np.argsort(nll)) == list(np.argsort(scores))   # the verdict ranks as the maps
  traced = jax.jit(lambda lp: anomaly_maps.outputs(lp, 32, constants, jnp))(
      [jnp.asarray(m) for m in lp_maps])
  for got, want in zip(traced, (maps, scores, nll)):
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-4)
  # The test-set maps are the deployable ones up to a constant.
  np.testing.assert_allclose(anomaly_maps.test_set_anomaly_maps(lp_maps, 32, options),
                             maps - maps.min(), atol=1e-4)
  # With score_unsmoothed the image scores skip the smoothing and the filter.
  bare = dataclasses.replace(options, smoothing_sigma=0.0, max_filter=0)
  constants_unsmoothed = dict(constants, scoring=dataclasses.asdict(
      dataclasses.replace(options, score_unsmoothed=True)))
  plain = anomaly_maps.anomaly_maps(lp_maps, 32, dict(constants,
                                                      scoring=dataclasses.asdict(bare)))
  np.testing.assert_allclose(anomaly_maps.map_scores(lp_maps, 32, constants_unsmoothed),
                             anomaly_maps.image_scores(plain, 'top_k_mean', 0.05), atol=1e-6)
