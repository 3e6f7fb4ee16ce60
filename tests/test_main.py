"""main.py: flag handling (the runs themselves are in test_engine.py)."""

import os
import subprocess
import sys

import main as main_module

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_unknown_config_key_names_the_key(tmp_path):
  result = subprocess.run(
      [sys.executable, 'main.py', '--config=configs/test.py', f'--workdir={tmp_path}',
       '--config.train.no_such_knob=3'], cwd=REPO, capture_output=True, text=True, timeout=300)
  assert result.returncode != 0
  assert 'no_such_knob' in result.stderr


def test_default_workdir_names():
  assert main_module.default_workdir('configs/demo.py') == os.path.join('runs', 'demo')
  assert main_module.default_workdir('configs/mvtec.py:carpet') == os.path.join('runs', 'mvtec_carpet')
