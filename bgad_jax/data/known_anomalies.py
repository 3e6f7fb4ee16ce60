"""Which labelled anomalies a run trains with (docs/METHOD.md, "Known anomalies").

The known anomalies are taken from the test split (MVTec AD has no labelled
training anomalies); by default they are removed from the test set.
"""

from typing import Dict, List, Sequence, Tuple

import numpy as np

from bgad_jax.errors import DataError


class NotEnoughAnomaliesError(DataError):
  """A category has fewer anomalies than the run asks for."""


class UnknownAnomalyFileError(DataError):
  """A file named as a known anomaly is not an anomalous test image."""


def _test_paths(files: Sequence[str]) -> List[str]:
  """``files`` as test-split paths (``crack/003.png`` -> ``test/crack/003.png``)."""
  return [f if f.startswith('test/') else f'test/{f}' for f in files]


def pick_files(test_examples: Sequence[Dict], files: Sequence[str]) -> Tuple[List[Dict], List[Dict]]:
  """The test examples named in ``files`` as the known anomalies.

  Args:
    files: paths relative to the category (``test/crack/003.png``; the
      ``test/`` prefix may be left out).

  Returns:
    (known, rest) like `select_known_anomalies`.

  Raises:
    UnknownAnomalyFileError: naming every file that is not in the test split
      or not anomalous.
  """
  by_name = {e['filename']: e for e in test_examples}
  names = _test_paths(files)
  unknown = [f for f in names if f not in by_name]
  normal = [f for f in names if f in by_name and by_name[f]['label'] != 1]
  if unknown or normal:
    problems = ([f'not in the test split: {", ".join(unknown)}'] if unknown else []) + (
        [f'not anomalous: {", ".join(normal)}'] if normal else [])
    raise UnknownAnomalyFileError('data.known_anomaly_files: ' + '; '.join(problems))
  chosen = set(names)
  known = [by_name[f] for f in dict.fromkeys(names)]
  return known, [e for e in test_examples if e['filename'] not in chosen]


def _quotas(available: Dict[str, int], total: int, rng) -> Dict[str, int]:
  """Spreads ``total`` evenly over types; the remainder goes to random types."""
  types = sorted(available)
  quotas = {t: 0 for t in types}
  remaining = total
  while remaining > 0:
    open_types = [t for t in types if quotas[t] < available[t]]
    share = remaining // len(open_types)
    if share == 0:   # fewer left than open types: a random subset gets one more
      for t in rng.choice(open_types, size=remaining, replace=False):
        quotas[t] += 1
      break
    for t in open_types:
      take = min(share, available[t] - quotas[t])
      quotas[t] += take
      remaining -= take
  return quotas


def select_known_anomalies(test_examples: Sequence[Dict], num_anomalies: int,
                           count_mode: str = 'total',
                           known_defect_types: Sequence[str] = (),
                           seed: int = 0) -> Tuple[List[Dict], List[Dict]]:
  """Picks the labelled anomalies a run trains with (strategy `real`).

  Args:
    test_examples: the test split.
    num_anomalies: how many; per defect type when ``count_mode == 'per_type'``,
      in total (spread evenly over the types, remainder at random) when 'total'.
    known_defect_types: only these types may be picked (the paper's "hard"
      setting); empty means all types.
    seed: selection seed; the result depends only on it and the file names.

  Returns:
    (known, rest): the picked examples, and the test examples without them.

  Raises:
    NotEnoughAnomaliesError, ValueError (unknown type or count_mode).
  """
  if count_mode not in ('total', 'per_type'):
    raise ValueError(f"count_mode must be 'total' or 'per_type', got {count_mode!r}")
  anomalies = sorted((e for e in test_examples if e['label'] == 1), key=lambda e: e['filename'])
  by_type: Dict[str, List[Dict]] = {}
  for example in anomalies:
    by_type.setdefault(example['defect_type'], []).append(example)
  if known_defect_types:
    unknown = sorted(set(known_defect_types) - set(by_type))
    if unknown:
      raise DataError(f'data.known_defect_types: {", ".join(unknown)} not among the test '
                      f'defect types ({", ".join(sorted(by_type))})')
    by_type = {t: by_type[t] for t in known_defect_types}
  rng = np.random.default_rng(seed)
  available = {t: len(v) for t, v in by_type.items()}
  if count_mode == 'per_type':
    short = {t: n for t, n in available.items() if n < num_anomalies}
    if short:
      raise NotEnoughAnomaliesError(
          f'data.num_anomalies={num_anomalies} per type asked, but types {short} have '
          'fewer: lower data.num_anomalies or name data.known_defect_types')
    quotas = {t: num_anomalies for t in available}
  else:
    if sum(available.values()) < num_anomalies:
      raise NotEnoughAnomaliesError(
          f'data.num_anomalies={num_anomalies} asked, but only {sum(available.values())} '
          f'anomalous test images exist (types {", ".join(sorted(available))}): lower '
          'data.num_anomalies')
    quotas = _quotas(available, num_anomalies, rng)
  known = []
  for defect_type in sorted(quotas):
    pool = by_type[defect_type]
    picks = rng.choice(len(pool), size=quotas[defect_type], replace=False)
    known.extend(pool[i] for i in sorted(picks))
  chosen = {e['filename'] for e in known}
  rest = [e for e in test_examples if e['filename'] not in chosen]
  return known, rest


def split_known(data_config, test_examples: Sequence[Dict], known_types: Sequence[str],
                seed: int, known_files: Sequence[str] = ()) -> Tuple[List[Dict], List[Dict]]:
  """(known anomalies for training, the test set to evaluate on) for ``config.data``.

  ``known_files`` (``data.known_anomaly_files``) names them; otherwise
  ``num_anomalies`` are drawn with ``seed`` (none when it is 0: unsupervised).
  With ``not_in_test`` the known ones leave the test set; the files of
  ``data.exclude_from_test`` leave it too.

  Raises:
    UnknownAnomalyFileError: a known or excluded file is not in the test split.
  """
  if known_files:
    known, rest = pick_files(test_examples, known_files)
  elif data_config.num_anomalies <= 0:
    known, rest = [], list(test_examples)
  else:
    known, rest = select_known_anomalies(test_examples, data_config.num_anomalies,
                                         data_config.anomaly_count_mode, known_types, seed)
  test = rest if data_config.not_in_test else list(test_examples)
  # (Configs saved before the field have none.)
  excluded = set(_test_paths(data_config.get('exclude_from_test', ())))
  missing = sorted(excluded - {e['filename'] for e in test_examples})
  if missing:
    raise UnknownAnomalyFileError('data.exclude_from_test: not in the test split: ' +
                                  ', '.join(missing))
  return known, [e for e in test if e['filename'] not in excluded]
