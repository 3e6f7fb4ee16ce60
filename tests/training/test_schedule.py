"""bgad_jax.training.schedule: the reference's cosine schedule and the intended warm-up."""

import math

import numpy as np
import pytest

from configs import common
from bgad_jax.training import schedule


def test_cosine_and_warmup():
  train = common.get_config().train   # lr 2e-4, 25 epochs, warm-up 2 epochs
  eta_min = 2e-4 * 0.1 ** 3
  assert schedule.epoch_lr(train, 0) == pytest.approx(2e-4)
  assert schedule.epoch_lr(train, 25) == pytest.approx(eta_min)
  target = eta_min + (2e-4 - eta_min) * (1 + math.cos(math.pi * 2 / 25)) / 2
  assert schedule.batch_lr(train, 0, 0, 100) == pytest.approx(2e-5)
  assert schedule.batch_lr(train, 1, 50, 100) == pytest.approx(2e-5 + 0.5 * (target - 2e-5))
  assert schedule.batch_lr(train, 2, 0, 100) == pytest.approx(target)   # continuous at the end
  assert schedule.batch_lr(train, 7, 0, 100) == pytest.approx(schedule.epoch_lr(train, 7))


def test_step_decay_when_cosine_is_off():
  train = common.get_config().train
  train.lr_cosine = False
  train.meta_epochs = 100
  assert schedule.epoch_lr(train, 49) == pytest.approx(2e-4)
  assert schedule.epoch_lr(train, 80) == pytest.approx(2e-6)


def test_warmup_batches_count_normal_then_all_images():
  train = common.get_config().train   # batch 32, 8 sub-epochs, 2 warm-up epochs
  assert schedule.warmup_batches(train, 100, 150) == (3 + 4) * 8
  assert schedule.warmup_batches(train, 100, 150, before_epoch=1) == 3 * 8
  assert schedule.warmup_batches(train, 100, 150, before_epoch=0) == 0
  train.lr_warm = False
  assert schedule.warmup_batches(train, 100, 150) == 0


def _official_warmup(c, epoch, batch_id, total_batches):
  """The official warm_up_learning_rate's formula, with lr_warmup_from/to as it sets them."""
  warm_from = c.lr / 10.0
  eta_min = c.lr * c.lr_decay_rate ** 3
  warm_to = eta_min + (c.lr - eta_min) * (1 + math.cos(math.pi * c.lr_warm_epochs
                                                       / c.meta_epochs)) / 2
  p = (batch_id + epoch * total_batches) / (c.lr_warm_epochs * total_batches)
  return warm_from + p * (warm_to - warm_from)


def test_reference_warmup_is_the_official_formula_with_two_loaders():
  train = common.get_config().train
  train.meta_epochs, train.sub_epochs = 4, 2
  loaders = 2   # the official engine passes I = len(data_loader) = 2 loaders
  for epoch in (0, 1):
    for sub_epoch in (0, 1):
      for batch in (0, 5, 12):
        expected = _official_warmup(train, epoch, batch + sub_epoch * loaders,
                                    loaders * train.sub_epochs)
        assert schedule.reference_warmup_lr(train, epoch, sub_epoch, batch) == pytest.approx(
            expected, rel=1e-12)
  # It overshoots its target lr_2 = 1.0e-4: the 13th batch of the second warm-up
  # epoch's last sub-epoch has progress (12 + 2 + 4) / 8 = 2.25.
  target = schedule.epoch_lr(train, 2)
  assert schedule.reference_warmup_lr(train, 1, 1, 12) == pytest.approx(
      2e-5 + 2.25 * (target - 2e-5), rel=1e-12)
  assert schedule.reference_warmup_lr(train, 2, 0, 3) == schedule.epoch_lr(train, 2)


def test_sub_epoch_lrs_pick_the_configured_warmup():
  train = common.get_config().train
  train.lr_warmup = 'linear'
  linear = schedule.sub_epoch_lrs(train, 0, 1, 3, warm_step=10, warm_total=40)
  np.testing.assert_allclose(linear, [schedule.batch_lr(train, 0, 10 + b, 40) for b in range(3)],
                             rtol=1e-6)
  train.lr_warmup = 'reference'
  reference = schedule.sub_epoch_lrs(train, 0, 1, 3, warm_step=10, warm_total=40)
  np.testing.assert_allclose(reference, [schedule.reference_warmup_lr(train, 0, 1, b)
                                         for b in range(3)], rtol=1e-6)
