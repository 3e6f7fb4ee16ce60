"""bgad_jax.training.schedule: the reference's cosine schedule and the intended warm-up."""

import math

import pytest

from configs import common
from bgad_jax.training import schedule
from references import freia_reference


def _linear(train, num_normal=100, num_images=150):
  train.lr_warmup = 'linear'
  return schedule.make_schedule(train, num_normal, num_images)


def test_cosine_and_linear_warmup():
  train = common.get_config().train   # lr 2e-4, 25 epochs, warm-up 2 epochs, batch 32, 8 sub-epochs
  eta_min = 2e-4 * 0.1 ** 3
  assert schedule.epoch_lr(train, 0) == pytest.approx(2e-4)
  assert schedule.epoch_lr(train, 25) == pytest.approx(eta_min)
  target = eta_min + (2e-4 - eta_min) * (1 + math.cos(math.pi * 2 / 25)) / 2
  lr = _linear(train)   # 3 batches per sub-epoch in epoch 0 (100 normal), 4 later (150)
  total = (3 + 4) * 8
  assert lr(0, 0, 0) == pytest.approx(2e-5)
  assert lr(0, 5, 2) == pytest.approx(2e-5 + (5 * 3 + 2) / total * (target - 2e-5))
  assert lr(1, 0, 0) == pytest.approx(2e-5 + 24 / total * (target - 2e-5))
  assert lr(1, 7, 3) == pytest.approx(2e-5 + 55 / total * (target - 2e-5))   # the last one
  assert lr(2, 0, 0) == pytest.approx(target)   # continuous at the end
  assert lr(7, 3, 1) == pytest.approx(schedule.epoch_lr(train, 7))


def test_no_warmup_and_too_few_images():
  train = common.get_config().train
  train.lr_warm = False
  assert _linear(train)(0, 0, 0) == schedule.epoch_lr(train, 0)
  train.lr_warm = True   # fewer images than a batch: no warm-up batch at all, no division by 0
  assert _linear(train, 10, 20)(1, 0, 0) == pytest.approx(2e-5)


def test_step_decay_when_cosine_is_off():
  train = common.get_config().train
  train.lr_cosine = False
  train.meta_epochs = 100
  assert schedule.epoch_lr(train, 49) == pytest.approx(2e-4)
  assert schedule.epoch_lr(train, 80) == pytest.approx(2e-6)


def test_reference_warmup_is_the_official_formula_with_two_loaders():
  train = common.get_config().train
  train.meta_epochs, train.sub_epochs = 4, 2
  train.lr_warmup = 'reference'
  lr = schedule.make_schedule(train, 100, 150)
  for epoch in (0, 1):
    for sub_epoch in (0, 1):
      for batch in (0, 5, 12):
        expected = freia_reference.reference_lr(train, epoch, sub_epoch, batch)
        assert lr(epoch, sub_epoch, batch) == pytest.approx(expected, rel=1e-12)
  # It overshoots its target lr_2 = 1.0e-4: the 13th batch of the second warm-up
  # epoch's last sub-epoch has progress (12 + 2 + 4) / 8 = 2.25.
  target = schedule.epoch_lr(train, 2)
  assert lr(1, 1, 12) == pytest.approx(2e-5 + 2.25 * (target - 2e-5), rel=1e-12)
  assert lr(2, 0, 3) == schedule.epoch_lr(train, 2)
  assert _linear(train)(1, 1, 12) != lr(1, 1, 12)   # the configured warm-up is the one used


def test_warmup_peak_and_the_overshoot_note():
  train = common.get_config().train
  train.meta_epochs, train.sub_epochs = 4, 2
  train.lr_warmup = 'reference'
  target = schedule.epoch_lr(train, 2)
  # 150 images in batches of 32: 4 batches a sub-epoch in the second warm-up
  # epoch; its last batch of its last sub-epoch has progress (3 + 2 + 4) / 8.
  peak, ramp_target = schedule.warmup_peak(train, 100, 150)
  assert ramp_target == target
  assert peak == pytest.approx(2e-5 + 9 / 8 * (target - 2e-5), rel=1e-12)
  assert schedule.warmup_overshoot_note(train, 100, 150) is None   # 1.1x
  # 40 batches a sub-epoch: progress (39 + 2 + 4) / 8 = 5.625, 4.7x the target.
  peak, _ = schedule.warmup_peak(train, 100, 1280)
  assert peak / target == pytest.approx((2e-5 + 5.625 * (target - 2e-5)) / target)
  note = schedule.warmup_overshoot_note(train, 100, 1280)
  assert 'with 40 image batches per sub-epoch' in note and f'{peak / target:.1f}x' in note
  assert '--config.train.lr_warmup=linear' in note
  # The single ramp and a run without warm-up never pass the target.
  train.lr_warmup = 'linear'
  assert schedule.warmup_peak(train, 100, 1280) == (target, target)
  assert schedule.warmup_overshoot_note(train, 100, 1280) is None
  train.lr_warm = False
  assert schedule.warmup_peak(train, 100, 1280) == (schedule.epoch_lr(train, 0),) * 2
