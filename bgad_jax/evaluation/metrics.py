"""Detection and segmentation metrics: AUROC, exact AUPRO, per-defect-type tables."""

from typing import Dict, Optional, Sequence

import numpy as np
from scipy import ndimage


class RankedScores:
  """Scores sorted once; the ROC AUC of any subset of them then costs O(n), no sort.

  AUC = P(positive scores above negative) + P(tie) / 2 (Mann-Whitney U), which
  is what the trapezoid rule on the ROC curve gives: sklearn's value up to
  float rounding.

  Args:
    scores: any shape; flattened.
  """

  def __init__(self, scores: np.ndarray):
    flat = np.asarray(scores).ravel()
    order = np.argsort(flat)
    ascending = flat[order]
    starts = np.empty(len(flat), bool)
    starts[:1] = True
    starts[1:] = ascending[1:] != ascending[:-1]
    # tie[i]: rank of element i's value among the distinct values (0 = lowest).
    self.tie = np.empty(len(flat), np.int64)
    self.tie[order] = np.cumsum(starts) - 1
    self.num_values = int(starts.sum())
    self.values = ascending[starts]   # the distinct values, ascending

  def auroc(self, labels: np.ndarray, select: Optional[np.ndarray] = None) -> Optional[float]:
    """AUC of ``labels`` (same shape as the scores) over the elements ``select`` (bool, or all).

    None when only one class is present (undefined).
    """
    labels = np.asarray(labels).ravel().astype(bool)
    tie = self.tie
    if select is not None:
      select = np.asarray(select).ravel()
      tie, labels = tie[select], labels[select]
    positives = np.bincount(tie[labels], minlength=self.num_values).astype(np.float64)
    negatives = np.bincount(tie[~labels], minlength=self.num_values).astype(np.float64)
    num_pos, num_neg = positives.sum(), negatives.sum()
    if not num_pos or not num_neg:
      return None
    negatives_below = np.cumsum(negatives) - negatives
    return float(np.dot(positives, negatives_below + 0.5 * negatives) / (num_pos * num_neg))

  def aupro(self, regions: np.ndarray, select: Optional[np.ndarray] = None,
            max_fpr: float = 0.3, num_thresholds: int = 0) -> Optional[float]:
    """`aupro` of the elements ``select`` (bool, or all), in O(n) without a sort:
    the same curve (one point per distinct score; scores absent from the
    subset add points that change no area), so the same value up to float rounding.

    Args:
      regions: int, the scores' shape: `mask_regions` of the masks (0 = normal);
        a selected image's regions must be wholly selected.

    Returns:
      AUPRO in [0, 1], or None without anomalous or without normal elements.
    """
    regions = np.asarray(regions).ravel()
    tie = self.tie
    if select is not None:
      select = np.asarray(select).ravel()
      tie, regions = tie[select], regions[select]
    positive = regions > 0
    num_negative = int(positive.size - np.count_nonzero(positive))
    labels = regions[positive]
    area = np.bincount(labels).astype(np.float64)
    num_regions = int(np.count_nonzero(area))
    if num_regions == 0 or num_negative == 0:
      return None
    pro_gain = np.bincount(tie[positive], 1.0 / (num_regions * area[labels]),
                           minlength=self.num_values)
    negatives = np.bincount(tie[~positive], minlength=self.num_values)
    # From the highest score down, a point after each distinct score.
    pro, fpr = np.cumsum(pro_gain[::-1]), np.cumsum(negatives[::-1]) / num_negative
    if num_thresholds:   # ties rank as their values: the extremes are the rank extremes'
      return _thresholded_aupro(float(self.values[tie.max()]), float(self.values[tie.min()]),
                                self.values[::-1], pro, fpr, max_fpr, num_thresholds)
    return _integrated_pro(pro, fpr, max_fpr)


def mask_regions(masks: np.ndarray) -> np.ndarray:
  """int32 [N, H, W]: the 8-connected regions of nonzero ``masks`` [N, H, W], labelled
  within each image (never across images) and numbered 1, 2, ... over the set; 0 = normal."""
  structure = np.zeros((3, 3, 3), bool)
  structure[1] = True
  return ndimage.label(np.asarray(masks, bool), structure=structure)[0]


def auroc(labels: np.ndarray, scores: np.ndarray) -> Optional[float]:
  """ROC AUC; None when only one class is present (undefined)."""
  return RankedScores(scores).auroc(labels)


def _pro_fpr_curve(maps, masks, max_fpr):
  """Descending distinct scores and PRO, FPR above each, down to the first FPR past ``max_fpr``.

  A pixel is positive above t when its score exceeds t. PRO(t): the mean over
  all ground-truth regions (8-connected, over all images) of the fraction of
  the region above t; FPR(t): the fraction of normal pixels above t. Only the
  pixels that reach this part of the curve are sorted.

  Returns:
    (scores, pro, fpr) float arrays, one entry per distinct score (the point
    after that score's tied pixels turned positive), or None without
    anomalous or without normal pixels.
  """
  scores = np.asarray(maps).ravel()
  regions = mask_regions(masks).ravel()
  num_regions = int(regions.max(initial=0))
  positive = regions > 0
  num_negative = int(positive.size - np.count_nonzero(positive))
  if num_regions == 0 or num_negative == 0:
    return None
  area = np.bincount(regions, minlength=num_regions + 1).astype(np.float64)
  negative_scores = scores[~positive]
  positive_scores = scores[positive]
  positive_weights = 1.0 / (num_regions * area[regions[positive]])
  # Only pixels scoring at least the (k+1)-th highest normal pixel shape the
  # curve up to its first point past max_fpr.
  k = min(int(np.floor(max_fpr * num_negative)), num_negative - 1)
  cut = np.partition(negative_scores, num_negative - 1 - k)[num_negative - 1 - k]
  negative_top = np.sort(negative_scores[negative_scores >= cut])
  top = positive_scores >= cut
  order = np.argsort(positive_scores[top])   # anomalous pixels are few
  positive_top = positive_scores[top][order]
  # Merge the two ascending lists: each anomalous pixel's slot is its rank
  # among the anomalous ones plus the number of normal pixels below it.
  slots = np.arange(len(positive_top)) + np.searchsorted(negative_top, positive_top)
  merged = np.empty(len(negative_top) + len(positive_top), scores.dtype)
  pro_weight = np.zeros(len(merged))
  is_normal = np.ones(len(merged), bool)
  merged[slots] = positive_top
  pro_weight[slots] = positive_weights[top][order]
  is_normal[slots] = False
  merged[is_normal] = negative_top
  # From the highest score down: a point at the last pixel of each tied group.
  merged, pro_weight, is_normal = merged[::-1], pro_weight[::-1], is_normal[::-1]
  ends = np.append(np.flatnonzero(merged[1:] != merged[:-1]), len(merged) - 1)
  return (merged[ends], np.cumsum(pro_weight)[ends],
          np.cumsum(is_normal)[ends] / num_negative)


def aupro(maps: np.ndarray, masks: np.ndarray, max_fpr: float = 0.3,
          num_thresholds: int = 0) -> Optional[float]:
  """Area under the per-region-overlap curve up to ``max_fpr``, divided by ``max_fpr``.

  Exact by default: every distinct score is a threshold; the curve from (0, 0)
  is integrated with the trapezoid rule and interpolated at ``max_fpr``.
  ``num_thresholds`` > 0 reproduces the reference instead: thresholds
  max - k * (max - min) / num_thresholds for k < num_thresholds, the points
  with FPR <= max_fpr, their FPRs min-max rescaled to [0, 1], trapezoid rule.
  (Regions count their own pixels; the reference's filled bounding-box crops
  differ only for regions with holes.)

  Args:
    maps: [N, H, W] anomaly scores.
    masks: [N, H, W] ground truth (nonzero = anomalous).
    max_fpr: FPR limit of the integral.
    num_thresholds: 0 for the exact curve, else the reference's threshold count.

  Returns:
    AUPRO in [0, 1], or None without anomalous or without normal pixels.
  """
  curve = _pro_fpr_curve(maps, masks, max_fpr)
  if curve is None:
    return None
  scores, pro, fpr = curve
  if num_thresholds:
    maps = np.asarray(maps)
    return _thresholded_aupro(float(maps.max()), float(maps.min()), scores, pro, fpr, max_fpr,
                              num_thresholds)
  return _integrated_pro(pro, fpr, max_fpr)


def _integrated_pro(pro, fpr, max_fpr):
  """The area under the PRO-FPR curve from (0, 0) to ``max_fpr`` over ``max_fpr``
  (trapezoid rule, interpolated at ``max_fpr``); points ordered by FPR."""
  fpr = np.concatenate([[0.0], fpr])
  pro = np.concatenate([[0.0], pro])
  beyond = np.searchsorted(fpr, max_fpr, side='right')   # first point past max_fpr
  if beyond < len(fpr):
    f0, f1, p0, p1 = fpr[beyond - 1], fpr[beyond], pro[beyond - 1], pro[beyond]
    p_at = p0 + (p1 - p0) * (max_fpr - f0) / (f1 - f0)
    fpr = np.append(fpr[:beyond], max_fpr)
    pro = np.append(pro[:beyond], p_at)
  return float(np.trapezoid(pro, fpr) / max_fpr)


def _thresholded_aupro(top, bottom, scores, pro, fpr, max_fpr, num_thresholds):
  """The reference's discretised AUPRO, read off the exact curve (see `aupro`): the
  thresholds span the maps' [bottom, top]; ``scores`` descending, a point after each."""
  thresholds = top - np.arange(num_thresholds) * ((top - bottom) / num_thresholds)
  # The curve's point after the lowest distinct score above t (all of them positive).
  ascending = scores[::-1]
  index = len(scores) - np.searchsorted(ascending, thresholds, side='right') - 1
  # Below the curve's last score FPR only grows past max_fpr: those drop out.
  at = np.clip(index, 0, None)
  step_pro = np.where(index < 0, 0.0, pro[at])
  step_fpr = np.where(index < 0, 0.0, fpr[at])
  keep = step_fpr <= max_fpr
  selected, kept_pro = step_fpr[keep], step_pro[keep]
  span = selected.max() - selected.min()
  return float(np.trapezoid(kept_pro, (selected - selected.min()) / span))


def detection_metrics(maps: np.ndarray, masks: np.ndarray, labels: np.ndarray,
                      defect_types: Sequence[str], has_mask: np.ndarray,
                      known_types: Sequence[str] = (), aupro_thresholds: int = 0,
                      image_scores: Optional[np.ndarray] = None) -> Dict[str, object]:
  """All metrics of one evaluation.

  Image scores: ``image_scores`` [N] when given (`maps.image_scores`), else
  the map maxima. Pixel metrics use normal images and the anomalous images
  that have a mask; they are None when no anomalous image has one
  (image-level-only data). ``per_type``: each defect type's images
  against all normal images (n, img_auroc, pix_auroc, aupro). ``seen``/``unseen``:
  the same for the known defect types and the others, when ``known_types`` is given.
  ``aupro_thresholds``: see `aupro`.
  """
  maps = np.asarray(maps)
  labels = np.asarray(labels)
  defect_types = np.asarray(defect_types, object)
  has_mask = np.asarray(has_mask, bool)
  if image_scores is None:
    image_scores = maps.reshape(len(maps), -1).max(axis=1)
  image_scores = np.asarray(image_scores)
  images = RankedScores(image_scores)
  pixel_ok = has_mask   # normal images always have their (empty) mask
  pixels_available = bool((has_mask & (labels == 1)).any())
  # One sort of all evaluated pixels serves the pixel AUROC and AUPRO of every subset.
  pixels = RankedScores(maps[pixel_ok]) if pixels_available else None
  pixel_masks = masks[pixel_ok]
  # A subset's AUPRO weighs its own regions alike; the overall one weighs every
  # region alike, so it moves with how many regions each type brings.
  regions = mask_regions(pixel_masks) if pixels_available else None

  def pixel_select(images_chosen):
    rows = images_chosen[pixel_ok]
    return np.broadcast_to(rows[:, None], (len(rows), maps[0].size))

  def subset_metrics(select):
    chosen = select | (labels == 0)
    row = dict(n=int(select.sum()), img_auroc=images.auroc(labels == 1, chosen),
               pix_auroc=None, aupro=None)
    if pixels_available and (has_mask & select).any():
      chosen_pixels = pixel_select(chosen)
      row['pix_auroc'] = pixels.auroc(pixel_masks, chosen_pixels)
      row['aupro'] = pixels.aupro(regions, chosen_pixels, num_thresholds=aupro_thresholds)
    return row

  results = dict(
      img_auroc=images.auroc(labels == 1),
      pix_auroc=pixels.auroc(pixel_masks) if pixels_available else None,
      aupro=(pixels.aupro(regions, num_thresholds=aupro_thresholds)
             if pixels_available else None),
      per_type={t: subset_metrics(defect_types == t)
                for t in sorted(set(defect_types[labels == 1]))},
      image_scores=image_scores)
  if known_types:
    seen = np.isin(defect_types, list(known_types)) & (labels == 1)
    results['seen'] = subset_metrics(seen)
    results['unseen'] = subset_metrics((labels == 1) & ~seen)
  return results
