"""Errors a user can fix (config, data, checkpoint, weights): see tfds_mvtec.errors.

Defined in the lowest layer, tfds_mvtec (which imports nothing from
bgad_jax), so that the dataset builders raise the same classes; every
bgad_jax layer imports them from here.
"""

from tfds_mvtec.errors import (CheckpointError, ConfigError, DataError, MissingFileError,
                               NoTrainedModelError, TrainingDivergedError, UserError,
                               WeightsError)

__all__ = ['CheckpointError', 'ConfigError', 'DataError', 'MissingFileError',
           'NoTrainedModelError', 'TrainingDivergedError', 'UserError', 'WeightsError']
