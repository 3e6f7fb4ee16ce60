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
  stdout = _run('flow_step.py', '--dims', '6', '--vectors', '64', '--steps', '2',
                '--json', str(out))
  (row,) = json.loads(out.read_text())
  assert set(row) == {'dim', 'ours_vps', 'freia_vps', 'ratio', 'gflops', 'peak_gflops'}
  assert row['dim'] == 6 and row['ours_vps'] > 0 and row['freia_vps'] > 0
  assert 'ours/FrEIA' in stdout
