"""bgad_jax.training.losses: known values, the reference's gradients, and edge cases."""

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest
import torch

from bgad_jax.models import flow as flow_lib
from bgad_jax.training import losses
from bgad_jax.models.weight_conversion import flow_variables_from_freia
from references import freia_reference

CHANNELS, COND_DIM, N = 24, 128, 512


def _loss_config(**overrides):
  config = ml_collections.ConfigDict(dict(
      pos_beta=0.01, margin_tau=0.1, normalizer=10.0, bgspp_lambda=1.0,
      focal_weighting=True, push_average='vector', push_trim=0.0))
  config.update(overrides)
  return config


def _chunk(kind, seed=0):
  """Features, condition and mask of one chunk; per-vector scales spread lp widely."""
  rng = np.random.default_rng(seed)
  scale = rng.uniform(0.3, 2.0, size=(N, 1))
  mask = np.zeros(N, np.float32)
  if kind in ('mixed', 'far_abnormal'):
    mask[rng.choice(N, 48, replace=False)] = 1.0
    abnormal_scale = rng.uniform(0.3, 6.0, size=(N, 1))
    if kind == 'far_abnormal':   # every abnormal far below the margin
      abnormal_scale = np.full((N, 1), 30.0)
    scale = np.where(mask[:, None] > 0, abnormal_scale, scale)
  x = (rng.standard_normal((N, CHANNELS)) * scale).astype(np.float32)
  cond = rng.standard_normal((N, COND_DIM)).astype(np.float32)
  return x, cond, mask


def _torch_grads(model, x, cond, mask, config):
  """Reference loss and gradients, in float64.

  Torch's own fp32 gradients stray from its float64 ones by up to ~6e-3
  (relative) in some leaves on this model, while ours stay within ~1e-6, so
  float64 is the reference the 1e-4 tolerance is measured against.
  """
  model = model.double()
  model.zero_grad()
  lp, _, _ = freia_reference.freia_lp(
      model, torch.from_numpy(x).double(), torch.from_numpy(cond).double())
  loss = freia_reference.reference_chunk_loss(
      lp, torch.from_numpy(mask).double(), config.pos_beta, config.margin_tau,
      config.normalizer, config.bgspp_lambda, config.focal_weighting)
  loss.backward()
  grads = {name: p.grad for name, p in model.named_parameters() if p.requires_grad}
  # Constants ride along so the converter sees a complete state dict.
  grads.update({name: p for name, p in model.named_parameters() if not p.requires_grad})
  return loss.item(), lp.detach().numpy(), flow_variables_from_freia(grads)['params']


def _jax_loss_fn(variables, x, cond, mask, config):
  flow = flow_lib.NormalizingFlow(coupling_layers=8, clamp_alpha=1.9)

  def loss_fn(params):
    z, logdet = flow.apply({**variables, 'params': params}, x, cond)
    lp = flow_lib.per_dim_log_likelihood(z, logdet)
    return losses.bgad_loss(lp, mask, config)
  return loss_fn


@pytest.mark.parametrize('kind,focal', [
    ('mixed', True), ('mixed', False), ('normal_only', True),
    ('normal_only', False), ('far_abnormal', True)])
def test_gradients_match_reference(kind, focal):
  config = _loss_config(focal_weighting=focal)
  model = freia_reference.build_freia_flow(CHANNELS, cond_dim=COND_DIM, seed=7)
  x, cond, mask = _chunk(kind)
  variables = flow_variables_from_freia(model.state_dict())
  ref_loss, ref_lp, ref_grads = _torch_grads(model, x, cond, mask, config)

  (loss, aux), grads = jax.jit(jax.value_and_grad(
      _jax_loss_fn(variables, x, cond, mask, config), has_aux=True))(variables['params'])

  if kind == 'far_abnormal':
    # The reference's mean over the empty push set is NaN, yet its gradients are fine.
    assert np.isnan(ref_loss) and float(aux['loss_a']) == 0.0
    assert np.isfinite(float(loss))
  else:
    np.testing.assert_allclose(float(loss), ref_loss, rtol=1e-5)
  if kind == 'mixed':
    # The chunk exercises every branch: both sets and both focal regimes.
    v = ref_lp / config.normalizer
    normal, abnormal = mask == 0, mask == 1
    assert np.sum(normal & (v <= float(aux['b_n']))) > 0
    assert np.sum(abnormal & (v >= float(aux['b_a']))) > 0
    assert np.any(normal & (v <= -0.2)) and np.any(abnormal & (v <= -1.0))
    assert np.any(abnormal & (v > -1.0))
  flat_ref = jax.tree.leaves(ref_grads)
  flat = jax.tree.leaves(grads)
  assert len(flat) == len(flat_ref) == 8 * 6
  for g, g_ref in zip(flat, flat_ref):
    assert np.all(np.isfinite(g))
    scale = max(np.max(np.abs(g_ref)), 1e-6)
    np.testing.assert_allclose(g, g_ref, rtol=1e-4, atol=1e-4 * scale)


def test_focal_weights_known_values():
  lp = jnp.array([-1.0, -3.0, -20.0])  # u = -0.1, -0.3, -2.0
  normal = losses.normal_focal_weights(lp)
  abnormal = losses.abnormal_focal_weights(lp)
  np.testing.assert_allclose(normal, [1.0, 11.7 * np.sqrt(1 - np.exp(-0.3)) * 0.3,
                                      11.7 * np.sqrt(1 - np.exp(-2.0)) * 2.0], rtol=1e-6)
  np.testing.assert_allclose(abnormal, [0.53 * (1 + np.exp(-0.1)) ** 2 / 0.1,
                                        0.53 * (1 + np.exp(-0.3)) ** 2 / 0.3, 1.0], rtol=1e-6)
  assert jnp.all(jax.grad(lambda l: losses.normal_focal_weights(l).sum())(lp) == 0)


def test_boundary_index_and_margin():
  # 200 normal values 0..199 (shuffled) and abnormal values that must not count.
  rng = np.random.default_rng(0)
  lp = np.concatenate([rng.permutation(np.arange(200.0)), np.full(56, -1e3)])
  mask = np.concatenate([np.zeros(200), np.ones(56)])
  b_n, b_a = losses.logp_boundaries(jnp.asarray(lp, jnp.float32), jnp.asarray(mask),
                                    pos_beta=0.05, margin_tau=0.1, normalizer=10.0)
  assert float(b_n) == pytest.approx(10 / 10.0)   # floor(200 * 0.05) = 10th smallest
  assert float(b_a) == pytest.approx(1.0 - 0.1)


def test_semi_push_pull_known_value():
  lp = jnp.array([-10.0, -30.0, 0.0, -5.0, -40.0])  # v = -1, -3, 0, -0.5, -4
  mask = jnp.array([0, 0, 0, 1, 1])
  loss_n, loss_a = losses.semi_push_pull_terms(lp, mask, b_n=-1.0, b_a=-1.1)
  assert float(loss_n) == pytest.approx((0.0 + 2.0) / 2)   # normals with v <= -1
  assert float(loss_a) == pytest.approx(0.6)               # abnormal -0.5 >= -1.1


def test_push_averaged_per_image_known_value():
  # Image 0: one pushed vector (0.6 above b_a); image 2: three (0.1, 0.2, 0.3
  # above b_a); image 1 holds only normals. Per vector the mean is 1.2 / 4,
  # per image (0.6 + 0.2) / 2: the small defect weighs as much as the large.
  lp = jnp.array([-5.0, -10.0, -30.0, -10.0, -9.0, -8.0, -40.0])   # v = lp / 10
  mask = jnp.array([1, 0, 0, 1, 1, 1, 1])
  images = jnp.array([0, 1, 1, 2, 2, 2, 2], jnp.int32)
  _, per_vector = losses.semi_push_pull_terms(lp, mask, b_n=-1.0, b_a=-1.1)
  loss_n, per_image = losses.semi_push_pull_terms(lp, mask, b_n=-1.0, b_a=-1.1,
                                                  images=images, num_images=3)
  assert float(per_vector) == pytest.approx(1.2 / 4)
  assert float(per_image) == pytest.approx((0.6 + 0.2) / 2)
  assert float(loss_n) == pytest.approx(2.0 / 2)   # the pull term is unchanged
  # One image per vector is the reference's mean again; no pushed vector gives 0.
  assert float(losses.semi_push_pull_terms(lp, mask, -1.0, -1.1, images=jnp.arange(7),
                                           num_images=7)[1]) == pytest.approx(1.2 / 4)
  assert float(losses.group_mean(lp, jnp.zeros(7), images, 3)) == 0.0


def test_trimmed_push_leaves_the_likeliest_abnormal_vectors_alone():
  # Five abnormal vectors, v = -0.2, -0.4, -0.6, -0.8, -2.0; b_a = -1.1.
  lp = jnp.array([-2.0, -4.0, -30.0, -6.0, -8.0, -20.0, -50.0])
  mask = jnp.array([1, 1, 0, 1, 1, 1, 0])
  kept = lambda trim: np.asarray(losses.untrimmed_abnormal(lp, mask, trim)).tolist()
  assert kept(0.0) == [True, True, False, True, True, True, False]
  assert kept(0.2) == [False, True, False, True, True, True, False]   # floor(5 * 0.2) = 1
  assert kept(0.5) == [False, False, False, True, True, True, False]  # floor(2.5) = 2
  assert kept(0.19) == kept(0.0)                                      # floor(0.95) = 0
  assert not any(losses.untrimmed_abnormal(lp, jnp.zeros(7), 0.5).tolist())
  # Ties at the cut stay: two vectors share the highest lp, one is dropped by count.
  tied = losses.untrimmed_abnormal(jnp.array([-1.0, -1.0, -3.0]), jnp.array([1, 1, 1]), 0.4)
  assert np.asarray(tied).tolist() == [True, True, True]
  _, full = losses.semi_push_pull_terms(lp, mask, b_n=-1.0, b_a=-1.1)
  _, trimmed = losses.semi_push_pull_terms(lp, mask, b_n=-1.0, b_a=-1.1, push_trim=0.5)
  assert float(full) == pytest.approx((0.9 + 0.7 + 0.5 + 0.3) / 4)   # -2.0 is below b_a
  assert float(trimmed) == pytest.approx((0.5 + 0.3) / 2)
  # The trimmed vectors get no gradient from the push; trim 0 is the reference's loss.
  grad = jax.grad(lambda x: losses.semi_push_pull_terms(x, mask, -1.0, -1.1,
                                                        push_trim=0.5)[1])(lp)
  assert np.asarray(grad[:2]).tolist() == [0.0, 0.0] and float(grad[3]) > 0
  loss, _ = losses.bgad_loss(lp, mask, _loss_config(push_trim=0.0))
  reference, _ = losses.bgad_loss(lp, mask, _loss_config())
  assert float(loss) == float(reference)
  assert float(losses.bgad_loss(lp, mask, _loss_config(push_trim=0.5))[0]) < float(reference)


def test_per_image_push_needs_the_images():
  config = _loss_config(push_average='image')
  lp, mask = jnp.array([-5.0, -10.0]), jnp.array([1, 0])
  with pytest.raises(ValueError, match="needs each vector's image"):
    losses.bgad_loss(lp, mask, config)
  loss, aux = losses.bgad_loss(lp, mask, config, jnp.array([0, 1]), 2)
  reference, reference_aux = losses.bgad_loss(lp, mask, _loss_config())
  # One abnormal vector: its image's mean is the vector mean.
  np.testing.assert_allclose(float(loss), float(reference), rtol=1e-6)
  assert float(aux['loss_a']) == float(reference_aux['loss_a'])


def test_normal_only_loss_skips_chunks_with_anomalies():
  lp = jnp.array([-1.0, 2.0])
  loss, skip = losses.normal_only_loss(lp, jnp.array([0, 0]))
  assert not bool(skip)
  np.testing.assert_allclose(loss, np.mean(np.log1p(np.exp(-np.array([-1.0, 2.0])))),
                             rtol=1e-6)
  assert bool(losses.normal_only_loss(lp, jnp.array([0, 1]))[1])


def _edge_lp(case):
  rng = np.random.default_rng(1)
  lp = rng.uniform(-25.0, 0.5, size=64).astype(np.float32)
  mask = (np.arange(64) % 8 == 0).astype(np.float32)
  if case == 'no_abnormal':
    mask[:] = 0
  elif case == 'no_normal':
    mask[:] = 1
  elif case == 'abnormal_far_below':
    lp[mask == 1] = -500.0
  elif case == 'all_equal':
    lp[:] = -3.0
  return jnp.asarray(lp), jnp.asarray(mask)


@pytest.mark.parametrize('case', ['no_abnormal', 'no_normal', 'abnormal_far_below',
                                  'all_equal'])
@pytest.mark.parametrize('focal', [True, False])
def test_edge_cases_are_finite(case, focal):
  lp, mask = _edge_lp(case)
  config = _loss_config(focal_weighting=focal)
  loss_fn = jax.jit(lambda l: losses.bgad_loss(l, mask, config)[0])
  loss, grad = jax.value_and_grad(loss_fn)(lp)
  assert np.isfinite(float(loss)) and np.all(np.isfinite(grad))
  if case == 'no_abnormal':   # pure (weighted) maximum likelihood
    weights = losses.normal_focal_weights(lp) if focal else 1.0
    np.testing.assert_allclose(loss, jnp.mean(weights * -jax.nn.log_sigmoid(lp)), rtol=1e-6)
  if case == 'no_normal':     # nothing to learn from: no boundary, no ML term
    assert float(loss) == 0.0 and np.all(grad == 0)
  if case == 'abnormal_far_below':
    assert np.all(grad[np.asarray(mask) == 1] == 0)
