"""The whole inference graph of a trained workdir as one StableHLO file (`jax.export`).

  python main.py --mode=export --workdir=runs/demo          # runs/demo/export/bgad.stablehlo

The file holds normalisation, backbone, flows, anomaly maps, image scores and
every weight and constant: it loads with ``jax.export.deserialize`` alone
(no bgad_jax) and runs on each of its platforms. Input: uint8 [B, S, S, 3]
RGB images already resized and centre-cropped to S = ``data.inp_size``, any
batch size B. Outputs: anomaly maps float32 [B, S, S], scores [B] and nll
scores [B], equal to `Detector.score_pixels`; an image is anomalous when its
nll score exceeds ``predict_constants.json``'s ``nll_threshold``.
"""

import os
from typing import Callable, Sequence, Tuple

import jax
import jax.numpy as jnp
import numpy as np

from bgad_jax.detector import Detector
from bgad_jax.evaluation import maps as maps_lib
from bgad_jax.evaluation.inference import level_lp

PLATFORMS = ('cpu', 'cuda', 'rocm', 'tpu')
FILENAME = 'bgad.stablehlo'


def inference_function(detector: Detector) -> Callable[[jnp.ndarray], Tuple[jnp.ndarray, ...]]:
  """A pure function uint8 [B, S, S, 3] -> (maps [B, S, S], scores [B], nll scores [B])."""
  size = detector.config.data.inp_size
  backbone = detector.backbone
  # The plain depthwise convolution lowers on every platform (the shifted
  # form is a CPU speed trick chosen at trace time).
  model = backbone.model.clone(depthwise_impl='conv')
  mean = np.asarray(backbone.mean, np.float32)
  std = np.asarray(backbone.std, np.float32)
  sides = [tap.shape[1:3] for tap in jax.eval_shape(
      model.apply, backbone.variables, jax.ShapeDtypeStruct((1, size, size, 3), jnp.float32))]
  levels = [detector.state.level(i).replace(opt_state=None) for i in range(len(sides))]
  tables = [level.condition.tables(h, w) for level, (h, w) in zip(levels, sides)]

  def infer(pixels):
    images = (pixels.astype(jnp.float32) / 255.0 - mean) / std
    taps = [tap.astype(jnp.float32) for tap in model.apply(backbone.variables, images)]
    lp = [level_lp(level, tap, table) for level, tap, table in zip(levels, taps, tables)]
    return maps_lib.fixed_constant_outputs(lp, size, detector.constants)

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


def write_export(workdir: str, config, platforms: Sequence[str]) -> str:
  """Writes ``<workdir>/export/bgad.stablehlo`` lowered for ``platforms``; returns its path."""
  blob = export_stablehlo(Detector.load(workdir, config), platforms)
  folder = os.path.join(workdir, 'export')
  os.makedirs(folder, exist_ok=True)
  path = os.path.join(folder, FILENAME)
  with open(path + '.tmp', 'wb') as f:   # never half a file under the real name
    f.write(blob)
  os.replace(path + '.tmp', path)
  return path
