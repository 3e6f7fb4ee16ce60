"""bgad_jax.training.loop: a meta-epoch, its statistics, and data parallelism."""

import json
import os
import subprocess
import sys

import jax
import numpy as np
import pytest

from bgad_jax.training import loop
from bgad_jax.training.step import LossSettings
from bgad_jax.training.training_set import TrainingSet
from tests.training.helpers import tiny_level

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


class _CachedOnly(TrainingSet):
  """A training set of given level data (no backbone needed)."""

  def __init__(self, levels, num_normal, num_images, mesh):
    self._levels, self.num_normal, self.num_images, self._mesh = levels, num_normal, num_images, mesh

  @property
  def mesh(self):
    return self._mesh

  def levels(self, epoch, sub_epoch):
    return self._levels


def test_non_finite_loss_stops_training():
  config, mesh, data, state = tiny_level()
  data = data.replace(features=data.features.at[:].set(np.nan))
  with pytest.raises(FloatingPointError, match='non-finite loss at meta-epoch 0'):
    loop.train_meta_epoch(state, _CachedOnly([data], 4, 4, mesh), config.train,
                          LossSettings.from_config(config.loss), 0)


def test_meta_epoch_reports_the_loss_terms():
  config, mesh, data, state = tiny_level()
  config.train.batch_size = 1   # one image (16 vectors, one chunk) per batch
  loss = LossSettings.from_config(config.loss)
  training_set = _CachedOnly([data], 3, 4, mesh)   # image 3 has abnormal vectors
  state, first = loop.train_meta_epoch(state, training_set, config.train, loss, 0)
  assert int(state.epoch) == 1 and first['abnormal_chunks'] == 0.0
  assert first['loss_n'] is None and first['ml'] == pytest.approx(first['loss'], rel=1e-5)
  state, second = loop.train_meta_epoch(state, training_set, config.train, loss, 0)
  assert second['abnormal_chunks'] == 0.25   # image 3's chunk
  assert second['b_a'] == pytest.approx(second['b_n'] - config.loss.margin_tau, abs=1e-5)
  assert second['loss_a'] >= 0.0 and second['loss_n'] >= 0.0
  assert second['steps'] == config.train.sub_epochs * 4   # 4 images of 16 vectors per sub-epoch


def test_epoch_stats_average_the_right_steps():
  metrics = dict(loss=np.array([1.0, 3.0, 100.0]), skipped=np.array([False, False, True]),
                 ml=np.array([1.0, 2.0, 50.0]), loss_n=np.array([0.0, 0.5, 9.0]),
                 loss_a=np.array([0.0, 0.25, 9.0]), b_n=np.array([-1.0, -2.0, 9.0]),
                 b_a=np.array([-1.1, -2.1, 9.0]), has_abnormal=np.array([False, True, True]))
  stats = loop.epoch_stats([metrics], last_lr=1e-4)
  assert stats['loss'] == 2.0 and stats['ml'] == 1.5 and stats['steps'] == 2
  assert stats['skipped'] == 1 and stats['abnormal_chunks'] == 0.5
  assert (stats['loss_n'], stats['loss_a'], stats['b_n'], stats['b_a']) == (0.5, 0.25, -2.0, -2.1)


_PARALLEL_SCRIPT = r'''
import json, sys
import jax, numpy as np
from configs import test as test_config
from bgad_jax.training import loop
from bgad_jax.training.sharding import make_mesh
from bgad_jax.training.state import FlowTrainState
from bgad_jax.training.step import LossSettings
from bgad_jax.training.training_set import level_data
from tests.training.test_loop import _CachedOnly
config = test_config.get_config()
config.train.num_vectors = 64
config.train.batch_size = 2
config.loss.push_average = sys.argv[1]
mesh = make_mesh()
rng = np.random.default_rng(0)
feats = rng.normal(size=(6, 8, 8, 5)).astype(np.float32)
masks = np.zeros((6, 16, 16), np.uint8)
masks[4:, 4:10, 4:10] = 1
data = level_data(feats, masks, config.flow.pos_embed_dim, mesh)
state = FlowTrainState.create(config, (5,), jax.random.key(0))
history = []
for epoch in range(2):
  state, stats = loop.train_meta_epoch(state, _CachedOnly([data], 4, 6, mesh), config.train,
                                       LossSettings.from_config(config.loss), config.seed)
  history.append(stats['loss'])
leaves = [np.asarray(x).ravel().tolist() for x in jax.tree.leaves(state.params)]
print(json.dumps(dict(devices=jax.device_count(), losses=history, params=leaves)))
'''


def _start_parallel(devices, platform='cpu', push_average='vector'):
  env = dict(os.environ, JAX_PLATFORMS=platform)
  if platform == 'cpu':
    env['XLA_FLAGS'] = f'--xla_force_host_platform_device_count={devices}'
  return subprocess.Popen([sys.executable, '-c', _PARALLEL_SCRIPT, push_average], cwd=REPO,
                          env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _parallel_result(process):
  stdout, stderr = process.communicate(timeout=600)
  assert process.returncode == 0, stderr[-3000:]
  return json.loads(stdout.strip().splitlines()[-1])


def _run_parallel(devices, platform='cpu'):
  return _parallel_result(_start_parallel(devices, platform))


@pytest.mark.slow
@pytest.mark.parametrize('push_average', ['vector', 'image'])   # 'image' gathers image ids
def test_eight_devices_match_one_device(push_average):
  # Both at once: each process mostly compiles, on one core.
  starting = _start_parallel(1, push_average=push_average), _start_parallel(
      8, push_average=push_average)
  one, eight = map(_parallel_result, starting)
  assert one['devices'] == 1 and eight['devices'] == 8
  np.testing.assert_allclose(eight['losses'], one['losses'], rtol=1e-5)
  for a, b in zip(eight['params'], one['params']):
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5)


@pytest.mark.slow
@pytest.mark.skipif(jax.default_backend() == 'cpu',
                    reason='needs an accelerator (benchmarks/accelerator_check.py runs it)')
def test_accelerator_trains_like_the_cpu():
  """Two meta-epochs on every local accelerator device end where one CPU device ends."""
  accelerator = _run_parallel(None, platform=os.environ.get('JAX_PLATFORMS') or 'cuda')
  cpu = _run_parallel(1)
  np.testing.assert_allclose(accelerator['losses'], cpu['losses'], rtol=1e-4)
  for a, b in zip(accelerator['params'], cpu['params']):
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-4)
