"""End-to-end: the command line runs the flow check on the tiny config."""

import json
import os
import subprocess
import sys

import numpy as np

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _main(*args, workdir):
  return subprocess.run(
      [sys.executable, 'main.py', '--config=configs/test.py', f'--workdir={workdir}', *args],
      cwd=REPO, capture_output=True, text=True, timeout=600)


def test_flow_check_learns_to_separate(tmp_path):
  result = _main(workdir=tmp_path)
  assert result.returncode == 0, result.stderr[-3000:]
  rows = json.loads((tmp_path / 'flow_check.json').read_text())
  assert [r['dim'] for r in rows] == [5, 8]
  for row in rows:
    assert np.isfinite(row['final_loss'])
    assert row['inverse_max_err'] < 1e-4
  before = np.mean([r['auroc_before'] for r in rows])
  after = np.mean([r['auroc_after'] for r in rows])
  assert after > before + 0.05, (before, after)
  assert 'flow_check.json' in result.stdout


def test_unknown_config_key_names_the_key(tmp_path):
  result = _main('--config.train.no_such_knob=3', workdir=tmp_path)
  assert result.returncode != 0
  assert 'no_such_knob' in result.stderr
