"""export: the StableHLO and ONNX files compute what the Detector computes, without bgad_jax."""

import dataclasses
import glob
import subprocess
import sys

import jax
import numpy as np
import pytest

from bgad_jax import Detector
from bgad_jax.detector import as_rgb
from tests.support import runs


@pytest.fixture(scope='module')
def exported(trained, tmp_path_factory):
  """(path of the file main.py --mode=export wrote, the Detector of the same workdir),
  exported from a copy of the trained run."""
  _, data_root, _ = trained
  workdir = runs.copy_of_run(trained[0], tmp_path_factory.mktemp('export') / 'run')
  stdout = runs.run_main(workdir, data_root, '--mode=export')
  path = workdir / 'export' / 'bgad.stablehlo'
  assert f'Exported: {path}' in stdout and 'uint8 [batch, 48, 48, 3]' in stdout
  return path, Detector.load(str(workdir))


def _pixels(trained, detector):
  paths = sorted(glob.glob(str(trained[1] / 'images' / 'tissue' / 'test' / '*' / '*.png')))
  return detector.score_pixels([as_rgb(p) for p in paths])


def test_exported_maps_and_scores_equal_the_jax_path(trained, exported):
  from jax import export
  path, detector = exported
  program = export.deserialize(path.read_bytes())
  assert set(program.platforms) == {'cpu', 'cuda', 'tpu'}
  pixels, maps, scores, nll = _pixels(trained, detector)
  for batch in (len(pixels), 1):   # the batch size is not fixed in the file
    out_maps, out_scores, out_nll = (np.asarray(x) for x in program.call(pixels[:batch]))
    assert out_maps.shape == maps[:batch].shape and out_maps.dtype == np.float32
    np.testing.assert_allclose(out_maps, maps[:batch], atol=1e-4)
    np.testing.assert_allclose(out_nll, nll[:batch], rtol=1e-4)
    np.testing.assert_array_equal(np.argsort(out_scores, kind='stable'),
                                  np.argsort(scores[:batch], kind='stable'))


@pytest.mark.slow
def test_exported_file_runs_without_bgad_jax(exported, tmp_path):
  code = ('import sys, numpy as np; from jax import export;'
          f'program = export.deserialize(open({str(exported[0])!r}, "rb").read());'
          'maps, scores, nll = program.call(np.full((2, 48, 48, 3), 128, np.uint8));'
          'assert "bgad_jax" not in sys.modules and "tfds_mvtec" not in sys.modules;'
          'print(maps.shape, scores.shape, nll.shape)')
  result = subprocess.run([sys.executable, '-c', code], cwd=tmp_path, capture_output=True,
                          text=True, timeout=300)
  assert result.returncode == 0, result.stderr[-2000:]
  assert result.stdout.strip() == '(2, 48, 48) (2,) (2,)'


def test_readme_export_snippet_runs_as_shown(trained, exported):
  readme = open(f'{runs.REPO}/README.md').read()
  snippet = readme.split('### Export')[1].split('```python\n')[1].split('```')[0]
  snippet = snippet.replace("'runs/demo/export/bgad.stablehlo'", repr(str(exported[0])))
  snippet = snippet.replace('(4, 128, 128, 3)', '(4, 48, 48, 3)')   # the test model's size
  namespace = {}
  exec(compile(snippet, 'README.md', 'exec'), namespace)   # pylint: disable=exec-used
  assert namespace['maps'].shape == (4, 48, 48) and namespace['nll_scores'].shape == (4,)


@pytest.mark.slow
def test_onnx_export_equals_the_jax_path_in_onnxruntime(trained, exported):
  import onnxruntime
  _, data_root, _ = trained
  workdir = exported[0].parent.parent   # the export fixture's copy of the run
  stdout = runs.run_main(workdir, data_root, '--mode=export', '--config.export.format=onnx')
  path = workdir / 'export' / 'bgad.onnx'
  assert f'Exported: {path}' in stdout and 'onnxruntime' in stdout
  options = onnxruntime.SessionOptions()
  options.log_severity_level = 3
  session = onnxruntime.InferenceSession(str(path), options, providers=['CPUExecutionProvider'])
  assert [i.name for i in session.get_inputs()] == ['images']
  assert [o.name for o in session.get_outputs()] == ['maps', 'scores', 'nll_scores']
  detector = exported[1]
  pixels, maps, scores, nll = _pixels(trained, detector)
  for batch in (len(pixels), 1):   # the batch size is dynamic
    out_maps, out_scores, out_nll = session.run(None, {'images': pixels[:batch]})
    assert out_maps.shape == maps[:batch].shape and out_maps.dtype == np.float32
    np.testing.assert_allclose(out_maps, maps[:batch], atol=1e-4)
    np.testing.assert_allclose(out_nll, nll[:batch], rtol=1e-4)
    np.testing.assert_array_equal(np.argsort(out_scores, kind='stable'),
                                  np.argsort(scores[:batch], kind='stable'))
  readme = open(f'{runs.REPO}/README.md').read()
  snippet = readme.split('### Export')[1].split('```python\n')[2].split('```')[0]
  snippet = snippet.replace("'runs/demo/export/bgad.onnx'", repr(str(path)))
  snippet = snippet.replace('(4, 128, 128, 3)', '(4, 48, 48, 3)')   # the test model's size
  namespace = {}
  exec(compile(snippet, 'README.md', 'exec'), namespace)   # pylint: disable=exec-used
  assert namespace['maps'].shape == (4, 48, 48) and namespace['nll_scores'].shape == (4,)


@pytest.mark.slow
def test_onnx_export_of_averaged_taps_equals_the_jax_path(trained, exported):
  """`best` averages the taps of texture classes (backbone.neighbourhood): the
  averaging converts to ONNX too."""
  import onnxruntime
  from bgad_jax import export as export_lib
  _, reference = exported
  detector = Detector(reference.config, dataclasses.replace(reference.backbone, neighbourhood=3),
                      reference.state, reference.map_constants)
  pixels, maps, scores, nll = _pixels(trained, detector)
  assert not np.allclose(maps, _pixels(trained, reference)[1], atol=1e-3)   # the taps changed
  options = onnxruntime.SessionOptions()
  options.log_severity_level = 3
  session = onnxruntime.InferenceSession(export_lib.export_onnx(detector), options,
                                         providers=['CPUExecutionProvider'])
  out_maps, out_scores, out_nll = session.run(None, {'images': pixels})
  # Relative: the flows were not trained on averaged taps, so the maps reach -50.
  np.testing.assert_allclose(out_maps, maps, rtol=1e-4, atol=1e-4)
  np.testing.assert_allclose(out_nll, nll, rtol=1e-4)
  np.testing.assert_allclose(out_scores, scores, rtol=1e-4, atol=1e-4)


def test_onnx_without_its_extra_is_a_config_error(monkeypatch):
  from bgad_jax import export
  from bgad_jax.errors import ConfigError
  monkeypatch.setitem(sys.modules, 'jax2onnx', None)   # import fails as when not installed
  with pytest.raises(ConfigError, match=r'\[onnx\] extra'):
    export.export_onnx(None)


@pytest.mark.parametrize('level_aggregation,score_unsmoothed,max_filter',
                         [('sum', False, 3), ('mean_log', True, 5)])
def test_exported_function_follows_the_map_options(trained, exported, level_aggregation,
                                                   score_unsmoothed, max_filter):
  """The aggregation, smoothing, maximum filter and the top-k score, recorded in the
  constants, are part of the program."""
  from bgad_jax import export as export_lib
  _, reference = exported
  options = dict(smoothing_sigma=2.0, image_score='top_k_mean', top_k_fraction=0.05,
                 level_aggregation=level_aggregation, score_unsmoothed=score_unsmoothed,
                 max_filter=max_filter)
  detector = Detector(reference.config, reference.backbone, reference.state,
                      dict(reference.map_constants, scoring=options))
  pixels, maps, scores, nll = _pixels(trained, detector)
  assert not np.allclose(maps, _pixels(trained, reference)[1], atol=1e-3)   # options applied
  out_maps, out_scores, out_nll = (np.asarray(x) for x in jax.jit(
      export_lib.inference_function(detector))(pixels))
  np.testing.assert_allclose(out_maps, maps, atol=1e-4)
  np.testing.assert_allclose(out_scores, scores, atol=1e-4)
  np.testing.assert_allclose(out_nll, nll, rtol=1e-4)
