"""tfds_mvtec.datasets: every dataset's dummy class builds from its real layout, reads back
aligned, fails clearly when incomplete, and trains one meta-epoch."""

import csv
import json
import os
import re
import shutil
import subprocess
import sys
import tarfile

import numpy as np
import pytest
from PIL import Image

import tfds_mvtec
from bgad_jax.data import pipeline
from tfds_mvtec.datasets import DATASETS

DUMMY = os.path.join(os.path.dirname(tfds_mvtec.__file__), 'dummy_data')
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# dataset -> (dummy class, its TFDS split sizes, its test defect types)
DUMMIES = {
    'mpdd': ('tubes', dict(train=6, test=7), ['crack', 'dent', 'good']),
    'btad': ('01', dict(train=6, test=5), ['good', 'ko']),
    'visa': ('candle', dict(train=6, test=7), ['anomaly', 'good']),
    'loco': ('pushpins', dict(train=6, validation=2, test=7),
             ['good', 'logical_anomalies', 'structural_anomalies']),
    'mvtec_ad2': ('can', dict(train=6, validation=2, test=5), ['bad', 'good']),
}


def _expected_mask(name, category, example):
  """The union of the example's mask files, read independently of tfds_mvtec."""
  root = os.path.join(DUMMY, name)
  filename = example['filename']
  stem = os.path.splitext(os.path.basename(filename))[0]
  if name == 'visa':
    with open(os.path.join(root, 'split_csv', '1cls.csv')) as f:
      row = next(r for r in csv.DictReader(f) if r['image'] == f'{category}/{filename}')
    return (np.asarray(Image.open(os.path.join(root, row['mask']))) > 0).astype(np.uint8)
  if name == 'loco':
    folder = os.path.join(root, category, 'ground_truth', example['defect_type'], stem)
    files = sorted(os.listdir(folder))
    assert files, folder
    return np.maximum.reduce([(np.asarray(Image.open(os.path.join(folder, f))) > 127)
                              for f in files]).astype(np.uint8)
  gt = {'mvtec_ad2': 'test_public/ground_truth'}.get(name, 'ground_truth')
  suffix = '' if name == 'btad' else '_mask'
  path = os.path.join(root, category, gt, example['defect_type'], f'{stem}{suffix}.png')
  return (np.asarray(Image.open(path)) > 127).astype(np.uint8)


@pytest.fixture(scope='module')
def built(tmp_path_factory):
  """Every dummy dataset built into one data_dir."""
  data_dir = str(tmp_path_factory.mktemp('tfds'))
  for name, (category, _, _) in DUMMIES.items():
    tfds_mvtec.build(category, data_dir, os.path.join(DUMMY, name), dataset=name)
  return data_dir


@pytest.mark.parametrize('name', list(DUMMIES))
def test_dummy_class_builds_and_reads_back_aligned(built, name):
  category, sizes, types = DUMMIES[name]
  dataset = DATASETS[name]
  assert category in dataset.categories and dataset.splits == tuple(sizes)
  splits = {split: pipeline.load_examples(built, category, split, dataset=name)
            for split in dataset.splits}
  assert {split: len(examples) for split, examples in splits.items()} == sizes
  assert sorted({e['defect_type'] for e in splits['test']}) == types
  for split, examples in splits.items():
    for example in examples:
      source = np.asarray(Image.open(os.path.join(DUMMY, name, category, example['filename'])
                                     ).convert('RGB'))
      assert example['image'].shape == source.shape
      np.testing.assert_array_equal(example['image'], source)   # JPEGs decode alike too
      if example['label'] == 0:
        assert example['defect_type'] == 'good' and not example['mask'].any()
        continue
      assert split == 'test' and example['has_mask']
      np.testing.assert_array_equal(example['mask'], _expected_mask(name, category, example))
      assert example['mask'].any()
      if dataset.split_field:
        assert example['split'] == ('test' if name == 'visa' else 'test_public')
      else:
        assert 'split' not in example


def test_loco_merges_the_mask_files_of_one_image(built):
  test = pipeline.load_examples(built, 'pushpins', 'test', dataset='loco')
  first = next(e for e in test if e['filename'] == 'test/logical_anomalies/000.png')
  folder = os.path.join(DUMMY, 'loco', 'pushpins', 'ground_truth', 'logical_anomalies', '000')
  parts = [np.asarray(Image.open(os.path.join(folder, f))) > 127 for f in sorted(os.listdir(folder))]
  assert len(parts) == 2 and not (parts[0] & parts[1]).any()
  assert first['mask'].sum() == parts[0].sum() + parts[1].sum()


def test_visa_masks_with_class_ids_are_defective_pixels(built):
  test = pipeline.load_examples(built, 'candle', 'test', dataset='visa')
  ids = {int(np.asarray(Image.open(os.path.join(DUMMY, 'visa', 'candle', 'Data', 'Masks',
                                                 'Anomaly', f))).max())
         for f in os.listdir(os.path.join(DUMMY, 'visa', 'candle', 'Data', 'Masks', 'Anomaly'))}
  assert ids == {1, 2}   # neither would pass MVTec's half-intensity threshold
  assert all(e['mask'].sum() == 168 for e in test if e['label'])


def _visa_archive(tmp_path, top='', parts=('candle', 'split_csv')):
  """A VisA_20220922.tar of the dummy class in a fresh manual_dir; returns that folder."""
  manual = tmp_path / 'manual'
  manual.mkdir()
  with tarfile.open(manual / 'VisA_20220922.tar', 'w') as tar:
    for part in parts:
      tar.add(os.path.join(DUMMY, 'visa', part), arcname=os.path.join(top, part))
  return manual


@pytest.mark.slow
def test_visa_builds_from_its_archive_with_the_split_file(tmp_path):
  manual = _visa_archive(tmp_path)
  result = subprocess.run(
      [sys.executable, '-m', 'tfds_mvtec.build', '--dataset', 'visa', '--manual_dir',
       str(manual), '--data_dir', str(tmp_path / 'data'), '--categories', 'candle'],
      cwd=REPO, capture_output=True, text=True, timeout=600)
  assert result.returncode == 0, result.stderr[-2000:]
  assert 'candle: train 6, test 7' in result.stdout


def test_visa_archive_with_a_top_folder(tmp_path):
  manual = _visa_archive(tmp_path, top='VisA_20220922')
  tfds_mvtec.build('candle', str(tmp_path / 'data'), str(manual), dataset='visa')
  test = pipeline.load_examples(str(tmp_path / 'data'), 'candle', 'test', dataset='visa')
  assert sum(e['label'] for e in test) == 4


def test_visa_archive_without_its_split_file_names_it(tmp_path):
  manual = _visa_archive(tmp_path, parts=('candle',))
  with pytest.raises(tfds_mvtec.DatasetFolderError, match=r'no split file .*1cls\.csv'):
    tfds_mvtec.build('candle', str(tmp_path / 'data'), str(manual), dataset='visa')


@pytest.mark.parametrize('name, damage, culprit', [
    ('visa', 'split_csv/1cls.csv', r'no split file .*1cls\.csv'),
    ('loco', 'pushpins/ground_truth/logical_anomalies/001',
     r'no ground-truth mask for test/logical_anomalies/001\.png'),
    ('mvtec_ad2', 'can/validation', r'no validation/ folder'),
    ('btad', '01/train', r'no train/ folder'),
])
def test_incomplete_source_names_what_is_missing_and_the_layout(tmp_path, name, damage,
                                                                culprit):
  manual = tmp_path / name
  shutil.copytree(os.path.join(DUMMY, name), manual)
  target = manual / damage
  if target.is_dir():
    shutil.rmtree(target)
  else:
    target.unlink()
  category = DUMMIES[name][0]
  with pytest.raises(tfds_mvtec.DatasetFolderError) as caught:
    tfds_mvtec.build(category, str(tmp_path / 'data'), str(manual), dataset=name)
  message = str(caught.value)
  assert re.search(culprit, message), message
  assert f'Expected the {DATASETS[name].title} layout' in message


def test_archive_without_the_class_names_it(tmp_path):
  manual = _visa_archive(tmp_path, parts=('split_csv',))
  with pytest.raises(tfds_mvtec.DatasetFolderError, match=r'no candle/ in .*VisA_20220922\.tar'):
    tfds_mvtec.build('candle', str(tmp_path / 'data'), str(manual), dataset='visa')


def test_damaged_archive_is_named(tmp_path):
  manual = tmp_path / 'manual'
  manual.mkdir()
  (manual / 'mvtec_loco_anomaly_detection.tar.xz').write_bytes(b'not an archive')
  with pytest.raises(tfds_mvtec.DatasetFolderError, match='damaged or incomplete'):
    tfds_mvtec.build('pushpins', str(tmp_path / 'data'), str(manual), dataset='loco')


@pytest.mark.slow   # trains and evaluates end to end
@pytest.mark.parametrize('name', list(DUMMIES))
def test_one_meta_epoch_on_each_dummy_class(tmp_path, name):
  from bgad_jax import engine
  from configs import test as test_config
  category = DUMMIES[name][0]
  config = test_config.get_config()
  config.data.source, config.data.category = name, category
  config.data.root = os.path.join(DUMMY, name)
  config.data.tfds_dir = str(tmp_path / 'tfds')
  config.data.num_anomalies = 1
  config.train.meta_epochs, config.train.sub_epochs = 1, 1
  config.report.num_overlays = 0
  results = engine.train_and_evaluate(config, str(tmp_path / 'run'))
  assert results['epoch'] == 1 and 0.0 <= results['img_auroc'] <= 1.0
  assert results['name'] == f'{name}/{category}'
  constants = json.loads((tmp_path / 'run' / 'predict_constants.json').read_text())
  files = constants['calibration']['files']
  if name in ('loco', 'mvtec_ad2'):   # their own validation images calibrate
    assert files and all(f.startswith('validation/good/') for f in files)
  else:
    assert constants['calibration']['source'] == 'training'   # 6 images: none held out


def test_readme_table_matches_the_configs_and_datasets():
  import importlib
  readme = open(os.path.join(REPO, 'README.md')).read()
  table = readme.split('| dataset | config |')[1].split('\n\n')[0]
  rows = [line.split(' | ') for line in table.splitlines()[2:]]
  listed = {}
  for row in rows:
    config_file = row[1].strip('`')
    module = importlib.import_module(config_file[:-3].replace('/', '.'))
    config = module.get_config()
    name = row[2].strip('`')
    assert config.data.source == name, config_file
    assert row[3].split(', ') == list(DATASETS[name].categories), name
    assert config.data.category in DATASETS[name].categories
    listed[name] = config_file
  assert set(listed) == set(DATASETS)   # every dataset has a row, and a config
