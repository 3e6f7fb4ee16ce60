"""bgad_jax.distributed and multi-process runs: 2 processes x 4 CPU devices against 1 x 8.

The processes join through jax.distributed with the gloo CPU collectives, as
on a pod slice, only on one machine (`bgad_jax.launch`). The two runs come
from benchmarks/multiprocess.py, whose report is checked here too.
"""

import json
import os
import signal
import subprocess
import sys
import time

import jax
import numpy as np
import orbax.checkpoint as ocp
import pytest

from bgad_jax import distributed, launch, sweep
from bgad_jax.errors import ConfigError
from bgad_jax.training import checkpoint
from tests.support.runs import REPO

# The tiny test config with known anomalies: its boundary terms are so
# sensitive that a change of summation order alone (4 instead of 8 devices
# in one process) moves the second meta-epoch's loss by 0.2%. With the
# ordered gradient sum (train.grad_reduction) the process layout changes no
# bit, so the runs below are compared exactly.
SETTINGS = ['--config=configs/test.py', '--config.train.meta_epochs=2',
            '--config.train.sub_epochs=2', '--config.report.num_overlays=0']


def _env(devices: int):
  return dict(os.environ, JAX_PLATFORMS='cpu',
              XLA_FLAGS=f'--xla_force_host_platform_device_count={devices}')


def _launch_command(workdir, data_root, *launch_flags):
  return [sys.executable, '-m', 'bgad_jax.launch', '--num_processes', '2', *launch_flags,
          '--', 'main.py',
          *SETTINGS, f'--workdir={workdir}', f'--config.data.root={data_root}']


def _final_params(workdir):
  mngr = checkpoint.manager(str(workdir))
  step = mngr.latest_step()
  # numpy targets: the checkpoint was saved from 8 devices, this process has one.
  target = jax.tree.map(lambda m: np.zeros(m.shape, m.dtype), mngr.item_metadata(step)['state'])
  restored = mngr.restore(step, args=ocp.args.Composite(
      state=ocp.args.StandardRestore(target), meta=ocp.args.JsonRestore()))
  return jax.tree_util.tree_leaves_with_path(restored['state']['params'])


@pytest.fixture(scope='module')
def runs(tmp_path_factory):
  """(1 process x 8 devices workdir, 2 processes x 4 devices workdir, data root, launcher
  output, the benchmark's rows and output): benchmarks/multiprocess.py with SETTINGS."""
  base = tmp_path_factory.mktemp('distributed')
  out = base / 'multiprocess.json'
  result = subprocess.run(
      [sys.executable, 'benchmarks/multiprocess.py', '--tiny', '--devices', '8',
       '--meta_epochs', '2', '--sub_epochs', '2', '--workdir', str(base), '--json', str(out)],
      cwd=REPO, env=dict(os.environ, JAX_PLATFORMS='cpu'), capture_output=True, text=True,
      timeout=1800)
  assert result.returncode == 0, result.stderr[-4000:]
  return (base / 'p1', base / 'p2', base / 'demo', (base / 'p2.stdout.txt').read_text(),
          json.loads(out.read_text()), result.stdout)


def test_multiprocess_benchmark_reports_both_setups(runs):
  *_, (one, two), stdout = runs
  assert (one['setup'], two['setup']) == ('1 x 8 devices', '2 x 4 devices')
  assert one['vs_one'] == 1.0 and two['vs_one'] > 0 and 'vectors/s' in stdout
  for row in (one, two):
    assert row['images_per_s'] > 0 and row['vectors_per_s'] > 0


def _results(workdir):
  return json.loads((workdir / 'results.json').read_text())


def test_two_processes_train_like_one(runs):
  one, two, _, output, _, _ = runs
  a, b = _results(one), _results(two)
  assert b['device'].endswith('x8') and a['device'].endswith('x8')
  assert len(a['history']) == len(b['history']) == 2
  assert a['history'][1]['abnormal_chunks'] > 0   # the semi-push-pull loss took part
  for row_a, row_b in zip(a['history'], b['history']):
    for key in ('loss', 'ml', 'loss_n', 'loss_a', 'b_n', 'b_a', 'img_auroc', 'pix_auroc'):
      assert row_b[key] == row_a[key], key
  for key in ('img_auroc', 'pix_auroc', 'aupro'):
    assert b[key] == a[key], key
  params_a, params_b = _final_params(one), _final_params(two)
  assert [p for p, _ in params_a] == [p for p, _ in params_b]
  for (path, x), (_, y) in zip(params_a, params_b):
    np.testing.assert_array_equal(np.asarray(y), np.asarray(x), err_msg=str(path))
  # Process 0 alone reports and writes.
  lines = output.splitlines()
  assert any(l.startswith('[p0] epoch 2/2') for l in lines)
  assert not any(l.startswith('[p1] epoch') or l.startswith('[p1] Results:') for l in lines)


def _children(pid):
  """Process ids whose parent is ``pid`` (Linux /proc)."""
  found = []
  for entry in os.listdir('/proc'):
    if entry.isdigit():
      try:
        with open(f'/proc/{entry}/stat') as f:
          if int(f.read().rsplit(')', 1)[1].split()[1]) == pid:
            found.append(int(entry))
      except (OSError, IndexError, ValueError):
        pass
  return found


def test_a_killed_process_stops_the_run_and_a_relaunch_resumes_to_the_same_end(runs, tmp_path):
  _, two, data_root, *_ = runs
  workdir = tmp_path / 'killed'
  # A short grace: process 0 stops in ~2 s instead of 2 x 10 s.
  launcher = subprocess.Popen(_launch_command(workdir, data_root, '--stop_grace_s', '1'),
                              cwd=REPO, env=_env(4),
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
  first = workdir / 'checkpoints' / '1' / 'file_digests.json'
  deadline = time.time() + 600
  while not first.exists() and time.time() < deadline and launcher.poll() is None:
    time.sleep(0.2)
  assert first.exists(), 'no checkpoint of meta-epoch 1'
  processes = sorted(_children(launcher.pid))
  assert len(processes) == 2
  os.kill(processes[1], signal.SIGKILL)   # process 1, during meta-epoch 2
  # The launcher stops process 0, which would wait for process 1 forever.
  assert launcher.wait(timeout=120) != 0
  assert not (workdir / 'results.json').exists()
  result = subprocess.run(_launch_command(workdir, data_root), cwd=REPO, env=_env(4),
                          capture_output=True, text=True, timeout=900)
  assert result.returncode == 0, result.stdout[-4000:]
  assert '[p0] Resuming from the checkpoint of meta-epoch 1' in result.stdout
  resumed, uninterrupted = _results(workdir), _results(two)
  for key in ('img_auroc', 'pix_auroc', 'aupro'):
    assert resumed[key] == uninterrupted[key], key
  assert [r['loss'] for r in resumed['history']] == [r['loss'] for r in uninterrupted['history']]


def test_initialize_decides_from_flags_and_environment(monkeypatch):
  for name in ('SLURM_JOB_ID', 'SLURM_NTASKS', 'SLURM_STEP_NUM_TASKS', 'TPU_WORKER_HOSTNAMES',
               'MEGASCALE_COORDINATOR_ADDRESS', sweep.NUM_PROCESSES, distributed.COORDINATOR):
    monkeypatch.delenv(name, raising=False)
  assert not distributed.cluster_detected()
  assert distributed.initialize('auto') is False   # alone: nothing to join
  with pytest.raises(ConfigError, match='all of --coordinator_address'):
    distributed.initialize('auto', coordinator_address='10.0.0.1:1234')
  with pytest.raises(ConfigError, match='--distributed must be one of'):
    distributed.initialize('yes')
  monkeypatch.setenv(sweep.NUM_PROCESSES, '2')
  with pytest.raises(ConfigError, match='parallel=categories'):
    distributed.initialize('off')
  assert distributed.initialize('auto', parallel='categories') is False   # independent runs
  monkeypatch.setenv('SLURM_JOB_ID', '7')
  monkeypatch.setenv('SLURM_NTASKS', '4')
  assert distributed.cluster_detected()
  monkeypatch.setenv('SLURM_NTASKS', '1')
  assert not distributed.cluster_detected()
  monkeypatch.setenv('TPU_WORKER_HOSTNAMES', 'host-0,host-1')
  assert distributed.cluster_detected()


def test_launcher_stops_the_others_when_a_process_of_a_run_fails():
  assert launch.independent(['main.py', '--config.parallel=categories'])
  assert launch.independent(['main.py', '--config.parallel', 'categories'])
  assert not launch.independent(['main.py', '--config=configs/mvtec.py:all'])
  failing = subprocess.Popen([sys.executable, '-c', 'raise SystemExit(3)'])
  waiting = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)'])
  started = time.time()
  codes = launch._wait([failing, waiting], stop_on_failure=True, grace_s=1.0, poll_s=0.1)
  assert codes[0] == 3 and codes[1] != 0 and time.time() - started < 30
  # Independent processes (a class sweep) keep running after one ends with an error.
  failing = subprocess.Popen([sys.executable, '-c', 'raise SystemExit(2)'])
  finishing = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(3)'])
  assert launch._wait([failing, finishing], stop_on_failure=False, poll_s=0.1) == [2, 0]
