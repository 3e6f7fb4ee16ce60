"""configs/: the published defaults (docs/METHOD.md) and config-file loading."""

import pytest

from configs import btad, common, demo, folder, loco, mpdd, mvtec, mvtec_ad2, visa
from configs import test as test_config


def test_published_defaults():
  config = common.get_config()
  assert config.backbone.name == 'tf_efficientnet_b6'
  assert config.backbone.neighbourhood == 1   # the reference's taps, not averaged
  assert config.backbone.neighbourhood_on == 'all'
  assert (config.flow.coupling_layers, config.flow.clamp_alpha,
          config.flow.pos_embed_dim, config.flow.conditional) == (8, 1.9, 128, True)
  assert dict(config.loss) == dict(pos_beta=0.01, margin_tau=0.1, normalizer=10.0,
                                   bgspp_lambda=1.0, focal_weighting=True,
                                   push_average='vector', push_trim=0.0)
  train = config.train
  assert (train.meta_epochs, train.sub_epochs, train.batch_size, train.lr,
          train.num_vectors, train.lr_warm_epochs) == (25, 8, 32, 2e-4, 4096, 2)
  assert train.lr_warmup == 'reference'   # what parity with the official code needs
  data = config.data
  assert (data.inp_size, data.num_anomalies, data.anomaly_strategy,
          data.not_in_test) == (256, 10, ('real', 'cutpaste'), True)


def test_compile_cache_default_and_its_environment_override(monkeypatch, tmp_path):
  monkeypatch.delenv('BGAD_COMPILE_CACHE_DIR')   # conftest sets one per test session
  assert common.get_config().compile_cache_dir == '~/.cache/bgad_jax/xla'
  monkeypatch.setenv('BGAD_COMPILE_CACHE_DIR', str(tmp_path))
  assert common.get_config().compile_cache_dir == str(tmp_path)
  assert demo.get_config('tissue').compile_cache_dir == str(tmp_path)


@pytest.mark.parametrize('module', [demo, test_config, mvtec, folder, btad, loco, mpdd,
                                    mvtec_ad2, visa])
def test_derived_configs_keep_the_loss_settings(module):
  config = module.get_config()
  assert dict(config.loss) == dict(common.get_config().loss)


def test_mvtec_config_is_the_published_one():
  config = mvtec.get_config('screw')
  published = common.get_config()
  assert config.data.category == 'screw' and config.data.source == 'mvtec'
  for section in ('backbone', 'flow', 'loss', 'train'):
    assert dict(config[section]) == dict(published[section]), section
  assert mvtec.get_config('all').data.category == 'all'
  # The reference holds no normal image out; the deployment default does.
  assert config.data.val_fraction == 0.0 and published.data.val_fraction == 0.1
  assert (published.predict.threshold, published.predict.target_fpr) == ('val_max', 0.01)


@pytest.mark.parametrize('module', [btad, loco, mpdd, mvtec_ad2, visa])
def test_dataset_configs_are_the_published_ones_on_their_data(module):
  config, published = module.get_config(), common.get_config()
  for section in ('backbone', 'flow', 'loss', 'train'):
    assert dict(config[section]) == dict(published[section]), section
  assert config.data.inp_size == 256 and config.data.val_fraction == 0.0
  assert module.get_config('all').data.category == 'all'


@pytest.mark.parametrize('module,category', [(demo, 'surface'), (folder, 'widget'),
                                             (mvtec, 'carpet'), (visa, 'candle')])
def test_best_preset_turns_on_the_options_and_faithful_configs_leave_them_off(module, category):
  faithful, best = module.get_config(category), module.get_config(category + ',best')
  assert best.data.category == faithful.data.category == category
  assert dict(faithful.maps) == dict(smoothing_sigma=0.0, image_score='max', top_k_fraction=0.01,
                                     level_aggregation='sum', score_unsmoothed=False,
                                     max_filter=0)
  assert faithful.backbone.normalization == 'imagenet'
  assert dict(best.maps) == dict(smoothing_sigma=4.0, image_score='top_k_mean',
                                 top_k_fraction=0.01, level_aggregation='mean_log',
                                 score_unsmoothed=True, max_filter=0)
  assert best.backbone.normalization == 'backbone'
  assert (faithful.data.cutpaste_placement, best.data.cutpaste_placement) == (
      'in_place', 'random_on_textures')
  assert (faithful.data.cutpaste_reach_border, best.data.cutpaste_reach_border) == (False, True)
  best.data.cutpaste_placement = faithful.data.cutpaste_placement
  best.data.cutpaste_reach_border = faithful.data.cutpaste_reach_border
  assert (faithful.loss.pos_beta, best.loss.pos_beta) == (0.01, 0.05)
  best.loss.pos_beta = faithful.loss.pos_beta
  assert (faithful.data.mask_pooling, best.data.mask_pooling) == ('nearest', 'thin')
  assert (faithful.data.mask_pooling_on, best.data.mask_pooling_on) == ('all', 'objects')
  best.data.mask_pooling = faithful.data.mask_pooling
  best.data.mask_pooling_on = faithful.data.mask_pooling_on
  assert (faithful.backbone.neighbourhood, faithful.backbone.neighbourhood_on) == (1, 'all')
  assert (best.backbone.neighbourhood, best.backbone.neighbourhood_on) == (3, 'textures')
  # One schedule on every config, whatever the faithful one trains: the one the
  # options were measured with.
  assert best.train.lr == 1e-3 and faithful.train.lr == 2e-4
  assert (best.train.meta_epochs, best.train.sub_epochs, best.train.num_vectors) == (12, 8, 1024)
  assert best.data.anomaly_strategy == ('real', 'cutpaste')
  assert (faithful.data.synthetic_repeats, best.data.synthetic_repeats) == (5, 10)
  if module is not demo:   # the published schedule
    assert (faithful.train.meta_epochs, faithful.train.sub_epochs,
            faithful.train.num_vectors) == (25, 8, 4096)
  for field in ('lr', 'meta_epochs', 'sub_epochs', 'num_vectors'):
    best.train[field] = faithful.train[field]
  best.data.anomaly_strategy = faithful.data.anomaly_strategy
  best.data.synthetic_repeats = faithful.data.synthetic_repeats
  for section in ('flow', 'loss', 'train', 'data'):
    assert dict(best[section]) == dict(faithful[section]), section


def test_unknown_preset_is_named():
  with pytest.raises(ValueError, match="unknown preset 'fast'.*best"):
    mvtec.get_config('carpet,fast')


@pytest.mark.parametrize('module,arg', [(test_config, None), (demo, 'tissue'),
                                        (demo, 'tissue,best'), (folder, 'widget'),
                                        (folder, 'widget,best'), (mvtec, 'carpet,best')])
def test_every_level_of_a_shipped_config_trains_at_its_own_input_size(module, arg):
  """A batch of each level (strides 4, 8, 16) holds at least one step's vectors:
  else its flow never trains (training.plan.untrained_level_notes)."""
  from bgad_jax.training import plan
  config = module.get_config(arg)
  positions = [(config.data.inp_size // stride) ** 2 for stride in (4, 8, 16)]
  train = config.train
  assert plan.untrained_level_notes(positions, train.batch_size, train.batch_size,
                                    train.num_vectors) == []
  # The published chunk at half the published input size does not fit: the case
  # the run warns about.
  if module is folder and arg == 'widget':
    assert len(plan.untrained_level_notes([p // 4 for p in positions], train.batch_size,
                                          train.batch_size, train.num_vectors)) == 1
