"""bgad_jax.models.state_dict_io: torch-free reading of .pth (legacy and zip), safetensors, npz."""


import numpy as np
import pytest
import torch

from bgad_jax.models import state_dict_io
from bgad_jax.models import weight_conversion


def _torch_state():
  model = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.BatchNorm2d(4),
                              torch.nn.Linear(5, 2).to(torch.float64))
  state = model.state_dict()
  state['0.weight'] = state['0.weight'].transpose(2, 3)   # non-contiguous view
  state['half'] = torch.arange(6, dtype=torch.float16).reshape(2, 3)
  return state


def _assert_same(loaded, state):
  assert list(loaded) == list(state)
  for key, value in state.items():
    expected = value.numpy()
    assert loaded[key].dtype == expected.dtype and loaded[key].shape == expected.shape, key
    np.testing.assert_array_equal(loaded[key], expected)


def test_zip_format(tmp_path):
  state = _torch_state()
  torch.save(state, tmp_path / 'w.pth')
  _assert_same(state_dict_io.load_state_dict(str(tmp_path / 'w.pth')), state)


def test_legacy_format(tmp_path):
  state = _torch_state()
  torch.save(state, tmp_path / 'w.pth', _use_new_zipfile_serialization=False)
  _assert_same(state_dict_io.load_state_dict(str(tmp_path / 'w.pth')), state)


def test_lite_wheel_file_equals_torch_load():
  path = weight_conversion.lite_wheel_path('efficientnet_lite0')
  _assert_same(state_dict_io.load_state_dict(path),
               torch.load(path, map_location='cpu', weights_only=True))


def test_wrapped_checkpoint_and_npz_round_trip(tmp_path):
  state = _torch_state()
  torch.save({'state_dict': state, 'epoch': 3}, tmp_path / 'ckpt.pth')
  loaded = state_dict_io.load_state_dict(str(tmp_path / 'ckpt.pth'))
  _assert_same(loaded, state)
  state_dict_io.save_npz(loaded, str(tmp_path / 'w.npz'))
  _assert_same(state_dict_io.load_state_dict(str(tmp_path / 'w.npz')), state)


def test_safetensors(tmp_path):
  from safetensors.torch import save_file
  state = {k: v.contiguous() for k, v in _torch_state().items()}
  save_file(state, str(tmp_path / 'w.safetensors'))
  loaded = state_dict_io.load_state_dict(str(tmp_path / 'w.safetensors'))
  for key, value in state.items():
    np.testing.assert_array_equal(loaded[key], value.numpy())


def test_corrupt_file_names_the_file(tmp_path):
  path = tmp_path / 'broken.pth'
  path.write_bytes(b'not a checkpoint at all')
  with pytest.raises(state_dict_io.CheckpointFormatError, match='broken.pth'):
    state_dict_io.load_state_dict(str(path))


def test_refuses_code_in_pickles(tmp_path):
  class Evil:
    def __reduce__(self):
      return (print, ('should never run',))
  path = tmp_path / 'evil.pth'
  torch.save({'w': torch.zeros(2), 'x': Evil()}, path)
  with pytest.raises(state_dict_io.CheckpointFormatError, match=r'refers to \w+\.print'):
    state_dict_io.load_state_dict(str(path))
