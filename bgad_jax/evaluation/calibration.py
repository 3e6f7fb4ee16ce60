"""Predict-time constants and thresholds from normal images, and how they do on a test set.

The calibration images are the held-out normal training images
(``data.val_fraction``), or the flows' own normal training images when none
are held out. docs/METHOD.md, "Thresholds", explains the choice.
"""

from typing import Any, Dict, Sequence

import numpy as np

from bgad_jax.evaluation import maps as maps_lib

THRESHOLD_RULES = ('val_max', 'val_fpr')


def threshold(calibration_scores: Sequence[float], rule: str = 'val_max',
              target_fpr: float = 0.01) -> float:
  """The verdict threshold over normal calibration scores (anomalous: score > threshold).

  Args:
    calibration_scores: [N] scores of normal images, N >= 1.
    rule: 'val_max': the highest of them (no calibration image flagged);
      'val_fpr': the smallest observed score with at most ``target_fpr`` of
      them above it.
  """
  scores = np.asarray(calibration_scores, np.float64)
  if rule == 'val_max':
    return float(scores.max())
  if rule == 'val_fpr':
    allowed = int(np.floor(target_fpr * len(scores) + 1e-9))   # images that may lie above
    return float(np.sort(scores)[len(scores) - 1 - min(allowed, len(scores) - 1)])
  raise ValueError(f'threshold rule must be one of {THRESHOLD_RULES}, got {rule!r}')


def predict_constants(calibration_lp: Sequence[np.ndarray], size: int, rule: str,
                      target_fpr: float, source: str,
                      map_options: maps_lib.MapOptions = maps_lib.MapOptions()
                      ) -> Dict[str, Any]:
  """Map constants, calibration scores and thresholds from normal images' log-likelihoods.

  Args:
    calibration_lp: one float32 [N, h_l, w_l] log-likelihood map per level.
    size: the maps' side S (``data.inp_size``).
    rule, target_fpr: see `threshold`.
    source: 'held-out' or 'training' (which images these are), recorded.
    map_options: the maps' options (config.maps); the default is the reference's.

  Returns:
    `maps.map_constants` plus ``calibration`` (source, images, rule,
    target_fpr), ``calibration_scores`` / ``calibration_nll_scores`` [N] and
    ``score_threshold`` / ``nll_threshold`` by ``rule``.
  """
  constants = maps_lib.map_constants(calibration_lp, size, map_options)
  _, scores, nll = maps_lib.outputs(calibration_lp, size, constants)
  constants.update(
      calibration=dict(source=source, images=len(nll), rule=rule, target_fpr=target_fpr),
      calibration_scores=[float(s) for s in scores],
      calibration_nll_scores=[float(s) for s in nll],
      score_threshold=threshold(scores, rule, target_fpr),
      nll_threshold=threshold(nll, rule, target_fpr))
  return constants


def nll_threshold(constants: Dict[str, Any], rule: str, target_fpr: float) -> float:
  """The nll-score threshold of a workdir's predict constants under ``rule``.

  Recomputed from the stored calibration scores, so predict and eval may use
  another rule than training did; workdirs older than the stored scores keep
  their ``nll_threshold``.
  """
  if 'calibration_nll_scores' not in constants:
    return float(constants['nll_threshold'])
  return threshold(constants['calibration_nll_scores'], rule, target_fpr)


def verdict_metrics(scores: np.ndarray, labels: np.ndarray, threshold_value: float
                    ) -> Dict[str, Any]:
  """Precision, recall, F1 and false-positive rate of ``scores > threshold_value``.

  Args:
    scores: [N] image scores; labels: [N] 1 = anomalous, 0 = normal.

  Returns:
    dict(threshold, precision, recall, f1, fpr, tp, fp, fn, tn); a ratio with
    a zero denominator is None.
  """
  flagged = np.asarray(scores) > threshold_value
  truth = np.asarray(labels).astype(bool)
  tp, fp = int(np.sum(flagged & truth)), int(np.sum(flagged & ~truth))
  fn, tn = int(np.sum(~flagged & truth)), int(np.sum(~flagged & ~truth))

  def ratio(num, den):
    return num / den if den else None

  precision, recall = ratio(tp, tp + fp), ratio(tp, tp + fn)
  f1 = (2 * precision * recall / (precision + recall)
        if precision is not None and recall is not None and precision + recall > 0 else None)
  return dict(threshold=float(threshold_value), precision=precision, recall=recall, f1=f1,
              fpr=ratio(fp, fp + tn), tp=tp, fp=fp, fn=fn, tn=tn)
