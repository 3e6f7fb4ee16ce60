import os

import pytest

# Tests run on the CPU in float32, whatever the machine has.
os.environ.setdefault('JAX_PLATFORMS', 'cpu')


@pytest.fixture(scope='session')
def trained(tmp_path_factory):
  """(workdir, data root, stdout) of one `python main.py` run on the tiny test config."""
  from tests.support.runs import run_main
  base = tmp_path_factory.mktemp('engine')
  workdir, data_root = base / 'run dir', base / 'data'   # a space: every path is quoted
  return workdir, data_root, run_main(workdir, data_root)
