"""Log-likelihood maps -> anomaly maps (docs/METHOD.md, "Anomaly maps").

Test-set normalisation (the reference's, used for the reported metrics): per
level, subtract the global maximum of lp over the test set, exponentiate,
upsample bilinearly with aligned corners, sum the levels; anomaly = max - sum.
For deployment, `fixed_constants` / `apply_fixed_constants` do the same with
constants computed once on held-out normal training images.

Options beyond the reference (config.maps, off in the faithful configs; docs/METHOD.md,
"Quality options"): Gaussian smoothing of the maps and a top-k mean image score.
The deployable constants record them, so predict, the Detector and exports
score as the evaluation did.
"""

from typing import Dict, Sequence, Tuple

import jax
import jax.numpy as jnp
import numpy as np

IMAGE_SCORES = ('max', 'top_k_mean')


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


def gaussian_taps(sigma: float) -> Tuple[np.ndarray, np.ndarray]:
  """A normalised 1-D Gaussian cut at 4 sigma: (offsets int [T], weights float64 [T])."""
  radius = int(4.0 * sigma + 0.5)
  offsets = np.arange(-radius, radius + 1)
  weights = np.exp(-0.5 * (offsets / sigma) ** 2)
  return offsets, weights / weights.sum()


def _reflect(index: np.ndarray, size: int) -> np.ndarray:
  """Mirror indices into [0, size) without repeating the edge (numpy's 'reflect')."""
  period = 2 * (size - 1)
  index = np.abs(index) % period
  return np.where(index >= size, period - index, index)


def _smooth_axis(values, sigma: float, axis: int, xp, log_space: bool):
  """Gaussian filter along ``axis`` with mirrored edges; in log space when ``log_space``
  (log of the filtered exp(values), which never underflows)."""
  size = values.shape[axis]
  if size == 1:
    return values
  offsets, weights = gaussian_taps(sigma)
  positions = np.arange(size)
  total = None
  for offset, weight in zip(offsets, weights):
    term = xp.take(values, _reflect(positions + offset, size), axis=axis)
    if log_space:
      term = term + float(np.log(weight))
      total = term if total is None else xp.logaddexp(total, term)
    else:
      term = term * float(weight)
      total = term if total is None else total + term
  return total


def smooth_maps(maps, sigma: float, xp=jnp, log_space: bool = False):
  """Separable Gaussian smoothing of [N, S, S] maps (sigma in pixels; 0 = unchanged).

  ``xp``: numpy or jax.numpy (traceable). ``log_space``: the maps are logs and
  the result is the log of the smoothed exp(maps).
  """
  if sigma <= 0:
    return maps
  for axis in (1, 2):
    maps = _smooth_axis(maps, sigma, axis, xp, log_space)
  return maps


def top_k_count(num_pixels: int, fraction: float) -> int:
  """How many pixels the top-k mean averages: at least one."""
  return max(1, int(round(fraction * num_pixels)))


def image_scores(maps, rule: str = 'max', top_k_fraction: float = 0.01, xp=np):
  """One score per map [N, S, S] -> [N]: its maximum (the reference), or with
  rule 'top_k_mean' the mean of its top_k_fraction highest pixels."""
  if rule == 'max':
    return maps.max(axis=tuple(range(1, maps.ndim)))
  if rule != 'top_k_mean':
    raise ValueError(f'image score must be one of {IMAGE_SCORES}, got {rule!r}')
  flat = maps.reshape(maps.shape[0], -1)   # shape[0]: symbolic in exports
  k = top_k_count(flat.shape[1], top_k_fraction)
  top = (np.partition(flat, flat.shape[1] - k, axis=1)[:, -k:] if xp is np
         else jax.lax.top_k(flat, k)[0])
  return top.mean(axis=1)


def test_set_anomaly_maps(lp_maps: Sequence[np.ndarray], size: int,
                          smoothing_sigma: float = 0.0) -> np.ndarray:
  """The reference's anomaly maps: lp_maps[l] is [N, h_l, w_l] for the whole test set.

  ``smoothing_sigma`` > 0 (an option) then smooths each map.

  Returns:
    [N, size, size] float32, higher = more anomalous; image scores: `image_scores`.
  """
  normal = normality_maps([jnp.asarray(m) for m in lp_maps], size,
                          [float(np.max(m)) for m in lp_maps])
  return np.asarray(smooth_maps(jnp.max(normal) - normal, smoothing_sigma))


def scoring(constants: Dict[str, object]) -> Dict[str, object]:
  """The map options deployable constants were made with (none in older files)."""
  return dict(dict(smoothing_sigma=0.0, image_score='max', top_k_fraction=0.01),
              **constants.get('scoring', {}))


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
  options = scoring(constants)
  sigma = options['smoothing_sigma']
  maps = constants['map_max'] - smooth_maps(
      normality_maps(lp_maps, size, constants['level_max']), sigma)
  log_normal = smooth_maps(log_normality_maps(lp_maps, size, constants['level_max'], jnp),
                           sigma, jnp, log_space=True)
  rule, fraction = options['image_score'], options['top_k_fraction']
  return (maps, image_scores(maps, rule, fraction, jnp),
          image_scores(-log_normal, rule, fraction, jnp))


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


def fixed_constants(lp_maps: Sequence[np.ndarray], size: int, smoothing_sigma: float = 0.0,
                    image_score: str = 'max', top_k_fraction: float = 0.01
                    ) -> Dict[str, object]:
  """Deployable constants from held-out normal images: per-level max, the (smoothed)
  map max and the map options (`scoring`)."""
  level_max = [float(np.max(m)) for m in lp_maps]
  normal = smooth_maps(normality_maps([jnp.asarray(m) for m in lp_maps], size, level_max),
                       smoothing_sigma)
  constants = dict(level_max=level_max, map_max=float(jnp.max(normal)))
  if smoothing_sigma > 0 or image_score != 'max':   # reference files stay as they were
    constants['scoring'] = dict(smoothing_sigma=float(smoothing_sigma),
                                image_score=image_score,
                                top_k_fraction=float(top_k_fraction))
  return constants


def nll_scores(lp_maps: Sequence[np.ndarray], size: int,
               constants: Dict[str, object]) -> np.ndarray:
  """Image scores max_p(-log normality): [N] float64.

  Ranks images exactly as the reference's image score (map_max - min_p
  normality) whenever that score is not saturated, and keeps ranking them when
  it is. With the constants' `scoring` options: of the smoothed normality, and
  the top-k mean of -log normality instead of its maximum.
  """
  options = scoring(constants)
  log_normal = smooth_maps(log_normality_maps(lp_maps, size, constants['level_max']),
                           options['smoothing_sigma'], np, log_space=True)
  return image_scores(-log_normal, options['image_score'], options['top_k_fraction'])


def apply_fixed_constants(lp_maps: Sequence[np.ndarray], size: int,
                          constants: Dict[str, object]) -> np.ndarray:
  """Anomaly maps of any images with constants fixed at training time: [N, size, size]."""
  normal = normality_maps([jnp.asarray(m) for m in lp_maps], size, constants['level_max'])
  normal = smooth_maps(normal, scoring(constants)['smoothing_sigma'])
  return np.asarray(constants['map_max'] - normal)


def fixed_constant_scores(maps: np.ndarray, constants: Dict[str, object]) -> np.ndarray:
  """Image scores [N] of `apply_fixed_constants` maps, by the constants' rule."""
  options = scoring(constants)
  return image_scores(maps, options['image_score'], options['top_k_fraction'])
