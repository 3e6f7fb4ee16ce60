"""CI-sized smoke runs of the benchmarks, so that they cannot rot."""

import json
import os
import subprocess
import sys

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _run(script, *args):
  result = subprocess.run([sys.executable, os.path.join('benchmarks', script), *args],
                          cwd=REPO, capture_output=True, text=True, timeout=900)
  assert result.returncode == 0, result.stderr[-3000:]
  return result.stdout


def test_backbone_benchmark_smoke(tmp_path):
  out = tmp_path / 'backbone.json'
  stdout = _run('backbone.py', '--backbones', 'efficientnet_lite0', '--size', '64',
                '--batch', '1', '--iters', '1', '--json', str(out))
  (row,) = json.loads(out.read_text())
  assert row['taps'] == '16x16x24 8x8x40 4x4x112'
  assert row['flax_img_s'] > 0 and row['torch_img_s'] > 0
  assert 'flax/torch' in stdout


def test_flow_step_benchmark_smoke(tmp_path):
  out = tmp_path / 'flow.json'
  stdout = _run('flow_step.py', '--dims', '6', '--side', '4', '--vectors', '64', '--steps', '2',
                '--repeats', '1', '--json', str(out))
  (row,) = json.loads(out.read_text())
  assert {'dim', 'ours_vps', 'freia_vps', 'ratio', 'gflops', 'peak_gflops'} <= set(row)
  assert row['dim'] == 6 and row['positions'] == 16 and row['ours_vps'] > 0
  assert row['freia_vps'] > 0 and row['peak_gflops'] == max(row['peak_jnp_gflops'],
                                                             row['peak_torch_gflops'])
  assert row['step_gflop'] > 0 and 'ours/FrEIA' in stdout


def test_flow_step_matmul_shapes_follow_the_condition_path():
  from benchmarks import flow_step
  # dim 200: x1 100 channels, hidden 2 * (100 + 128) = 456, output 200.
  table = flow_step.matmul_shapes(200, 4096, 256)
  assert (256, 128, 456) in table and (4096, 100, 456) in table
  assert (128, 256, 456) in table   # weight gradient of the table projection
  gathered = flow_step.matmul_shapes(200, 4096, 4096)
  assert (4096, 228, 456) in gathered and (256, 128, 456) not in gathered


def test_aupro_benchmark_smoke(tmp_path):
  out = tmp_path / 'aupro.json'
  stdout = _run('aupro.py', '--images', '6', '--size', '32', '--repeats', '1',
                '--json', str(out))
  loop, exact, option = json.loads(out.read_text())
  assert loop['method'] == '1000-threshold loop' and loop['diff_to_loop'] == 0
  assert option['diff_to_loop'] < 1e-12 and 0 < exact['aupro'] < 1
  assert 'speedup' in stdout


def test_end_to_end_benchmark_smoke(tmp_path):
  out = tmp_path / 'e2e.json'
  stdout = _run('end_to_end.py', '--setups', 'demo', '--meta_epochs', '1', '--tiny',
                '--json', str(out))
  (row,) = json.loads(out.read_text())
  assert row['setup'] == 'demo' and row['size'] == 32 and row['meta_epochs'] == 1
  assert row['features_s'] > 0 and row['meta_epoch_s'] > 0 and row['eval_s'] > 0
  assert row['total_s'] > row['meta_epoch_s'] and 's/meta-epoch' in stdout
