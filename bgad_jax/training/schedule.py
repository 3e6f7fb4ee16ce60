"""Learning-rate schedule (docs/METHOD.md, "Learning rate"), as pure functions."""

import math

import numpy as np


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


def batch_lr(train_config, epoch: int, warmup_step: int, warmup_steps: int) -> float:
  """The learning rate of one image batch.

  During the first ``lr_warm_epochs`` meta-epochs it rises linearly from lr / 10
  (at the first batch) towards ``epoch_lr(lr_warm_epochs)``; ``warmup_step`` is
  the number of batches already trained in those epochs and ``warmup_steps``
  their total: ``lr_warmup='linear'`` (`reference_warmup_lr` is the official one).
  """
  if train_config.lr_warm and epoch < train_config.lr_warm_epochs:
    return _warmup_ramp(train_config, warmup_step / warmup_steps)
  return epoch_lr(train_config, epoch)


def _warmup_ramp(train_config, progress: float) -> float:
  """lr / 10 + progress * (epoch_lr(lr_warm_epochs) - lr / 10), both warm-ups' rate."""
  start = train_config.lr / 10.0
  return start + progress * (epoch_lr(train_config, train_config.lr_warm_epochs) - start)


def warmup_batches(train_config, normal_images: int, all_images: int,
                   before_epoch=None) -> int:
  """Image batches in the warm-up meta-epochs (only those before ``before_epoch``).

  The first meta-epoch trains on the normal images only, later ones on all.
  """
  epochs = train_config.lr_warm_epochs if train_config.lr_warm else 0
  if before_epoch is not None:
    epochs = min(epochs, before_epoch)
  total = 0
  for epoch in range(epochs):
    images = normal_images if epoch == 0 else all_images
    total += (images // train_config.batch_size) * train_config.sub_epochs
  return total


def reference_warmup_lr(train_config, epoch: int, sub_epoch: int, batch: int,
                        num_loaders: int = 2) -> float:
  """The official code's warm-up learning rate of one image batch (``lr_warmup='reference'``).

  Its progress is (batch + L * sub_epoch + epoch * L * S) / (warm_epochs * L * S)
  with L the number of data loaders (2) where the number of batches was
  meant: the ramp restarts every sub-epoch and passes its target (progress
  above 1) once the batch index exceeds L. Outside warm-up: `epoch_lr`.
  """
  if not (train_config.lr_warm and epoch < train_config.lr_warm_epochs):
    return epoch_lr(train_config, epoch)
  steps = num_loaders * train_config.sub_epochs
  return _warmup_ramp(train_config, (batch + num_loaders * sub_epoch + epoch * steps)
                      / (train_config.lr_warm_epochs * steps))


def sub_epoch_lrs(train_config, epoch: int, sub_epoch: int, num_batches: int,
                  warm_step: int, warm_total: int) -> np.ndarray:
  """float32 [num_batches] learning rate of each image batch of one sub-epoch.

  ``warm_step``: batches trained before this sub-epoch in the warm-up epochs;
  ``warm_total``: all of theirs (see `warmup_batches`).
  """
  if train_config.lr_warmup == 'reference':
    rates = [reference_warmup_lr(train_config, epoch, sub_epoch, b) for b in range(num_batches)]
  else:
    rates = [batch_lr(train_config, epoch, warm_step + b, max(warm_total, 1))
             for b in range(num_batches)]
  return np.array(rates, np.float32)
