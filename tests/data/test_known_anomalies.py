"""bgad_jax.data.known_anomalies: the seeded draw of known anomalies and the test split."""

import collections

import pytest

from bgad_jax.data import known_anomalies
from configs import test as test_config
from tests.data.helpers import example


def _test_set():
  examples = [example(0, 'good', f'test/good/{i:03d}.png') for i in range(6)]
  for defect_type, count in (('crack', 5), ('hole', 4), ('stain', 2)):
    examples += [example(1, defect_type, f'test/{defect_type}/{i:03d}.png') for i in range(count)]
  return examples


def test_known_anomalies_reproducible_and_excluded():
  test = _test_set()
  known, rest = known_anomalies.select_known_anomalies(test, 7, seed=5)
  again, _ = known_anomalies.select_known_anomalies(list(reversed(test)), 7, seed=5)
  assert [e['filename'] for e in known] == [e['filename'] for e in again]
  assert len(known) == 7 and all(e['label'] == 1 for e in known)
  assert len(rest) == len(test) - 7
  assert not {e['filename'] for e in known} & {e['filename'] for e in rest}
  counts = collections.Counter(e['defect_type'] for e in known)
  assert sorted(counts.values()) == [2, 2, 3]   # 7 over 3 types: 2 each, one extra at random
  others = {tuple(e['filename'] for e in known_anomalies.select_known_anomalies(test, 7, seed=s)[0])
            for s in range(6)}
  assert len(others) > 1


def test_total_spread_respects_small_types():
  known, _ = known_anomalies.select_known_anomalies(_test_set(), 10, seed=0)
  counts = collections.Counter(e['defect_type'] for e in known)
  assert counts['stain'] == 2 and counts['crack'] + counts['hole'] == 8


def test_per_type_and_known_defect_types():
  known, rest = known_anomalies.select_known_anomalies(
      _test_set(), 2, count_mode='per_type', known_defect_types=['crack', 'hole'], seed=1)
  counts = collections.Counter(e['defect_type'] for e in known)
  assert counts == {'crack': 2, 'hole': 2}
  assert sum(e['defect_type'] == 'stain' for e in rest) == 2   # never seen in training


def test_too_few_anomalies_is_an_error():
  with pytest.raises(known_anomalies.NotEnoughAnomaliesError, match='stain'):
    known_anomalies.select_known_anomalies(_test_set(), 3, count_mode='per_type')
  with pytest.raises(known_anomalies.NotEnoughAnomaliesError, match='num_anomalies=12 asked'):
    known_anomalies.select_known_anomalies(_test_set(), 12)
  with pytest.raises(ValueError, match='scratch'):
    known_anomalies.select_known_anomalies(_test_set(), 1, known_defect_types=['scratch'])


def _examples():
  good = [dict(label=0, defect_type='good', filename=f'test/good/{i}.png') for i in range(3)]
  bad = [dict(label=1, defect_type='crack', filename=f'test/crack/{i}.png') for i in range(3)]
  return good + bad


def test_unsupervised_mode_uses_no_anomalies():
  config = test_config.get_config()
  config.data.num_anomalies = 0
  known, test = known_anomalies.split_known(config.data, _examples(), [], config.seed)
  assert known == [] and len(test) == 6


def test_known_anomalies_leave_the_test_set_unless_asked_not_to():
  config = test_config.get_config()
  config.data.num_anomalies = 2
  known, test = known_anomalies.split_known(config.data, _examples(), [], config.seed)
  assert len(known) == 2 and len(test) == 4
  assert not {e['filename'] for e in known} & {e['filename'] for e in test}
  config.data.not_in_test = False
  _, test = known_anomalies.split_known(config.data, _examples(), [], config.seed)
  assert len(test) == 6


def test_files_excluded_from_the_test_set_leave_it_and_unknown_ones_are_named():
  config = test_config.get_config()
  examples = _test_set()
  names = [e['filename'] for e in examples]
  config.data.exclude_from_test = (names[0], names[-1][len('test/'):])   # prefix optional
  known, test = known_anomalies.split_known(config.data, examples, [], config.seed,
                                            ['test/hole/001.png'])
  assert [e['filename'] for e in known] == ['test/hole/001.png']
  assert [e['filename'] for e in test] == [n for n in names[1:-1] if n != 'test/hole/001.png']
  config.data.num_anomalies = 0   # unsupervised: only the excluded files leave
  _, test = known_anomalies.split_known(config.data, examples, [], config.seed)
  assert [e['filename'] for e in test] == names[1:-1]
  config.data.exclude_from_test = ('test/crack/099.png',)
  with pytest.raises(known_anomalies.UnknownAnomalyFileError,
                     match='exclude_from_test: not in the test split: test/crack/099.png'):
    known_anomalies.split_known(config.data, examples, [], config.seed)


def test_known_anomaly_files_are_used_and_checked():
  config = test_config.get_config()
  files = ['test/hole/001.png', 'crack/000.png']   # the test/ prefix is optional
  examples = _test_set()
  known, rest = known_anomalies.split_known(config.data, examples, [], config.seed, files)
  assert [e['filename'] for e in known] == ['test/hole/001.png', 'test/crack/000.png']
  assert len(rest) == len(examples) - 2
  with pytest.raises(known_anomalies.UnknownAnomalyFileError) as caught:
    known_anomalies.split_known(config.data, examples, [], config.seed,
                                ['test/crack/099.png', 'test/good/000.png', 'test/hole/000.png'])
  message = str(caught.value)
  assert 'not in the test split: test/crack/099.png' in message
  assert 'not anomalous: test/good/000.png' in message and 'hole/000' not in message
