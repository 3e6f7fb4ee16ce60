"""AUPRO: our exact algorithm vs the reference's 1000-threshold loop.

  python benchmarks/aupro.py [--images 150] [--size 256] [--repeats 3] [--json out.json]

A synthetic test set the size of an MVTec class: half the images normal, half
with one to three defect regions; smooth noisy anomaly maps. Times our exact
AUPRO (the default) and our reference-compatible option
(``metrics.aupro(..., num_thresholds=1000)``, config
``report.aupro_thresholds=1000``) against the loop. The loop is
`references.reference_metrics.loop_aupro`: the reference's thresholds and
integration, with the connected regions labelled once instead of at every
threshold (the reference relabels them 1000 times, so it is slower still).
"""

import argparse
import os
import sys

import numpy as np
from scipy import ndimage

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from bgad_jax.evaluation import metrics  # noqa: E402
from benchmarks import table  # noqa: E402
from references.reference_metrics import loop_aupro  # noqa: E402


def synthetic_test_set(images: int, size: int, seed: int = 0):
  """[images, size, size] float32 anomaly maps and bool ground-truth masks."""
  rng = np.random.default_rng(seed)
  masks = np.zeros((images, size, size), bool)
  for i in range(images // 2, images):
    for _ in range(rng.integers(1, 4)):
      r, c = rng.integers(size // 8, size - size // 8, size=2)
      h, w = rng.integers(size // 32 + 1, size // 8, size=2)
      masks[i, r - h:r + h, c - w:c + w] = True
  sigma = size / 64
  signal = ndimage.gaussian_filter(masks.astype(np.float32), sigma=(0, sigma, sigma)) * 1.5
  noise = ndimage.gaussian_filter(rng.standard_normal(masks.shape).astype(np.float32),
                                  sigma=(0, sigma / 2, sigma / 2))
  return (signal + noise / noise.std()).astype(np.float32), masks


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument('--images', type=int, default=150)
  parser.add_argument('--size', type=int, default=256)
  parser.add_argument('--repeats', type=int, default=3, help='timed runs of ours')
  parser.add_argument('--json', default=None)
  args = parser.parse_args(argv)
  maps, masks = synthetic_test_set(args.images, args.size)
  exact_s, exact = table.best_of(lambda: metrics.aupro(maps, masks), args.repeats)
  option_s, option = table.best_of(
      lambda: metrics.aupro(maps, masks, num_thresholds=1000), args.repeats)
  loop_s, loop = table.best_of(lambda: loop_aupro(maps, masks), 1)
  rows = [dict(method=name, aupro=value, diff_to_loop=abs(value - loop), seconds=seconds,
               speedup=loop_s / seconds)
          for name, value, seconds in [('1000-threshold loop', loop, loop_s),
                                       ('bgad_jax exact', exact, exact_s),
                                       ('bgad_jax 1000 thresholds', option, option_s)]]
  table.report(rows, [('method', 'method', '24s'), ('aupro', 'AUPRO', '9.6f'),
                      ('diff_to_loop', '|diff to loop|', '14.1e'), ('seconds', 'seconds', '7.3f'),
                      ('speedup', 'speedup', '7.1f')],
               f'{args.images} images {args.size}x{args.size}, best of {args.repeats} runs '
               '(the loop: one run)', args.json)
  return rows


if __name__ == '__main__':
  main()
