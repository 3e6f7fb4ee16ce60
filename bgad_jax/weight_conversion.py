"""PyTorch state dicts -> Flax variables.

Flows: a reference BGAD / FrEIA ``SequenceINN`` of ``AllInOneBlock`` (the
reference saves one ``decoder.state_dict()`` per level) becomes the
``{'params': ..., 'constants': ...}`` of `bgad_jax.flow.NormalizingFlow`.
Arrays may be numpy arrays or anything ``np.asarray`` accepts (torch tensors
on CPU), so this module does not import torch.
"""

import re
from typing import Any, Dict, Mapping

import numpy as np

from bgad_jax.flow import CONSTANTS

_FREIA_KEY = re.compile(r'^module_list\.(\d+)\.(.+)$')
_FREIA_BLOCK_KEYS = ('global_scale', 'global_offset', 'w_perm', 'w_perm_inv',
                     'subnet.0.weight', 'subnet.0.bias', 'subnet.2.weight',
                     'subnet.2.bias')


class StateDictMismatch(ValueError):
  """A state dict does not have the keys the target model needs."""


def _as_f32(value) -> np.ndarray:
  if hasattr(value, 'detach'):  # a torch tensor, without importing torch
    value = value.detach().cpu().numpy()
  return np.asarray(value, dtype=np.float32)


def flow_variables_from_freia(state_dict: Mapping[str, Any]) -> Dict[str, Any]:
  """Converts a FrEIA ``SequenceINN(AllInOneBlock...)`` state dict.

  Args:
    state_dict: keys ``module_list.{k}.{global_scale, global_offset, w_perm,
      w_perm_inv, subnet.0.weight, subnet.0.bias, subnet.2.weight, subnet.2.bias}``.

  Returns:
    Flax variables ``{'params': {'blocks_k': ...}, 'constants': {'blocks_k':
    {'rotation': [C, C]}}}`` for ``NormalizingFlow(coupling_layers=K)``.

  Raises:
    StateDictMismatch: listing missing and unexpected keys.
  """
  blocks: Dict[int, Dict[str, Any]] = {}
  unexpected = []
  for key, value in state_dict.items():
    match = _FREIA_KEY.match(key)
    if not match or match.group(2) not in _FREIA_BLOCK_KEYS:
      unexpected.append(key)
      continue
    blocks.setdefault(int(match.group(1)), {})[match.group(2)] = value
  num_blocks = max(blocks) + 1 if blocks else 0
  missing = [f'module_list.{k}.{name}' for k in range(num_blocks)
             for name in _FREIA_BLOCK_KEYS if name not in blocks.get(k, {})]
  if missing or unexpected or not blocks:
    raise StateDictMismatch(
        'Not a FrEIA SequenceINN of AllInOneBlock state dict. '
        f'missing keys: {missing or "none"}; unexpected keys: {unexpected or "none"}')

  params, constants = {}, {}
  for k in range(num_blocks):
    block = blocks[k]
    rotation = _as_f32(block['w_perm'])
    channels = rotation.shape[0]
    params[f'blocks_{k}'] = {
        'global_scale': _as_f32(block['global_scale']).reshape(channels),
        'global_offset': _as_f32(block['global_offset']).reshape(channels),
        'subnet': {
            'dense_in': {'kernel': _as_f32(block['subnet.0.weight']).T,
                         'bias': _as_f32(block['subnet.0.bias'])},
            'dense_out': {'kernel': _as_f32(block['subnet.2.weight']).T,
                          'bias': _as_f32(block['subnet.2.bias'])},
        },
    }
    constants[f'blocks_{k}'] = {'rotation': rotation.reshape(channels, channels)}
  return {'params': params, CONSTANTS: constants}
