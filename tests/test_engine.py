"""End to end on the tiny config: outputs, eval, predict, and kill/resume."""

import csv
import json
import os
import re
import shutil
import signal
import subprocess
import time

import numpy as np
import pytest
from PIL import Image

from tests.support import runs, tensorboard_events

_cmd, _main = runs.main_command, runs.run_main


def _trained_copy(trained, target):
  """A copy of the trained workdir's checkpoints and predict constants (nothing else)."""
  shutil.copytree(trained[0] / 'checkpoints', target / 'checkpoints')
  shutil.copy(trained[0] / 'predict_constants.json', target)
  return target


def test_engine_functions_stay_small():
  """Orchestration only: no function of engine.py over 40 lines or 5 parameters (state
  travels in `Run` / `RunLog` / `TestSet`, not in argument lists)."""
  import ast
  from bgad_jax import engine
  with open(engine.__file__) as f:
    tree = ast.parse(f.read())
  too_big = []
  for node in ast.walk(tree):
    if isinstance(node, ast.FunctionDef):
      args = node.args
      names = [a.arg for a in args.posonlyargs + args.args + args.kwonlyargs]
      names += [a.arg for a in (args.vararg, args.kwarg) if a]
      names = [n for n in names if n not in ('self', 'cls')]
      lines = node.end_lineno - node.lineno + 1
      if lines > 40 or len(names) > 5:
        too_big.append((node.name, lines, len(names)))
  assert not too_big, too_big


def test_train_writes_every_output(trained):
  workdir, _, stdout = trained
  results = json.loads((workdir / 'results.json').read_text())
  for key in ('img_auroc', 'pix_auroc', 'aupro'):
    assert 0.0 <= results[key] <= 1.0
  assert set(results['per_type']) == {'crack', 'hole', 'scratch', 'stain'}
  assert results['epoch'] == 3 and len(results['history']) == 3
  assert results['best_epoch']['note'].startswith('selected on the test set')
  assert len(results['known_anomalies']) == 4
  assert results['config']['data']['category'] == 'tissue'
  assert (workdir / 'results.md').read_text().startswith('# demo/tissue results')
  assert len(list((workdir / 'overlays').glob('*.png'))) == 4
  scores = results['test_scores']   # every test image, highest score first
  assert sum(r['label'] for r in scores) == sum(t['n'] for t in results['per_type'].values())
  assert {r['defect_type'] for r in scores if r['label'] == 0} == {'good'}
  assert [r['score'] for r in scores] == sorted((r['score'] for r in scores), reverse=True)
  normal = [r['wrong_order'] for r in scores if r['label'] == 0]
  assert np.mean(normal) == pytest.approx(1 - results['img_auroc'], abs=1e-9)
  assert len((workdir / 'test_scores.csv').read_text().splitlines()) == len(scores) + 1
  scalars = tensorboard_events.scalars(str(workdir / 'tensorboard'))
  for tag in ('loss', 'lr', 'ml', 'loss_n', 'loss_a', 'b_n', 'b_a', 'abnormal_chunks',
              'img_auroc'):
    assert [step for step, _ in scalars[tag]][-1] == 2, tag   # the last meta-epoch's row
  last = results['history'][-1]
  assert last['b_a'] == pytest.approx(last['b_n'] - 0.1, abs=1e-5)   # margin_tau
  assert 0.0 < last['abnormal_chunks'] <= 1.0 and results['history'][0]['loss_n'] is None
  assert scalars['loss_a'][-1][1] == pytest.approx(last['loss_a'], rel=1e-6)
  assert 'Known anomalies used for training: test/' in stdout
  assert 'results.json' in stdout and 'overlays' in stdout
  assert f"TensorBoard: tensorboard --logdir '{workdir / 'tensorboard'}'" in stdout
  assert results['anomalies_without_mask'] == []


def test_eval_mode_reproduces_the_metrics(trained, tmp_path):
  _, data_root, _ = trained
  before = json.loads((trained[0] / 'results.json').read_text())
  workdir = runs.copy_of_run(trained[0], tmp_path / 'run')
  _main(workdir, data_root, '--mode=eval')
  after = json.loads((workdir / 'results.json').read_text())
  for key in ('img_auroc', 'pix_auroc', 'aupro'):
    assert after[key] == pytest.approx(before[key], abs=1e-6)
  assert after['at_threshold'] == pytest.approx(before['at_threshold'])
  assert [r['filename'] for r in after['test_scores']] == [
      r['filename'] for r in before['test_scores']]
  assert [r['score'] for r in after['test_scores']] == pytest.approx(
      [r['score'] for r in before['test_scores']], abs=1e-6)


def test_eval_scores_with_the_taps_the_training_saved(trained, tmp_path):
  """Eval, like predict, takes the neighbourhood from predict_constants.json
  (the config here says 1)."""
  before = json.loads((trained[0] / 'results.json').read_text())
  workdir = runs.copy_of_run(trained[0], tmp_path / 'run')
  path = workdir / 'predict_constants.json'
  path.write_text(json.dumps(dict(json.loads(path.read_text()), neighbourhood=3)))
  _main(workdir, trained[1], '--mode=eval')
  after = json.loads((workdir / 'results.json').read_text())
  assert after['config']['backbone']['neighbourhood'] == 1
  assert after['pix_auroc'] != pytest.approx(before['pix_auroc'], abs=1e-6)


def test_eval_with_another_threshold_rule_uses_the_stored_calibration(trained, tmp_path):
  workdir = _trained_copy(trained, tmp_path / 'run')
  _main(workdir, trained[1], '--mode=eval', '--config.predict.threshold=val_fpr',
        '--config.predict.target_fpr=0.5')
  constants = json.loads((workdir / 'predict_constants.json').read_text())
  verdicts = json.loads((workdir / 'results.json').read_text())['at_threshold']
  # Two calibration images, at most half of them above: the lower one.
  assert verdicts['rule'] == 'val_fpr'
  assert verdicts['threshold'] == pytest.approx(min(constants['calibration_nll_scores']))
  assert verdicts['threshold'] < constants['nll_threshold']


def test_predict_ranks_a_blatant_defect_above_normals(trained, tmp_path):
  _, data_root, _ = trained
  workdir = runs.copy_of_run(trained[0], tmp_path / 'run')
  tmp_path = tmp_path / 'images'
  tmp_path.mkdir()
  good_dir = data_root / 'images' / 'tissue' / 'test' / 'good'
  names = sorted(os.listdir(good_dir))[:3]
  for name in names:
    Image.open(good_dir / name).save(tmp_path / name)
  defect = np.asarray(Image.open(good_dir / names[0])).copy()
  defect[8:40, 8:40] = (255, 0, 255)   # a large saturated magenta square
  Image.fromarray(defect).save(tmp_path / 'zz_defect.png')
  (tmp_path / 'bad.png').write_bytes(b'not an image')   # skipped, listed, not fatal
  _, stderr = _main(workdir, data_root, '--mode=predict', f'--config.predict.images={tmp_path}',
                    with_stderr=True)
  assert f'WARNING: Skipped cannot decode image {tmp_path / "bad.png"}' in stderr
  with open(workdir / 'predictions' / 'scores.csv') as f:
    table = {r['filename']: r for r in csv.DictReader(f)}
  assert table.pop('bad.png')['error'].startswith('cannot decode image')
  rows = {name: float(row['nll_score']) for name, row in table.items()}
  assert set(rows) == set(names) | {'zz_defect.png'}
  assert all(np.isfinite(list(rows.values()))) and not any(r['error'] for r in table.values())
  assert rows['zz_defect.png'] > max(rows[n] for n in names)
  assert (workdir / 'predictions' / 'zz_defect.png').is_file()


def test_predict_with_no_readable_image_fails_naming_it(trained, tmp_path):
  _, data_root, _ = trained
  workdir = runs.copy_of_run(trained[0], tmp_path / 'run')
  tmp_path = tmp_path / 'images'
  tmp_path.mkdir()
  (tmp_path / 'only.png').write_bytes(b'')
  _, stderr = _main(workdir, data_root, '--mode=predict', f'--config.predict.images={tmp_path}',
                    returncode=2, with_stderr=True)
  assert f'error: none of the 1 images in {tmp_path} could be read' in stderr
  assert str(tmp_path / 'only.png') in stderr and 'Traceback' not in stderr


def test_damaged_last_checkpoint_resumes_from_the_previous_one(trained, tmp_path):
  workdir, data_root, _ = trained
  uninterrupted = json.loads((workdir / 'results.json').read_text())
  copy = _trained_copy(trained, tmp_path / 'damaged')
  files = [os.path.join(d, f) for d, _, names in os.walk(copy / 'checkpoints' / '3')
           for f in names]
  with open(max(files, key=os.path.getsize), 'r+b') as f:
    f.truncate(10)
  stdout, stderr = _main(copy, data_root, with_stderr=True)
  assert 'WARNING: The checkpoint of meta-epoch 3 cannot be read' in stderr
  assert 'Resuming from the checkpoint of meta-epoch 2' in stdout
  assert (copy / 'checkpoints_unreadable' / '3').is_dir()
  resumed = json.loads((copy / 'results.json').read_text())
  for key in ('img_auroc', 'pix_auroc', 'aupro'):
    assert resumed[key] == pytest.approx(uninterrupted[key], abs=1e-6)


def test_anomaly_without_mask_is_named_and_counted(trained, tmp_path):
  workdir, data_root, _ = trained
  root = tmp_path / 'folder'
  shutil.copytree(data_root / 'images' / 'tissue', root / 'tissue')
  os.remove(root / 'tissue' / 'ground_truth' / 'hole' / '000_mask.png')
  copy = _trained_copy(trained, tmp_path / 'work')
  _, stderr = _main(copy, root, '--mode=eval', '--config.data.source=folder',
                    f'--config.data.tfds_dir={tmp_path / "tfds"}', with_stderr=True)
  (line,) = [l for l in stderr.splitlines() if 'no ground-truth mask' in l]   # one line
  assert re.search(r'1 of \d+ anomalous test images have no ground-truth mask '
                   r'\(test/hole/000.png\): they count in the image AUROC only', line)
  results = json.loads((copy / 'results.json').read_text())
  assert results['anomalies_without_mask'] == ['test/hole/000.png']
  assert results['notes'] == [line.split('WARNING: ', 1)[1]]
  assert f"Note: {results['notes'][0]}" in (copy / 'results.md').read_text()
  assert results['pix_auroc'] is not None


def test_a_warmup_far_past_its_target_is_noted(trained, tmp_path):
  """The reference ramp over the tiny class in batches of one image (28 batches
  a sub-epoch, one sub-epoch: progress up to 29 / 4) peaks at several times its
  target: the finished run, evaluated again with those settings, logs and
  records the note."""
  workdir, data_root, _ = trained
  copy = _trained_copy(trained, tmp_path / 'work')
  _, stderr = _main(copy, data_root, '--config.train.batch_size=1',
                    '--config.train.sub_epochs=1', '--config.train.lr_warmup=reference',
                    with_stderr=True)
  (line,) = [l for l in stderr.splitlines() if 'train.lr_warmup=reference' in l]
  assert re.search(r'warm-up reaches lr \S+, \d+\.\dx the', line)
  results = json.loads((copy / 'results.json').read_text())
  assert line.split('WARNING: ', 1)[1] in results['notes']
  uninterrupted = json.loads((workdir / 'results.json').read_text())
  assert not any('lr_warmup' in note for note in uninterrupted['notes'])   # linear: no note


@pytest.mark.slow
def test_killed_run_resumes_to_the_same_metrics(trained, tmp_path):
  _, data_root, _ = trained
  uninterrupted = json.loads((trained[0] / 'results.json').read_text())
  workdir = tmp_path / 'killed'
  process = subprocess.Popen(_cmd(workdir, data_root), cwd=runs.REPO,
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
  first = workdir / 'checkpoints' / '1'
  deadline = time.time() + 600
  while not first.exists() and time.time() < deadline and process.poll() is None:
    time.sleep(0.2)
  assert first.exists(), 'no checkpoint after the first meta-epoch'
  process.send_signal(signal.SIGKILL)
  process.wait()
  stdout = _main(workdir, data_root)
  assert 'Resuming from the checkpoint of meta-epoch' in stdout
  resumed = json.loads((workdir / 'results.json').read_text())
  for key in ('img_auroc', 'pix_auroc', 'aupro'):
    assert resumed[key] == pytest.approx(uninterrupted[key], abs=1e-6)


def test_all_strategies_train_end_to_end(trained, tmp_path):
  _, data_root, _ = trained
  _main(tmp_path / 'synth', data_root, '--config.data.anomaly_strategy=real,cutpaste,perlin',
        '--config.train.meta_epochs=2', '--config.data.synthetic_repeats=1')
  results = json.loads((tmp_path / 'synth' / 'results.json').read_text())
  for key in ('img_auroc', 'pix_auroc', 'aupro'):
    assert 0.0 <= results[key] <= 1.0


def test_notes_explain_metrics_left_n_a():
  from bgad_jax import engine
  from configs import test as test_config
  config = test_config.get_config()
  config.data.num_anomalies = 8
  arrays = dict(labels=np.array([0, 0]), has_mask=np.array([False, False]),
                filenames=np.array(['good/0.png', 'good/1.png']))
  (note,) = engine.test_set_notes(config, arrays, num_known=8)
  assert note.startswith('No anomalous test image is left: all 8 are known anomalies')
  assert 'data.num_anomalies=8' in note and '--config.data.num_anomalies=4' in note
  (note,) = engine.test_set_notes(config, arrays, num_known=0)
  assert 'test set has no anomalous image' in note
  arrays = dict(labels=np.array([0, 1, 1]), has_mask=np.array([False, False, False]),
                filenames=np.array(['good/0.png', 'a/0.png', 'a/1.png']))
  (note,) = engine.test_set_notes(config, arrays, num_known=2)
  assert note.startswith('None of the 2 anomalous test images has a ground-truth mask')


def _ensemble_config(data_root, **data):
  from configs import test as test_config
  config = test_config.get_config('tissue')
  config.data.root = str(data_root)
  config.data.update(data)
  return config


def test_ensemble_of_one_run_twice_scores_as_the_run(trained):
  """The mean of identical log-likelihood maps is the maps: the run's own metrics."""
  from bgad_jax import engine
  workdir, data_root, _ = trained
  alone = json.loads((workdir / 'results.json').read_text())
  ensemble = engine.evaluate_ensemble(_ensemble_config(data_root), [str(workdir)] * 2)
  for key in ('img_auroc', 'pix_auroc', 'aupro'):
    assert ensemble[key] == pytest.approx(alone[key], abs=1e-6)
  for defect, scores in alone['per_type'].items():
    assert ensemble['per_type'][defect] == pytest.approx(scores, abs=1e-6), defect
  assert ensemble['members'] == [str(workdir)] * 2


def test_ensemble_averages_its_members_in_any_order(trained, tmp_path):
  from bgad_jax import engine
  workdir, data_root, _ = trained
  alone = json.loads((workdir / 'results.json').read_text())
  files = alone['known_anomalies']
  other = tmp_path / 'seed 1'
  _main(other, data_root, '--config.seed=1', '--config.data.known_anomaly_files=' + ','.join(files))
  second = json.loads((other / 'results.json').read_text())
  assert second['known_anomalies'] == files
  config = _ensemble_config(data_root, known_anomaly_files=tuple(files))
  forward = engine.evaluate_ensemble(config, [str(workdir), str(other)])
  backward = engine.evaluate_ensemble(config, [str(other), str(workdir)])
  assert forward['pix_auroc'] == backward['pix_auroc'] and forward['aupro'] == backward['aupro']
  # Neither member alone: the second run's maps count.
  assert forward['pix_auroc'] not in (alone['pix_auroc'], second['pix_auroc'])


def test_ensemble_refuses_members_trained_on_other_known_files(trained, tmp_path):
  from bgad_jax import engine
  from bgad_jax.errors import ConfigError
  workdir, data_root, _ = trained
  copy = runs.copy_of_run(workdir, tmp_path / 'other files')
  results = json.loads((copy / 'results.json').read_text())
  (copy / 'results.json').write_text(json.dumps(dict(results, known_anomalies=['test/x.png'])))
  with pytest.raises(ConfigError, match='other files.*other known anomalies'):
    engine.evaluate_ensemble(_ensemble_config(data_root), [str(workdir), str(copy)])


def test_training_set_masks_follow_the_class_rule():
  """build_training_set pools by `class_mask_pooling`: with thin masks on objects
  only, a texture's one-pixel line keeps the reference's nearest sampling."""
  from skimage import data
  from bgad_jax import engine
  from bgad_jax.training.features import FrozenBackbone, training_images
  from bgad_jax.training.sharding import make_mesh
  from bgad_jax.training.training_set import downsample_masks
  from configs import test as test_config
  config = test_config.get_config()
  config.data.category, config.data.anomaly_strategy = 'grass', ('real',)
  config.data.mask_pooling, config.data.mask_pooling_on = 'thin', 'objects'
  grass = np.asarray(Image.fromarray(data.grass()).convert('RGB'))
  line = np.zeros((96, 96), np.uint8)
  line[10:12] = 1   # row 5 at 48 px: off every level's sampled rows
  examples = [dict(image=grass[r:r + 96, c:c + 96], mask=line * (r == 400), label=int(r == 400),
                   has_mask=True, defect_type='scratch' if r == 400 else 'good',
                   filename=f'{r}_{c}.png')
              for r in (0, 200, 400) for c in (0, 250)]
  normal, known = examples[:4], examples[4:]
  backbone = FrozenBackbone.load(config, make_mesh())
  known_masks = backbone.extract(known, config.data.inp_size)[0]['masks']

  def abnormal_per_level():
    training_set, _ = engine.build_training_set(
        config, backbone, training_images(config, normal, known))
    return [float(np.asarray(level.masks).sum()) for level in training_set.levels(0, 0)]

  def expected(pooling):
    return [config.data.anomaly_repeats * float(downsample_masks(known_masks, s, s, pooling).sum())
            for s in (12, 6, 3)]

  assert expected('thin') != expected('nearest')
  assert abnormal_per_level() == expected('nearest')   # grass is a texture
  config.data.mask_pooling_on = 'all'
  assert abnormal_per_level() == expected('thin')


def test_training_set_decides_texture_once(monkeypatch):
  """The taps' neighbourhood, the mask pooling and the CutPaste foreground all
  follow one verdict on the normal images, made once (`training_images`)."""
  from skimage import data
  from bgad_jax import engine
  from bgad_jax.data import synthesis
  from bgad_jax.training.features import FrozenBackbone, training_images
  from bgad_jax.training.sharding import make_mesh
  from configs import test as test_config
  config = test_config.get_config()
  config.data.category, config.data.anomaly_strategy = 'grass', ('real', 'cutpaste')
  config.data.mask_pooling, config.data.mask_pooling_on = 'thin', 'objects'
  config.backbone.neighbourhood, config.backbone.neighbourhood_on = 3, 'textures'
  config.data.in_fg_region = True
  grass = np.asarray(Image.fromarray(data.grass()).convert('RGB'))
  mask = np.zeros((96, 96), np.uint8)
  mask[40:56, 40:56] = 1
  examples = [dict(image=grass[r:r + 96, c:c + 96], mask=mask * (r == 400), label=int(r == 400),
                   has_mask=True, defect_type='hole' if r == 400 else 'good',
                   filename=f'{r}_{c}.png')
              for r in (0, 200, 400) for c in (0, 250)]
  verdicts = []
  decide = synthesis.treated_as_texture
  monkeypatch.setattr(synthesis, 'treated_as_texture',
                      lambda *args: verdicts.append(decide(*args)) or verdicts[-1])
  images = training_images(config, examples[:4], examples[4:])
  backbone = FrozenBackbone.for_class(config, make_mesh(), images.texture)
  training_set, _ = engine.build_training_set(config, backbone, images)
  assert verdicts == [True]   # the CutPaste foreground took it too: no second call
  assert backbone.neighbourhood == 3 and training_set.num_images > 4
