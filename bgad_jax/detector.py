"""A trained workdir as a Python object: anomaly maps and verdicts for any images.

  from bgad_jax import Detector
  detector = Detector.load('runs/demo')
  for p in detector.predict(['a.png', pil_image, uint8_array]):
    p.anomaly_map, p.score, p.nll_score, p.anomalous

Images are scored with the map constants and the threshold fixed at training
time from normal images held out from the flows' training (or the training
images when none were held out; ``predict_constants.json``), so no test set is
needed. Each image is resized and centre-cropped as in training; its
map is brought back to the image's own size (docs/METHOD.md, "Anomaly maps").
"""

import dataclasses
import json
import os
from typing import Any, Dict, List, Sequence, Tuple, Union

import jax
import ml_collections
import numpy as np
from PIL import Image

from bgad_jax.errors import DataError, NoTrainedModelError
from bgad_jax.evaluation import calibration
from bgad_jax.evaluation import maps as maps_lib
from bgad_jax.evaluation.inference import lp_maps
from bgad_jax.training import checkpoint
from bgad_jax.training.features import FrozenBackbone
from bgad_jax.training.sharding import make_mesh
from bgad_jax.training.state import FlowTrainState
from tfds_mvtec import image_io

ImageLike = Union[str, os.PathLike, Image.Image, np.ndarray]


@dataclasses.dataclass(frozen=True)
class Prediction:
  """One image's result.

  Attributes:
    anomaly_map: float32 [H, W] at the input image's size; higher = more anomalous.
    score: the reference's image score (the map's maximum); it saturates for
      images far from normal.
    nll_score: max over pixels of -log normality; ranks like ``score`` where
      that does not saturate, and decides ``anomalous``.
    anomalous: ``nll_score`` above `Detector.threshold`.
  """
  anomaly_map: np.ndarray
  score: float
  nll_score: float
  anomalous: bool


def require_trained_model(workdir: str, train_command: str = '') -> None:
  """Raises `NoTrainedModelError` unless ``workdir`` holds a checkpoint (creates nothing).

  Args:
    train_command: the command that trains this model, for the message.
  """
  if not checkpoint.has_checkpoint(workdir):
    how = train_command or 'the training run with the same --config and --workdir'
    raise NoTrainedModelError(f'no trained model in {workdir} (no checkpoints/ in it): '
                              f'train it first: {how}')


def read_predict_constants(workdir: str) -> Dict[str, Any]:
  """The map constants and thresholds a finished training wrote into ``workdir``."""
  require_trained_model(workdir)
  path = os.path.join(workdir, 'predict_constants.json')
  if not os.path.isfile(path):
    raise NoTrainedModelError(f'the training in {workdir} did not finish ({path} is '
                              'missing): rerun its training command to resume it')
  with open(path) as f:
    return json.load(f)


def as_rgb(image: ImageLike) -> np.ndarray:
  """A path, PIL image or uint8 array (grey [H, W] / [H, W, 1], RGB, RGBA) -> uint8 [H, W, 3].

  Raises:
    ImageDecodeError: a file that cannot be decoded (named).
    DataError: an array of another dtype or shape.
  """
  if isinstance(image, (str, os.PathLike)):
    return image_io.decode_image(os.fspath(image))
  if isinstance(image, Image.Image):
    return np.asarray(image.convert('RGB'), np.uint8)
  array = np.asarray(image)
  if array.dtype != np.uint8 or array.ndim not in (2, 3) or (
      array.ndim == 3 and array.shape[2] not in (1, 3, 4)):
    raise DataError(f'an image array must be uint8 [H, W], [H, W, 1], [H, W, 3] or '
                    f'[H, W, 4]; got {array.dtype} {array.shape}')
  if array.ndim == 2:
    array = array[:, :, None]
  return np.repeat(array, 3, axis=2) if array.shape[2] == 1 else array[:, :, :3].copy()


def to_input_size(anomaly_map: np.ndarray, height: int, width: int) -> np.ndarray:
  """A [S, S] map of the centre-cropped input -> float32 [height, width].

  The model saw the centred min(height, width) square of the image (resize of
  the shorter side, then centre crop): the map is resized onto that square
  (bilinear) and its edge values extend over the strips outside it.
  """
  side = min(height, width)
  square = np.asarray(Image.fromarray(np.asarray(anomaly_map, np.float32), mode='F').resize(
      (side, side), Image.BILINEAR))
  top, left = (height - side) // 2, (width - side) // 2
  return np.pad(square, ((top, height - side - top), (left, width - side - left)), mode='edge')


class Detector:
  """The frozen backbone, the trained flows and the map constants of one workdir.

  ``map_constants``: predict_constants.json (`maps.map_constants` and the
  calibration's scores and thresholds), not the flows' fixed rotations (their
  Flax collection ``constants``).
  """

  def __init__(self, config, backbone: FrozenBackbone, state: FlowTrainState,
               map_constants: Dict[str, Any], images_per_call: int = 64):
    self.config, self.backbone, self.state = config, backbone, state
    self.map_constants, self.images_per_call = map_constants, images_per_call
    predict = config.predict   # configs saved before the threshold rules had none
    self.threshold = calibration.nll_threshold(map_constants,
                                               predict.get('threshold', 'val_max'),
                                               predict.get('target_fpr', 0.01))
    """nll score above which an image is anomalous (``predict.threshold``'s rule)."""

  @classmethod
  def load(cls, workdir: str, config=None) -> 'Detector':
    """The model trained in ``workdir``; its config from ``results.json`` unless given.

    Raises:
      NoTrainedModelError: ``workdir`` holds no finished training.
      CheckpointError: its checkpoints cannot be read or belong to another config.
    """
    constants = read_predict_constants(workdir)
    if config is None:
      with open(os.path.join(workdir, 'results.json')) as f:
        config = ml_collections.ConfigDict(json.load(f)['config'])
    # The taps' neighbourhood as the training decided it for this class (runs
    # saved before it was recorded: the config's).
    backbone = FrozenBackbone.load(config, make_mesh(), constants.get('neighbourhood'))
    template = FlowTrainState.create(config, backbone.channels(config.data.inp_size),
                                     jax.random.key(config.seed))
    state, _ = checkpoint.restore_latest(checkpoint.manager(workdir), template)
    return cls(config, backbone, state, constants)

  def score_pixels(self, images: Sequence[np.ndarray]
                   ) -> Tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Scores RGB uint8 images of any sizes, batched over every local device.

    Returns:
      (pixels uint8 [N, S, S, 3] as the model saw them, anomaly maps float32
      [N, S, S], scores [N], nll scores [N]) with S = ``data.inp_size``.
    """
    size, outputs = self.config.data.inp_size, []
    for start in range(0, len(images), self.images_per_call):
      examples = [dict(image=image, mask=np.zeros(image.shape[:2], np.uint8), has_mask=False,
                       label=0, defect_type='unknown', filename='')
                  for image in images[start:start + self.images_per_call]]
      arrays = self.backbone.preprocess(examples, size)
      lp = lp_maps(self.state, self.backbone.features(arrays['images']), self.backbone.mesh)
      outputs.append((arrays['pixels'],) + maps_lib.outputs(lp, size, self.map_constants))
    return tuple(np.concatenate(parts) for parts in zip(*outputs))

  def predict(self, images: Sequence[ImageLike]) -> List[Prediction]:
    """Anomaly maps at each input's size, scores and verdicts (see `Prediction`)."""
    rgb = [as_rgb(image) for image in images]
    _, maps, scores, nll = self.score_pixels(rgb)
    return [Prediction(to_input_size(m, *image.shape[:2]), float(s), float(n),
                       bool(n > self.threshold))
            for image, m, s, n in zip(rgb, maps, scores, nll)]
