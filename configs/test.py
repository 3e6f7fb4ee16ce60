"""Tiny settings for tests: seconds on a CPU."""

from configs import demo


def get_config(arg=None):
  config = demo.get_config(arg)
  config.flow.coupling_layers = 2
  config.flow.pos_embed_dim = 16
  config.data.inp_size = 48
  config.data.num_anomalies = 4
  config.data.demo.update(dict(size=48, num_train=10, num_test_good=4, num_per_defect=2))
  # 2 of the 10 normal training images calibrate predict (the held-out path).
  config.data.val_fraction = 0.2
  config.data.val_min_images = 10
  # Enough small, fast steps for the flows to fit the features' scale, so
  # that tests can check that a blatant defect ranks above normal images.
  config.train.meta_epochs = 3
  config.train.sub_epochs = 4
  config.train.batch_size = 4
  # 32, not more: a batch of 4 images at 48 px holds 4 x 3 x 3 = 36 vectors of
  # the stride-16 level, and a level with fewer than one step's vectors never
  # trains (training.plan.untrained_level_notes).
  config.train.num_vectors = 32
  config.train.lr = 1e-2
  # The single ramp: with lr 1e-2 the reference ramp's overshoot (2x and more)
  # is needlessly rough on these tiny flows.
  config.train.lr_warmup = 'linear'
  config.report.num_overlays = 4
  return config
