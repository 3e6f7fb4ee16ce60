"""bgad_jax.training.sharding: process shares, global batches and gathering, in 2 real processes."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from bgad_jax.training import sharding
from tests.support.runs import REPO

_SCRIPT = r'''
import json
import jax
import numpy as np
from bgad_jax import distributed
from bgad_jax.training import sharding
assert distributed.initialize()   # joined through the launcher's coordinator
mesh = sharding.make_mesh()
rows = np.arange(15, dtype=np.float32).reshape(5, 3)
share = sharding.process_share(5)
gathered = sharding.gather_rows(rows[share], 5)
double = jax.jit(lambda x: 2 * x)
parts = [sharding.local_rows(double(batch))[:real]
         for batch, real in sharding.local_batches(rows[share], 4, mesh)]
doubled = sharding.gather_rows(np.concatenate(parts), 5)
summed = sharding.to_host(jax.jit(lambda x: x.sum(0))(next(sharding.local_batches(
    rows[share], 4, mesh))[0]))
print('RESULT ' + json.dumps(dict(
    process=jax.process_index(), devices=jax.device_count(), main=sharding.is_main_process(),
    share=share.tolist(), gathered=gathered.tolist(), doubled=doubled.tolist(),
    summed=summed.tolist())))
'''


@pytest.mark.slow
def test_shares_batches_and_gathering_over_two_processes(tmp_path):
  script = tmp_path / 'script.py'
  script.write_text(_SCRIPT)
  env = dict(os.environ, JAX_PLATFORMS='cpu', PYTHONPATH=REPO,
             XLA_FLAGS='--xla_force_host_platform_device_count=2')
  result = subprocess.run([sys.executable, '-m', 'bgad_jax.launch', '--num_processes', '2',
                           '--', str(script)], cwd=REPO, env=env, capture_output=True,
                          text=True, timeout=300)
  assert result.returncode == 0, result.stdout[-3000:]
  reports = sorted((json.loads(line.split('RESULT ', 1)[1])
                    for line in result.stdout.splitlines() if 'RESULT ' in line),
                   key=lambda r: r['process'])
  rows = np.arange(15, dtype=np.float32).reshape(5, 3)
  assert [r['share'] for r in reports] == [[0, 1, 2], [3, 4, 4]]   # the last row repeated
  assert [r['main'] for r in reports] == [True, False]
  for report in reports:
    assert report['devices'] == 4
    np.testing.assert_array_equal(report['gathered'], rows)
    np.testing.assert_array_equal(report['doubled'], 2 * rows)
    # The first global batch: process 0's rows 0-1 and process 1's rows 3-4.
    np.testing.assert_array_equal(report['summed'], rows[[0, 1, 3, 4]].sum(0))


def test_alone_a_process_shares_everything():
  assert sharding.process_share(5).tolist() == [0, 1, 2, 3, 4]
  assert sharding.process_share(0).tolist() == []
  rows = np.arange(10).reshape(5, 2)
  np.testing.assert_array_equal(sharding.gather_rows(rows, 5), rows)
  assert sharding.is_main_process()
