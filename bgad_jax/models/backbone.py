"""Frozen feature extractor: the EfficientNet family in pure Flax (docs/METHOD.md, "Encoder").

Variants (TF-ported numerics: 'SAME' padding, batch-norm eps 1e-3, inference
mode with running statistics):
  * ``tf_efficientnet_b0`` .. ``tf_efficientnet_b7`` (swish, squeeze-excite),
  * ``efficientnet_lite0`` .. ``efficientnet_lite4`` (ReLU6, no SE, fixed
    stem/head; the TF Lite weights, = timm's ``tf_efficientnet_lite*``).
With ``features_only`` the model returns the three NHWC maps at strides 4, 8
and 16 that timm's ``features_only=True, out_indices=(1, 2, 3)`` returns, and
skips the layers after them. Module and parameter names mirror timm's so that
`bgad_jax.weight_conversion` is a name map.
"""

import dataclasses
import math
from typing import Any, List, Tuple

import jax
from jax import lax
import jax.numpy as jnp
import numpy as np
import flax.linen as nn


@dataclasses.dataclass(frozen=True)
class StageSpec:
  kind: str          # 'ds' (depthwise-separable) or 'ir' (inverted residual)
  repeats: int
  kernel: int
  stride: int
  exp_ratio: int
  out_chs: int
  se_ratio: float    # 0: no squeeze-excite


@dataclasses.dataclass(frozen=True)
class ArchSpec:
  name: str
  act: str           # 'swish' or 'relu6'
  stem_chs: int
  head_chs: int
  stages: Tuple[StageSpec, ...]
  tap_stages: Tuple[int, ...] = (1, 2, 4)   # ends of the stride-4, 8, 16 stages


# (kind, repeats, kernel, stride, exp_ratio, out_chs) of the B0 / Lite0 base.
_BASE_STAGES = (('ds', 1, 3, 1, 1, 16), ('ir', 2, 3, 2, 6, 24), ('ir', 2, 5, 2, 6, 40),
                ('ir', 3, 3, 2, 6, 80), ('ir', 3, 5, 1, 6, 112), ('ir', 4, 5, 2, 6, 192),
                ('ir', 1, 3, 1, 6, 320))
# name -> (width multiplier, depth multiplier)
_B_SCALES = {f'tf_efficientnet_b{i}': s for i, s in enumerate(
    [(1.0, 1.0), (1.0, 1.1), (1.1, 1.2), (1.2, 1.4), (1.4, 1.8), (1.6, 2.2),
     (1.8, 2.6), (2.0, 3.1)])}
_LITE_SCALES = {f'efficientnet_lite{i}': s for i, s in enumerate(
    [(1.0, 1.0), (1.0, 1.1), (1.1, 1.2), (1.2, 1.4), (1.4, 1.8)])}
BACKBONES = tuple(_B_SCALES) + tuple(_LITE_SCALES)
IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
# TF Lite models were trained on (pixel - 127) / 128.
LITE_MEAN, LITE_STD = (127.0 / 255,) * 3, (128.0 / 255,) * 3


def make_divisible(value: float, divisor: int = 8) -> int:
  """Nearest multiple of ``divisor``, never more than 10% below ``value``."""
  rounded = max(divisor, int(value + divisor / 2) // divisor * divisor)
  return rounded + divisor if rounded < 0.9 * value else rounded


def canonical_name(name: str) -> str:
  """Accepts timm's ``tf_efficientnet_lite*`` spelling for the Lite models."""
  return name[3:] if name.startswith('tf_efficientnet_lite') else name


def arch_spec(name: str) -> ArchSpec:
  """The architecture of a named backbone (see `BACKBONES`)."""
  name = canonical_name(name)
  lite = name in _LITE_SCALES
  if not lite and name not in _B_SCALES:
    raise ValueError(f'unknown backbone {name!r}; known: {", ".join(BACKBONES)}')
  width, depth = (_LITE_SCALES if lite else _B_SCALES)[name]
  stages = []
  for i, (kind, repeats, kernel, stride, exp_ratio, out_chs) in enumerate(_BASE_STAGES):
    # Lite keeps the first and last stage depths fixed.
    fixed = lite and i in (0, len(_BASE_STAGES) - 1)
    stages.append(StageSpec(
        kind, repeats if fixed else int(math.ceil(repeats * depth)), kernel, stride,
        exp_ratio, make_divisible(out_chs * width), 0.0 if lite else 0.25))
  return ArchSpec(
      name=name, act='relu6' if lite else 'swish',
      stem_chs=32 if lite else make_divisible(32 * width),
      head_chs=1280 if lite else make_divisible(1280 * width),
      stages=tuple(stages))


def feature_channels(name: str) -> Tuple[int, ...]:
  """Channels of the three taps, e.g. (24, 40, 112) for Lite0."""
  spec = arch_spec(name)
  return tuple(spec.stages[i].out_chs for i in spec.tap_stages)


def normalization(name: str, kind: str = 'imagenet') -> Tuple[Tuple[float, ...], Tuple[float, ...]]:
  """(mean, std) for inputs in [0, 1].

  ``'imagenet'`` is what BGAD uses for every backbone; ``'backbone'`` is the
  statistics the weights were trained with (0.5-ish for Lite, ImageNet for B).
  """
  if kind == 'imagenet':
    return IMAGENET_MEAN, IMAGENET_STD
  if kind == 'backbone':
    lite = canonical_name(name) in _LITE_SCALES
    return (LITE_MEAN, LITE_STD) if lite else (IMAGENET_MEAN, IMAGENET_STD)
  raise ValueError(f"normalization must be 'imagenet' or 'backbone', got {kind!r}")


def neighbourhood_mean(tap: jnp.ndarray, size: int) -> jnp.ndarray:
  """Each feature vector averaged with its ``size`` x ``size`` neighbours.

  [N, h, w, C] -> [N, h, w, C], same dtype; ``size`` 1 returns ``tap``. At the
  border only the neighbours inside the map count (no zero padding), so border
  vectors keep their scale. PatchCore's local aggregation (docs/METHOD.md,
  "Quality options").
  """
  if size == 1:
    return tap
  # flax's avg_pool(count_include_pad=False) spelled out in lax: the same
  # numbers, and jax2onnx converts it (its avg_pool patch rejects those
  # arguments).
  window = (1, size, size, 1)
  total = lax.reduce_window(tap, np.zeros((), tap.dtype), lax.add, window, (1,) * 4, 'SAME')
  count = lax.reduce_window(jnp.ones((1,) + tap.shape[1:3] + (1,), tap.dtype),
                            np.zeros((), tap.dtype), lax.add, window, (1,) * 4, 'SAME')
  return total / count


def _activation(name):
  return nn.swish if name == 'swish' else (lambda x: jnp.clip(x, 0.0, 6.0))


def _same_padding(size: int, kernel: int, stride: int) -> Tuple[int, int]:
  """TF/XLA 'SAME' padding (low, high) of one spatial axis."""
  total = max((-(-size // stride) - 1) * stride + kernel - size, 0)
  return total // 2, total - total // 2


class DepthwiseConv(nn.Module):
  """Depthwise k x k conv, 'SAME' padding, no bias; kernel [k, k, 1, C] like nn.Conv's.

  ``impl``: 'conv' is XLA's grouped convolution; 'shifted' sums k*k shifted,
  per-channel-scaled slices, which XLA:CPU runs ~25x faster than its grouped
  convolution (same result to float32 rounding); 'auto' picks 'shifted' on CPU.
  """
  kernel_size: int
  stride: int = 1
  impl: str = 'auto'
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x):
    k, s, channels = self.kernel_size, self.stride, x.shape[-1]
    kernel = self.param('kernel', nn.initializers.lecun_normal(), (k, k, 1, channels))
    kernel = kernel.astype(self.dtype)
    impl = self.impl
    if impl == 'auto':
      impl = 'shifted' if jax.default_backend() == 'cpu' else 'conv'
    if impl == 'conv':
      return jax.lax.conv_general_dilated(
          x, kernel, (s, s), 'SAME', dimension_numbers=('NHWC', 'HWIO', 'NHWC'),
          feature_group_count=channels)
    if impl != 'shifted':
      raise ValueError(f"depthwise impl must be 'auto', 'conv' or 'shifted', got {impl!r}")
    height, width = x.shape[1:3]
    out_h, out_w = -(-height // s), -(-width // s)
    x = jnp.pad(x, ((0, 0), _same_padding(height, k, s), _same_padding(width, k, s), (0, 0)))
    out = None
    for i in range(k):
      for j in range(k):
        tap = x[:, i:i + s * (out_h - 1) + 1:s, j:j + s * (out_w - 1) + 1:s, :] * kernel[i, j, 0]
        out = tap if out is None else out + tap
    return out


def _conv_bn(x, features, kernel, stride, groups, conv_name, bn_name, act, dtype,
             depthwise_impl='auto'):
  """Conv (no bias, 'SAME') + batch norm (+ act), created in the calling module.

  ``groups`` is 1 (dense conv) or the channel count (depthwise conv).
  """
  if groups == 1:
    x = nn.Conv(features, (kernel, kernel), strides=stride, padding='SAME',
                use_bias=False, dtype=dtype, name=conv_name)(x)
  else:
    x = DepthwiseConv(kernel, stride, depthwise_impl, dtype, name=conv_name)(x)
  x = nn.BatchNorm(use_running_average=True, epsilon=1e-3, dtype=dtype, name=bn_name)(x)
  return act(x) if act is not None else x


class SqueezeExcite(nn.Module):
  """x * sigmoid(expand(act(reduce(mean_hw(x)))))."""
  reduced_chs: int
  act: str
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x):
    s = jnp.mean(x, axis=(1, 2), keepdims=True)
    s = nn.Conv(self.reduced_chs, (1, 1), dtype=self.dtype, name='conv_reduce')(s)
    s = _activation(self.act)(s)
    s = nn.Conv(x.shape[-1], (1, 1), dtype=self.dtype, name='conv_expand')(s)
    return x * nn.sigmoid(s)


class MBBlock(nn.Module):
  """timm's DepthwiseSeparableConv ('ds') or InvertedResidual ('ir') block."""
  kind: str
  out_chs: int
  kernel: int
  stride: int
  exp_ratio: int
  se_ratio: float
  act: str
  dtype: Any = jnp.float32
  depthwise_impl: str = 'auto'

  @nn.compact
  def __call__(self, x):
    in_chs = x.shape[-1]
    act = _activation(self.act)
    shortcut = x
    if self.kind == 'ds':
      x = _conv_bn(x, in_chs, self.kernel, self.stride, in_chs, 'conv_dw', 'bn1', act,
                   self.dtype, self.depthwise_impl)
      if self.se_ratio:
        x = SqueezeExcite(round(in_chs * self.se_ratio), self.act, self.dtype, name='se')(x)
      x = _conv_bn(x, self.out_chs, 1, 1, 1, 'conv_pw', 'bn2', None, self.dtype)
    else:
      mid_chs = make_divisible(in_chs * self.exp_ratio)
      x = _conv_bn(x, mid_chs, 1, 1, 1, 'conv_pw', 'bn1', act, self.dtype)
      x = _conv_bn(x, mid_chs, self.kernel, self.stride, mid_chs, 'conv_dw', 'bn2', act,
                   self.dtype, self.depthwise_impl)
      if self.se_ratio:
        # timm sizes the squeeze from the block input: mid * se_ratio / exp_ratio.
        x = SqueezeExcite(round(mid_chs * self.se_ratio / self.exp_ratio), self.act,
                          self.dtype, name='se')(x)
      x = _conv_bn(x, self.out_chs, 1, 1, 1, 'conv_pwl', 'bn3', None, self.dtype)
    if self.stride == 1 and in_chs == self.out_chs:
      x = x + shortcut
    return x


class EfficientNet(nn.Module):
  """EfficientNet in inference mode.

  Attributes:
    arch: the `ArchSpec` (see `arch_spec`).
    features_only: return the stride-4/8/16 taps (and skip later layers);
      otherwise return ImageNet logits.
    dtype: computation dtype (parameters stay float32); bfloat16 for accelerators.
    depthwise_impl: see `DepthwiseConv`.
  """
  arch: ArchSpec
  features_only: bool = True
  dtype: Any = jnp.float32
  depthwise_impl: str = 'auto'

  @nn.compact
  def __call__(self, images: jnp.ndarray):
    """Runs the network.

    Args:
      images: [B, H, W, 3] float32, already normalised (see `normalization`).

    Returns:
      features_only: list of 3 arrays [B, ceil(H/s), ceil(W/s), C_s] for s = 4, 8, 16,
      in ``dtype``. Otherwise [B, 1000] float32 logits.
    """
    arch, act = self.arch, _activation(self.arch.act)
    x = _conv_bn(images.astype(self.dtype), arch.stem_chs, 3, 2, 1, 'conv_stem', 'bn1',
                 act, self.dtype)
    taps: List[jnp.ndarray] = []
    last_stage = max(arch.tap_stages) if self.features_only else len(arch.stages) - 1
    for s, stage in enumerate(arch.stages[:last_stage + 1]):
      for b in range(stage.repeats):
        x = MBBlock(stage.kind, stage.out_chs, stage.kernel, stage.stride if b == 0 else 1,
                    stage.exp_ratio, stage.se_ratio, arch.act, self.dtype,
                    self.depthwise_impl, name=f'blocks_{s}_{b}')(x)
      if s in arch.tap_stages:
        taps.append(x)
    if self.features_only:
      return taps
    x = _conv_bn(x, arch.head_chs, 1, 1, 1, 'conv_head', 'bn2', act, self.dtype)
    x = jnp.mean(x, axis=(1, 2))
    return nn.Dense(1000, dtype=self.dtype, name='classifier')(x).astype(jnp.float32)
