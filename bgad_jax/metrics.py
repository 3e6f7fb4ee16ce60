"""Detection and segmentation metrics: AUROC, exact AUPRO, per-defect-type tables."""

from typing import Dict, Optional, Sequence

import numpy as np
from scipy import ndimage
from sklearn.metrics import roc_auc_score


def auroc(labels: np.ndarray, scores: np.ndarray) -> Optional[float]:
  """ROC AUC; None when only one class is present (undefined)."""
  labels = np.asarray(labels).ravel().astype(bool)
  if labels.all() or not labels.any():
    return None
  return float(roc_auc_score(labels, np.asarray(scores).ravel()))


def aupro(maps: np.ndarray, masks: np.ndarray, max_fpr: float = 0.3) -> Optional[float]:
  """Area under the per-region-overlap curve up to ``max_fpr``, divided by ``max_fpr``.

  Exact: every distinct score is a threshold (a pixel is positive when its
  score exceeds the threshold). PRO(t) is the mean over all ground-truth regions
  (8-connected, over all images) of the fraction of the region above t; FPR(t)
  is the fraction of normal pixels above t. Both are cumulative sums over the
  pixels sorted by score, so the whole curve costs one sort. The curve is
  integrated with the trapezoid rule and interpolated at ``max_fpr``.

  Args:
    maps: [N, H, W] anomaly scores.
    masks: [N, H, W] ground truth (nonzero = anomalous).

  Returns:
    AUPRO in [0, 1], or None without anomalous or without normal pixels.
  """
  masks = np.asarray(masks).astype(bool)
  scores = np.asarray(maps, np.float64).ravel()
  regions = np.zeros(masks.shape, np.int64)
  num_regions = 0
  structure = np.ones((3, 3), bool)   # 8-connectivity
  for i in range(masks.shape[0]):
    labelled, count = ndimage.label(masks[i], structure=structure)
    regions[i] = np.where(labelled > 0, labelled + num_regions, 0)
    num_regions += count
  regions = regions.ravel()
  num_negative = int((regions == 0).sum())
  if num_regions == 0 or num_negative == 0:
    return None
  area = np.bincount(regions, minlength=num_regions + 1).astype(np.float64)
  pro_weight = np.where(regions > 0, 1.0 / (num_regions * area[regions]), 0.0)
  fpr_weight = np.where(regions == 0, 1.0 / num_negative, 0.0)
  order = np.argsort(-scores, kind='stable')
  fpr = np.cumsum(fpr_weight[order])
  pro = np.cumsum(pro_weight[order])
  sorted_scores = scores[order]
  ends = np.flatnonzero(np.diff(sorted_scores) != 0)   # last pixel of each tied group
  ends = np.append(ends, len(sorted_scores) - 1)
  fpr = np.concatenate([[0.0], fpr[ends]])
  pro = np.concatenate([[0.0], pro[ends]])
  beyond = np.searchsorted(fpr, max_fpr, side='right')   # first point past max_fpr
  if beyond < len(fpr):
    f0, f1, p0, p1 = fpr[beyond - 1], fpr[beyond], pro[beyond - 1], pro[beyond]
    p_at = p0 + (p1 - p0) * (max_fpr - f0) / (f1 - f0)
    fpr = np.append(fpr[:beyond], max_fpr)
    pro = np.append(pro[:beyond], p_at)
  return float(np.trapezoid(pro, fpr) / max_fpr)


def evaluate(maps: np.ndarray, masks: np.ndarray, labels: np.ndarray,
             defect_types: Sequence[str], has_mask: np.ndarray,
             known_types: Sequence[str] = ()) -> Dict[str, object]:
  """All metrics of one evaluation.

  Image scores are map maxima. Pixel metrics use normal images and the
  anomalous images that have a mask; they are None when no anomalous image
  has one (image-level-only data). ``per_type``: each defect type's images
  against all normal images. ``seen``/``unseen``: the same for the known
  defect types and the others, when ``known_types`` is given.
  """
  maps = np.asarray(maps)
  labels = np.asarray(labels)
  defect_types = np.asarray(defect_types, object)
  has_mask = np.asarray(has_mask, bool)
  image_scores = maps.reshape(len(maps), -1).max(axis=1)
  pixel_ok = has_mask   # normal images always have their (empty) mask
  pixels_available = bool((has_mask & (labels == 1)).any())

  def subset_metrics(select):
    chosen = select | (labels == 0)
    row = dict(n=int(select.sum()), img_auroc=auroc(labels[chosen], image_scores[chosen]))
    pix = chosen & pixel_ok
    row['pix_auroc'] = (auroc(masks[pix], maps[pix]) if pixels_available and
                        (has_mask & select).any() else None)
    return row

  results = dict(
      img_auroc=auroc(labels, image_scores),
      pix_auroc=auroc(masks[pixel_ok], maps[pixel_ok]) if pixels_available else None,
      aupro=aupro(maps[pixel_ok], masks[pixel_ok]) if pixels_available else None,
      per_type={t: subset_metrics(defect_types == t)
                for t in sorted(set(defect_types[labels == 1]))},
      image_scores=image_scores)
  if known_types:
    seen = np.isin(defect_types, list(known_types)) & (labels == 1)
    results['seen'] = subset_metrics(seen)
    results['unseen'] = subset_metrics((labels == 1) & ~seen)
  return results
