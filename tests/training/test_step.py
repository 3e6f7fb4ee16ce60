"""bgad_jax.training.step: the jitted chunk step against a hand-written Adam step."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from bgad_jax.models import flow as flow_lib
from bgad_jax.models.pos_embed import positional_encoding_2d
from bgad_jax.training import losses
from bgad_jax.training import step as step_lib
from bgad_jax.training.training_set import level_data
from tests.training.helpers import tiny_level


def _copy(level_state):
  return jax.tree.map(jnp.array, level_state)   # train_chunks donates its input


# Chunks of 16 and 32 vectors over the 16 positions (first: the chunk's first
# vector); the factored condition (column and row tables) and the reference's
# [N, D] condition rows; both gradient reductions over the devices of this
# process. Each case compiles its own step, so the chunk sizes vary on one.
@pytest.mark.parametrize('first,factored,reduction', [
    (48, True, 'ordered'), (32, True, 'ordered'), (48, False, 'ordered'), (48, True, 'psum')])
def test_chunk_step_equals_one_manual_adam_step(first, factored, reduction):
  config, _, data, state = tiny_level(factored_condition=factored)
  chunk = np.arange(first, 64, dtype=np.int32)[None]   # last image: has abnormal vectors
  level = state.level(0)
  new_level, metrics = step_lib.train_chunks(
      _copy(level), data, jnp.asarray(chunk), jnp.array([1e-3]),
      step_lib.LossSettings.from_config(config.loss), False, reduction=reduction)

  x, m = data.features[chunk[0]], data.masks[chunk[0]]
  c = positional_encoding_2d(config.flow.pos_embed_dim, 4, 4).reshape(16, -1)[chunk[0] % 16]

  def loss_fn(p):
    z, logdet = state.flow.apply({'params': p, flow_lib.CONSTANTS: level.constants}, x, c)
    return losses.bgad_loss(flow_lib.per_dim_log_likelihood(z, logdet), m, config.loss)

  @jax.jit   # one compile instead of some hundred op-by-op programs
  def manual_adam_step(params):
    (loss, terms), grads = jax.value_and_grad(loss_fn, has_aux=True)(params)
    adam = optax.adam(1e-3)
    updates, _ = adam.update(grads, adam.init(params), params)
    return loss, terms, optax.apply_updates(params, updates)
  loss, terms, expected = manual_adam_step(level.params)
  assert not bool(metrics['skipped'][0]) and float(m.sum()) > 0
  np.testing.assert_allclose(float(metrics['loss'][0]), float(loss), rtol=1e-6)
  for name in ('ml', 'loss_n', 'loss_a', 'b_n', 'b_a'):   # the reported terms are the loss's
    np.testing.assert_allclose(float(metrics[name][0]), float(terms[name]), rtol=1e-5,
                               atol=1e-7)
  assert bool(metrics['has_abnormal'][0])
  for a, b in zip(jax.tree.leaves(new_level.params), jax.tree.leaves(expected)):
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7)


def test_per_image_push_reaches_the_step():
  # Two abnormal images of different areas in one chunk: the step's loss is
  # bgad_loss with each vector's image (flat id // positions), and differs
  # from the reference's per-vector mean.
  config, mesh, _, state = tiny_level()
  rng = np.random.default_rng(0)
  masks = np.zeros((4, 8, 8), np.uint8)
  masks[2, :2] = 1   # one row of 4 vectors
  masks[3, :6] = 1   # three rows
  data = level_data(rng.normal(size=(4, 4, 4, 5)).astype(np.float32), masks,
                    config.flow.pos_embed_dim, mesh)
  config.loss.push_average = 'image'
  chunk = np.arange(16, 64, dtype=np.int32)[None]   # images 1 (normal), 2 and 3
  level = state.level(0)
  _, metrics = step_lib.train_chunks(
      _copy(level), data, jnp.asarray(chunk), jnp.array([1e-3]),
      step_lib.LossSettings.from_config(config.loss), False)

  x, m = data.features[chunk[0]], data.masks[chunk[0]]
  c = positional_encoding_2d(config.flow.pos_embed_dim, 4, 4).reshape(16, -1)[chunk[0] % 16]
  z, logdet = state.flow.apply({'params': level.params, flow_lib.CONSTANTS: level.constants},
                               x, c)
  lp = flow_lib.per_dim_log_likelihood(z, logdet)
  per_image, _ = losses.bgad_loss(lp, m, config.loss, jnp.asarray(chunk[0] // 16), 4)
  config.loss.push_average = 'vector'
  per_vector, _ = losses.bgad_loss(lp, m, config.loss)
  np.testing.assert_allclose(float(metrics['loss'][0]), float(per_image), rtol=1e-6)
  assert abs(float(per_image) - float(per_vector)) > 1e-4


@pytest.mark.parametrize('precision,expected', [('highest', 'HIGHEST'), ('default', 'DEFAULT')])
def test_flow_matmul_precision_reaches_every_matmul(precision, expected):
  # On GPUs and TPUs the default float32 matmul is TF32 / one bfloat16 pass;
  # 'highest' must reach every forward and backward matmul of the training step.
  config, _, data, state = tiny_level(matmul_precision=precision)
  # 'default' leaves the precision to JAX's own default, which conftest raises
  # to 'highest' on accelerators: here it must be JAX's out-of-the-box one.
  with jax.default_matmul_precision('default'):
    text = step_lib.train_chunks.lower(
        state.level(0), data, jnp.arange(16, dtype=jnp.int32)[None], jnp.array([1e-3]),
        step_lib.LossSettings.from_config(config.loss), False).as_text()
  dots = [line for line in text.splitlines() if 'stablehlo.dot_general' in line]
  assert len(dots) > 2 * config.flow.coupling_layers
  for line in dots:
    assert f'precision = [{expected}, {expected}]' in line, line


def test_step_reports_its_learning_rate_and_parameter_norm():
  config, _, data, state = tiny_level()
  chunks = np.stack([np.arange(0, 16), np.arange(16, 32)]).astype(np.int32)
  new_level, metrics = step_lib.train_chunks(
      _copy(state.level(0)), data, jnp.asarray(chunks), jnp.array([1e-3, 5e-4]),
      step_lib.LossSettings.from_config(config.loss), False)
  np.testing.assert_array_equal(np.asarray(metrics['lr']), np.float32([1e-3, 5e-4]))
  norm = np.sqrt(sum(float(np.sum(np.square(np.asarray(leaf, np.float64))))
                     for leaf in jax.tree.leaves(new_level.params)))
  np.testing.assert_allclose(float(metrics['param_norm'][-1]), norm, rtol=1e-6)
  assert float(metrics['param_norm'][0]) != float(metrics['param_norm'][1])


def test_first_epoch_skips_chunks_with_anomalies():
  config, _, data, state = tiny_level()
  chunks = np.stack([np.arange(0, 16), np.arange(48, 64)]).astype(np.int32)
  new_level, metrics = step_lib.train_chunks(
      _copy(state.level(0)), data, jnp.asarray(chunks), jnp.array([1e-3, 1e-3]),
      step_lib.LossSettings.from_config(config.loss), True)
  assert np.asarray(metrics['skipped']).tolist() == [False, True]
  assert int(new_level.opt_state.inner_state[0].count) == 1   # one Adam step, not two


def test_loss_settings_come_from_the_config():
  config, *_ = tiny_level()
  settings = step_lib.LossSettings.from_config(config.loss)
  assert settings == step_lib.LossSettings(**dict(config.loss))
  hash(settings)   # a static argument of the jitted step


def test_states_of_two_runs_share_one_traced_step():
  # Each run creates its own state; the step's jit cache keys on the state's
  # static fields (flow, optimiser, condition), so equal settings must not
  # trace again (seeds and sweeps run many runs in one process).
  chunk = jnp.asarray(np.arange(16, dtype=np.int32)[None])
  sizes = []
  for _ in range(2):
    config, _, data, state = tiny_level()
    step_lib.train_chunks(_copy(state.level(0)), data, chunk, jnp.array([1e-3]),
                          step_lib.LossSettings.from_config(config.loss), False)
    sizes.append(step_lib.train_chunks._cache_size())
  assert sizes[1] == sizes[0]
