"""Log-likelihood maps -> anomaly maps and image scores: the one scoring definition
(docs/METHOD.md, "Anomaly maps").

Every caller scores through `anomaly_maps`, `map_scores` and `nll_scores` (or
`outputs`, the three together; `test_set_outputs` for the evaluation's
test-set normalisation): the evaluation, the Detector (predict, serve), the
calibration of predict's threshold and both exports. Each takes ``xp``:
numpy on the host (maps float32, nll scores float64, which the threshold
needs) or jax.numpy inside a traced function (everything float32).

Map constants fix the normalisation: per level the maximum of lp, and the
maximum of the summed normality. Test-set normalisation (the reference's, used
for the reported metrics) takes them from the test set itself
(`test_set_anomaly_maps`); deployment takes them once from held-out normal
training images (`map_constants`). Per level: exp(lp - level max), upsampled
bilinearly with aligned corners, summed over levels; anomaly = map max - sum.

Options beyond the reference (`MapOptions`, config.maps; off in the faithful
configs; docs/METHOD.md, "Quality options"): the levels' mean log-likelihood
instead of their summed likelihood, Gaussian smoothing of the maps (and of
the maps images are scored on, unless score_unsmoothed), a maximum filter
after it, and a top-k mean image score. Map constants record them, so
everything scores as the evaluation did. A new option is a `MapOptions`
field (and its config field) used in the one function it changes.
"""

import dataclasses
from typing import Any, Dict, Sequence, Tuple

import jax
import jax.numpy as jnp
import numpy as np
from scipy import ndimage

IMAGE_SCORES = ('max', 'top_k_mean')
# How the levels' maps combine: 'sum' (the reference: the sum of the levels'
# likelihoods) or 'mean_log' (the mean of their log-likelihoods).
LEVEL_AGGREGATIONS = ('sum', 'mean_log')


@dataclasses.dataclass(frozen=True)
class MapOptions:
  """How maps and image scores are made beyond the reference (the defaults are the reference).

  Attributes:
    smoothing_sigma: Gaussian sigma in pixels of the maps' smoothing; 0 = none.
    image_score: 'max' (the reference) or 'top_k_mean' (mean of the top
      ``top_k_fraction`` of a map's pixels).
    top_k_fraction: pixels averaged by 'top_k_mean'.
    level_aggregation: 'sum' (the reference: normality = the sum over levels
      of exp(lp - level max)) or 'mean_log' (normality = the mean over levels
      of lp - level max, a log-likelihood: `mean_log_likelihood_maps`).
    score_unsmoothed: image scores (and nll scores) from the maps before
      smoothing and the maximum filter, which then serve the maps alone.
    max_filter: after the smoothing each pixel takes the highest anomaly of the
      max_filter x max_filter window around it (odd, in pixels; 0 = none).
  """
  smoothing_sigma: float = 0.0
  image_score: str = 'max'
  top_k_fraction: float = 0.01
  level_aggregation: str = 'sum'
  score_unsmoothed: bool = False
  max_filter: int = 0

  def for_scores(self) -> 'MapOptions':
    """The options of the maps image scores are taken from."""
    return (dataclasses.replace(self, smoothing_sigma=0.0, max_filter=0)
            if self.score_unsmoothed else self)

  @classmethod
  def of(cls, fields) -> 'MapOptions':
    """From ``config.maps`` or a dict of the fields (missing ones: the defaults)."""
    return cls(**{f.name: fields[f.name] for f in dataclasses.fields(cls) if f.name in fields})


def options_of(constants: Dict[str, Any]) -> MapOptions:
  """The options map constants were made with (files of reference runs record none)."""
  return MapOptions.of(constants.get('scoring', {}))


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


def upsample_align_corners(maps, size: int, xp=jnp):
  """Bilinear upsampling with aligned corners: [N, h, w] -> [N, size, size].

  ``xp``: jax.numpy (traceable), or numpy in the maps' own dtype (float64 on the host).
  """
  rows, cols = (align_corners_matrix(size, n) for n in maps.shape[1:])
  if xp is np:
    return np.einsum('oh,nhw,pw->nop', rows.astype(maps.dtype), maps, cols.astype(maps.dtype))
  return jnp.einsum('oh,nhw,pw->nop', jnp.asarray(rows), maps, jnp.asarray(cols),
                    precision='highest')


def normality_maps(lp_maps: Sequence[jnp.ndarray], size: int,
                   level_max: Sequence[float]) -> jnp.ndarray:
  """Sum over levels of exp(lp - level_max) upsampled: [N, size, size] float32 (jax)."""
  total = 0.0
  for lp, top in zip(lp_maps, level_max):
    total = total + upsample_align_corners(jnp.exp(jnp.asarray(lp) - top), size)
  return total


def _log_upsample_axis(log_maps, size: int, axis: int, xp=np):
  """log(align-corners interpolation of exp(log_maps)) along ``axis``, without underflow."""
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


def log_normality_maps(lp_maps: Sequence[np.ndarray], size: int,
                       level_max: Sequence[float], xp=np):
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


def mean_log_likelihood_maps(lp_maps: Sequence[np.ndarray], size: int,
                             level_max: Sequence[float], xp=jnp):
  """Mean over levels of (lp - level_max) upsampled: [N, size, size].

  The levels' log-likelihoods are averaged instead of their likelihoods
  summed: every level's evidence counts, where in the sum the level nearest
  its maximum dominates a pixel. A log-likelihood, so it never underflows.
  ``xp``: jax.numpy (float32) or numpy (float64 on the host).
  """
  total = 0.0
  for lp, top in zip(lp_maps, level_max):
    level = (np.asarray(lp, np.float64) if xp is np else jnp.asarray(lp)) - top
    total = total + upsample_align_corners(level, size, xp)
  return total / len(lp_maps)


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


def max_filter_maps(maps, size: int, xp=jnp):
  """Each pixel of [N, S, S] maps the maximum of the size x size window around it,
  the window cut at the map's edge (size odd; 0 or 1 = unchanged).

  ``xp``: numpy or jax.numpy (traceable). Any increasing function of a map
  commutes with it, so it may run on normality with ``minimum``: see
  `min_filter_maps`.
  """
  if size <= 1:
    return maps
  if xp is np:
    return ndimage.maximum_filter(np.asarray(maps), size=(1, size, size), mode='nearest')
  return jax.lax.reduce_window(maps, -jnp.inf, jax.lax.max, (1, size, size), (1, 1, 1),
                               'SAME')


def min_filter_maps(maps, size: int, xp=jnp):
  """`max_filter_maps` of -maps, negated: the window's minimum (for normality)."""
  return maps if size <= 1 else -max_filter_maps(-maps, size, xp)


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


def anomaly_maps(lp_maps: Sequence[np.ndarray], size: int, constants: Dict[str, Any],
                 xp=np):
  """Anomaly maps under map constants: map_max - (smoothed) normality.

  Args:
    lp_maps: one [N, h_l, w_l] log-likelihood map per level.
    constants: level_max, map_max and the options (`map_constants`).
    xp: numpy (a host float32 array) or jax.numpy (traceable).

  Returns:
    [N, size, size] float32, higher = more anomalous.
  """
  options = options_of(constants)
  if options.level_aggregation == 'mean_log':
    normal = mean_log_likelihood_maps(lp_maps, size, constants['level_max'])
  else:
    normal = normality_maps(lp_maps, size, constants['level_max'])
  normal = min_filter_maps(smooth_maps(normal, options.smoothing_sigma), options.max_filter)
  maps = constants['map_max'] - normal
  return np.asarray(maps) if xp is np else maps


def _with_options(constants: Dict[str, Any], options: MapOptions) -> Dict[str, Any]:
  return dict(constants, scoring=dataclasses.asdict(options))


def map_scores(lp_maps: Sequence[np.ndarray], size: int, constants: Dict[str, Any],
               maps=None, xp=np):
  """Image scores [N] by the constants' rule, of `anomaly_maps` [N, S, S] (``maps``,
  when already made) or, with ``score_unsmoothed``, of the maps before smoothing."""
  options = options_of(constants)
  scored = options.for_scores()
  if maps is None or scored != options:
    maps = anomaly_maps(lp_maps, size, _with_options(constants, scored), xp)
  return image_scores(maps, options.image_score, options.top_k_fraction, xp)


def nll_scores(lp_maps: Sequence[np.ndarray], size: int, constants: Dict[str, Any], xp=np):
  """Image scores from -log normality: [N], float64 on the host, float32 traced.

  Ranks images exactly as `map_scores` whenever the maps are not saturated
  (map_max - normality, with normality underflowing to 0 far from normal),
  and keeps ranking them when they are; the verdict threshold is on these.
  With 'mean_log' aggregation the normality is a log-likelihood already, and
  these are the image scores of its negation (smoothed as the scored maps are).
  """
  options = options_of(constants).for_scores()
  if options.level_aggregation == 'mean_log':
    log_normal = smooth_maps(mean_log_likelihood_maps(lp_maps, size, constants['level_max'], xp),
                             options.smoothing_sigma, xp)
  else:
    log_normal = smooth_maps(log_normality_maps(lp_maps, size, constants['level_max'], xp),
                             options.smoothing_sigma, xp, log_space=True)
  log_normal = min_filter_maps(log_normal, options.max_filter, xp)   # log is increasing
  return image_scores(-log_normal, options.image_score, options.top_k_fraction, xp)


def outputs(lp_maps: Sequence[np.ndarray], size: int, constants: Dict[str, Any], xp=np):
  """(`anomaly_maps` [N, S, S], `map_scores` [N], `nll_scores` [N]) in one call."""
  maps = anomaly_maps(lp_maps, size, constants, xp)
  return (maps, map_scores(lp_maps, size, constants, maps, xp),
          nll_scores(lp_maps, size, constants, xp))


def _maps_below_top(lp_maps: Sequence[np.ndarray], size: int, options: MapOptions
                    ) -> Tuple[Dict[str, Any], np.ndarray]:
  """Constants of these images but map_max = 0, and the maps (-normality) they give."""
  constants = dict(level_max=[float(np.max(m)) for m in lp_maps], map_max=0.0)
  if options != MapOptions():   # reference runs' files stay as they were
    constants['scoring'] = dataclasses.asdict(options)
  return constants, anomaly_maps(lp_maps, size, constants)


def map_constants(lp_maps: Sequence[np.ndarray], size: int,
                  options: MapOptions = MapOptions()) -> Dict[str, Any]:
  """Deployable constants from normal images: level_max (per level), map_max (the
  highest (smoothed) normality) and the options when not the reference's (``scoring``)."""
  constants, below_top = _maps_below_top(lp_maps, size, options)
  return dict(constants, map_max=-float(below_top.min()))


def test_set_anomaly_maps(lp_maps: Sequence[np.ndarray], size: int,
                          options: MapOptions = MapOptions()) -> np.ndarray:
  """The reference's anomaly maps: constants from these images themselves.

  Args:
    lp_maps: lp_maps[l] is [N, h_l, w_l] for the whole test set.

  Returns:
    [N, size, size] float32, higher = more anomalous (minimum 0); image
    scores: `image_scores` with the options' rule.
  """
  _, below_top = _maps_below_top(lp_maps, size, options)
  # (-n) - (-top) is top - n to the last bit, as `anomaly_maps` with map_constants.
  return below_top - below_top.min()


def test_set_outputs(lp_maps: Sequence[np.ndarray], size: int,
                     options: MapOptions = MapOptions()) -> Tuple[np.ndarray, np.ndarray]:
  """`test_set_anomaly_maps` [N, S, S] and their image scores [N] by the options' rule
  (of the maps before smoothing with ``score_unsmoothed``)."""
  maps = test_set_anomaly_maps(lp_maps, size, options)
  scored = options.for_scores()
  scored_maps = maps if scored == options else test_set_anomaly_maps(lp_maps, size, scored)
  return maps, image_scores(scored_maps, options.image_score, options.top_k_fraction)
