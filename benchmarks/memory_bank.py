"""Normal-feature nearest-neighbour scores beside `best`'s flows, on the quality classes.

  python benchmarks/memory_bank.py [--classes tissue,surface,coins] [--seeds 0,1,2]
      [--scratch DIR] [--json out.json] [--tiny] [--defect_placement centre|anywhere]

A measurement, not a library option (nothing here is in bgad_jax's scoring
path). For each class and seed it trains the `best` run of
benchmarks/quality.py (the same config, images and known files; a finished
run in ``--scratch`` is reused), then scores the same test images several
ways with bgad_jax's metric code:

  best             the flows' maps and image scores, as quality.py's `best`;
  knn              memory bank alone: per level, each test feature vector's
                   Euclidean distance to its nearest normal training vector
                   (every vector of every normal training image; no coreset;
                   the flows' features, so averaged where `best` averages
                   them), upsampled as the flows' maps, standardised
                   over the test pixels, averaged over the levels; maps
                   smoothed and images scored (top-k mean) as `best`'s;
  best+knn_image   `best`'s maps; image score = the sum of the flows' and
                   the bank's image scores, each standardised over the test
                   images;
  best+knn_maps    maps and image scores from the standardised flow map plus
                   half the standardised bank map;
  patch_knn        PatchCore's patch features of the same backbone: the
                   stride-8 and stride-16 taps (before any
                   backbone.neighbourhood), each averaged over 3 x 3
                   neighbours with zero padding as anomalib's pooling, the
                   stride-16 one resized to stride 8, concatenated; a test
                   patch's distance to the nearest normal training patch (all
                   of them, no coreset), maps and scores as `knn`'s;
  best+patch_knn   the standardised flow map plus the standardised
                   patch_knn map, maps and image scores from the sum.

Data, known files and test set are quality.py's defaults (since 2026-12-05
three known files per seen type and the 64 + 16 test set; the README's rows
were measured with two per type on the demo config's 16 + 8).

By distance to the border (a second table, for `best` and `patch_knn`):
pixel AUROC over the pixels at least 0, 8 and 16 px from the image border,
and the normal test images' map values in bands of distance (0-8, 8-16,
16-32 px and the rest), as the mean z-score over all normal test pixels:
zero padding lowers PatchCore's scores along the border, which helps when
the defects lie inside (quality.py's default placement; README, "Where the
defects lie").

Standardising over the test set is transductive, as the reference's
test-set normalisation of the maps is; a deployable version would take its
scales from normal images.
"""

import os
os.environ.setdefault('TQDM_DISABLE', '1')

import argparse
import dataclasses
import json
import sys
import time
from typing import Dict, List, Tuple

import jax
import flax.linen as nn
import jax.numpy as jnp
import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from benchmarks import quality, table  # noqa: E402
from bgad_jax import engine, settings  # noqa: E402
from bgad_jax.data import demo_data  # noqa: E402
from bgad_jax.detector import Detector  # noqa: E402
from bgad_jax.evaluation import maps as maps_lib  # noqa: E402
from bgad_jax.evaluation import metrics  # noqa: E402
from bgad_jax.evaluation.inference import lp_maps  # noqa: E402
from bgad_jax.evaluation.report import headline  # noqa: E402

VARIANTS = ('best', 'knn', 'best+knn_image', 'best+knn_maps', 'patch_knn', 'best+patch_knn')
BORDER_VARIANTS = ('best', 'patch_knn')
# px from the image border: the pixel AUROC's cut-offs, and the bands of the normal profile.
BORDER_CUTS = (0, 8, 16)
BORDER_BANDS = ((0, 8), (8, 16), (16, 32), (32, None))
BORDER_COLUMNS = ([('class', 'class', '8s'), ('seed', 'seed', '4d'), ('variant', 'variant', '10s')] +
                  [(f'pix_from_{cut}', f'pix >= {cut} px', '11.1f') for cut in BORDER_CUTS] +
                  [(f'normal_z_{lo}', f'normal z {lo}-{hi}' if hi else f'normal z {lo}+', '12.2f')
                   for lo, hi in BORDER_BANDS])
COLUMNS = [('class', 'class', '8s'), ('seed', 'seed', '4d'), ('variant', 'variant', '15s'),
           ('img', 'img', '5.1f'), ('pix', 'pix', '5.1f'), ('aupro', 'AUPRO', '5.1f'),
           ('seen_img', 'seen img', '8.1f'), ('seen_pix', 'seen pix', '8.1f'),
           ('unseen_img', 'unseen img', '10.1f'), ('unseen_pix', 'unseen pix', '10.1f')]


@jax.jit
def _nearest_distances(queries, bank, bank_sq_norms):
  """[Q, C] queries, [B, C] bank -> [Q] Euclidean distance to the nearest bank row."""
  sq = (jnp.sum(queries * queries, axis=1, keepdims=True) + bank_sq_norms[None]
        - 2.0 * jnp.dot(queries, bank.T, precision='highest'))
  return jnp.sqrt(jnp.maximum(jnp.min(sq, axis=1), 0.0))


def nearest_distance_maps(bank_features: List[np.ndarray], features: List[np.ndarray],
                          chunk: int = 2048) -> List[np.ndarray]:
  """Per level: float32 [N, h, w] distance of each vector of ``features`` ([N, h, w, C])
  to its nearest vector of ``bank_features`` ([M, h, w, C], all of them)."""
  out = []
  for bank, level in zip(bank_features, features):
    n, h, w, c = level.shape
    bank = jnp.asarray(bank.reshape(-1, c))
    bank_sq = jnp.sum(bank * bank, axis=1)
    queries = level.reshape(-1, c)
    parts = []
    for start in range(0, len(queries), chunk):   # fixed-size chunks: one compilation
      part = queries[start:start + chunk]
      padded = np.zeros((chunk, c), np.float32)
      padded[:len(part)] = part
      parts.append(np.asarray(_nearest_distances(jnp.asarray(padded), bank, bank_sq))[:len(part)])
    out.append(np.concatenate(parts).reshape(n, h, w))
  return out


def _standardise(values: np.ndarray) -> np.ndarray:
  return (values - values.mean()) / max(float(values.std()), 1e-12)


def bank_map(distances: List[np.ndarray], size: int) -> np.ndarray:
  """[N, size, size] float64: the levels' upsampled distance maps, each standardised
  over all its test pixels, averaged."""
  return np.mean([_standardise(maps_lib.upsample_align_corners(d.astype(np.float64), size, np))
                  for d in distances], axis=0)


def patch_features(taps: List[np.ndarray]) -> np.ndarray:
  """PatchCore's patch features of the raw taps (strides 4, 8, 16): float32
  [N, h_8, w_8, C_8 + C_16] (see the module doc, `patch_knn`)."""
  pooled = [nn.avg_pool(jnp.asarray(tap), (3, 3), strides=(1, 1), padding='SAME',
                        count_include_pad=True) for tap in taps[1:]]
  n, h, w, _ = pooled[0].shape
  coarse = jax.image.resize(pooled[1], (n, h, w, pooled[1].shape[-1]), 'bilinear')
  return np.concatenate([np.asarray(pooled[0]), np.asarray(coarse)], axis=-1)


def variant_outputs(lp: List[np.ndarray], distances: List[np.ndarray],
                    patch_distances: np.ndarray, size: int,
                    options: maps_lib.MapOptions) -> Dict[str, tuple]:
  """{variant: (maps [N, S, S], image scores [N])} for `VARIANTS`; ``distances``
  per level [N, h, w], ``patch_distances`` [N, h_8, w_8]."""
  flow_maps, flow_scores = maps_lib.test_set_outputs(lp, size, options)
  flow_raw = maps_lib.test_set_anomaly_maps(lp, size, options.for_scores())
  knn_raw = bank_map(distances, size)
  patch_raw = bank_map([patch_distances], size)

  def scored(raw):   # smoothed (and filtered) maps, images scored on the raw ones as `best`
    smoothed = maps_lib.smooth_maps(raw, options.smoothing_sigma, np)
    return (maps_lib.max_filter_maps(smoothed, options.max_filter, np),
            maps_lib.image_scores(raw, options.image_score, options.top_k_fraction))

  knn_maps, knn_scores = scored(knn_raw)
  return {'best': (flow_maps, flow_scores),
          'knn': (knn_maps, knn_scores),
          'best+knn_image': (flow_maps, _standardise(flow_scores) + _standardise(knn_scores)),
          'best+knn_maps': scored(_standardise(flow_raw) + 0.5 * knn_raw),
          'patch_knn': scored(patch_raw),
          'best+patch_knn': scored(_standardise(flow_raw) + patch_raw)}


def border_distance(size: int) -> np.ndarray:
  """int [size, size]: each pixel's distance in px to the nearest image edge (0 on it)."""
  index = np.arange(size)
  to_edge = np.minimum(index, size - 1 - index)
  return np.minimum(to_edge[:, None], to_edge[None, :])


def border_row(maps: np.ndarray, masks: np.ndarray, labels: np.ndarray) -> Dict:
  """Pixel AUROC (x100) over the pixels at least each of `BORDER_CUTS` px from the
  border ('pix_from_<cut>'), and the normal images' mean z-score (over all their
  pixels) in each band of `BORDER_BANDS` ('normal_z_<low>'); NaN where there is
  no such pixel (or only one class).

  Args:
    maps: float [N, S, S] anomaly maps; masks: [N, S, S] (> 0.5 = defect);
    labels: int [N] (0 = normal image).
  """
  distance = border_distance(maps.shape[-1])
  ranked = metrics.RankedScores(maps)
  defect = np.asarray(masks) > 0.5
  row = {}
  for cut in BORDER_CUTS:
    value = ranked.auroc(defect, np.broadcast_to(distance >= cut, maps.shape))
    row[f'pix_from_{cut}'] = float('nan') if value is None else 100 * value
  normal = maps[np.asarray(labels) == 0]
  z = (normal - normal.mean()) / max(float(normal.std()), 1e-12)
  for low, high in BORDER_BANDS:
    band = (distance >= low) & (distance < (high or distance.max() + 1))
    row[f'normal_z_{low}'] = float(z[:, band].mean()) if band.any() else float('nan')
  return row


def _row(test: engine.TestSet, maps: np.ndarray, scores: np.ndarray) -> Dict:
  arrays = test.arrays
  result = metrics.detection_metrics(maps, arrays['masks'], arrays['labels'],
                                     arrays['defect_types'], arrays['has_mask'],
                                     test.known_types, image_scores=scores)
  headline_metrics = headline(result)
  row = {key: 100 * headline_metrics[f'{key}_auroc' if key != 'aupro' else key]
         for key in ('img', 'pix', 'aupro')}
  for group in ('seen', 'unseen'):
    for metric in ('img', 'pix'):
      value = (result.get(group) or {}).get(metric + '_auroc')
      row[f'{group}_{metric}'] = None if value is None else 100 * value
  return row


def measure(args, category: str, seed: int) -> Tuple[List[Dict], List[Dict]]:
  """Trains (or reuses) `best` for CATEGORY and SEED and scores every variant:
  (one `_row` per `VARIANTS`, one `border_row` per `BORDER_VARIANTS`)."""
  tmp = os.path.join(args.scratch, 'data')
  defect_types = quality.class_defect_types(args, category, tmp)
  config = settings.resolve(quality.run_config(args, category, tmp, 'best', defect_types, seed))
  workdir = os.path.join(args.scratch, 'runs', f'{category}_{seed}')
  if not os.path.isfile(os.path.join(workdir, 'results.json')):
    engine.train_and_evaluate(config, workdir)
  started = time.time()
  train_examples, _, known, test_examples = engine.load_data(config)
  detector = Detector.load(workdir, config)
  bank = detector.backbone.extract(train_examples, config.data.inp_size)[1]
  test = engine.build_test_set(config, detector.backbone, test_examples, len(known))
  raw = dataclasses.replace(detector.backbone, neighbourhood=1)   # PatchCore pools its own
  patch_bank, patch_test = (patch_features(raw.extract(examples, config.data.inp_size)[1])
                            for examples in (train_examples, test_examples))
  outputs = variant_outputs(lp_maps(detector.state, test.features, detector.backbone.mesh),
                            nearest_distance_maps(bank, test.features),
                            nearest_distance_maps([patch_bank], [patch_test])[0],
                            config.data.inp_size, maps_lib.MapOptions.of(config.maps))
  print(f'{category} seed {seed}: scored in {time.time() - started:.0f} s', flush=True)
  arrays = test.arrays
  return ([dict({'class': category, 'seed': seed, 'variant': name}, **_row(test, *outputs[name]))
           for name in VARIANTS],
          [dict({'class': category, 'seed': seed, 'variant': name},
                **border_row(outputs[name][0], arrays['masks'], arrays['labels']))
           for name in BORDER_VARIANTS])


def summary(rows: List[Dict]) -> List[Dict]:
  """Mean and sd over the seeds per class and variant (sd as 'sd_<metric>')."""
  out = []
  for category in dict.fromkeys(r['class'] for r in rows):
    for name in VARIANTS:
      group = [r for r in rows if r['class'] == category and r['variant'] == name]
      entry = {'class': category, 'seeds': len(group), 'variant': name}
      for key, *_ in COLUMNS[3:]:
        values = [r[key] for r in group if r[key] is not None]
        entry[key] = float(np.mean(values)) if values else None
        entry['sd_' + key] = float(np.std(values, ddof=1)) if len(values) > 1 else 0.0
      out.append(entry)
  return out


def main(argv=None) -> Dict:
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--classes', default='tissue,surface,coins')
  parser.add_argument('--seeds', default='0,1,2')
  parser.add_argument('--scratch', default='memory_bank_out',
                      help='data and trained runs (finished runs are reused)')
  parser.add_argument('--json', default='')
  parser.add_argument('--tiny', action='store_true',
                      help='48 px, few images, 2 meta-epochs (CI smoke run)')
  parser.add_argument('--defect_placement', default='centre',
                      choices=demo_data.PLACEMENTS, help="as quality.py's")
  # quality.py's defaults for the fields its run_config reads, under our own flags.
  args = argparse.Namespace(**{**vars(quality.build_parser().parse_args([])),
                               **vars(parser.parse_args(argv))})
  args.meta_epochs = 2 if args.tiny else 0
  measured = [measure(args, category, seed) for category in args.classes.split(',')
              for seed in (int(s) for s in args.seeds.split(','))]
  rows = [row for variant_rows, _ in measured for row in variant_rows]
  border = [row for _, border_rows in measured for row in border_rows]
  table.report(rows, COLUMNS, 'per run')
  table.report(border, BORDER_COLUMNS, 'by distance to the border')
  means = summary(rows)
  print('\nmean +- sd over seeds')
  for entry in means:
    print(f"{entry['class']:8s} {entry['variant']:15s} " + '  '.join(
        f"{key} {entry[key]:.1f}+-{entry['sd_' + key]:.1f}" for key, *_ in COLUMNS[3:]
        if entry[key] is not None))
  payload = dict(rows=rows, summary=means, border=border)
  if args.json:
    with open(args.json, 'w') as f:
      json.dump(payload, f, indent=2)
  return payload


if __name__ == '__main__':
  main()
