"""Learning-rate schedule (docs/METHOD.md, "Learning rate"), as pure functions.

`make_schedule` gives the one function that training, tests and benchmarks
read: the learning rate of every image batch of a run, addressed by
(meta-epoch, sub-epoch, batch) as the reference addresses it. Every chunk of
an image batch (every level) steps with its batch's rate.
"""

import math
from typing import Callable, Optional, Tuple

# The reference's few-shot engine passes the number of its data loaders (2)
# where its warm-up formula wants the number of batches (docs/METHOD.md).
_REFERENCE_LOADERS = 2
# `warmup_overshoot_note` speaks up above this peak / target ratio. At 1.8x
# (the `best` preset's lr 1e-3, 400 images in batches of 16) the reference
# ramp trained as well as `linear` (benchmarks/RESULTS.md); larger ratios are
# unmeasured.
OVERSHOOT_NOTE_RATIO = 2.0


def epoch_lr(train_config, epoch: int) -> float:
  """The learning rate of meta-epoch ``epoch`` after warm-up.

  Cosine from lr to eta_min = lr * decay_rate**3 over ``meta_epochs``; with
  ``lr_cosine`` off, lr * decay_rate**k after k passed milestones
  (``lr_decay_epochs`` are percentages of ``meta_epochs``).
  """
  lr = train_config.lr
  if train_config.lr_cosine:
    eta_min = lr * train_config.lr_decay_rate ** 3
    return eta_min + (lr - eta_min) * (1 + math.cos(math.pi * epoch / train_config.meta_epochs)) / 2
  milestones = [p * train_config.meta_epochs // 100 for p in train_config.lr_decay_epochs]
  return lr * train_config.lr_decay_rate ** sum(epoch >= m for m in milestones)


def batches_per_sub_epoch(train_config, epoch: int, num_normal: int, num_images: int) -> int:
  """Image batches of one sub-epoch (the last partial batch is dropped).

  The first meta-epoch trains on the ``num_normal`` normal images only,
  later ones on all ``num_images``.
  """
  return (num_normal if epoch == 0 else num_images) // train_config.batch_size


def make_schedule(train_config, num_normal: int,
                  num_images: int) -> Callable[[int, int, int], float]:
  """``lr(epoch, sub_epoch, batch)``: the learning rate of every image batch of a run.

  Outside warm-up: `epoch_lr`. During the first ``lr_warm_epochs`` meta-epochs
  (``lr_warm``) the rate rises linearly from lr / 10 towards
  ``epoch_lr(lr_warm_epochs)`` with a progress p:
    'linear':    batches trained so far in the warm-up epochs / all of theirs;
    'reference': the official engine's (batch + 2 * sub_epoch + 2 * S * epoch)
                 / (2 * S * lr_warm_epochs) for S sub-epochs: its ramp restarts
                 every sub-epoch and passes its target (p > 1) once the batch
                 index exceeds 2.
  """
  warm_epochs = train_config.lr_warm_epochs if train_config.lr_warm else 0
  sub_epochs = train_config.sub_epochs
  per_sub_epoch = [batches_per_sub_epoch(train_config, e, num_normal, num_images)
                   for e in range(warm_epochs)]
  warm_total = max(sub_epochs * sum(per_sub_epoch), 1)
  start = train_config.lr / 10.0
  target = epoch_lr(train_config, warm_epochs)
  reference = train_config.lr_warmup == 'reference'

  def lr(epoch: int, sub_epoch: int, batch: int) -> float:
    if epoch >= warm_epochs:
      return epoch_lr(train_config, epoch)
    if reference:
      steps = _REFERENCE_LOADERS * sub_epochs
      progress = (batch + _REFERENCE_LOADERS * sub_epoch + epoch * steps) / (warm_epochs * steps)
    else:
      done = sub_epochs * sum(per_sub_epoch[:epoch]) + sub_epoch * per_sub_epoch[epoch] + batch
      progress = done / warm_total
    return start + progress * (target - start)

  return lr


def warmup_peak(train_config, num_normal: int, num_images: int) -> Tuple[float, float]:
  """(the warm-up's peak, the rate it ramps to).

  The peak is the rate of the last batch of the last warm-up sub-epoch, or
  the target where that is lower ('linear' never passes its target).
  'reference' peaks there: its progress grows with the batch, the sub-epoch
  and the meta-epoch, and a later meta-epoch has at least as many batches
  (the first trains on the normal images only). Both are the target when
  the run has no warm-up batch.
  """
  warm_epochs = train_config.lr_warm_epochs if train_config.lr_warm else 0
  target = epoch_lr(train_config, warm_epochs)
  if not warm_epochs:
    return target, target
  last_epoch = warm_epochs - 1
  last_batch = batches_per_sub_epoch(train_config, last_epoch, num_normal, num_images) - 1
  if last_batch < 0:
    return target, target
  rates = make_schedule(train_config, num_normal, num_images)
  return max(rates(last_epoch, train_config.sub_epochs - 1, last_batch), target), target


def warmup_overshoot_note(train_config, num_normal: int, num_images: int) -> Optional[str]:
  """A note when the warm-up passes its target by more than `OVERSHOOT_NOTE_RATIO`, else None.

  The reference ramp's peak grows with the image batches per sub-epoch, so
  on a class of thousands of images it reaches several times the configured
  rate (docs/METHOD.md, "Learning rate").
  """
  peak, target = warmup_peak(train_config, num_normal, num_images)
  if peak <= OVERSHOOT_NOTE_RATIO * target:
    return None
  batches = batches_per_sub_epoch(train_config, train_config.lr_warm_epochs - 1, num_normal,
                                  num_images)
  return (f'train.lr_warmup={train_config.lr_warmup}: with {batches} image batches per '
          f'sub-epoch the warm-up reaches lr {peak:.3g}, {peak / target:.1f}x the {target:.3g} '
          'it ramps to (the official ramp restarts every sub-epoch and overshoots more the '
          'larger the class). --config.train.lr_warmup=linear ramps once, without '
          'overshoot; a larger train.batch_size lowers the peak.')
