"""Running main.py on the tiny test config, for the end-to-end tests."""

import os
import shutil
import subprocess
import sys

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def main_command(workdir, data_root, *extra):
  return [sys.executable, 'main.py', '--config=configs/test.py', f'--workdir={workdir}',
          f'--config.data.root={data_root}', *extra]


def run_main(workdir, data_root, *extra, returncode=0, with_stderr=False):
  """Runs main.py and checks its exit code; returns stdout (and stderr)."""
  result = subprocess.run(main_command(workdir, data_root, *extra), cwd=REPO,
                          capture_output=True, text=True, timeout=900)
  assert result.returncode == returncode, result.stderr[-4000:]
  return (result.stdout, result.stderr) if with_stderr else result.stdout


def copy_of_run(workdir, target):
  """A copy of a trained workdir, for tests that write into one (eval, predict, export):
  the session's shared run stays as training left it, whatever the test order."""
  shutil.copytree(workdir, target)
  return target
