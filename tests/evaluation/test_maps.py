"""bgad_jax.evaluation.maps: align-corners upsampling against torch, the reference's maps."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F

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


def test_fixed_constants_reproduce_test_set_maps_on_the_same_images():
  rng = np.random.default_rng(2)
  lp_maps = [rng.normal(-2, 0.5, size=(3, h, h)).astype(np.float32) for h in (8, 4)]
  constants = anomaly_maps.fixed_constants(lp_maps, 32)
  np.testing.assert_allclose(anomaly_maps.apply_fixed_constants(lp_maps, 32, constants),
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
  constants = anomaly_maps.fixed_constants(lp_maps, 32)
  saturated = anomaly_maps.apply_fixed_constants(far, 32, constants).reshape(3, -1).max(1)
  nll = anomaly_maps.nll_scores(far, 32, constants)
  assert np.all(np.isfinite(nll)) and nll[0] > 400 and nll[0] > nll[1:].max()
  reference = anomaly_maps.apply_fixed_constants(lp_maps, 32, constants).reshape(3, -1).max(1)
  plain = anomaly_maps.nll_scores(lp_maps, 32, constants)
  assert list(np.argsort(plain)) == list(np.argsort(reference))   # same ranking unsaturated
  assert saturated[0] == pytest.approx(constants['map_max'], rel=1e-6)
