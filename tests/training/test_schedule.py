"""bgad_jax.training.schedule: the reference's cosine schedule and the intended warm-up."""

import math

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
