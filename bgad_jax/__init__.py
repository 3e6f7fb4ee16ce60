"""bgad_jax: BGAD (boundary-guided semi-push-pull anomaly detection) in JAX/Flax.

Layers, each importing only the ones above it in this list:
  data/        image decoding, input pipeline, known anomalies, anomaly strategies, demo data
  models/      backbone, flow, positional condition, weight import
  training/    frozen features, training set, plan, state, jitted step, losses, schedule,
               checkpoints
  evaluation/  lp inference, anomaly maps, metrics, report
  detector     a trained workdir as an object: Detector.load(workdir).predict(images)
  settings     config checks and parsing, once per run (`settings.resolve`)
  engine       train / eval / predict;  cli  the command line
  errors.py (UserError, raised by every layer) imports nothing from bgad_jax.
The method, in our words: docs/METHOD.md.
"""

from bgad_jax.detector import Detector, Prediction
from bgad_jax.errors import UserError
from bgad_jax.models.flow import (CONSTANTS, CouplingBlock, NormalizingFlow,
                                  log_likelihood, per_dim_log_likelihood)
from bgad_jax.models.pos_embed import positional_encoding_2d
from bgad_jax.training import losses
from bgad_jax.training.features import FrozenBackbone
from bgad_jax.training.losses import bgad_loss, normal_only_loss
from bgad_jax.training.state import FlowTrainState
from bgad_jax.training.training_set import TrainingSet

__version__ = '0.1.0'

__all__ = [
    'CONSTANTS', 'CouplingBlock', 'Detector', 'FlowTrainState', 'FrozenBackbone',
    'NormalizingFlow', 'Prediction', 'TrainingSet', 'UserError', 'bgad_loss', 'log_likelihood',
    'losses', 'normal_only_loss', 'per_dim_log_likelihood', 'positional_encoding_2d',
]
