"""Input pipeline (spec sections 1 and 8): examples -> normalised host batches.

Everything here is numpy on the host; the engine moves batches to devices with
``jax.device_put`` and a sharding. Example dicts have:
  image uint8 [H, W, 3], mask uint8 [H, W] in {0, 1}, has_mask bool, label int
  (0 normal, 1 anomalous), defect_type str ('good' for normal), filename str.
"""

import os
from typing import Dict, Iterator, List, Optional, Sequence, Tuple

import numpy as np
from PIL import Image


class DatasetNotBuiltError(FileNotFoundError):
  """The TFDS dataset of a category has not been built yet."""


def _text(value) -> str:
  return value.decode() if isinstance(value, bytes) else str(value)


def load_examples(data_dir: str, category: str, split: str,
                  masks_required: Optional[bool] = None) -> List[Dict]:
  """Reads one split of a built tfds_mvtec dataset, sorted by filename.

  Raises:
    DatasetNotBuiltError: naming the folder and the command that builds it.
  """
  import tfds_mvtec   # imported here: TFDS start-up is slow and predict does not need it
  builder = tfds_mvtec.builder(category, data_dir, masks_required)
  if not os.path.isdir(os.fspath(builder.data_path)):
    raise DatasetNotBuiltError(
        f'dataset {builder.name}/{builder.builder_config.name} is not built in {data_dir} '
        f'(no folder {builder.data_path}). Build it with: python -m tfds_mvtec.build '
        f'--manual_dir <folder with {category}/ or mvtec_anomaly_detection.tar.xz> '
        f'--data_dir {data_dir} --categories {category}')
  source = builder.as_data_source(split=split)
  examples = []
  for i in range(len(source)):
    record = source[i]
    examples.append(dict(
        image=np.asarray(record['image']), mask=(np.asarray(record['mask'])[..., 0] > 127).astype(np.uint8),
        has_mask=bool(record['has_mask']), label=int(record['label']),
        defect_type=_text(record['defect_type']), filename=_text(record['filename'])))
  return sorted(examples, key=lambda e: e['filename'])


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
    images float32 [N, S, S, 3] ((x / 255 - mean) / std), pixels uint8
    [N, S, S, 3] (resized, not normalised), masks uint8 [N, S, S] {0, 1},
    labels int32 [N], has_mask bool [N], defect_types and filenames (object
    arrays [N]).
  """
  pixels, masks = [], []
  for example in examples:
    pixels.append(resize_and_center_crop(example['image'], inp_size, Image.LANCZOS))
    masks.append(resize_and_center_crop(example['mask'], inp_size, Image.NEAREST))
  pixels = np.stack(pixels)
  return dict(
      images=normalise(pixels, mean, std),
      pixels=pixels,
      masks=np.stack(masks).astype(np.uint8),
      labels=np.array([e['label'] for e in examples], np.int32),
      has_mask=np.array([e['has_mask'] for e in examples], bool),
      defect_types=np.array([e['defect_type'] for e in examples], object),
      filenames=np.array([e['filename'] for e in examples], object))


def normalise(pixels: np.ndarray, mean: Sequence[float], std: Sequence[float]) -> np.ndarray:
  """uint8 [..., 3] -> float32 (x / 255 - mean) / std."""
  return ((pixels.astype(np.float32) / 255.0 - np.asarray(mean, np.float32))
          / np.asarray(std, np.float32)).astype(np.float32)


def batches(arrays: Dict[str, np.ndarray], batch_size: int, shuffle: bool = False,
            seed: int = 0, drop_remainder: bool = False) -> Iterator[Dict[str, np.ndarray]]:
  """Yields batches of every array in ``arrays`` (same leading size N).

  Shapes stay static: unless ``drop_remainder``, the last batch is padded by
  repeating its first rows, and every batch carries ``valid`` (bool [B])
  marking real rows. Shuffling is a permutation from ``seed``.
  """
  n = len(next(iter(arrays.values())))
  order = np.random.default_rng(seed).permutation(n) if shuffle else np.arange(n)
  stop = n - n % batch_size if drop_remainder else n
  for start in range(0, stop, batch_size):
    index = order[start:start + batch_size]
    valid = np.ones(batch_size, bool)
    if len(index) < batch_size:
      valid[len(index):] = False
      index = np.concatenate([index, np.resize(index, batch_size - len(index))])
    batch = {key: value[index] for key, value in arrays.items()}
    batch['valid'] = valid
    yield batch


class NotEnoughAnomaliesError(ValueError):
  """A category has fewer anomalies than the run asks for."""


def _quotas(available: Dict[str, int], total: int, rng) -> Dict[str, int]:
  """Spreads ``total`` evenly over types; the remainder goes to random types."""
  types = sorted(available)
  quotas = {t: 0 for t in types}
  remaining = total
  while remaining > 0:
    open_types = [t for t in types if quotas[t] < available[t]]
    share = remaining // len(open_types)
    if share == 0:   # fewer left than open types: a random subset gets one more
      for t in rng.choice(open_types, size=remaining, replace=False):
        quotas[t] += 1
      break
    for t in open_types:
      take = min(share, available[t] - quotas[t])
      quotas[t] += take
      remaining -= take
  return quotas


def select_known_anomalies(test_examples: Sequence[Dict], num_anomalies: int,
                           count_mode: str = 'total',
                           known_defect_types: Sequence[str] = (),
                           seed: int = 0) -> Tuple[List[Dict], List[Dict]]:
  """Picks the labelled anomalies a run trains with (spec section 8, strategy 0).

  Args:
    test_examples: the test split.
    num_anomalies: how many; per defect type when ``count_mode == 'per_type'``,
      in total (spread evenly over the types, remainder at random) when 'total'.
    known_defect_types: only these types may be picked (the paper's "hard"
      setting); empty means all types.
    seed: selection seed; the result depends only on it and the file names.

  Returns:
    (known, rest): the picked examples, and the test examples without them.

  Raises:
    NotEnoughAnomaliesError, ValueError (unknown type or count_mode).
  """
  if count_mode not in ('total', 'per_type'):
    raise ValueError(f"count_mode must be 'total' or 'per_type', got {count_mode!r}")
  anomalies = sorted((e for e in test_examples if e['label'] == 1), key=lambda e: e['filename'])
  by_type: Dict[str, List[Dict]] = {}
  for example in anomalies:
    by_type.setdefault(example['defect_type'], []).append(example)
  if known_defect_types:
    unknown = sorted(set(known_defect_types) - set(by_type))
    if unknown:
      raise ValueError(f'known_defect_types {unknown} are not among the test defect types '
                       f'{sorted(by_type)}')
    by_type = {t: by_type[t] for t in known_defect_types}
  rng = np.random.default_rng(seed)
  available = {t: len(v) for t, v in by_type.items()}
  if count_mode == 'per_type':
    short = {t: n for t, n in available.items() if n < num_anomalies}
    if short:
      raise NotEnoughAnomaliesError(
          f'{num_anomalies} anomalies per type asked, but types {short} have fewer')
    quotas = {t: num_anomalies for t in available}
  else:
    if sum(available.values()) < num_anomalies:
      raise NotEnoughAnomaliesError(
          f'{num_anomalies} anomalies asked, but only {sum(available.values())} exist among '
          f'types {sorted(available)}')
    quotas = _quotas(available, num_anomalies, rng)
  known = []
  for defect_type in sorted(quotas):
    pool = by_type[defect_type]
    picks = rng.choice(len(pool), size=quotas[defect_type], replace=False)
    known.extend(pool[i] for i in sorted(picks))
  chosen = {e['filename'] for e in known}
  rest = [e for e in test_examples if e['filename'] not in chosen]
  return known, rest
