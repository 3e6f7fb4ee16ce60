"""bgad_jax.models.weight_conversion: FrEIA state dicts, including malformed ones."""

import numpy as np
import pytest

from bgad_jax.models.weight_conversion import StateDictMismatch, flow_variables_from_freia
from references import freia_reference


def test_freia_state_dict_round_trip_of_shapes_and_values():
  model = freia_reference.build_freia_flow(5, coupling_layers=2, cond_dim=8)
  state = {k: v.numpy() for k, v in model.state_dict().items()}
  variables = flow_variables_from_freia(state)
  block = variables['params']['blocks_1']
  np.testing.assert_array_equal(block['subnet']['dense_in']['kernel'],
                                state['module_list.1.subnet.0.weight'].T)
  np.testing.assert_array_equal(variables['constants']['blocks_1']['rotation'],
                                state['module_list.1.w_perm'])
  assert block['global_scale'].shape == (5,)
  assert sorted(variables['params']) == ['blocks_0', 'blocks_1']


def test_converted_flows_are_copies_of_the_tensors():
  # A FrEIA flow trained on after conversion must not change the converted flow.
  import torch
  model = freia_reference.build_freia_flow(5, coupling_layers=2, cond_dim=8)
  variables = flow_variables_from_freia(model.state_dict())
  before = np.array(variables['params']['blocks_0']['global_offset'])
  with torch.no_grad():
    for param in model.parameters():
      param.add_(1.0)
  np.testing.assert_array_equal(variables['params']['blocks_0']['global_offset'], before)


def test_mismatch_lists_missing_and_unexpected_keys():
  model = freia_reference.build_freia_flow(5, coupling_layers=2)
  state = dict(model.state_dict())
  del state['module_list.1.subnet.2.bias']
  state['module_list.0.extra'] = state['module_list.0.global_scale']
  with pytest.raises(StateDictMismatch) as err:
    flow_variables_from_freia(state)
  assert 'module_list.1.subnet.2.bias' in str(err.value)
  assert 'module_list.0.extra' in str(err.value)
