"""main.py: flag handling and exit codes (the runs themselves are in test_engine.py)."""

import os
import subprocess
import sys

import main as main_module

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _main(*args):
  return subprocess.run([sys.executable, 'main.py', '--config=configs/test.py', *args],
                        cwd=REPO, capture_output=True, text=True, timeout=300)


def test_unknown_config_key_is_one_line_with_the_closest_keys(tmp_path):
  result = _main(f'--workdir={tmp_path}', '--config.train.lr_warmupp=linear')
  assert result.returncode == 2
  assert result.stderr.strip().splitlines() == [
      'error: unknown config key train.lr_warmupp (in --config.train.lr_warmupp=linear); '
      'closest: train.lr_warmup, train.lr_warm, train.lr_warm_epochs']
  assert not os.listdir(tmp_path)


def test_user_error_exits_2_without_traceback_unless_verbose(tmp_path):
  missing = tmp_path / 'no such folder'
  args = (f'--workdir={tmp_path / "run"}', '--config.data.source=folder',
          '--config.data.category=widget', f'--config.data.root={missing}')
  quiet, verbose = _main(*args), _main(*args, '--verbose')
  assert quiet.returncode == verbose.returncode == 2
  assert 'Traceback' not in quiet.stderr and quiet.stderr.count('\n') == 1
  assert quiet.stderr.startswith(f'error: data.root={missing} does not exist')
  assert 'Traceback' in verbose.stderr and 'error: data.root=' in verbose.stderr


def test_default_workdir_names():
  assert main_module.default_workdir('configs/demo.py') == os.path.join('runs', 'demo')
  assert main_module.default_workdir('configs/mvtec.py:carpet') == os.path.join('runs', 'mvtec_carpet')
  assert main_module.default_workdir('configs/mvtec.py:carpet,best') == os.path.join(
      'runs', 'mvtec_carpet_best')
