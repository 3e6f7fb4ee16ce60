"""Detector: the training pipeline reproduced for any images, of any kind and size."""

import glob
import json
import os
import re

import numpy as np
import pytest
from PIL import Image

from bgad_jax import Detector, detector as detector_lib
from bgad_jax.data import image_io
from bgad_jax.errors import DataError, NoTrainedModelError

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope='module')
def detector(trained):
  return Detector.load(str(trained[0]))


def _images(trained, pattern):
  return sorted(glob.glob(str(trained[1] / 'images' / 'tissue' / pattern)))


def test_normal_training_images_reproduce_the_training_thresholds(trained, detector):
  """Training set each threshold to the highest normal training score: recomputed here."""
  constants = json.loads((trained[0] / 'predict_constants.json').read_text())
  results = detector.predict(_images(trained, 'train/good/*.png'))
  assert len(results) == 8
  nll = [r.nll_score for r in results]
  assert max(nll) == pytest.approx(constants['nll_threshold'], rel=1e-6)
  assert max(r.score for r in results) == pytest.approx(constants['score_threshold'], rel=1e-5)
  assert not any(r.anomalous for r in results)   # none above the highest of themselves


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
