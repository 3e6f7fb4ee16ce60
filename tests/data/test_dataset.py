"""bgad_jax.data.dataset: built on first use (prepare_dataset), rebuilt when the source
changes, never stale; held-out normals."""

import os
import shutil

import ml_collections
import pytest

import tfds_mvtec
from bgad_jax.data import dataset

DUMMY = os.path.join(os.path.dirname(tfds_mvtec.__file__), 'dummy_data')


def _data_config(root, tfds_dir, source='folder', category='bottle'):
  return ml_collections.ConfigDict(dict(source=source, category=category, root=str(root),
                                        tfds_dir=str(tfds_dir)))


def _prepared_splits(data_config, seed=0):
  dataset.prepare_dataset(data_config, seed)
  return dataset.read_splits(data_config)


def test_missing_root_never_falls_back_to_an_earlier_build(tmp_path):
  shutil.copytree(os.path.join(DUMMY, 'bottle'), tmp_path / 'a' / 'bottle')
  train, test = _prepared_splits(_data_config(tmp_path / 'a', tmp_path / 'tfds'))
  assert (len(train), len(test)) == (3, 5)
  with pytest.raises(tfds_mvtec.DatasetFolderError) as caught:
    _prepared_splits(_data_config(tmp_path / 'moved', tmp_path / 'tfds'))
  assert f'data.root={tmp_path / "moved"} does not exist' in str(caught.value)
  # Without a root the user points at the built dataset itself: it is read.
  train, _ = _prepared_splits(_data_config('', tmp_path / 'tfds'))
  assert len(train) == 3


def test_images_added_to_the_source_are_read(tmp_path):
  root = tmp_path / 'a'
  shutil.copytree(os.path.join(DUMMY, 'bottle'), root / 'bottle')
  config = _data_config(root, tmp_path / 'tfds')
  _prepared_splits(config)
  good = root / 'bottle' / 'train' / 'good'
  shutil.copy(good / '000.png', good / '100.png')
  train, _ = _prepared_splits(config)
  assert [e['filename'] for e in train][-1] == 'train/good/100.png' and len(train) == 4


def test_demo_with_other_settings_is_regenerated_and_rebuilt(tmp_path):
  config = _data_config(tmp_path / 'demo', '', source='demo', category='tissue')
  config.demo = ml_collections.ConfigDict(dict(size=32, num_train=3, num_test_good=2,
                                               num_per_defect=1))
  train, test = _prepared_splits(config)
  assert (len(train), len(test)) == (3, 6)
  config.demo.num_train = 5
  train, _ = _prepared_splits(config)
  assert len(train) == 5
  config.demo.num_train = 2   # fewer: no image of the larger set is left behind
  train, _ = _prepared_splits(config)
  assert [e['filename'] for e in train] == ['train/good/000.png', 'train/good/001.png']


def _demo_images(config, seed):
  dataset.prepare_dataset(config, seed)
  folder = os.path.join(config.root, 'images', config.category, 'test')
  return {os.path.join(d, f): open(os.path.join(folder, d, f), 'rb').read()
          for d in sorted(os.listdir(folder)) for f in sorted(os.listdir(os.path.join(folder, d)))}


def test_demo_images_follow_the_run_seed_unless_data_demo_seed_fixes_them(tmp_path):
  config = _data_config(tmp_path / 'demo', tmp_path / 'tfds', source='demo', category='coins')
  config.demo = ml_collections.ConfigDict(dict(size=32, num_train=2, num_test_good=2,
                                               num_per_defect=1, seed=-1))
  by_run_seed = [_demo_images(config, seed) for seed in (0, 1)]
  assert by_run_seed[0].keys() == by_run_seed[1].keys()
  assert by_run_seed[0] != by_run_seed[1]   # -1: the run's seed draws the images
  config.demo.seed = 1
  assert _demo_images(config, 0) == _demo_images(config, 5) == by_run_seed[1]
  config.demo.defect_placement = 'anywhere'   # the defects move (a chip is on the rim
  anywhere = _demo_images(config, 0)           # either way), the normal images stay
  assert {k for k in anywhere if anywhere[k] != by_run_seed[1][k]} == {
      k for k in anywhere if not k.startswith(('good', 'chip'))}


def test_hold_out_normals_is_a_seeded_partition_above_the_minimum():
  examples = [dict(filename=f'train/good/{i:03d}.png') for i in range(60)]
  flows, held = dataset.hold_out_normals(examples, 0.1, 50, seed=3)
  assert len(held) == 6 and len(flows) == 54
  names = [e['filename'] for e in flows + held]
  assert sorted(names) == [e['filename'] for e in examples]   # a partition
  assert [e['filename'] for e in held] == sorted(e['filename'] for e in held)   # dataset order
  assert dataset.hold_out_normals(examples, 0.1, 50, seed=3)[1] == held
  assert dataset.hold_out_normals(examples, 0.1, 50, seed=4)[1] != held
  # Below the minimum, or with fraction 0 (the reference), every image trains the flows.
  assert dataset.hold_out_normals(examples[:49], 0.1, 50, seed=3) == (examples[:49], [])
  assert dataset.hold_out_normals(examples, 0.0, 50, seed=3) == (examples, [])
  assert len(dataset.hold_out_normals(examples[:8], 0.01, 4, seed=0)[1]) == 1   # at least one


def test_all_categories_of_each_source(tmp_path):
  assert dataset.all_categories(_data_config('', tmp_path, source='visa'))[:2] == [
      'candle', 'capsules']
  assert len(dataset.all_categories(_data_config('', tmp_path, source='mvtec'))) == 15
  for name in ('widget', 'gadget'):
    shutil.copytree(os.path.join(DUMMY, 'bottle'), tmp_path / 'own' / name)
  (tmp_path / 'own' / 'notes').mkdir()   # no train/: not a category
  assert dataset.all_categories(_data_config(tmp_path / 'own', tmp_path)) == ['gadget', 'widget']
  with pytest.raises(tfds_mvtec.DatasetFolderError, match='data.root'):
    dataset.all_categories(_data_config('', tmp_path))
