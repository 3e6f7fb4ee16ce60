"""The whole inference graph of a trained workdir as one file: StableHLO or ONNX.

  python main.py --mode=export --workdir=runs/demo          # runs/demo/export/bgad.stablehlo
  python main.py --mode=export --workdir=runs/demo --config.export.format=onnx   # bgad.onnx

The file holds normalisation, backbone, flows, anomaly maps, image scores and
every weight and constant. StableHLO (`jax.export`) loads with
``jax.export.deserialize`` alone (no bgad_jax) and runs on each of its
platforms; ONNX (converted from the same function by jax2onnx, the optional
``[onnx]`` extra) runs in onnxruntime. Input: uint8 [B, S, S, 3]
RGB images already resized and centre-cropped to S = ``data.inp_size``, any
batch size B. Outputs: anomaly maps float32 [B, S, S], scores [B] and nll
scores [B], equal to `Detector.score_pixels`; an image is anomalous when its
nll score exceeds ``predict_constants.json``'s ``nll_threshold``.
"""

import contextlib
import dataclasses
import io
import logging
import os
from typing import Callable, Sequence, Tuple

import jax
import jax.numpy as jnp

from bgad_jax.detector import Detector
from bgad_jax.errors import ConfigError
from bgad_jax.evaluation import maps as maps_lib
from bgad_jax.evaluation.inference import level_lp

PLATFORMS = ('cpu', 'cuda', 'rocm', 'tpu')
FORMATS = ('stablehlo', 'onnx')
FILENAMES = {'stablehlo': 'bgad.stablehlo', 'onnx': 'bgad.onnx'}
ONNX_INPUT, ONNX_OUTPUTS = 'images', ('maps', 'scores', 'nll_scores')


def inference_function(detector: Detector, portable: bool = True
                       ) -> Callable[[jnp.ndarray], Tuple[jnp.ndarray, ...]]:
  """A pure function uint8 [B, S, S, 3] -> (maps [B, S, S], scores [B], nll scores [B]).

  ``portable``: plain depthwise convolutions, which lower on every platform
  and convert to ONNX; False keeps the backbone's ``depthwise_impl`` (the
  shifted form is a CPU speed trick chosen at trace time).
  """
  size, backbone = detector.config.data.inp_size, detector.backbone
  if portable:
    backbone = dataclasses.replace(backbone, model=backbone.model.clone(depthwise_impl='conv'))
  shapes = backbone.tap_shapes(size)
  levels = [detector.state.level(i).replace(opt_state=None) for i in range(len(shapes))]
  tables = [level.condition.tables(h, w) for level, (h, w, _) in zip(levels, shapes)]

  def infer(pixels):
    taps = backbone.pixel_taps(pixels)
    lp = [level_lp(level, tap, table) for level, tap, table in zip(levels, taps, tables)]
    return maps_lib.outputs(lp, size, detector.map_constants, jnp)

  return infer


def export_stablehlo(detector: Detector, platforms: Sequence[str] = ('cpu', 'cuda', 'tpu')
                     ) -> bytes:
  """The serialized `jax.export.Exported` of `inference_function`, batch size symbolic."""
  from jax import export
  size = detector.config.data.inp_size
  batch, = export.symbolic_shape('batch')
  exported = export.export(jax.jit(inference_function(detector)), platforms=tuple(platforms))(
      jax.ShapeDtypeStruct((batch, size, size, 3), jnp.uint8))
  return bytes(exported.serialize())


def export_onnx(detector: Detector) -> bytes:
  """The serialized ONNX model of `inference_function`, batch size dynamic.

  Input ``images`` uint8 [batch, S, S, 3]; outputs ``maps`` float32
  [batch, S, S], ``scores`` and ``nll_scores`` float32 [batch].
  """
  try:
    import jax2onnx
  except ImportError as error:
    raise ConfigError("export.format='onnx' needs the [onnx] extra: "
                      'pip install -e ".[onnx]"') from error
  size = detector.config.data.inp_size
  # The converter prints debug lines and logs a warning per untyped constant
  # and per optional plugin it cannot load: none of it concerns our graph,
  # whose result the tests compare with the JAX path.
  quiet = [logging.getLogger(name) for name in ('jax2onnx', 'onnx_ir', 'onnxscript')]
  levels = [logger.level for logger in quiet]
  try:
    for logger in quiet:
      logger.setLevel(logging.ERROR)
    with contextlib.redirect_stdout(io.StringIO()):
      model = jax2onnx.to_onnx(
          inference_function(detector),
          [jax.ShapeDtypeStruct(('batch', size, size, 3), jnp.uint8)], model_name='bgad',
          input_names=[ONNX_INPUT], output_names=list(ONNX_OUTPUTS))
  finally:
    for logger, level in zip(quiet, levels):
      logger.setLevel(level)
  return model.SerializeToString()


def write_export(workdir: str, config, platforms: Sequence[str], file_format: str = 'stablehlo'
                 ) -> str:
  """Writes ``<workdir>/export/bgad.<format>`` (platforms: StableHLO only); returns its path."""
  if file_format not in FORMATS:
    raise ConfigError(f'export.format={file_format!r}: one of {", ".join(FORMATS)}')
  detector = Detector.load(workdir, config)
  blob = (export_onnx(detector) if file_format == 'onnx'
          else export_stablehlo(detector, platforms))
  folder = os.path.join(workdir, 'export')
  os.makedirs(folder, exist_ok=True)
  path = os.path.join(folder, FILENAMES[file_format])
  with open(path + '.tmp', 'wb') as f:   # never half a file under the real name
    f.write(blob)
  os.replace(path + '.tmp', path)
  return path
