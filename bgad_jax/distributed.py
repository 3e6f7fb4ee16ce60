"""Joining the processes of one run with `jax.distributed` (several hosts, or several
processes on one machine).

A run is multi-process when main.py gets ``--coordinator_address``,
``--num_processes`` and ``--process_id``; when `bgad_jax.launch` started it;
or (``--distributed=auto``) when it runs as one task of several under SLURM
or on a multi-host TPU slice under GKE. ``--distributed=on`` always calls
``jax.distributed.initialize()`` and lets JAX find the cluster (Cloud TPU
pod slices, SLURM, Open MPI); ``off`` never does.

After `initialize`, ``jax.devices()`` lists the devices of every process and
`bgad_jax.training.sharding` spreads the work over them.
"""

import os
from typing import Optional

import jax

from bgad_jax.errors import ConfigError
from bgad_jax.sweep import NUM_PROCESSES, PROCESS_ID

MODES = ('auto', 'on', 'off')
# Set by `bgad_jax.launch` next to the process id and count of `bgad_jax.sweep`.
COORDINATOR = 'BGAD_COORDINATOR_ADDRESS'


def _task_count(*names: str) -> int:
  for name in names:
    if os.environ.get(name, '').isdigit():
      return int(os.environ[name])
  return 1


def cluster_detected() -> bool:
  """Whether this process is one task of several of a cluster manager JAX knows."""
  if 'SLURM_JOB_ID' in os.environ and _task_count('SLURM_STEP_NUM_TASKS', 'SLURM_NTASKS') > 1:
    return True
  hosts = os.environ.get('TPU_WORKER_HOSTNAMES', '')
  return ',' in hosts or bool(os.environ.get('MEGASCALE_COORDINATOR_ADDRESS'))


def initialize(mode: str = 'auto', coordinator_address: str = '',
               num_processes: Optional[int] = None, process_id: Optional[int] = None,
               parallel: str = 'data') -> bool:
  """Starts `jax.distributed` when the run is multi-process; returns whether it did.

  Call before anything touches a JAX device. With ``parallel='categories'``
  the processes are independent runs (`bgad_jax.sweep`) and nothing starts.

  Raises:
    ConfigError: explicit settings that are incomplete, or processes started
      by `bgad_jax.launch` with ``--distributed=off`` (they would overwrite
      each other's outputs).
  """
  if mode not in MODES:
    raise ConfigError(f'--distributed must be one of {MODES}, got {mode!r}')
  launched = int(os.environ.get(NUM_PROCESSES, '1'))
  if parallel == 'categories':
    return False
  if mode == 'off':
    if launched > 1:
      raise ConfigError(f'{launched} processes were launched with --distributed=off: use '
                        '--config.parallel=categories for independent processes, or let '
                        'them train together (--distributed=auto)')
    return False
  explicit = [coordinator_address, num_processes, process_id]
  if any(value not in ('', None) for value in explicit):
    if any(value in ('', None) for value in explicit):
      raise ConfigError('a multi-process run needs all of --coordinator_address, '
                        '--num_processes and --process_id (or none of them)')
    kwargs = dict(coordinator_address=coordinator_address, num_processes=num_processes,
                  process_id=process_id)
  elif launched > 1 and os.environ.get(COORDINATOR):
    kwargs = dict(coordinator_address=os.environ[COORDINATOR], num_processes=launched,
                  process_id=int(os.environ.get(PROCESS_ID, '0')))
  elif mode == 'on' or cluster_detected():
    kwargs = {}   # JAX reads the cluster manager's environment
  else:
    return False
  # The CPU backend needs a collectives implementation for cross-process
  # reductions; gloo ships with jaxlib. Accelerators use their own.
  jax.config.update('jax_cpu_collectives_implementation', 'gloo')
  jax.distributed.initialize(**kwargs)
  return True
