"""errors: every error a user can fix is a UserError and still the builtin it refines."""

import pytest

import tfds_mvtec
from bgad_jax import errors
from bgad_jax.data import known_anomalies, pipeline
from tfds_mvtec import image_io
from bgad_jax.models import state_dict_io, weight_conversion
from bgad_jax.training import checkpoint


@pytest.mark.parametrize('error, builtin', [
    (errors.ConfigError, ValueError),
    (errors.DataError, ValueError),
    (errors.MissingFileError, FileNotFoundError),
    (errors.WeightsError, ValueError),
    (errors.CheckpointError, ValueError),
    (errors.NoTrainedModelError, FileNotFoundError),
    (errors.TrainingDivergedError, FloatingPointError),
    (image_io.ImageDecodeError, ValueError),
    (known_anomalies.NotEnoughAnomaliesError, ValueError),
    (known_anomalies.UnknownAnomalyFileError, ValueError),
    (pipeline.DatasetNotBuiltError, FileNotFoundError),
    (tfds_mvtec.DatasetFolderError, FileNotFoundError),
    (state_dict_io.CheckpointFormatError, ValueError),
    (weight_conversion.StateDictMismatch, ValueError),
    (checkpoint.CheckpointMismatchError, ValueError),
])
def test_user_errors_keep_their_builtin_base(error, builtin):
  assert issubclass(error, errors.UserError) and issubclass(error, builtin)


def test_internal_errors_are_not_user_errors():
  assert not issubclass(ValueError, errors.UserError)
  assert not issubclass(errors.UserError, ValueError)   # only its kinds refine builtins
