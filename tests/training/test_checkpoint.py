"""Checkpoints: exact round trip, damaged ones set aside, other models refused."""

import os

import jax
import numpy as np
import pytest

from bgad_jax.errors import CheckpointError, UserError
from bgad_jax.training import checkpoint
from bgad_jax.training.state import FlowTrainState
from configs import test as test_config


def _state(epoch, channels=(5, 8), seed=0):
  state = FlowTrainState.create(test_config.get_config(), channels, jax.random.key(seed))
  return state.replace(epoch=np.asarray(epoch, state.epoch.dtype))


def _saved(workdir, epochs=(1, 2)):
  mngr = checkpoint.manager(str(workdir))
  for epoch in epochs:   # a different seed per epoch: each checkpoint's values differ
    checkpoint.save(mngr, _state(epoch, seed=epoch), dict(history=[epoch]))
  return mngr


def _largest_file(step_dir):
  files = [os.path.join(d, f) for d, _, names in os.walk(step_dir) for f in names]
  return max(files, key=os.path.getsize)


def _leaves_equal(a, b):
  return all(np.array_equal(x, y) for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)))


def test_round_trip_is_exact(tmp_path):
  mngr = _saved(tmp_path)
  state, meta = checkpoint.restore_latest(mngr, _state(0))
  assert int(state.epoch) == 2 and meta == dict(history=[2])
  assert _leaves_equal(state.params, _state(2, seed=2).params)
  assert checkpoint.has_checkpoint(str(tmp_path))


def test_truncated_latest_is_moved_aside_and_the_previous_used(tmp_path, caplog):
  mngr = _saved(tmp_path)
  with open(_largest_file(tmp_path / 'checkpoints' / '2'), 'r+b') as f:
    f.truncate(100)
  state, meta = checkpoint.restore_latest(mngr, _state(0))
  assert int(state.epoch) == 1 and meta == dict(history=[1])
  assert _leaves_equal(state.params, _state(1, seed=1).params)
  assert (tmp_path / 'checkpoints_unreadable' / '2').is_dir()
  assert mngr.all_steps() == [1]
  assert 'meta-epoch 2 cannot be read' in caplog.text and 'instead of' in caplog.text
  # Training goes on: the same step can be written again.
  checkpoint.save(mngr, _state(2, seed=2), dict(history=[2]))
  assert int(checkpoint.restore_latest(mngr, _state(0))[0].epoch) == 2


def test_changed_bytes_are_detected(tmp_path):
  mngr = _saved(tmp_path)
  path = _largest_file(tmp_path / 'checkpoints' / '2')
  with open(path, 'r+b') as f:
    f.seek(os.path.getsize(path) // 2)
    byte = f.read(1)
    f.seek(-1, os.SEEK_CUR)
    f.write(bytes([byte[0] ^ 0xFF]))
  state, _ = checkpoint.restore_latest(mngr, _state(0))
  assert int(state.epoch) == 1


def test_no_readable_checkpoint_names_the_folder_and_moves_nothing(tmp_path):
  mngr = _saved(tmp_path)
  for step in ('1', '2'):
    os.remove(_largest_file(tmp_path / 'checkpoints' / step))
  with pytest.raises(CheckpointError) as caught:
    checkpoint.restore_latest(mngr, _state(0))
  message = str(caught.value)
  assert str(tmp_path / 'checkpoints') in message and 'meta-epoch 2' in message
  assert 'Delete' in message and isinstance(caught.value, UserError)
  assert sorted(os.listdir(tmp_path / 'checkpoints')) == ['1', '2']


def test_checkpoint_of_another_model_is_refused(tmp_path):
  _saved(tmp_path)
  fresh = checkpoint.manager(str(tmp_path))   # as a later run sees it
  with pytest.raises(checkpoint.CheckpointMismatchError,
                     match=r'constants.level_1.blocks_0.rotation has shape \(8, 8\) in the '
                           r'checkpoint, \(16, 16\) in this configuration'):
    checkpoint.restore_latest(fresh, _state(0, channels=(5, 16)))
  assert int(checkpoint.restore_latest(fresh, _state(0))[0].epoch) == 2
  assert sorted(os.listdir(tmp_path / 'checkpoints')) == ['1', '2']   # nothing moved


def test_empty_workdir_has_no_checkpoint_and_gets_no_folder(tmp_path):
  assert not checkpoint.has_checkpoint(str(tmp_path))
  assert not (tmp_path / 'checkpoints').exists()
  assert checkpoint.restore_latest(checkpoint.manager(str(tmp_path)), _state(0)) is None
