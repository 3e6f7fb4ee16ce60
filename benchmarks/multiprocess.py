"""One run in 1 process against the same run in 2 processes (jax.distributed) on this machine.

  python benchmarks/multiprocess.py [--devices 2] [--meta_epochs 2] [--json out.json]
                                   [--workdir DIR]   # keep the runs (DIR/p1, DIR/p2)

Both setups have the same mesh of ``--devices`` CPU devices: one process with
all of them, or two processes (`bgad_jax.launch`, gloo collectives) with half
each. The run is `configs/demo.py` (Lite0, 128 px) with ``--meta_epochs``;
each setup runs main.py as a user would and reads its results.json:
  * features: seconds of feature extraction (training, calibration and test
    images, compilation included) and images per second;
  * training: the last meta-epoch's seconds (compiled by then) and feature
    vectors per second through the flows (steps x train.num_vectors).
On one machine the two processes share its cores, so a gain is not expected
(the cross-process gradient reduction goes through gloo on every step); the
numbers show what the multi-process path costs. On a pod slice each process
has its own host and chips.
"""

import argparse
import contextlib
import json
import os
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from benchmarks import table  # noqa: E402
from bgad_jax.data.demo_data import DEFECT_TYPES  # noqa: E402

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
COLUMNS = [('setup', 'setup', '24s'), ('feature_s', 'features s', '10.1f'),
           ('images_per_s', 'images/s', '8.1f'), ('epoch_s', 'meta-epoch s', '12.1f'),
           ('vectors_per_s', 'vectors/s', '10.0f'), ('vs_one', 'train vs 1 process', '18.2f'),
           ('wall_s', 'wall s', '7.0f')]


def run(processes: int, devices: int, workdir: str, args) -> dict:
  """One main.py run; returns its results.json and wall seconds (its output is kept
  in ``<workdir>.stdout.txt``)."""
  flags = ['main.py', f'--config=configs/{"test" if args.tiny else "demo"}.py',
           f'--workdir={workdir}', f'--config.data.root={os.path.join(args.tmp, "demo")}',
           f'--config.train.meta_epochs={args.meta_epochs}', '--config.report.num_overlays=0']
  sub_epochs = args.sub_epochs or (1 if args.tiny else 0)
  if sub_epochs:
    flags.append(f'--config.train.sub_epochs={sub_epochs}')
  command = ([sys.executable, '-m', 'bgad_jax.launch', '--num_processes', str(processes), '--']
             + flags if processes > 1 else [sys.executable] + flags)
  env = dict(os.environ, JAX_PLATFORMS='cpu',
             XLA_FLAGS=f'--xla_force_host_platform_device_count={devices // processes}')
  start = time.time()
  result = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True)
  with open(workdir + '.stdout.txt', 'w') as f:
    f.write(result.stdout)
  if result.returncode:
    raise RuntimeError(f'{" ".join(command)} failed:\n{result.stdout[-3000:]}'
                       f'{result.stderr[-3000:]}')
  with open(os.path.join(workdir, 'results.json')) as f:
    return dict(json.load(f), wall_s=time.time() - start)


def image_count(results: dict) -> int:
  """Images whose features a run extracted: training, calibration, known and test."""
  config = results['config']
  demo = config['data']['demo']
  num_test = demo['num_test_good'] + len(DEFECT_TYPES) * demo['num_per_defect']
  # Known anomalies that stay in the test set are extracted twice.
  again = 0 if config['data']['not_in_test'] else len(results['known_anomalies'])
  return demo['num_train'] + num_test + again


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument('--devices', type=int, default=2, help='CPU devices in the mesh')
  parser.add_argument('--meta_epochs', type=int, default=2)
  parser.add_argument('--sub_epochs', type=int, default=0,
                      help="0: the config's (1 with --tiny)")
  parser.add_argument('--tiny', action='store_true', help='the test config (CI smoke run)')
  parser.add_argument('--json', default=None)
  parser.add_argument('--workdir', default='',
                      help='keep the runs here (p1/, p2/, demo/ data); default: a temporary folder')
  args = parser.parse_args(argv)
  rows = []
  with (contextlib.nullcontext(args.workdir) if args.workdir
        else tempfile.TemporaryDirectory()) as tmp:
    args.tmp = tmp
    for processes in (1, 2):
      results = run(processes, args.devices, os.path.join(tmp, f'p{processes}'), args)
      last = results['history'][-1]
      vectors = (last['steps'] + last['skipped']) * results['config']['train']['num_vectors']
      rows.append(dict(
          setup=f'{processes} x {args.devices // processes} devices',
          feature_s=results['seconds']['features'],
          images_per_s=image_count(results) / results['seconds']['features'],
          epoch_s=last['train_seconds'], vectors_per_s=vectors / last['train_seconds'],
          wall_s=results['wall_s'], img_auroc=results['img_auroc'],
          pix_auroc=results['pix_auroc']))
  for row in rows:
    row['vs_one'] = rows[0]['epoch_s'] / row['epoch_s']
  table.report(rows, COLUMNS, f'{args.meta_epochs} meta-epochs of configs/'
               f'{"test" if args.tiny else "demo"}.py, same {args.devices}-device mesh',
               args.json)


if __name__ == '__main__':
  main()
