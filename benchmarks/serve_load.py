"""The inspection server under load, and beside slow clients, over loopback.

  python benchmarks/serve_load.py [--workdir runs/demo --config configs/demo.py]
      [--clients 50] [--seconds 20] [--slow 4] [--json serve_load.json]

Starts ``python main.py --mode=serve`` as a user would (its own process), on
a free port, for a trained workdir (default: a tiny model trained here first
from configs/test.py). Then, twice for ``--seconds``: ``--clients`` threads
each post one image to ``/predict?overlay=0`` again and again (a new
connection per request, as a camera loop or ``curl`` would); the second time
``--slow`` attackers run beside them, each promising a 100 kB body and
trickling a byte per second (the server cuts them off after its
``serve.request_timeout_s``; they reconnect at once). Prints per phase the
requests per second, p50/p95/p99/max latency and errors (refused, reset,
timed out or non-200), and p99 with attackers / p99 without.
"""

import argparse
import http.client
import json
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
from typing import Dict, List

import numpy as np

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

from benchmarks import table  # noqa: E402


def train_tiny_model(workdir: str) -> List[str]:
  """Trains configs/test.py into ``workdir``; returns the config flags it needs."""
  flags = ['--config=configs/test.py', f'--config.data.root={os.path.join(workdir, "images")}']
  subprocess.run([sys.executable, 'main.py', f'--workdir={workdir}'] + flags, cwd=REPO,
                 check=True, stdout=subprocess.DEVNULL)
  return flags


def start_server(workdir: str, flags: List[str]):
  """(process, port) of ``main.py --mode=serve`` on a free port, once it is ready."""
  process = subprocess.Popen(
      [sys.executable, 'main.py', '--mode=serve', f'--workdir={workdir}'] + flags
      + ['--config.serve.port=0'], cwd=REPO, stdout=subprocess.PIPE, text=True)
  for line in process.stdout:
    if line.startswith('Inspection page: '):
      return process, int(line.strip().rstrip('/').rsplit(':', 1)[1])
  raise RuntimeError(f'the server did not start (exit code {process.wait()})')


def one_request(port: int, body: bytes, timeout: float) -> float:
  """Seconds for one POST /predict; raises on any failure or non-200 answer."""
  t0 = time.perf_counter()
  connection = http.client.HTTPConnection('127.0.0.1', port, timeout=timeout)
  try:
    connection.request('POST', '/predict?overlay=0', body,
                       {'Content-Type': 'application/octet-stream', 'X-Filename': 'load.png'})
    response = connection.getresponse()
    response.read()
    if response.status != 200:
      raise RuntimeError(f'status {response.status}')
  finally:
    connection.close()
  return time.perf_counter() - t0


def slow_attacker(port: int, stop: threading.Event, cut_offs: List[int]) -> None:
  """Promises 100 kB, trickles a byte a second, reconnects when cut off."""
  while not stop.is_set():
    try:
      with socket.create_connection(('127.0.0.1', port), timeout=5) as sock:
        sock.sendall(b'POST /predict HTTP/1.1\r\nHost: x\r\nContent-Length: 100000\r\n\r\n')
        while not stop.wait(1.0):
          sock.sendall(b'x')
    except OSError:
      cut_offs.append(1)


def phase(port: int, body: bytes, clients: int, seconds: float, slow: int,
          timeout: float) -> Dict[str, float]:
  latencies, errors, cut_offs = [], [], []
  stop = threading.Event()
  lock = threading.Lock()

  def client():
    while not stop.is_set():
      try:
        elapsed = one_request(port, body, timeout)
        with lock:
          latencies.append(elapsed)
      except Exception as error:   # pylint: disable=broad-except  (any failure counts)
        with lock:
          errors.append(f'{type(error).__name__}: {error}')

  attackers = [threading.Thread(target=slow_attacker, args=(port, stop, cut_offs), daemon=True)
               for _ in range(slow)]
  for thread in attackers:
    thread.start()
  time.sleep(1.0 if slow else 0.0)   # the attackers hold their connections first
  workers = [threading.Thread(target=client, daemon=True) for _ in range(clients)]
  started = time.perf_counter()
  for thread in workers:
    thread.start()
  time.sleep(seconds)
  stop.set()
  for thread in workers:
    thread.join(timeout + 5)
  elapsed = time.perf_counter() - started
  ms = 1000 * np.asarray(latencies) if latencies else np.zeros(1)
  return dict(requests=len(latencies), errors=len(errors), rps=len(latencies) / elapsed,
              p50=float(np.percentile(ms, 50)), p95=float(np.percentile(ms, 95)),
              p99=float(np.percentile(ms, 99)), max=float(ms.max()), slow=slow,
              cut_offs=len(cut_offs), error_kinds=sorted(set(errors))[:5])


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument('--workdir', default='', help='a trained workdir (default: train a tiny one)')
  parser.add_argument('--config', default='', help='its config, e.g. configs/demo.py')
  parser.add_argument('--image', default='', help='the image to post (default: a test image)')
  parser.add_argument('--clients', type=int, default=50)
  parser.add_argument('--seconds', type=float, default=20.0)
  parser.add_argument('--slow', type=int, default=4, help='slow attackers in the second phase')
  parser.add_argument('--timeout', type=float, default=120.0, help='client timeout, s')
  parser.add_argument('--json', default='')
  args = parser.parse_args(argv)
  if args.workdir:
    workdir, flags = args.workdir, [f'--config={args.config}'] if args.config else []
  else:
    workdir = os.path.join(tempfile.mkdtemp(), 'tiny')
    flags = train_tiny_model(workdir)
  if args.image:
    name, body = os.path.basename(args.image), open(args.image, 'rb').read()
  else:   # a 256 px crop of the tissue photograph the demo is made from
    from skimage import data as skdata
    from tfds_mvtec import image_io
    name, body = 'tissue crop', image_io.encode_png(skdata.immunohistochemistry()[:256, :256])
  process, port = start_server(workdir, flags)
  try:
    one_request(port, body, args.timeout)   # warm
    rows = [dict(phase='clients only', **phase(port, body, args.clients, args.seconds, 0,
                                               args.timeout))]
    rows.append(dict(phase=f'+ {args.slow} slow clients',
                     **phase(port, body, args.clients, args.seconds, args.slow, args.timeout)))
  finally:
    process.terminate()
    code = process.wait(timeout=60)
  rows[1]['p99_x'] = rows[1]['p99'] / rows[0]['p99']
  print(f'\n{args.clients} concurrent clients, {args.seconds:g} s per phase, '
        f'{name} ({len(body)} bytes), {os.cpu_count()} CPU cores\n')
  print(table.markdown(rows, [
      ('phase', 'phase', 's'), ('requests', 'requests', 'd'), ('errors', 'errors', 'd'),
      ('rps', 'requests/s', '.1f'), ('p50', 'p50 ms', '.0f'), ('p95', 'p95 ms', '.0f'),
      ('p99', 'p99 ms', '.0f'), ('max', 'max ms', '.0f'), ('cut_offs', 'slow cut off', 'd'),
      ('p99_x', 'p99 / without', '.2f')]))
  for row in rows:
    if row['error_kinds']:
      print(f"{row['phase']}: errors such as {row['error_kinds']}")
  print(f'Server stopped on SIGTERM with exit code {code}.')
  if args.json:
    with open(args.json, 'w') as f:
      json.dump(dict(settings=vars(args), rows=rows, exit_code=code), f, indent=1)
  return rows


if __name__ == '__main__':
  main()
