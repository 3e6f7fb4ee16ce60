"""Errors a user can fix: bad config, data, checkpoint or weights.

``main.py`` prints a `UserError` as one line naming the culprit (field, file or
folder) and what to do, and exits with code 2; ``--verbose`` shows the
traceback. Any other exception is a bug of ours and keeps its traceback.

Each class also derives from the builtin error it refines (ValueError,
FileNotFoundError, ...), so callers that caught those keep working. They live
here, in the lowest layer (it imports nothing), so that the dataset builders
raise them too; bgad_jax code imports them as `bgad_jax.errors`.
"""


class UserError(Exception):
  """Something the user can fix; the message names it and says how."""


class ConfigError(UserError, ValueError):
  """One or more config fields have values bgad_jax cannot run with."""


class DataError(UserError, ValueError):
  """The images, masks or labels do not allow what the config asks."""


class MissingFileError(UserError, FileNotFoundError):
  """A file or folder the run needs does not exist."""


class WeightsError(UserError, ValueError):
  """Backbone weights are missing or do not fit the backbone."""


class CheckpointError(UserError, ValueError):
  """A workdir's checkpoints cannot be used (unreadable, or another model's)."""


class NoTrainedModelError(UserError, FileNotFoundError):
  """eval / predict on a workdir that holds no trained model."""


class TrainingDivergedError(UserError, FloatingPointError):
  """The loss became NaN or infinite: the learning rate is too high for this data."""
