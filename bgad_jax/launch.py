"""Starts several main.py processes on this machine, for sweeps spread over processes.

  python -m bgad_jax.launch --num_processes 2 -- main.py --config=configs/mvtec.py:all \
      --config.parallel=categories

Each process gets its id, the number of processes and one sweep id in its
environment (`bgad_jax.sweep`); its output lines are prefixed with ``[p<id>]``.
``--devices`` gives each process its own accelerators (e.g. ``0,1;2,3`` sets
CUDA_VISIBLE_DEVICES per process). Returns the highest exit code of the
processes; Ctrl-C stops them all.
"""

import argparse
import os
import subprocess
import sys
import threading
import time
import uuid
from typing import List, Optional, Sequence

from bgad_jax import sweep


def _forward(process: subprocess.Popen, prefix: str) -> None:
  for line in process.stdout:
    sys.stdout.write(f'{prefix} {line}')
    sys.stdout.flush()


def launch(num_processes: int, command: Sequence[str], devices: Optional[List[str]] = None
           ) -> int:
  """Runs ``python <command>`` ``num_processes`` times at once; returns the highest exit code."""
  sweep_id = f'{time.strftime("%Y%m%d-%H%M%S")}-{uuid.uuid4().hex[:8]}'
  processes, threads = [], []
  for process_id in range(num_processes):
    env = dict(os.environ, **{sweep.PROCESS_ID: str(process_id),
                              sweep.NUM_PROCESSES: str(num_processes),
                              sweep.SWEEP_ID: sweep_id})
    if devices:
      env['CUDA_VISIBLE_DEVICES'] = devices[process_id]
    process = subprocess.Popen([sys.executable, *command], env=env, stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT, text=True, bufsize=1)
    thread = threading.Thread(target=_forward, args=(process, f'[p{process_id}]'), daemon=True)
    thread.start()
    processes.append(process)
    threads.append(thread)
  try:
    codes = [process.wait() for process in processes]
  except KeyboardInterrupt:
    for process in processes:
      process.terminate()
    codes = [process.wait() for process in processes]
  for thread in threads:
    thread.join(timeout=5)
  return max(codes)


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument('--num_processes', type=int, required=True)
  parser.add_argument('--devices', default='',
                      help="accelerators per process, ';'-separated, e.g. '0,1;2,3'")
  parser.add_argument('command', nargs=argparse.REMAINDER,
                      help='-- main.py and its flags')
  args = parser.parse_args(argv)
  command = args.command[1:] if args.command[:1] == ['--'] else args.command
  if not command or args.num_processes < 1:
    parser.error('give --num_processes N (>= 1) and the command after --')
  devices = args.devices.split(';') if args.devices else None
  if devices and len(devices) != args.num_processes:
    parser.error(f'--devices names {len(devices)} groups for {args.num_processes} processes')
  return launch(args.num_processes, command, devices)


if __name__ == '__main__':
  sys.exit(main())
