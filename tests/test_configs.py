"""configs/: the published defaults (spec section 6) and config-file loading."""

import pytest

from configs import common, demo, test as test_config


def test_published_defaults():
  config = common.get_config()
  assert config.backbone.name == 'tf_efficientnet_b6'
  assert (config.flow.coupling_layers, config.flow.clamp_alpha,
          config.flow.pos_embed_dim, config.flow.conditional) == (8, 1.9, 128, True)
  assert dict(config.loss) == dict(pos_beta=0.01, margin_tau=0.1, normalizer=10.0,
                                   bgspp_lambda=1.0, focal_weighting=True)
  train = config.train
  assert (train.meta_epochs, train.sub_epochs, train.batch_size, train.lr,
          train.num_vectors, train.lr_warm_epochs) == (25, 8, 32, 2e-4, 4096, 2)
  data = config.data
  assert (data.inp_size, data.num_anomalies, data.anomaly_strategy,
          data.not_in_test) == (256, 10, '0,1', True)


@pytest.mark.parametrize('module', [demo, test_config])
def test_derived_configs_keep_the_loss_settings(module):
  config = module.get_config()
  assert dict(config.loss) == dict(common.get_config().loss)
  assert len(config.flow_check.feature_dims) == len(config.flow_check.feature_sizes)
