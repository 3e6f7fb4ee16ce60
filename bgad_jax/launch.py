"""Starts the processes of one run (or of a sweep) on this machine.

  python -m bgad_jax.launch --num_processes 2 -- main.py --config=configs/mvtec.py:carpet
  python -m bgad_jax.launch --num_processes 2 -- main.py --config=configs/mvtec.py:all \
      --config.parallel=categories

Each process gets its id, the number of processes, one sweep id and the
address of a `jax.distributed` coordinator (a free port on 127.0.0.1) in its
environment: with ``parallel='data'`` they train together over all their
devices (`bgad_jax.distributed`), with ``parallel='categories'`` each runs its
own classes (`bgad_jax.sweep`). Output lines are prefixed with ``[p<id>]``.
``--devices`` gives each process its own accelerators (e.g. ``0,1;2,3`` sets
CUDA_VISIBLE_DEVICES per process). When a process of a data-parallel run
fails, the others are stopped (they would wait for it forever) after
``--stop_grace_s``; the exit code is the highest of the processes'. Ctrl-C
stops them all. Rerunning the same command resumes from the last checkpoint.
"""

import argparse
import os
import socket
import subprocess
import sys
import threading
import time
import uuid
from typing import List, Optional, Sequence

from bgad_jax import distributed
from bgad_jax import sweep

# How long the others may keep running after a process failed (they may be
# finishing a checkpoint) before they are stopped, and then how long SIGTERM
# gets before SIGKILL (a process of a jax.distributed run outlives SIGTERM:
# measured, the second grace ran out).
STOP_GRACE_S = 10.0


def free_port() -> int:
  """A TCP port on 127.0.0.1 that nothing listens on now."""
  with socket.socket() as probe:
    probe.bind(('127.0.0.1', 0))
    return probe.getsockname()[1]


def _forward(process: subprocess.Popen, prefix: str) -> None:
  for line in process.stdout:
    sys.stdout.write(f'{prefix} {line}')
    sys.stdout.flush()


def launch(num_processes: int, command: Sequence[str], devices: Optional[List[str]] = None,
           stop_grace_s: float = STOP_GRACE_S) -> int:
  """Runs ``python <command>`` ``num_processes`` times at once; returns the highest exit code."""
  sweep_id = f'{time.strftime("%Y%m%d-%H%M%S")}-{uuid.uuid4().hex[:8]}'
  coordinator = f'127.0.0.1:{free_port()}'
  processes, threads = [], []
  for process_id in range(num_processes):
    env = dict(os.environ, **{sweep.PROCESS_ID: str(process_id),
                              sweep.NUM_PROCESSES: str(num_processes),
                              sweep.SWEEP_ID: sweep_id, distributed.COORDINATOR: coordinator})
    if devices:
      env['CUDA_VISIBLE_DEVICES'] = devices[process_id]
    process = subprocess.Popen([sys.executable, *command], env=env, stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT, text=True, bufsize=1)
    thread = threading.Thread(target=_forward, args=(process, f'[p{process_id}]'), daemon=True)
    thread.start()
    processes.append(process)
    threads.append(thread)
  try:
    codes = _wait(processes, stop_on_failure=not independent(command), grace_s=stop_grace_s)
  except KeyboardInterrupt:
    _stop(processes, stop_grace_s)
    codes = [process.wait() for process in processes]
  for thread in threads:
    thread.join(timeout=5)
  return max(codes)


def _stop(processes: Sequence[subprocess.Popen], grace_s: float) -> None:
  for process in processes:
    if process.poll() is None:
      process.terminate()
  deadline = time.time() + grace_s
  for process in processes:
    try:
      process.wait(timeout=max(0.1, deadline - time.time()))
    except subprocess.TimeoutExpired:
      process.kill()


def independent(command: Sequence[str]) -> bool:
  """Whether ``command`` runs independent processes (``--config.parallel=categories``)."""
  joined = ' '.join(command).replace('--config.parallel ', '--config.parallel=')
  return '--config.parallel=categories' in joined


def _wait(processes: Sequence[subprocess.Popen], stop_on_failure: bool,
          grace_s: float = STOP_GRACE_S, poll_s: float = 0.5) -> List[int]:
  """Exit codes of all processes; with ``stop_on_failure``, once one fails the
  others get ``grace_s`` to end, then are stopped."""
  failed_at = None
  while any(process.poll() is None for process in processes):
    if stop_on_failure and failed_at is None and any(process.poll() for process in processes):
      failed_at = time.time()
    if failed_at is not None and time.time() - failed_at > grace_s:
      _stop(processes, grace_s)
      break
    time.sleep(poll_s)
  return [process.wait() for process in processes]


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument('--num_processes', type=int, required=True)
  parser.add_argument('--devices', default='',
                      help="accelerators per process, ';'-separated, e.g. '0,1;2,3'")
  parser.add_argument('--stop_grace_s', type=float, default=STOP_GRACE_S,
                      help='when a process of a data-parallel run fails, seconds the others '
                           'get to end (then SIGTERM, and SIGKILL as long again after it)')
  parser.add_argument('command', nargs=argparse.REMAINDER,
                      help='-- main.py and its flags')
  args = parser.parse_args(argv)
  command = args.command[1:] if args.command[:1] == ['--'] else args.command
  if not command or args.num_processes < 1:
    parser.error('give --num_processes N (>= 1) and the command after --')
  devices = args.devices.split(';') if args.devices else None
  if devices and len(devices) != args.num_processes:
    parser.error(f'--devices names {len(devices)} groups for {args.num_processes} processes')
  return launch(args.num_processes, command, devices, args.stop_grace_s)


if __name__ == '__main__':
  sys.exit(main())
