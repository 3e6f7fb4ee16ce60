"""Log-likelihood maps -> anomaly maps (docs/METHOD.md, "Anomaly maps").

Test-set normalisation (the reference's, used for the reported metrics): per
level, subtract the global maximum of lp over the test set, exponentiate,
upsample bilinearly with aligned corners, sum the levels; anomaly = max - sum.
For deployment, `fixed_constants` / `apply_fixed_constants` do the same with
constants computed once on held-out normal training images.
"""

from typing import Dict, Sequence, Tuple

import jax.numpy as jnp
import numpy as np


def _align_corners_taps(out_size: int, in_size: int):
  """For each output position: its lower input neighbour and the weight of the upper one.

  Aligned corners: output i samples input position i * (in - 1) / (out - 1).
  Needs in_size >= 2. Returns (low int [out], frac float64 [out]).
  """
  pos = np.arange(out_size) * ((in_size - 1) / (out_size - 1) if out_size > 1 else 0.0)
  low = np.clip(np.floor(pos).astype(int), 0, in_size - 2)
  return low, pos - low


def align_corners_matrix(out_size: int, in_size: int) -> np.ndarray:
  """[out, in] float32 weights of 1-D linear interpolation with aligned corners."""
  if in_size == 1:
    return np.ones((out_size, 1), np.float32)
  low, frac = _align_corners_taps(out_size, in_size)
  weights = np.zeros((out_size, in_size), np.float64)
  weights[np.arange(out_size), low] = 1.0 - frac
  weights[np.arange(out_size), low + 1] += frac
  return weights.astype(np.float32)


def upsample_align_corners(maps: jnp.ndarray, size: int) -> jnp.ndarray:
  """Bilinear upsampling with aligned corners: [N, h, w] -> [N, size, size]."""
  rows = jnp.asarray(align_corners_matrix(size, maps.shape[1]))
  cols = jnp.asarray(align_corners_matrix(size, maps.shape[2]))
  return jnp.einsum('oh,nhw,pw->nop', rows, maps, cols,
                    precision='highest')


def normality_maps(lp_maps: Sequence[jnp.ndarray], size: int,
                   level_max: Sequence[float]) -> jnp.ndarray:
  """Sum over levels of exp(lp - level_max) upsampled: [N, size, size]."""
  total = 0.0
  for lp, top in zip(lp_maps, level_max):
    total = total + upsample_align_corners(jnp.exp(lp - top), size)
  return total


def test_set_anomaly_maps(lp_maps: Sequence[np.ndarray], size: int) -> np.ndarray:
  """The reference's anomaly maps: lp_maps[l] is [N, h_l, w_l] for the whole test set.

  Returns:
    [N, size, size] float32, higher = more anomalous; image score = max over a map.
  """
  normal = normality_maps([jnp.asarray(m) for m in lp_maps], size,
                          [float(np.max(m)) for m in lp_maps])
  return np.asarray(jnp.max(normal) - normal)


def _log_upsample_axis(log_maps, size: int, axis: int, xp=np):
  """log(align-corners interpolation of exp(log_maps)) along ``axis``, without underflow.

  ``xp``: numpy (host, the maps' dtype) or jax.numpy (traceable, e.g. for export).
  """
  in_size = log_maps.shape[axis]
  if in_size == 1:
    return xp.repeat(log_maps, size, axis=axis)
  low, frac = _align_corners_taps(size, in_size)
  shape = [1] * log_maps.ndim
  shape[axis] = size
  with np.errstate(divide='ignore'):   # log(0) = -inf is the right weight
    log_w_low, log_w_high = (np.log(w).astype(log_maps.dtype).reshape(shape)
                             for w in (1.0 - frac, frac))
  return xp.logaddexp(xp.take(log_maps, low, axis=axis) + log_w_low,
                      xp.take(log_maps, low + 1, axis=axis) + log_w_high)


def fixed_constant_outputs(lp_maps: Sequence[jnp.ndarray], size: int,
                           constants: Dict[str, object]) -> Tuple[jnp.ndarray, ...]:
  """`apply_fixed_constants`, the image scores and `nll_scores` in one traceable function.

  Returns:
    (anomaly maps [N, size, size], scores [N], nll scores [N]), float32.
  """
  maps = constants['map_max'] - normality_maps(lp_maps, size, constants['level_max'])
  log_normal = log_normality_maps(lp_maps, size, constants['level_max'], jnp)
  return maps, maps.max(axis=(1, 2)), -log_normal.min(axis=(1, 2))


def log_normality_maps(lp_maps: Sequence[np.ndarray], size: int,
                       level_max: Sequence[float], xp=np) -> np.ndarray:
  """log of `normality_maps`, computed in log space: never underflows.

  Where exp(lp - max) is representable this equals log(normality_maps(...));
  where it underflows to 0 (a badly fitted or far out-of-distribution image),
  it still orders pixels and images. [N, size, size]: float64 on the host
  (``xp`` numpy), the maps' float32 when traced (``xp`` jax.numpy).
  """
  total = None
  for lp, top in zip(lp_maps, level_max):
    level = (np.asarray(lp, np.float64) if xp is np else lp) - top
    level = _log_upsample_axis(_log_upsample_axis(level, size, 1, xp), size, 2, xp)
    total = level if total is None else xp.logaddexp(total, level)
  return total


def fixed_constants(lp_maps: Sequence[np.ndarray], size: int) -> Dict[str, object]:
  """Deployable constants from held-out normal images: per-level max and the map max."""
  level_max = [float(np.max(m)) for m in lp_maps]
  normal = normality_maps([jnp.asarray(m) for m in lp_maps], size, level_max)
  return dict(level_max=level_max, map_max=float(jnp.max(normal)))


def nll_scores(lp_maps: Sequence[np.ndarray], size: int,
               constants: Dict[str, object]) -> np.ndarray:
  """Image scores max_p(-log normality): [N] float64.

  Ranks images exactly as the reference's image score (map_max - min_p
  normality) whenever that score is not saturated, and keeps ranking them when
  it is.
  """
  log_normal = log_normality_maps(lp_maps, size, constants['level_max'])
  return -log_normal.reshape(len(log_normal), -1).min(axis=1)


def apply_fixed_constants(lp_maps: Sequence[np.ndarray], size: int,
                          constants: Dict[str, object]) -> np.ndarray:
  """Anomaly maps of any images with constants fixed at training time: [N, size, size]."""
  normal = normality_maps([jnp.asarray(m) for m in lp_maps], size, constants['level_max'])
  return np.asarray(constants['map_max'] - normal)
