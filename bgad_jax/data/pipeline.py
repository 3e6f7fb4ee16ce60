"""Input pipeline: examples -> normalised host arrays (docs/METHOD.md, "Inputs").

Everything here is numpy on the host; the engine moves batches to devices with
``jax.device_put`` and a sharding. Example dicts have:
  image uint8 [H, W, 3], mask uint8 [H, W] in {0, 1}, has_mask bool, label int
  (0 normal, 1 anomalous), defect_type str ('good' for normal), filename str.
"""

import os
import shlex
from typing import Dict, List, Optional, Sequence

import numpy as np
from PIL import Image

from bgad_jax.errors import MissingFileError


class DatasetNotBuiltError(MissingFileError):
  """The TFDS dataset of a category has not been built yet."""


def _text(value) -> str:
  return value.decode() if isinstance(value, bytes) else str(value)


def load_examples(data_dir: str, category: str, split: str,
                  masks_required: Optional[bool] = None, dataset: str = 'mvtec') -> List[Dict]:
  """Reads one split of a built tfds_mvtec dataset, sorted by filename.

  Args:
    dataset: its name in `tfds_mvtec.DATASETS` ('mvtec' also for own folders).

  Returns:
    Example dicts (see the module docstring); ``split`` (the dataset's own
    split name) where the dataset defines one.

  Raises:
    DatasetNotBuiltError: naming the folder and the command that builds it.
  """
  import tfds_mvtec   # imported here: TFDS start-up is slow and predict does not need it
  builder = tfds_mvtec.builder(category, data_dir, masks_required, dataset)
  if not os.path.isdir(os.fspath(builder.data_path)):
    raise DatasetNotBuiltError(
        f'dataset {builder.name}/{builder.builder_config.name} is not built in {data_dir} '
        f'(no folder {builder.data_path}): pass --config.data.root=FOLDER (the folder with '
        f'{category}/ or the dataset archive) to build it on the fly, or build it with '
        + shlex.join(['python', '-m', 'tfds_mvtec.build', '--dataset', dataset, '--manual_dir',
                      'FOLDER', '--data_dir', data_dir, '--categories', category]))
  import tensorflow_datasets as tfds
  # Pixels stay encoded until an example's image or mask is first read: a
  # process of a multi-process run decodes only its share of the images.
  source = builder.as_data_source(split=split, decoders=dict(
      image=tfds.decode.SkipDecoding(), mask=tfds.decode.SkipDecoding()))
  examples = []
  for i in range(len(source)):
    record = source[i]
    example = _Example(builder.info.features, record['image'], record['mask'])
    example.update(has_mask=bool(record['has_mask']), label=int(record['label']),
                   defect_type=_text(record['defect_type']),
                   filename=_text(record['filename']))
    if 'split' in record:
      example['split'] = _text(record['split'])
    examples.append(example)
  return sorted(examples, key=lambda e: e['filename'])


class _Example(dict):
  """An example dict whose ``image`` and ``mask`` are decoded on first access."""

  def __init__(self, features, image: bytes, mask: bytes):
    super().__init__()
    self._encoded = (features, image, mask)

  def __missing__(self, key):
    if key not in ('image', 'mask') or self._encoded is None:
      raise KeyError(key)
    features, image, mask = self._encoded
    self['image'] = np.asarray(features['image'].decode_example_np(image))
    self['mask'] = (np.asarray(features['mask'].decode_example_np(mask))[..., 0] > 127
                    ).astype(np.uint8)
    self._encoded = None
    return self[key]


def has_split(data_dir: str, category: str, split: str, dataset: str = 'mvtec') -> bool:
  """Whether the built dataset of ``category`` has ``split`` (e.g. 'validation')."""
  import tfds_mvtec
  return split in tfds_mvtec.builder(category, data_dir, None, dataset).info.splits


def resize_and_center_crop(array: np.ndarray, size: int, resample) -> np.ndarray:
  """torchvision ``Resize(size)`` (shorter side) then ``CenterCrop(size)`` on uint8 arrays.

  Args:
    array: uint8 [H, W] or [H, W, C].
    size: output side.
    resample: PIL filter; the reference uses LANCZOS ('ANTIALIAS') for images
      and NEAREST for masks.
  """
  height, width = array.shape[:2]
  if height <= width:
    new_h, new_w = size, int(size * width / height)
  else:
    new_h, new_w = int(size * height / width), size
  image = Image.fromarray(array)
  if (new_h, new_w) != (height, width):
    image = image.resize((new_w, new_h), resample)
  top = int(round((new_h - size) / 2.0))
  left = int(round((new_w - size) / 2.0))
  return np.asarray(image.crop((left, top, left + size, top + size)))


def preprocess(examples: Sequence[Dict], inp_size: int, mean: Sequence[float],
               std: Sequence[float]) -> Dict[str, np.ndarray]:
  """Resizes, crops and normalises a list of examples.

  Returns:
    `decode`'s arrays and images float32 [N, S, S, 3] ((x / 255 - mean) / std).
  """
  arrays = decode(examples, inp_size)
  return dict(images=normalise(arrays['pixels'], mean, std), **arrays)


def decode(examples: Sequence[Dict], inp_size: int) -> Dict[str, np.ndarray]:
  """Resizes and crops a list of examples, without normalising them.

  Returns:
    pixels uint8 [N, S, S, 3], masks uint8 [N, S, S] {0, 1}, and `metadata`.
  """
  pixels = resized_pixels(examples, inp_size)
  masks = [resize_and_center_crop(example['mask'], inp_size, Image.NEAREST)
           for example in examples]
  return dict(pixels=pixels, masks=np.stack(masks).astype(np.uint8), **metadata(examples))


def resized_pixels(examples: Sequence[Dict], inp_size: int) -> np.ndarray:
  """The examples' images as `decode` sizes them: uint8 [N, S, S, 3]."""
  return np.stack([resize_and_center_crop(example['image'], inp_size, Image.LANCZOS)
                   for example in examples])


def metadata(examples: Sequence[Dict]) -> Dict[str, np.ndarray]:
  """What `decode` returns without reading pixels: labels int32 [N], has_mask
  bool [N], defect_types and filenames (object arrays [N])."""
  return dict(
      labels=np.array([e['label'] for e in examples], np.int32),
      has_mask=np.array([e['has_mask'] for e in examples], bool),
      defect_types=np.array([e['defect_type'] for e in examples], object),
      filenames=np.array([e['filename'] for e in examples], object))


def normalise(pixels: np.ndarray, mean: Sequence[float], std: Sequence[float]) -> np.ndarray:
  """uint8 [..., 3] -> float32 (x / 255 - mean) / std; numpy, or jax.numpy when traced."""
  return ((pixels.astype(np.float32) / 255.0 - np.asarray(mean, np.float32))
          / np.asarray(std, np.float32)).astype(np.float32)

