"""Run outputs: results.json, results.md, test scores, overlays, TensorBoard, summary tables."""

import csv
import json
import os
from typing import Any, Dict, List, Optional, Sequence

import numpy as np
from PIL import Image


HEADLINE_METRICS = ('img_auroc', 'pix_auroc', 'aupro')
TEST_SCORE_COLUMNS = ('filename', 'defect_type', 'label', 'score', 'wrong_order')
# Measured with benchmarks/parity.py (README, "Seed variance").
SEED_VARIANCE = ('One run: on real photographs a BGAD run moves by several points with its seed '
                 '(image AUROC sd 4-10 points over 5-8 seeds at 4 x 2 meta-epochs, for the '
                 'official code as for bgad_jax). Compare means: --config.seeds=0,1,2 trains one '
                 'run per seed and reports mean +- sd (README, "Seed variance").')


def format_percent(value: Optional[float]) -> str:
  """A [0, 1] metric as a percentage with two decimals; 'n/a' for None."""
  return 'n/a' if value is None else f'{100 * value:.2f}'


def headline(results: Dict[str, Any]) -> Dict[str, Optional[float]]:
  """Image AUROC, pixel AUROC and AUPRO of a results dict."""
  return {key: results[key] for key in HEADLINE_METRICS}


def to_jsonable(value):
  if isinstance(value, dict):
    return {str(k): to_jsonable(v) for k, v in value.items()}
  if isinstance(value, (list, tuple)):
    return [to_jsonable(v) for v in value]
  if isinstance(value, np.ndarray):
    return value.tolist()
  if isinstance(value, np.generic):
    return value.item()
  return value


def write_json(path: str, payload: Dict[str, Any]) -> None:
  tmp = path + '.tmp'
  with open(tmp, 'w') as f:
    json.dump(to_jsonable(payload), f, indent=2)
  os.replace(tmp, path)   # never leaves a half-written file


def results_markdown(results: Dict[str, Any]) -> str:
  """A table a person reads: headline metrics, per defect type, seen/unseen, best epoch."""
  lines = [f"# {results.get('name', 'BGAD')} results (last epoch {results['epoch']})", '',
           '| metric | value (%) |', '|---|---|',
           f"| image AUROC | {format_percent(results['img_auroc'])} |",
           f"| pixel AUROC | {format_percent(results['pix_auroc'])} |",
           f"| AUPRO (FPR <= 0.3) | {format_percent(results['aupro'])} |", '',
           '| defect type | n | image AUROC | pixel AUROC | AUPRO |', '|---|---|---|---|---|']
  rows = [(name, row) for name, row in results['per_type'].items()]
  rows += [(f'*{group} types*', results[group]) for group in ('seen', 'unseen')
           if group in results]
  for name, row in rows:   # results.json of older runs have no per-type AUPRO
    lines.append(f"| {name} | {row['n']} | {format_percent(row['img_auroc'])} | "
                 f"{format_percent(row['pix_auroc'])} | {format_percent(row.get('aupro'))} |")
  if results.get('notes'):
    lines += [''] + [f'Note: {note}' for note in results['notes']]
  best = results.get('best_epoch')
  if best:
    lines += ['', f"Best epoch {best['epoch']} (selected on the test set, as the reference "
              f"reports it): image AUROC {format_percent(best['img_auroc'])}, pixel AUROC "
              f"{format_percent(best['pix_auroc'])}."]
  verdicts = results.get('at_threshold')
  if verdicts:
    lines += ['', f"Predict's verdicts on the test set (threshold {verdicts['threshold']:.4g}, "
              f"rule {verdicts['rule']}, calibrated on {verdicts['calibration']} normal "
              f"images): precision {format_percent(verdicts['precision'])}, recall "
              f"{format_percent(verdicts['recall'])}, F1 {format_percent(verdicts['f1'])}, "
              f"false-positive rate {format_percent(verdicts['fpr'])}."]
  if results.get('known_anomalies'):
    lines += ['', 'Known (training) anomalies: ' + ', '.join(results['known_anomalies'])]
  excluded = results.get('config', {}).get('data', {}).get('exclude_from_test')
  if excluded:
    lines += ['', 'Left out of the test set (data.exclude_from_test): ' + ', '.join(excluded)]
  lines += ['', SEED_VARIANCE]
  return '\n'.join(lines) + '\n'


def summary_markdown(rows: Dict[str, Dict[str, Any]]) -> str:
  """One row per category plus the mean (categories with a value)."""
  lines = ['| category | image AUROC | pixel AUROC | AUPRO |', '|---|---|---|---|']
  for name, r in rows.items():
    lines.append(f'| {name} | ' + ' | '.join(format_percent(r[k]) for k in HEADLINE_METRICS)
                 + ' |')
  means = []
  for key in HEADLINE_METRICS:
    values = [r[key] for r in rows.values() if r[key] is not None]
    means.append(format_percent(float(np.mean(values)) if values else None))
  lines.append(f'| **mean** | {means[0]} | {means[1]} | {means[2]} |')
  return '\n'.join(lines) + '\n'


def seed_statistics(rows: Dict[Any, Dict[str, Any]]) -> Dict[str, Dict[str, Optional[float]]]:
  """Per headline metric over the runs of several seeds: mean, sample sd, min, max, n."""
  stats = {}
  for key in HEADLINE_METRICS:
    values = np.array([r[key] for r in rows.values() if r.get(key) is not None], np.float64)
    stats[key] = dict(n=len(values), mean=float(values.mean()) if len(values) else None,
                      sd=float(values.std(ddof=1)) if len(values) > 1 else None,
                      min=float(values.min()) if len(values) else None,
                      max=float(values.max()) if len(values) else None)
  return stats


def seeds_markdown(rows: Dict[Any, Dict[str, Any]]) -> str:
  """One row per seed, then mean +- sample sd and the range over the seeds."""
  stats = seed_statistics(rows)
  lines = ['| seed | image AUROC | pixel AUROC | AUPRO |', '|---|---|---|---|']
  for seed, r in rows.items():
    lines.append(f'| {seed} | ' + ' | '.join(format_percent(r.get(k)) for k in HEADLINE_METRICS)
                 + ' |')

  def pm(s):
    if s['mean'] is None:
      return 'n/a'
    return format_percent(s['mean']) + ('' if s['sd'] is None else f" ± {100 * s['sd']:.2f}")

  lines.append('| **mean ± sd** | ' + ' | '.join(pm(stats[k]) for k in HEADLINE_METRICS) + ' |')
  lines.append('| range | ' + ' | '.join(
      'n/a' if stats[k]['min'] is None
      else f"{format_percent(stats[k]['min'])} – {format_percent(stats[k]['max'])}"
      for k in HEADLINE_METRICS) + ' |')
  return '\n'.join(lines) + '\n'


def best_epoch(history: Sequence[Dict[str, Any]]) -> Optional[Dict[str, Any]]:
  """The history row with the best image AUROC, labelled as chosen on the test set."""
  scored = [r for r in history if r.get('img_auroc') is not None]
  if not scored:
    return None
  best = max(scored, key=lambda r: (r['img_auroc'], r.get('pix_auroc') or 0.0))
  return dict(epoch=best['epoch'], img_auroc=best['img_auroc'], pix_auroc=best.get('pix_auroc'),
              aupro=best.get('aupro'), note='selected on the test set; report the last epoch')


def image_score_rows(filenames: Sequence[str], defect_types: Sequence[str],
                    labels: np.ndarray, scores: np.ndarray) -> List[Dict[str, Any]]:
  """One row per test image, highest image score first, for reading a run's errors.

  Args:
    filenames, defect_types: [N] per test image; labels: int [N], 1 = anomalous;
    scores: float [N] image scores (those the image AUROC ranks).

  Returns:
    Rows of filename, defect_type, label, score and ``wrong_order``: the share
    of the other class's images this one is ordered wrongly against (a normal
    image: anomalous ones scoring lower; an anomalous one: normal ones scoring
    higher; ties count half). The normal images' mean ``wrong_order`` is
    1 - image AUROC, so the rows at the top of the normal ones and the bottom
    of the anomalous ones are what costs the AUROC.
  """
  labels, scores = np.asarray(labels), np.asarray(scores, np.float64)
  wrong = np.full(len(scores), np.nan)
  normal, anomalous = labels == 0, labels == 1
  if normal.any() and anomalous.any():
    # Counted by binary search in the other class's sorted scores: O(N log N).
    for these, others, lower in ((normal, anomalous, True), (anomalous, normal, False)):
      sorted_others = np.sort(scores[others])
      below = np.searchsorted(sorted_others, scores[these], 'left')
      not_above = np.searchsorted(sorted_others, scores[these], 'right')
      beaten = below if lower else len(sorted_others) - not_above
      wrong[these] = (beaten + 0.5 * (not_above - below)) / len(sorted_others)
  rows = [dict(filename=str(name), defect_type=str(kind), label=int(label), score=float(score),
               wrong_order=None if np.isnan(share) else float(share))
          for name, kind, label, score, share in zip(filenames, defect_types, labels, scores,
                                                     wrong)]
  return sorted(rows, key=lambda row: -row['score'])


def write_test_scores(path: str, rows: Sequence[Dict[str, Any]]) -> None:
  """`image_score_rows` as a CSV file."""
  with open(path, 'w', newline='') as f:
    writer = csv.DictWriter(f, fieldnames=TEST_SCORE_COLUMNS)
    writer.writeheader()
    writer.writerows(rows)


def overlay_picks(defect_types: np.ndarray, count: int, seed: int) -> List[int]:
  """Up to ``count`` image indices, every defect type represented, sorted."""
  n = len(defect_types)
  rng = np.random.default_rng(seed)
  picks = []
  for defect_type in sorted(set(defect_types)):
    members = np.flatnonzero(defect_types == defect_type)
    picks.append(int(rng.choice(members)))
  rest = [i for i in rng.permutation(n) if i not in picks]
  return sorted((picks + rest)[:min(count, n)])


def write_results(workdir: str, results: Dict[str, Any], maps: np.ndarray,
                  arrays: Dict[str, np.ndarray], num_overlays: int, seed: int) -> None:
  """results.json, results.md, test_scores.csv and the test overlays of one run.

  Args:
    results: the run's results dict (see `engine`).
    maps: [N, S, S] anomaly maps of the test set; arrays: its preprocessed arrays.
  """
  write_json(os.path.join(workdir, 'results.json'), results)
  if results.get('test_scores'):
    write_test_scores(os.path.join(workdir, 'test_scores.csv'), results['test_scores'])
  with open(os.path.join(workdir, 'results.md'), 'w') as f:
    f.write(results_markdown(results))
  picks = overlay_picks(arrays['defect_types'], num_overlays, seed)
  save_overlays(os.path.join(workdir, 'overlays'), arrays['pixels'][picks], maps[picks],
                list(arrays['filenames'][picks]), arrays['masks'][picks],
                low=float(np.median(maps)), high=float(maps.max()))   # median: typical normal


def _colormap(values: np.ndarray) -> np.ndarray:
  """[H, W] in [0, 1] -> [H, W, 3] uint8, blue (low) to red (high)."""
  v = np.clip(values, 0.0, 1.0)
  rgb = np.stack([np.clip(1.5 - np.abs(4 * v - 3), 0, 1), np.clip(1.5 - np.abs(4 * v - 2), 0, 1),
                  np.clip(1.5 - np.abs(4 * v - 1), 0, 1)], axis=-1)
  return (rgb * 255).astype(np.uint8)


def overlay(image: np.ndarray, anomaly_map: np.ndarray, low: float, high: float,
            mask: Optional[np.ndarray] = None) -> np.ndarray:
  """Side by side: the image (with the ground truth outlined) and the heat map over it.

  Args:
    image: uint8 [S, S, 3]; anomaly_map: [S, S]; low/high: the map range shown;
    mask: optional {0, 1} [S, S] ground truth, outlined in green.
  """
  heat = _colormap((anomaly_map - low) / max(high - low, 1e-12))
  blended = (0.55 * image + 0.45 * heat).astype(np.uint8)
  left = image.copy()
  if mask is not None and mask.any():
    edge = mask.astype(bool) & ~_erode(mask.astype(bool))
    left[edge] = (0, 255, 0)
  return np.concatenate([left, blended], axis=1)


def _erode(mask: np.ndarray) -> np.ndarray:
  padded = np.pad(mask, 1)
  return (padded[1:-1, 1:-1] & padded[:-2, 1:-1] & padded[2:, 1:-1]
          & padded[1:-1, :-2] & padded[1:-1, 2:])


def save_overlays(folder: str, images: np.ndarray, maps: np.ndarray, names: Sequence[str],
                  masks: Optional[np.ndarray] = None, low: float = None,
                  high: float = None) -> List[str]:
  """Writes one PNG per image; returns the paths."""
  os.makedirs(folder, exist_ok=True)
  low = float(np.min(maps)) if low is None else low
  high = float(np.max(maps)) if high is None else high
  paths = []
  for i, name in enumerate(names):
    safe = name.replace('/', '_').rsplit('.', 1)[0] + '.png'
    path = os.path.join(folder, safe)
    Image.fromarray(overlay(images[i], maps[i], low, high,
                            None if masks is None else masks[i])).save(path)
    paths.append(path)
  return paths


class ScalarWriter:
  """TensorBoard scalars: clu's writer when TensorFlow is installed, else tensorboardX."""

  def __init__(self, logdir: str):
    self._clu = None
    self._tbx = None
    try:
      import tensorflow  # noqa: F401  (clu's writers need it)
      from clu import metric_writers
      self._clu = metric_writers.create_default_writer(logdir, just_logging=False)
    except ImportError:
      from tensorboardX import SummaryWriter
      self._tbx = SummaryWriter(logdir)

  def write(self, step: int, scalars: Dict[str, Optional[float]]) -> None:
    scalars = {k: float(v) for k, v in scalars.items() if v is not None}
    if self._clu is not None:
      self._clu.write_scalars(step, scalars)
    else:
      for key, value in scalars.items():
        self._tbx.add_scalar(key, value, step)

  def close(self) -> None:
    if self._clu is not None:
      self._clu.flush()
    else:
      self._tbx.close()
