"""bgad_jax.seeds: one configuration over several seeds, summarised as mean +- sd."""

import json

import numpy as np
import pytest

from bgad_jax import cli, seeds, settings
from bgad_jax.errors import ConfigError
from configs import test as test_config


def test_every_seed_runs_in_its_folder_and_the_summary_is_mean_and_sd(tmp_path, capsys):
  config = test_config.get_config()
  config.seeds = (3, 5, 9)
  values = {3: 0.90, 5: 0.80, 9: 0.70}
  calls = []

  def run_one(seed_config, folder):
    calls.append((seed_config.seed, tuple(seed_config.seeds), folder))
    return dict(img_auroc=values[seed_config.seed], pix_auroc=0.5, aupro=None)

  means = seeds.run_seeds(config, str(tmp_path), list(settings.resolve(config).seeds), run_one)
  assert calls == [(s, (), str(tmp_path / f'seed_{s}')) for s in (3, 5, 9)]
  assert means['img_auroc'] == pytest.approx(0.8) and means['aupro'] is None
  stats = json.loads((tmp_path / 'seeds.json').read_text())['statistics']['img_auroc']
  assert stats['sd'] == pytest.approx(np.std([0.9, 0.8, 0.7], ddof=1))   # sample sd: 0.1
  assert (stats['min'], stats['max'], stats['n']) == (pytest.approx(0.7), pytest.approx(0.9), 3)
  table = (tmp_path / 'seeds.md').read_text()
  assert '| **mean ± sd** | 80.00 ± 10.00 | 50.00 ± 0.00 | n/a |' in table
  assert '| range | 70.00 – 90.00 |' in table
  assert table in capsys.readouterr().out
  assert config.seed == 0 and tuple(config.seeds) == (3, 5, 9)   # the caller's config is unchanged


@pytest.mark.parametrize('value', ['0,1,1', '0,-1', 'a', (0, 1.5)])
def test_bad_seed_lists_are_config_errors(value):
  config = test_config.get_config()
  config.seeds = value if isinstance(value, tuple) else (value,)
  with pytest.raises(ConfigError, match='seeds='):
    settings.validate(config)


def test_seed_lists_are_parsed_from_a_comma_string():
  config = test_config.get_config()
  config.seeds = ('0,1', 7)
  assert list(settings.resolve(config).seeds) == [0, 1, 7]
  config.seeds = ()
  assert list(settings.resolve(config).seeds) == []


@pytest.mark.parametrize('mode', ['predict', 'export', 'serve'])
def test_one_model_modes_refuse_several_seeds_and_name_a_seed_folder(tmp_path, mode):
  config = test_config.get_config()
  config.seeds = (2, 4)
  with pytest.raises(ConfigError, match=f'--mode={mode} uses one model.*seed_2'):
    cli.run(config, str(tmp_path), mode)
