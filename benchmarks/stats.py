"""Two samples of per-seed results: do they differ? (pure functions, used by parity.py).

One training run moves by several points with its seed, so a comparison of
two implementations is a comparison of two samples of runs: the difference of
their means, its 95% interval (Welch: unequal variances and sizes), Welch's
t-test and an exact permutation test of the difference of means (no normality
assumed; all splits of the pooled values when there are at most 20,000 of
them, else that many random ones).
"""

import itertools
import math
from typing import Dict, Sequence

import numpy as np
from scipy import stats as scipy_stats

MAX_EXACT_SPLITS = 20_000


def mean_sd(values: Sequence[float]) -> Dict[str, float]:
  """n, mean and sample standard deviation (ddof 1; 0 for a single value)."""
  values = np.asarray(values, np.float64)
  sd = float(values.std(ddof=1)) if len(values) > 1 else 0.0
  return dict(n=len(values), mean=float(values.mean()), sd=sd)


def welch(a: Sequence[float], b: Sequence[float], level: float = 0.95) -> Dict[str, float]:
  """mean(a) - mean(b), its ``level`` interval and Welch's two-sided p-value.

  With fewer than two values on a side the interval and p are NaN (undefined);
  with no spread on either side the interval is the difference itself and p
  is 1 (equal) or 0 (different).
  """
  a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
  diff = float(a.mean() - b.mean())
  var_a = a.var(ddof=1) / len(a) if len(a) > 1 else 0.0
  var_b = b.var(ddof=1) / len(b) if len(b) > 1 else 0.0
  se = math.sqrt(var_a + var_b)
  if len(a) < 2 or len(b) < 2:
    return dict(diff=diff, low=math.nan, high=math.nan, p=math.nan, df=math.nan)
  if se == 0.0:
    return dict(diff=diff, low=diff, high=diff, p=1.0 if diff == 0.0 else 0.0, df=0.0)
  # Welch-Satterthwaite degrees of freedom.
  df = (var_a + var_b) ** 2 / (var_a ** 2 / (len(a) - 1) + var_b ** 2 / (len(b) - 1))
  half = float(scipy_stats.t.ppf(0.5 + level / 2, df)) * se
  p = float(2 * scipy_stats.t.sf(abs(diff) / se, df))
  return dict(diff=diff, low=diff - half, high=diff + half, p=p, df=float(df))


def permutation_p(a: Sequence[float], b: Sequence[float], seed: int = 0) -> float:
  """Two-sided p-value of |mean(a) - mean(b)| under random relabelling of the pooled values."""
  pooled = np.concatenate([np.asarray(a, np.float64), np.asarray(b, np.float64)])
  n_a, total = len(a), len(pooled)
  observed = abs(pooled[:n_a].mean() - pooled[n_a:].mean())
  if math.comb(total, n_a) <= MAX_EXACT_SPLITS:
    splits = (list(c) for c in itertools.combinations(range(total), n_a))
  else:
    rng = np.random.default_rng(seed)
    splits = (rng.permutation(total)[:n_a] for _ in range(MAX_EXACT_SPLITS))
  count = hits = 0
  for chosen in splits:
    mask = np.zeros(total, bool)
    mask[chosen] = True
    # A tolerance so that the observed split itself always counts.
    hits += abs(pooled[mask].mean() - pooled[~mask].mean()) >= observed - 1e-12
    count += 1
  return hits / count


def compare(ours: Sequence[float], official: Sequence[float]) -> Dict[str, object]:
  """Everything a parity row reports for one metric: both sides' mean and sd,
  the Welch interval of ours - official, both p-values and whether either
  test separates the samples at 5%."""
  row = dict(ours=mean_sd(ours), official=mean_sd(official), **welch(ours, official),
             permutation_p=permutation_p(ours, official))
  row['differ'] = bool(row['p'] < 0.05 or row['permutation_p'] < 0.05)
  return row
