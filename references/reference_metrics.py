"""The reference's AUPRO: a loop over 1000 equally spaced thresholds (for comparisons)."""

import numpy as np
from skimage.measure import label, regionprops
from sklearn.metrics import auc


def loop_aupro(scores, gt_mask, max_steps=1000, expect_fpr=0.3):
  """Thresholds max - k * (max - min) / max_steps; PRO over 8-connected regions;
  FPR over normal pixels; keep FPR <= expect_fpr, rescale those FPRs to [0, 1]
  and integrate (as the reference does, with region pixels, not filled regions)."""
  scores = np.asarray(scores, np.float64)
  gt_mask = np.asarray(gt_mask).astype(bool)
  top, bottom = scores.max(), scores.min()
  delta = (top - bottom) / max_steps
  regions = [(i, prop.coords) for i in range(len(gt_mask))
             for prop in regionprops(label(gt_mask[i], connectivity=2))]
  negatives = ~gt_mask
  pros, fprs = [], []
  for step in range(max_steps):
    binary = scores > top - step * delta
    pros.append(np.mean([binary[i][c[:, 0], c[:, 1]].mean() for i, c in regions]))
    fprs.append(np.logical_and(negatives, binary).sum() / negatives.sum())
  pros, fprs = np.array(pros), np.array(fprs)
  keep = fprs <= expect_fpr
  selected = fprs[keep]
  selected = (selected - selected.min()) / (selected.max() - selected.min())
  return auc(selected, pros[keep])
