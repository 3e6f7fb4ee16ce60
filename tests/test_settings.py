"""bgad_jax.settings: one error naming every bad field; list fields in both spellings,
parsed once by resolve."""

import pytest

from bgad_jax import settings
from configs import btad, common, demo, folder, loco, mpdd, mvtec, mvtec_ad2, visa
from configs import test as test_config


@pytest.mark.parametrize('config', [common.get_config(), demo.get_config(), test_config.get_config(),
                                    demo.get_config('surface,best'), mvtec.get_config('carpet,best'),
                                    mvtec.get_config('screw'), folder.get_config('widget')] + [
                                        m.get_config(m.get_config().data.category)
                                        for m in (btad, loco, mpdd, mvtec_ad2, visa)])
def test_shipped_configs_are_valid(config):
  settings.validate(config, num_devices=1)


def test_one_error_names_every_bad_field():
  config = test_config.get_config()
  config.data.anomaly_strategy = ('real', 'glitter')
  config.train.num_vectors = 30
  config.flow.pos_embed_dim = 10
  config.backbone.name = 'resnet18'
  config.loss.pos_beta = 1.5
  config.export.platforms = ('cpu', 'metal')
  config.export.format = 'tflite'
  config.maps.image_score = 'median'
  config.maps.top_k_fraction = 0.0
  config.maps.level_aggregation = 'max'
  config.maps.max_filter = 4   # an even window has no centre pixel
  config.data.cutpaste_placement = 'anywhere'
  config.backbone.neighbourhood = 2
  config.backbone.neighbourhood_on = 'objects'
  config.loss.push_average = 'pixel'
  config.loss.push_trim = 1.0
  config.data.mask_pooling = 'mean'
  config.data.mask_pooling_on = 'textures'
  with pytest.raises(settings.ConfigError) as caught:
    settings.validate(config, num_devices=4)
  message = str(caught.value)
  for field in ('data.anomaly_strategy', 'glitter', 'train.num_vectors', 'flow.pos_embed_dim',
                'backbone.name', 'loss.pos_beta', 'export.platforms', 'export.format',
                'maps.image_score', 'maps.top_k_fraction', 'maps.level_aggregation',
                'data.cutpaste_placement', 'backbone.neighbourhood=2',
                'backbone.neighbourhood_on', "loss.push_average='pixel'",
                "data.mask_pooling='mean'", "data.mask_pooling_on='textures'",
                'loss.push_trim=1.0', 'maps.max_filter=4'):
    assert field in message, field
  assert len(message.splitlines()) == 19   # the header and one line per field
  for valid in (0, 1, 9):
    config = test_config.get_config()
    config.maps.max_filter = valid
    settings.validate(config)
  for invalid in (-3, 2):
    config.maps.max_filter = invalid
    with pytest.raises(settings.ConfigError, match=f'maps.max_filter={invalid}'):
      settings.validate(config)


def test_copies_reaching_the_border_need_a_random_placement():
  """With the reference's placement the option would do nothing, silently."""
  config = test_config.get_config()
  config.data.cutpaste_reach_border = True
  with pytest.raises(settings.ConfigError, match="cutpaste_reach_border=True .*'in_place'"):
    settings.validate(config)
  for placement in ('random', 'random_on_textures'):
    config.data.cutpaste_placement = placement
    settings.validate(config)
  config.data.cutpaste_border_share = 1.5
  with pytest.raises(settings.ConfigError, match=r'cutpaste_border_share=1.5: a share in \[0, 1\]'):
    settings.validate(config)


def test_fields_nothing_else_reads_are_checked_too():
  """feature_levels is fixed at 3 (an override used to do nothing); the demo's sizes."""
  config = demo.get_config()
  config.backbone.feature_levels = 4
  config.data.demo.size, config.data.demo.num_train, config.data.demo.seed = 8, 0, -2
  config.data.demo.defect_placement, config.data.demo.split = 'edges', 'columns'
  with pytest.raises(settings.ConfigError) as caught:
    settings.validate(config)
  message = str(caught.value)
  assert 'backbone.feature_levels=4' in message and 'only 3' in message
  assert 'data.demo.size=8: must be >= 16' in message
  assert 'data.demo.num_train=0: must be >= 1' in message
  assert "data.demo.seed=-2: the images' seed, >= 0, or -1" in message
  assert "data.demo.defect_placement='edges': must be one of centre, anywhere" in message
  assert "data.demo.split='columns': must be one of rows, quadrants" in message
  del config.data['demo']
  config.backbone.feature_levels = 3
  with pytest.raises(settings.ConfigError, match="data.demo: data.source='demo' needs"):
    settings.validate(config)


def test_strategy_names_and_aliases():
  config = mvtec.get_config('carpet')

  def strategies():
    return settings.resolve(config, num_devices=1).data.anomaly_strategy

  assert strategies() == ('real', 'cutpaste')      # published
  config.data.anomaly_strategy = ('0,2',)          # a comma string from the command line
  assert strategies() == ('real', 'perlin')
  config.data.anomaly_strategy = ('perlin', '1')   # any order, mixed spellings
  assert strategies() == ('cutpaste', 'perlin')
  config.data.anomaly_strategy = ('cutpaste',)
  config.data.num_anomalies = 0
  with pytest.raises(settings.ConfigError, match='cutpaste transforms known anomalies'):
    settings.validate(config, num_devices=1)


def test_unknown_mvtec_category_is_named():
  with pytest.raises(settings.ConfigError, match="data.category='spoon'"):
    settings.validate(mvtec.get_config('spoon'), num_devices=1)


@pytest.mark.parametrize('value,expected', [
    ('crack,hole', ['crack', 'hole']), (('crack', 'hole'), ['crack', 'hole']),
    (('crack,hole',), ['crack', 'hole']), ((), []), ('', []), ((0, 1), ['0', '1'])])
def test_list_fields_accept_tuples_and_comma_strings(value, expected):
  assert settings.as_list(value) == expected


def test_category_must_belong_to_the_dataset():
  config = visa.get_config('screw')   # an MVTec class
  with pytest.raises(settings.ConfigError, match="data.category='screw'.*pcb1"):
    settings.validate(config, num_devices=1)
  settings.validate(visa.get_config('all'), num_devices=1)


def test_resolve_parses_list_fields_once_and_leaves_the_callers_config(monkeypatch):
  config = test_config.get_config()
  config.data.known_defect_types = ('crack,hole',)
  config.export.platforms = ('cpu,cuda',)
  resolved = settings.resolve(config, num_devices=1)
  assert resolved.data.known_defect_types == ('crack', 'hole')
  assert resolved.export.platforms == ('cpu', 'cuda')
  assert resolved.data.known_anomaly_files == () and resolved.seeds == ()
  assert config.data.known_defect_types == ('crack,hole',)   # the caller's config unchanged
  checks = []
  monkeypatch.setattr(settings, 'validate', lambda *args: checks.append(args))
  assert settings.resolve(resolved) is resolved and not checks   # one check per run
  settings.resolve(config)
  assert len(checks) == 1   # a config resolve did not return is checked
