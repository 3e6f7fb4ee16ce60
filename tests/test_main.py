"""main.py: flag handling and exit codes (the runs themselves are in test_engine.py)."""

import os
import subprocess
import sys

import pytest

import main as main_module

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _main(*args):
  return subprocess.run([sys.executable, 'main.py', '--config=configs/test.py', *args],
                        cwd=REPO, capture_output=True, text=True, timeout=300)


@pytest.mark.slow
def test_unknown_config_key_is_one_line_with_the_closest_keys(tmp_path):
  result = _main(f'--workdir={tmp_path}', '--config.train.lr_warmupp=linear')
  assert result.returncode == 2
  assert result.stderr.strip().splitlines() == [
      'error: unknown config key train.lr_warmupp (in --config.train.lr_warmupp=linear); '
      'closest: train.lr_warmup, train.lr_warm, train.lr_warm_epochs']
  assert not os.listdir(tmp_path)


@pytest.mark.slow
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


@pytest.mark.slow
def test_wrong_value_type_is_one_line_naming_field_value_and_type(tmp_path):
  result = _main(f'--workdir={tmp_path}', '--config.train.lr=abc')
  assert result.returncode == 2
  assert result.stderr.strip().splitlines() == [
      "error: --config.train.lr=abc: train.lr takes a number (its default is 0.01), not 'abc'"]
  result = _main(f'--workdir={tmp_path}', '--config.flow.conditional=maybe')
  assert result.returncode == 2 and result.stderr.startswith(
      "error: --config.flow.conditional=maybe: flow.conditional takes true or false")
  result = _main(f'--workdir={tmp_path}', '--mode=nonsense')
  assert result.returncode == 2 and result.stderr.startswith('error: flag --mode=nonsense: ')
  assert not os.listdir(tmp_path)


@pytest.mark.slow
def test_unknown_key_without_a_config_flag_is_one_line_too(tmp_path):
  result = subprocess.run([sys.executable, 'main.py', f'--workdir={tmp_path}',
                           '--config.train.lrr=1'], cwd=REPO, capture_output=True, text=True,
                          timeout=300)
  assert result.returncode == 2
  assert result.stderr.strip().splitlines() == [
      'error: unknown config key train.lrr (in --config.train.lrr=1); '
      'closest: train.lr, train.lr_warm, train.lr_warmup']
