"""Detector: the training pipeline reproduced for any images, of any kind and size."""

import glob
import json
import os
import re
import shutil

import numpy as np
import pytest
from PIL import Image

from bgad_jax import Detector, detector as detector_lib
from tfds_mvtec import image_io
from bgad_jax.errors import DataError, NoTrainedModelError

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope='module')
def detector(trained):
  return Detector.load(str(trained[0]))


def _images(trained, pattern):
  return sorted(glob.glob(str(trained[1] / 'images' / 'tissue' / pattern)))


def test_held_out_normal_images_reproduce_the_training_thresholds(trained, detector):
  """Training set each threshold to the highest held-out normal score: recomputed here."""
  constants = json.loads((trained[0] / 'predict_constants.json').read_text())
  calibration = constants['calibration']
  assert calibration['source'] == 'held-out' and calibration['images'] == 2
  assert calibration['rule'] == 'val_max'
  paths = [str(trained[1] / 'images' / 'tissue' / name) for name in calibration['files']]
  assert all('/train/good/' in path for path in paths)
  results = detector.predict(paths)
  nll = [r.nll_score for r in results]
  np.testing.assert_allclose(nll, constants['calibration_nll_scores'], rtol=1e-6)
  assert max(nll) == pytest.approx(constants['nll_threshold'], rel=1e-6)
  assert detector.threshold == pytest.approx(constants['nll_threshold'], rel=1e-12)
  assert max(r.score for r in results) == pytest.approx(constants['score_threshold'], rel=1e-5)
  assert not any(r.anomalous for r in results)   # none above the highest of themselves


def test_results_report_the_test_verdicts_of_the_detector(trained, detector):
  """results.json's precision / recall / F1 are the Detector's verdicts on the test set."""
  results = json.loads((trained[0] / 'results.json').read_text())
  verdicts = results['at_threshold']
  known = set(results['known_anomalies'])
  names = [os.path.relpath(p, trained[1] / 'images' / 'tissue')
           for p in _images(trained, 'test/*/*.png')]
  names = [n for n in names if n not in known]
  flagged = [p.anomalous for p in detector.predict(
      [str(trained[1] / 'images' / 'tissue' / n) for n in names])]
  truth = [not n.startswith('test/good/') for n in names]
  tp = sum(f and t for f, t in zip(flagged, truth))
  fp = sum(f and not t for f, t in zip(flagged, truth))
  assert (verdicts['tp'], verdicts['fp']) == (tp, fp)
  assert verdicts['tp'] + verdicts['fn'] == sum(truth)
  assert verdicts['fp'] + verdicts['tn'] == len(truth) - sum(truth)
  assert verdicts['threshold'] == pytest.approx(detector.threshold)
  assert (verdicts['rule'], verdicts['calibration']) == ('val_max', 'held-out')
  assert 'precision' in (trained[0] / 'results.md').read_text()


def test_every_kind_of_input_gives_the_same_result(trained, detector):
  path = _images(trained, 'test/good/000.png')[0]
  rgb = image_io.decode_image(path)
  rgba = np.concatenate([rgb, np.full(rgb.shape[:2] + (1,), 7, np.uint8)], axis=2)
  results = detector.predict([path, Image.open(path), rgb, rgba])
  for result in results[1:]:
    np.testing.assert_array_equal(result.anomaly_map, results[0].anomaly_map)
    assert result.nll_score == results[0].nll_score
  assert results[0].anomaly_map.shape == rgb.shape[:2] and results[0].anomaly_map.dtype == np.float32
  grey = detector.predict([rgb[:, :, 0], rgb[:, :, :1]])
  np.testing.assert_array_equal(grey[0].anomaly_map, grey[1].anomaly_map)


def test_map_has_the_input_size_and_ranks_a_blatant_defect_first(trained, detector):
  path = _images(trained, 'test/good/000.png')[0]
  image = np.asarray(Image.open(path).convert('RGB').resize((96, 64)))   # non-square
  defect = image.copy()
  defect[16:48, 40:72] = (255, 0, 255)
  normal, blatant = detector.predict([image, defect])
  assert normal.anomaly_map.shape == blatant.anomaly_map.shape == (64, 96)
  assert blatant.nll_score > normal.nll_score and blatant.anomalous
  # The defect's region holds the map's highest values.
  row, col = np.unravel_index(np.argmax(blatant.anomaly_map), (64, 96))
  assert 8 <= row < 56 and 32 <= col < 80


def test_the_neighbourhood_the_training_saved_decides_the_taps(trained, tmp_path):
  """A texture-only neighbourhood is decided on the training images; predict has
  none of them, so it reads the training's decision from predict_constants.json."""
  copy = tmp_path / 'run'
  shutil.copytree(trained[0], copy)
  path = copy / 'predict_constants.json'
  constants = json.loads(path.read_text())
  assert constants['neighbourhood'] == 1
  assert Detector.load(str(copy)).backbone.neighbourhood == 1
  path.write_text(json.dumps(dict(constants, neighbourhood=3)))
  assert Detector.load(str(copy)).backbone.neighbourhood == 3
  del constants['neighbourhood']   # a run saved before the field: the config's
  path.write_text(json.dumps(constants))
  assert Detector.load(str(copy)).backbone.neighbourhood == 1


def test_to_input_size_fills_the_centre_square_and_extends_its_edges():
  square = np.arange(16, dtype=np.float32).reshape(4, 4)
  wide = detector_lib.to_input_size(square, 4, 8)
  np.testing.assert_array_equal(wide[:, 2:6], square)
  np.testing.assert_array_equal(wide[:, :2], np.repeat(square[:, :1], 2, axis=1))
  np.testing.assert_array_equal(wide[:, 6:], np.repeat(square[:, 3:], 2, axis=1))
  tall = detector_lib.to_input_size(square, 8, 4)
  np.testing.assert_array_equal(tall[2:6], square)


def test_bad_inputs_are_named(tmp_path, detector):
  with pytest.raises(DataError, match=r'uint8 \[H, W\].*float32 \(4, 4\)'):
    detector.predict([np.zeros((4, 4), np.float32)])
  junk = tmp_path / 'junk.png'
  junk.write_bytes(b'no')
  with pytest.raises(image_io.ImageDecodeError, match=re.escape(str(junk))):
    detector.predict([str(junk)])
  with pytest.raises(NoTrainedModelError, match=re.escape(str(tmp_path))):
    Detector.load(str(tmp_path))


def test_readme_snippet_runs_as_shown(trained, capsys):
  readme = open(os.path.join(REPO, 'README.md')).read()
  snippet = readme.split('### From Python')[1].split('```python\n')[1].split('```')[0]
  snippet = snippet.replace("'runs/demo'", repr(str(trained[0]))).replace(
      '~/.cache/bgad_jax/demo', str(trained[1]))
  exec(compile(snippet, 'README.md', 'exec'), {})   # pylint: disable=exec-used
  lines = capsys.readouterr().out.splitlines()
  assert [line.split()[0] for line in lines] == [
      'crack/000.png', 'good/000.png', 'hole/000.png', 'scratch/000.png', 'stain/000.png']
  assert all(line.split()[1:3] == ['(48,', '48)'] for line in lines)
