import os
import shutil
import tempfile

import pytest

# Tests run on the CPU in float32, whatever the machine has.
os.environ.setdefault('JAX_PLATFORMS', 'cpu')
# Where a run picks an accelerator (benchmarks/accelerator_check.py sets
# JAX_PLATFORMS=cuda), float32 matmuls would default to TF32 or bfloat16 there
# and miss the float32 references by 1e-3; the CPU computes float32 either way.
if os.environ['JAX_PLATFORMS'] != 'cpu':
  os.environ.setdefault('JAX_DEFAULT_MATMUL_PRECISION', 'highest')

# One compile cache per test session (inherited by the processes tests start):
# what a test compiles and how long it takes never depends on the user's
# ~/.cache/bgad_jax/xla, and the session leaves nothing there.
_COMPILE_CACHE = tempfile.mkdtemp(prefix='bgad_test_xla_')
os.environ['BGAD_COMPILE_CACHE_DIR'] = _COMPILE_CACHE


def pytest_sessionfinish(session, exitstatus):
  del session, exitstatus
  shutil.rmtree(_COMPILE_CACHE, ignore_errors=True)


# Whole modules whose every test trains end to end or starts processes.
_SLOW_MODULES = ('test_distributed.py', 'test_notebook.py')


def pytest_collection_modifyitems(items):
  """Marks `slow` what trains end to end: users of the trained fixture, and _SLOW_MODULES."""
  for item in items:
    if 'trained' in item.fixturenames or item.path.name in _SLOW_MODULES:
      item.add_marker(pytest.mark.slow)


@pytest.fixture(scope='session')
def trained(tmp_path_factory):
  """(workdir, data root, stdout) of one `python main.py` run on the tiny test config."""
  from tests.support.runs import run_main
  base = tmp_path_factory.mktemp('engine')
  workdir, data_root = base / 'run dir', base / 'data'   # a space: every path is quoted
  return workdir, data_root, run_main(workdir, data_root)
