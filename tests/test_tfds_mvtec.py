"""tfds_mvtec: build and read back without TensorFlow, archives, own folders, errors."""

import os
import shutil
import subprocess
import sys
import tarfile

import numpy as np
import pytest
from PIL import Image

import tfds_mvtec
from bgad_jax.data import pipeline
from tfds_mvtec import layout
from tfds_mvtec.datasets import MVTEC_AD

DUMMY = os.path.join(os.path.dirname(tfds_mvtec.__file__), 'dummy_data')


def _file_mask(category, filename):
  split, defect, name = filename.split('/')
  path = os.path.join(DUMMY, category, 'ground_truth', defect, name.replace('.png', '_mask.png'))
  return (np.asarray(Image.open(path)) > 127).astype(np.uint8)


@pytest.mark.parametrize('category', ['bottle', 'grid'])
def test_build_and_read_every_example(tmp_path, category):
  tfds_mvtec.build(category, str(tmp_path), DUMMY)
  train = pipeline.load_examples(str(tmp_path), category, 'train')
  test = pipeline.load_examples(str(tmp_path), category, 'test')
  expected = MVTEC_AD.scan(MVTEC_AD, os.path.join(DUMMY, category), category, True)
  assert [e['filename'] for e in train] == [r.filename for r in expected['train']]
  assert [e['filename'] for e in test] == [r.filename for r in expected['test']]
  for example in train + test:
    source = np.asarray(Image.open(os.path.join(DUMMY, category, example['filename'])))
    if source.ndim == 2:
      source = np.repeat(source[:, :, None], 3, axis=2)
    np.testing.assert_array_equal(example['image'], source)
    normal = example['filename'].split('/')[1] == 'good'
    assert example['label'] == (0 if normal else 1)
    assert example['defect_type'] == ('good' if normal else example['filename'].split('/')[1])
    assert example['has_mask']
    if normal:
      assert not example['mask'].any()
    else:
      np.testing.assert_array_equal(example['mask'], _file_mask(category, example['filename']))


def test_a_build_prints_one_plain_line_per_split(tmp_path, capfd):
  tfds_mvtec.build('bottle', str(tmp_path), DUMMY)   # stdout is not a terminal here
  out, err = capfd.readouterr()
  lines = out.strip().splitlines()
  assert lines[0].startswith('Building mvtec_ad/bottle in ')
  expected = MVTEC_AD.scan(MVTEC_AD, os.path.join(DUMMY, 'bottle'), 'bottle', True)
  assert lines[1:] == [f"  test: {len(expected['test'])} images",
                       f"  train: {len(expected['train'])} images"]
  for text in (out, err):
    assert 'ownload' not in text and '\x1b[' not in text and '%|' not in text   # no bars


@pytest.mark.slow
def test_building_never_imports_tensorflow(tmp_path):
  code = ('import sys, tfds_mvtec; from bgad_jax.data import pipeline;'
          f'tfds_mvtec.build("bottle", {str(tmp_path)!r}, {DUMMY!r});'
          f'pipeline.load_examples({str(tmp_path)!r}, "bottle", "test");'
          + ''.join(f'tfds_mvtec.build({category!r}, {str(tmp_path)!r}, '
                    f'{os.path.join(DUMMY, name)!r}, dataset={name!r});'
                    for name, category in (('mpdd', 'tubes'), ('btad', '01'),
                                           ('visa', 'candle'), ('loco', 'pushpins'),
                                           ('mvtec_ad2', 'can')))
          + 'assert "tensorflow" not in sys.modules, "TensorFlow was imported"')
  result = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True,
                          timeout=600)
  assert result.returncode == 0, result.stderr[-2000:]


@pytest.mark.slow
def test_build_command_from_archive(tmp_path):
  manual = tmp_path / 'manual'
  manual.mkdir()
  with tarfile.open(manual / layout.ARCHIVE_NAME, 'w:xz') as tar:
    tar.add(os.path.join(DUMMY, 'bottle'), arcname='bottle')
  result = subprocess.run(
      [sys.executable, '-m', 'tfds_mvtec.build', '--manual_dir', str(manual),
       '--data_dir', str(tmp_path / 'data'), '--categories', 'bottle'],
      capture_output=True, text=True, timeout=600)
  assert result.returncode == 0, result.stderr[-2000:]
  assert 'bottle: train 3, test 5' in result.stdout
  test = pipeline.load_examples(str(tmp_path / 'data'), 'bottle', 'test')
  assert sum(e['label'] for e in test) == 3


def test_own_folder_without_masks(tmp_path):
  root = tmp_path / 'products'
  shutil.copytree(os.path.join(DUMMY, 'bottle'), root / 'widget')
  shutil.rmtree(root / 'widget' / 'ground_truth')
  tfds_mvtec.build('widget', str(tmp_path / 'data'), str(root))
  test = pipeline.load_examples(str(tmp_path / 'data'), 'widget', 'test')
  anomalies = [e for e in test if e['label'] == 1]
  assert len(anomalies) == 3 and not any(e['has_mask'] for e in anomalies)
  assert all(e['has_mask'] for e in test if e['label'] == 0)


def test_mvtec_category_with_missing_mask_is_incomplete(tmp_path):
  root = tmp_path / 'manual'
  shutil.copytree(os.path.join(DUMMY, 'bottle'), root / 'bottle')
  os.remove(root / 'bottle' / 'ground_truth' / 'contamination' / '000_mask.png')
  with pytest.raises(layout.DatasetFolderError, match=r'ground-truth mask.*contamination'):
    tfds_mvtec.build('bottle', str(tmp_path / 'data'), str(root))


def test_missing_manual_dir_content_names_folder_category_and_archive(tmp_path):
  with pytest.raises(layout.DatasetFolderError) as err:
    tfds_mvtec.build('carpet', str(tmp_path / 'data'), str(tmp_path))
  message = str(err.value)
  assert str(tmp_path) in message and "'carpet'" in message
  assert layout.ARCHIVE_NAME in message and layout.DOWNLOAD_PAGE in message


def test_reading_unbuilt_dataset_says_how_to_build(tmp_path):
  with pytest.raises(pipeline.DatasetNotBuiltError, match='python -m tfds_mvtec.build'):
    pipeline.load_examples(str(tmp_path), 'carpet', 'test')


def test_fifteen_builder_configs():
  names = [c.name for c in tfds_mvtec.MvtecAd.BUILDER_CONFIGS]
  assert names == list(layout.CATEGORIES) and len(names) == 15


def _copy_bottle(root):
  shutil.copytree(os.path.join(DUMMY, 'bottle'), root / 'bottle')
  return root


def test_changed_source_is_rebuilt_and_unchanged_reused(tmp_path, capsys):
  root, data = _copy_bottle(tmp_path / 'a'), str(tmp_path / 'data')
  tfds_mvtec.build('bottle', data, str(root))
  tfds_mvtec.build('bottle', data, str(root))
  assert 'Rebuilding' not in capsys.readouterr().out
  path = root / 'bottle' / 'train' / 'good' / '000.png'
  image = np.asarray(Image.open(path)).copy()
  image[:4, :4] = 255 - image[:4, :4]
  Image.fromarray(image).save(path)
  tfds_mvtec.build('bottle', data, str(root))
  assert ('files in its source changed since: 1 changed (e.g. train/good/000.png)'
          in capsys.readouterr().out)
  read = pipeline.load_examples(data, 'bottle', 'train')[0]
  assert read['filename'] == 'train/good/000.png'
  np.testing.assert_array_equal(read['image'], image if image.ndim == 3 else
                                np.repeat(image[:, :, None], 3, axis=2))


def test_another_root_with_the_same_category_is_rebuilt(tmp_path, capsys):
  first, second = _copy_bottle(tmp_path / 'a'), _copy_bottle(tmp_path / 'b')
  os.remove(second / 'bottle' / 'test' / 'good' / '000.png')
  data = str(tmp_path / 'data')
  tfds_mvtec.build('bottle', data, str(first))
  tfds_mvtec.build('bottle', data, str(second))
  assert f'it was built from {first / "bottle"}' in capsys.readouterr().out
  assert len(pipeline.load_examples(data, 'bottle', 'test')) == 4


@pytest.mark.slow
def test_concurrent_builds_of_one_dataset_both_succeed(tmp_path):
  command = [sys.executable, '-m', 'tfds_mvtec.build', '--manual_dir', DUMMY,
             '--data_dir', str(tmp_path / 'data'), '--categories', 'bottle']
  processes = [subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                text=True) for _ in range(2)]
  outputs = [p.communicate(timeout=600) for p in processes]
  for process, (out, err) in zip(processes, outputs):
    assert process.returncode == 0, err[-2000:]
    assert 'bottle: train 3, test 5' in out
  assert len(pipeline.load_examples(str(tmp_path / 'data'), 'bottle', 'test')) == 5


def test_damaged_archive_names_it_and_leaves_nothing(tmp_path):
  manual = tmp_path / 'manual'
  manual.mkdir()
  with tarfile.open(manual / layout.ARCHIVE_NAME, 'w:xz') as tar:
    tar.add(os.path.join(DUMMY, 'bottle'), arcname='bottle')
  archive = manual / layout.ARCHIVE_NAME
  archive.write_bytes(archive.read_bytes()[:200])
  with pytest.raises(layout.DatasetFolderError, match='damaged or incomplete') as caught:
    tfds_mvtec.build('bottle', str(tmp_path / 'data'), str(manual))
  assert str(archive) in str(caught.value)
  assert not (tmp_path / 'data' / 'downloads' / 'extracted' / 'mvtec_ad' / 'bottle').exists()
