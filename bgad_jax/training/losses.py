"""BGAD losses as pure, jittable functions of (lp, abnormal_mask, config) (docs/METHOD.md, "Losses").

Every function works on one chunk of N feature vectors with static shapes:
``lp`` is the [N] float32 per-dimension log-likelihood and ``abnormal_mask`` an
[N] array (bool or {0, 1}) marking abnormal vectors. Sets that the reference
selects by boolean indexing are masks here; a mean over an empty set is 0 with
zero gradient (the reference produces NaN there but no gradient).

``config`` is any object with the attributes ``pos_beta``, ``margin_tau``,
``normalizer``, ``bgspp_lambda``, ``focal_weighting``, ``push_average`` and
``push_trim`` (e.g. ``config.loss``).
"""

from typing import Any, Dict, Tuple

import jax
import jax.numpy as jnp

PUSH_AVERAGES = ('vector', 'image')   # `bgad_loss`'s config.push_average


def masked_mean(values: jnp.ndarray, mask: jnp.ndarray) -> jnp.ndarray:
  """Mean of ``values`` where ``mask``; 0 (and zero gradient) when the mask is empty."""
  mask = mask.astype(bool)
  total = jnp.sum(jnp.where(mask, values, 0.0))
  return total / jnp.maximum(jnp.sum(mask), 1).astype(values.dtype)


def group_mean(values: jnp.ndarray, mask: jnp.ndarray, groups: jnp.ndarray,
               num_groups: int) -> jnp.ndarray:
  """Mean over the groups holding a masked element of each group's masked mean.

  Every such group weighs the same however many of its elements are masked;
  0 (and zero gradient) when the mask is empty.

  Args:
    values: [N] float.
    mask: [N] bool or {0, 1}.
    groups: [N] int32 group of each element, in [0, num_groups).
    num_groups: static number of groups.
  """
  mask = mask.astype(bool)
  sums = jax.ops.segment_sum(jnp.where(mask, values, 0.0), groups, num_segments=num_groups)
  counts = jax.ops.segment_sum(mask.astype(values.dtype), groups, num_segments=num_groups)
  return masked_mean(sums / jnp.maximum(counts, 1.0), counts > 0)


def max_likelihood_terms(lp: jnp.ndarray) -> jnp.ndarray:
  """Per-vector maximum-likelihood loss -log(sigmoid(lp)): [N] -> [N]."""
  return -jax.nn.log_sigmoid(lp)


def normal_focal_weights(lp, normalizer=10.0, alpha=11.7, gamma=0.5):
  """Focal weights of normal vectors, no gradient: [N] -> [N].

  With u = lp / normalizer: 1 where u > -0.2, else alpha * (1 - e^u)^gamma * |u|.
  """
  u = jax.lax.stop_gradient(lp) / normalizer
  low = u <= -0.2
  u_low = jnp.where(low, u, -1.0)  # keeps the unused branch finite
  focal = alpha * jnp.power(1.0 - jnp.exp(u_low), gamma) * jnp.abs(u_low)
  return jnp.where(low, focal, 1.0)


def abnormal_focal_weights(lp, normalizer=10.0, alpha=0.53, gamma=2.0):
  """Focal weights of abnormal vectors, no gradient: [N] -> [N].

  With u = lp / normalizer: 1 where u <= -1, else alpha * (1 + e^u)^gamma / |u|.
  """
  u = jax.lax.stop_gradient(lp) / normalizer
  high = u > -1.0
  u_high = jnp.where(high, u, -0.5)  # keeps the unused branch finite
  focal = alpha * jnp.power(1.0 + jnp.exp(u_high), gamma) / jnp.abs(u_high)
  return jnp.where(high, focal, 1.0)


def focal_weights(lp, abnormal_mask, normalizer=10.0):
  """Normal weights at normal vectors, abnormal weights at abnormal ones: [N] -> [N]."""
  return jnp.where(abnormal_mask.astype(bool),
                   abnormal_focal_weights(lp, normalizer),
                   normal_focal_weights(lp, normalizer))


def masked_order_statistic(values: jnp.ndarray, mask: jnp.ndarray, fraction: float):
  """The masked values' element at index floor(n * fraction) in ascending order, a scalar.

  n is the number of masked elements; the product is float32 and truncated,
  as the reference computes its boundary index. +inf when the mask is empty.

  Args:
    values: [N] float.
    mask: [N] bool.
    fraction: static float in [0, 1).
  """
  ascending = jnp.sort(jnp.where(mask, values, jnp.inf))
  index = jnp.floor(jnp.sum(mask).astype(jnp.float32) * jnp.float32(fraction))
  return ascending[jnp.clip(index.astype(jnp.int32), 0, values.shape[0] - 1)]


def logp_boundaries(lp, abnormal_mask, pos_beta=0.01, margin_tau=0.1,
                    normalizer=10.0) -> Tuple[jnp.ndarray, jnp.ndarray]:
  """Normal and abnormal boundaries (b_n, b_a) from the normal vectors, no gradient.

  b_n is the element at index floor(N_normal * pos_beta) of the ascending
  normal lp, divided by ``normalizer``; b_a = b_n - margin_tau. Both are +inf
  when the chunk has no normal vector (then no vector is inside either set).

  Returns:
    Two float32 scalars.
  """
  normal = ~abnormal_mask.astype(bool)
  b_n = masked_order_statistic(jax.lax.stop_gradient(lp), normal, pos_beta) / normalizer
  return b_n, b_n - margin_tau


def untrimmed_abnormal(lp, abnormal_mask, trim: float) -> jnp.ndarray:
  """The abnormal vectors left after dropping the likeliest share ``trim`` of them, no gradient.

  Of a chunk's n abnormal vectors the floor(n * trim) with the highest lp are
  dropped (ties at the cut are kept); ``trim`` 0 keeps every one.

  Args:
    lp: [N] float.
    abnormal_mask: [N] bool or {0, 1}.
    trim: static float in [0, 1).

  Returns:
    [N] bool.
  """
  abnormal = abnormal_mask.astype(bool)
  lp = jax.lax.stop_gradient(lp)
  cut = -masked_order_statistic(-lp, abnormal, trim)   # in descending order
  return abnormal & (lp <= cut)


def semi_push_pull_terms(lp, abnormal_mask, b_n, b_a, normalizer=10.0, weights=None,
                         images=None, num_images=0,
                         push_trim: float = 0.0) -> Tuple[jnp.ndarray, jnp.ndarray]:
  """Boundary-guided semi-push-pull terms (loss_n, loss_a), scalars.

  With v = lp / normalizer: loss_n = mean over normal vectors with v <= b_n of
  w * (b_n - v) (pulls low-likelihood normals up to the boundary);
  loss_a = mean over abnormal vectors with v >= b_a of w * (v - b_a) (pushes
  abnormals below the margin). ``weights`` defaults to 1. Given ``images``
  ([N] int32 image of each vector, in [0, num_images)), loss_a is instead the
  mean over images of each image's mean (`group_mean`): every abnormal image
  pushes as hard as any other, whatever its defect's area. ``push_trim`` > 0
  leaves the likeliest share of the abnormal vectors out of loss_a
  (`untrimmed_abnormal`): labelled cells that look normal to the flows are
  not pushed (docs/METHOD.md, "Losses").
  """
  abnormal = abnormal_mask.astype(bool)
  v = lp / normalizer
  if weights is None:
    weights = jnp.ones_like(lp)
  pull = ~abnormal & (v <= b_n)
  pushed = untrimmed_abnormal(lp, abnormal, push_trim) if push_trim else abnormal
  push = pushed & (v >= b_a)
  loss_n = masked_mean(weights * (b_n - v), pull)
  if images is None:
    loss_a = masked_mean(weights * (v - b_a), push)
  else:
    loss_a = group_mean(weights * (v - b_a), push, images, num_images)
  return loss_n, loss_a


def normal_only_loss(lp, abnormal_mask) -> Tuple[jnp.ndarray, jnp.ndarray]:
  """First-meta-epoch loss: mean(-log_sigmoid(lp)) over the chunk.

  Returns:
    (loss, skip): the reference skips the optimiser step for a chunk that
    contains any abnormal vector; ``skip`` is that boolean scalar.
  """
  skip = jnp.any(abnormal_mask.astype(bool))
  return jnp.mean(max_likelihood_terms(lp)), skip


def bgad_loss(lp, abnormal_mask, config: Any, images=None,
              num_images: int = 0) -> Tuple[jnp.ndarray, Dict[str, jnp.ndarray]]:
  """Full loss of one chunk after the first meta-epoch.

  Chunk without abnormal vectors: mean(w_n * ml). Chunk with abnormal vectors:
  masked mean of w_n * ml over normal vectors + bgspp_lambda * (loss_n + loss_a).
  Focal weights are 1 when ``config.focal_weighting`` is off. With
  ``config.push_average == 'image'`` loss_a averages per image first
  (`semi_push_pull_terms`), which needs ``images``; 'vector' is the reference.
  ``config.push_trim`` > 0 leaves the likeliest abnormal vectors unpushed; 0
  is the reference.

  Args:
    lp: [N] float32 per-dimension log-likelihoods.
    abnormal_mask: [N] bool or {0, 1}.
    config: loss settings (see module docstring).
    images: [N] int32 image of each vector, in [0, num_images) (only read
      when ``config.push_average == 'image'``).
    num_images: static number of images.

  Returns:
    (loss, aux): scalar loss and a dict of its scalar terms (``ml``,
    ``loss_n``, ``loss_a``, ``b_n``, ``b_a``, ``has_abnormal``).
  """
  abnormal = abnormal_mask.astype(bool)
  has_abnormal = jnp.any(abnormal)
  if config.focal_weighting:
    weights = focal_weights(lp, abnormal, config.normalizer)
  else:
    weights = jnp.ones_like(lp)
  ml = masked_mean(weights * max_likelihood_terms(lp), ~abnormal)
  b_n, b_a = logp_boundaries(lp, abnormal, config.pos_beta, config.margin_tau,
                             config.normalizer)
  per_image = config.push_average == 'image'
  if per_image and images is None:
    raise ValueError("loss.push_average='image' needs each vector's image")
  loss_n, loss_a = semi_push_pull_terms(lp, abnormal, b_n, b_a, config.normalizer, weights,
                                        images if per_image else None, num_images,
                                        config.push_trim)
  contrastive = jnp.where(has_abnormal,
                          config.bgspp_lambda * (loss_n + loss_a), 0.0)
  aux = dict(ml=ml, loss_n=loss_n, loss_a=loss_a, b_n=b_n, b_a=b_a,
             has_abnormal=has_abnormal)
  return ml + contrastive, aux
