"""Anomaly strategies: where the abnormal training images come from (docs/METHOD.md).

``data.anomaly_strategy`` names one or more of:
  real      the known anomalies themselves, each ``anomaly_repeats`` times (alias 0);
  cutpaste  per known anomaly ``synthetic_repeats`` CutPaste copies on normal
            images, inside their foreground (alias 1);
  perlin    ``synthetic_repeats`` Perlin pseudo anomalies per known anomaly, or
            per 10 images without known anomalies (alias 2).

A strategy has ``cached`` (indices of fixed training images it adds: their
backbone features are computed once) and ``num_synthetic`` images that
``draw(rng)`` makes anew every sub-epoch (the reference re-augments on every
access). Adding a strategy: a class with these three members here, its
builder in `STRATEGIES`, and the config fields it reads.
"""

import dataclasses
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np

from bgad_jax.data import synthesis

ALIASES = {'0': 'real', '1': 'cutpaste', '2': 'perlin'}


@dataclasses.dataclass(frozen=True)
class TrainingImages:
  """The images a run starts from, resized to ``inp_size``.

  pixels: uint8 [N, S, S, 3]; masks: uint8 {0, 1} [N, S, S]; filenames: [N];
  the first ``num_normal`` images are normal, the rest the known anomalies;
  texture: whether the class is a texture (`synthesis.treated_as_texture`),
  or None when not decided yet (the strategies then decide it).
  """
  pixels: np.ndarray
  masks: np.ndarray
  filenames: Sequence[str]
  num_normal: int
  texture: Optional[bool] = None

  @property
  def num_known(self) -> int:
    return len(self.pixels) - self.num_normal


Drawn = Tuple[List[np.ndarray], List[np.ndarray]]   # images uint8 [S, S, 3], masks [S, S]


@dataclasses.dataclass
class RealAnomalies:
  """Strategy `real`: the known anomalies, repeated; nothing synthetic."""
  cached: np.ndarray
  num_synthetic: int = 0

  def draw(self, rng: np.random.Generator) -> Drawn:
    del rng
    return [], []


@dataclasses.dataclass
class CutPasteAnomalies:
  """Strategy `cutpaste`: each known anomaly's augmented defect pasted on normal images."""
  images: TrainingImages
  repeats: int
  foreground: object   # list of bool [S, S] per normal image, or None (paste anywhere)
  augmenters: object
  placement: str = 'in_place'   # synthesis.PLACEMENTS
  reach_border: float = 0.0     # share of moved copies the image border may cut
  cached: np.ndarray = dataclasses.field(default_factory=lambda: np.zeros(0, int))

  @property
  def num_synthetic(self) -> int:
    return self.images.num_known * self.repeats

  def draw(self, rng: np.random.Generator) -> Drawn:
    pixels, masks, num_normal = self.images.pixels, self.images.masks, self.images.num_normal
    drawn_images, drawn_masks = [], []
    for j in range(self.num_synthetic):
      k, n = num_normal + j // self.repeats, int(rng.integers(num_normal))
      image, mask = synthesis.cut_paste(pixels[k], masks[k], pixels[n],
                                        None if self.foreground is None else self.foreground[n],
                                        rng, self.augmenters, self.placement, self.reach_border)
      drawn_images.append(image)
      drawn_masks.append(mask)
    return drawn_images, drawn_masks


@dataclasses.dataclass
class PerlinAnomalies:
  """Strategy `perlin`: DRAEM-style pseudo anomalies on random normal images."""
  images: TrainingImages
  num_synthetic: int
  textures: List[np.ndarray]
  augmenters: object
  cached: np.ndarray = dataclasses.field(default_factory=lambda: np.zeros(0, int))

  def draw(self, rng: np.random.Generator) -> Drawn:
    drawn_images, drawn_masks = [], []
    for _ in range(self.num_synthetic):
      n = int(rng.integers(self.images.num_normal))
      texture = self.textures[int(rng.integers(len(self.textures)))]
      image, mask = synthesis.pseudo_anomaly(self.images.pixels[n], texture, rng,
                                             self.augmenters)
      drawn_images.append(image)
      drawn_masks.append(mask)
    return drawn_images, drawn_masks


def _real(data_config, images: TrainingImages):
  known = np.arange(images.num_normal, len(images.pixels))
  return RealAnomalies(cached=np.tile(known, data_config.anomaly_repeats))


def _cutpaste(data_config, images: TrainingImages):
  foreground = None
  if images.num_known and data_config.in_fg_region:
    normal = slice(0, images.num_normal)
    foreground = synthesis.foreground_masks(
        images.pixels[normal], data_config.category, data_config.foreground,
        list(images.filenames[normal]), data_config.foreground_dir, data_config.inp_size,
        images.texture)
  return CutPasteAnomalies(images, data_config.synthetic_repeats, foreground,
                           synthesis.cutpaste_augmenters(), data_config.cutpaste_placement,
                           data_config.cutpaste_border_share
                           if data_config.cutpaste_reach_border else 0.0)


def _perlin(data_config, images: TrainingImages):
  count = (images.num_known or 10) * data_config.synthetic_repeats
  return PerlinAnomalies(images, count, synthesis.texture_sources(data_config.anomaly_source_path),
                         synthesis.pseudo_augmenters())


# name -> builder(config.data, TrainingImages); this order is the order of the images.
STRATEGIES: Dict[str, Callable] = {'real': _real, 'cutpaste': _cutpaste, 'perlin': _perlin}
# Strategies that transform the known anomalies, and so need some.
NEEDS_KNOWN = ('cutpaste',)


def resolve(names: Sequence[str]) -> Tuple[str, ...]:
  """Canonical strategy names (aliases 0/1/2 accepted), in `STRATEGIES` order.

  Raises:
    ValueError: naming the unknown entries.
  """
  canonical = {ALIASES.get(str(n).strip(), str(n).strip()) for n in names if str(n).strip()}
  unknown = sorted(canonical - set(STRATEGIES))
  if unknown:
    raise ValueError(f'unknown strategies {unknown}; known: {", ".join(STRATEGIES)} '
                     f'(or {", ".join(ALIASES)})')
  return tuple(n for n in STRATEGIES if n in canonical)


def build(names: Sequence[str], data_config, images: TrainingImages) -> List[object]:
  """The strategies ``names`` (see `resolve`) for ``images``."""
  return [STRATEGIES[name](data_config, images) for name in resolve(names)]
