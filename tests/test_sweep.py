"""sweep + launch: classes spread over processes give the sequential results; failures stay local."""

import json
import os
import shutil
import subprocess
import sys

import pytest

import tfds_mvtec
from bgad_jax import cli, sweep
from bgad_jax.errors import DataError
from configs import test as test_config

DUMMY = os.path.join(os.path.dirname(tfds_mvtec.__file__), 'dummy_data')
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_share_gives_every_class_to_one_process():
  classes = ['a', 'b', 'c', 'd', 'e']
  shares = [sweep.share(classes, i, 2) for i in range(2)]
  assert shares == [['a', 'c', 'e'], ['b', 'd']]
  assert sorted(sum((sweep.share(classes, i, 3) for i in range(3)), [])) == classes


def test_a_failing_class_does_not_stop_the_others(tmp_path):
  def run_one(category, folder):
    if category == 'b':
      raise DataError('no test images for b')
    return dict(img_auroc=0.5, pix_auroc=None, aupro=None)

  outcomes = sweep.run_share(['a', 'b', 'c'], str(tmp_path), run_one, 'sweep-1')
  assert [o['status'] for o in outcomes.values()] == ['ok', 'failed', 'ok']
  assert outcomes['b']['error'] == 'no test images for b'
  stored = json.loads((tmp_path / 'b' / 'outcome.json').read_text())
  assert stored == outcomes['b']


def test_waiting_ignores_other_sweeps_and_gives_up(tmp_path):
  sweep.run_share(['a'], str(tmp_path), lambda c, f: dict(img_auroc=1.0), 'old-sweep')
  outcomes = sweep.wait_for_outcomes(['a'], str(tmp_path), 'new-sweep', timeout_s=0.5,
                                     poll_s=0.1)
  assert outcomes['a']['status'] == 'failed' and 'did not finish' in outcomes['a']['error']


def test_data_parallel_sweep_runs_every_class_and_only_process_0_writes(tmp_path):
  ran = []
  run_one = lambda c, f: ran.append(c) or dict(img_auroc=0.5, pix_auroc=0.5, aupro=0.5)
  assert sweep.run_all(['a', 'b'], str(tmp_path / 'p1'), run_one, 'data', True,
                       (1, 2, 's')) is None
  assert ran == ['a', 'b'] and not (tmp_path / 'p1').exists()
  outcomes = sweep.run_all(['a', 'b'], str(tmp_path / 'p0'), run_one, 'data', True, (0, 2, 's'))
  assert list(outcomes) == ['a', 'b'] and (tmp_path / 'p0' / 'summary.json').is_file()
  assert (tmp_path / 'p0' / 'b' / sweep.OUTCOME).is_file()


@pytest.fixture(scope='module')
def classes(tmp_path_factory):
  """A folder with three different small classes (MVTec layout) and one without test images."""
  root = tmp_path_factory.mktemp('classes')
  for name, source in (('a', 'mpdd/tubes'), ('b', 'btad/01'), ('c', 'bottle'),
                       ('broken', 'mpdd/tubes')):
    shutil.copytree(os.path.join(DUMMY, source), root / name)
  shutil.rmtree(root / 'broken' / 'test')
  return root


def _overrides(root, tfds_dir):
  return dict(source='folder', category='all', root=str(root), tfds_dir=str(tfds_dir))


@pytest.mark.slow
def test_categories_over_two_processes_equal_the_sequential_sweep(classes, tmp_path):
  # Sequential, in this process.
  config = test_config.get_config()
  config.data.update(_overrides(classes, tmp_path / 'tfds_seq'))
  config.data.num_anomalies = 1
  config.train.meta_epochs, config.train.sub_epochs = 1, 1
  config.report.num_overlays = 0
  with pytest.raises(sweep.SweepFailedError, match='1 of 4 classes failed: broken'):
    cli.run(config, str(tmp_path / 'seq'), 'train')
  sequential = json.loads((tmp_path / 'seq' / 'summary.json').read_text())
  # Two processes, launched as a user would.
  overrides = [f'--config.data.{k}={v}' for k, v in _overrides(
      classes, tmp_path / 'tfds_par').items()]
  result = subprocess.run(
      [sys.executable, '-m', 'bgad_jax.launch', '--num_processes', '2', '--', 'main.py',
       '--config=configs/test.py', f'--workdir={tmp_path / "par"}', *overrides,
       '--config.data.num_anomalies=1', '--config.train.meta_epochs=1',
       '--config.train.sub_epochs=1', '--config.report.num_overlays=0',
       '--config.parallel=categories'],
      cwd=REPO, capture_output=True, text=True, timeout=900)
  assert result.returncode == 2, result.stdout[-3000:]   # 'broken' failed, reported
  parallel = json.loads((tmp_path / 'par' / 'summary.json').read_text())
  assert parallel == sequential
  assert set(parallel) == {'a', 'b', 'c', 'failed'} and list(parallel['failed']) == ['broken']
  assert parallel['a'] != parallel['b'] != parallel['c']   # three different classes
  # Sorted a, b, broken, c: process 0 ran a and broken, then summarised; process 1 b and c.
  lines = result.stdout.splitlines()
  assert any(l.startswith('[p0] error: class broken failed') for l in lines)
  assert any(l.startswith('[p1] # folder/c results') for l in lines)
  assert any(l.startswith('[p0] Summary: ') for l in lines)
  assert not any(l.startswith('[p1] Summary') for l in lines)
  for name in ('a', 'b', 'c'):
    assert json.loads((tmp_path / 'par' / name / 'outcome.json').read_text())['status'] == 'ok'
