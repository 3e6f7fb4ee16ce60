"""bgad_jax.train: plans, the jitted chunk steps, per-level Adam, data parallelism."""

import json
import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
import torch
import torch.nn.functional as F

from bgad_jax import flow as flow_lib
from bgad_jax import losses
from bgad_jax import train
from bgad_jax.engine import make_mesh
from bgad_jax.pos_embed import positional_encoding_2d
from configs import test as test_config

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.mark.parametrize('size,out', [(48, 12), (50, 7), (32, 32)])
def test_downsample_masks_equals_torch_nearest(size, out):
  masks = (np.random.default_rng(0).random((2, size, size)) > 0.7).astype(np.uint8)
  ref = F.interpolate(torch.from_numpy(masks[:, None].astype(np.float32)), size=(out, out),
                      mode='nearest')[:, 0].numpy()
  np.testing.assert_array_equal(train.downsample_masks(masks, out, out), ref)


def test_batches_and_chunks():
  batches = train.image_batches(10, 4, np.random.default_rng(0))
  assert len(batches) == 2 and len(set(np.concatenate(batches))) == 8   # last batch dropped
  chunks, owners = train.chunk_plan(batches, positions=6, num_vectors=5,
                                    rng=np.random.default_rng(1))
  assert chunks.shape == (8, 5) and owners.tolist() == [0] * 4 + [1] * 4   # 24 // 5 per batch
  for chunk, owner in zip(chunks, owners):
    assert set(chunk // 6) <= set(batches[owner])   # a chunk never mixes batches
  again, _ = train.chunk_plan(batches, 6, 5, np.random.default_rng(1))
  np.testing.assert_array_equal(chunks, again)


def _setup():
  """4 images of 4x4 five-channel features (64 vectors); the last image has anomalies."""
  config = test_config.get_config()
  config.train.num_vectors = 16
  mesh = make_mesh()
  rng = np.random.default_rng(0)
  feats = rng.normal(size=(4, 4, 4, 5)).astype(np.float32)
  masks = np.zeros((4, 8, 8), np.uint8)
  masks[-1, :4] = 1
  data = train.level_data(feats, masks, config.flow.pos_embed_dim, mesh)
  state = train.create_state(config, (5,), jax.random.key(0))
  return config, mesh, data, state


# Chunks of 16 and 32 vectors over the 16 positions; the factored condition
# (column and row tables) and the reference's [N, D] condition rows.
@pytest.mark.parametrize('first', [48, 32])
@pytest.mark.parametrize('factored', [True, False])
def test_chunk_step_equals_one_manual_adam_step(first, factored):
  config, mesh, data, state = _setup()
  config.flow.factored_condition = factored
  chunk = np.arange(first, 64, dtype=np.int32)[None]   # last image: has abnormal vectors
  trainer = train.make_chunk_trainer(config, mesh)
  key = train.level_key(0)
  params0 = jax.tree.map(jnp.array, state.params[key])
  new_params, _, chunk_losses, skipped = trainer(
      jax.tree.map(jnp.array, params0), train.make_optimizer().init(params0),
      state.constants[key], data, chunk, np.array([1e-3]), False)

  flow = train.make_flow(config)
  x, m = data.features[chunk[0]], data.masks[chunk[0]]
  c = positional_encoding_2d(config.flow.pos_embed_dim, 4, 4).reshape(16, -1)[chunk[0] % 16]

  def loss_fn(p):
    z, logdet = flow.apply({'params': p, flow_lib.CONSTANTS: state.constants[key]}, x, c)
    return losses.bgad_loss(flow_lib.per_dim_log_likelihood(z, logdet), m, config.loss)[0]
  loss, grads = jax.value_and_grad(loss_fn)(params0)
  adam = optax.adam(1e-3)
  updates, _ = adam.update(grads, adam.init(params0), params0)
  expected = optax.apply_updates(params0, updates)
  assert not bool(skipped[0]) and float(m.sum()) > 0
  np.testing.assert_allclose(float(chunk_losses[0]), float(loss), rtol=1e-6)
  for a, b in zip(jax.tree.leaves(new_params), jax.tree.leaves(expected)):
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize('factored', [True, False])
def test_flow_condition_gives_each_vector_its_positional_code(factored):
  # A 3 x 5 level: position p = r * 5 + c must get concat(col_code[c], row_code[r]).
  encoding = np.asarray(positional_encoding_2d(16, 3, 5)).reshape(15, 16)
  tables = train.condition_tables(16, 3, 5)
  assert tables[0].shape == (5, 8) and tables[1].shape == (3, 8)
  positions = jnp.asarray([14, 0, 7, 5, 4, 7], jnp.int32)
  condition = train.flow_condition(tables, positions, factored)
  if factored:
    rows = np.concatenate([np.asarray(t)[np.asarray(i)]
                           for t, i in zip(condition['cond'], condition['cond_index'])], -1)
  else:
    assert condition['cond_index'] is None
    rows = np.asarray(condition['cond'])
  np.testing.assert_array_equal(rows, encoding[np.asarray(positions)])


@pytest.mark.parametrize('precision,expected', [('highest', 'HIGHEST'), ('default', 'DEFAULT')])
def test_flow_matmul_precision_reaches_every_matmul(precision, expected):
  # On GPUs and TPUs the default float32 matmul is TF32 / one bfloat16 pass;
  # 'highest' must reach every forward and backward matmul of a training step.
  config, _, data, state = _setup()
  config.flow.matmul_precision = precision
  key = train.level_key(0)
  step = jax.jit(train.make_train_step(config, normal_only=False))
  ids = jnp.arange(16)
  text = step.lower(state.params[key], state.opt_state[key], state.constants[key],
                    data.features[ids], data.masks[ids], train.flow_condition(data.cond, ids),
                    jnp.float32(1e-3)).as_text()
  dots = [line for line in text.splitlines() if 'stablehlo.dot_general' in line]
  assert len(dots) > 2 * config.flow.coupling_layers
  for line in dots:
    assert f'precision = [{expected}, {expected}]' in line, line


def test_first_epoch_skips_chunks_with_anomalies():
  config, mesh, data, state = _setup()
  key = train.level_key(0)
  trainer = train.make_chunk_trainer(config, mesh)
  params0 = jax.tree.map(jnp.array, state.params[key])
  chunks = np.stack([np.arange(0, 16), np.arange(48, 64)]).astype(np.int32)
  new_params, opt_state, _, skipped = trainer(
      jax.tree.map(jnp.array, params0), train.make_optimizer().init(params0),
      state.constants[key], data, chunks, np.array([1e-3, 1e-3]), True)
  assert skipped.tolist() == [False, True]
  assert int(opt_state.inner_state[0].count) == 1   # one Adam step, not two


def test_non_finite_loss_stops_training():
  config, mesh, data, state = _setup()
  data.features = data.features.at[:].set(jnp.nan)
  trainer = train.make_chunk_trainer(config, mesh)
  with pytest.raises(FloatingPointError, match='non-finite loss at meta-epoch 0'):
    train.train_meta_epoch(state, config, [data], 4, 4, trainer, (0, 1))


def test_levels_have_independent_adam_states():
  config = test_config.get_config()
  state = train.create_state(config, (5, 8), jax.random.key(0))
  assert set(state.opt_state) == {'level_0', 'level_1'}
  assert set(state.params) == set(state.constants) == {'level_0', 'level_1'}
  rotation = state.constants['level_1']['blocks_0']['rotation']
  assert rotation.shape == (8, 8)


_PARALLEL_SCRIPT = r'''
import json, sys
import jax, numpy as np
from configs import test as test_config
from bgad_jax import train
from bgad_jax.engine import make_mesh
config = test_config.get_config()
config.train.num_vectors = 64
config.train.batch_size = 2
mesh = make_mesh()
rng = np.random.default_rng(0)
feats = rng.normal(size=(6, 8, 8, 5)).astype(np.float32)
masks = np.zeros((6, 16, 16), np.uint8)
masks[4:, 4:10, 4:10] = 1
data = train.level_data(feats, masks, config.flow.pos_embed_dim, mesh)
state = train.create_state(config, (5,), jax.random.key(0))
trainer = train.make_chunk_trainer(config, mesh)
history = []
for epoch in range(2):
  state, stats = train.train_meta_epoch(state, config, [data], 4, 6, trainer, (epoch * 2, 4))
  history.append(stats['loss'])
leaves = [np.asarray(x).ravel().tolist() for x in jax.tree.leaves(state.params)]
print(json.dumps(dict(devices=jax.device_count(), losses=history, params=leaves)))
'''


def _run_parallel(devices):
  env = dict(os.environ, XLA_FLAGS=f'--xla_force_host_platform_device_count={devices}',
             JAX_PLATFORMS='cpu')
  result = subprocess.run([sys.executable, '-c', _PARALLEL_SCRIPT], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=600)
  assert result.returncode == 0, result.stderr[-3000:]
  return json.loads(result.stdout.strip().splitlines()[-1])


def test_eight_devices_match_one_device():
  one, eight = _run_parallel(1), _run_parallel(8)
  assert one['devices'] == 1 and eight['devices'] == 8
  np.testing.assert_allclose(eight['losses'], one['losses'], rtol=1e-5)
  for a, b in zip(eight['params'], one['params']):
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5)
