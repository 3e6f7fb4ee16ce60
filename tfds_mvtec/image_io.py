"""Decoding images and masks of any common format into uint8 arrays.

Every image becomes RGB uint8 [H, W, 3] (greyscale repeated, alpha dropped,
palette expanded, 16-bit scaled to 8-bit); every mask becomes {0, 1} uint8
[H, W]. A file that cannot be decoded raises `ImageDecodeError` naming it.
"""

import io
import logging
from typing import Optional, Tuple, Union

import numpy as np
from PIL import Image

from tfds_mvtec.errors import DataError

PathOrBytes = Union[str, bytes]
IMAGE_EXTENSIONS = ('.png', '.jpg', '.jpeg', '.bmp', '.tif', '.tiff')   # what datasets may hold


class ImageDecodeError(DataError):
  """An image file is missing, truncated or not an image."""


class ImageTooLargeError(ImageDecodeError):
  """An image has more pixels than allowed (e.g. a decompression bomb): not decoded."""


def _open(source: PathOrBytes, what: str, max_pixels: Optional[int] = None) -> Image.Image:
  name = source if isinstance(source, str) else f'<{len(source)} bytes>'
  try:
    image = Image.open(source if isinstance(source, str) else io.BytesIO(source))
  except Image.DecompressionBombError as err:   # PIL's own limit, read from the header
    raise ImageTooLargeError(f'{what} {name} is too large to decode: {err}') from err
  except (OSError, SyntaxError, ValueError) as err:
    reason = ('not a known image format' if isinstance(err, Image.UnidentifiedImageError)
              else err)   # PIL's own message shows an object address for bytes
    raise ImageDecodeError(f'cannot decode {what} {name}: {reason}') from err
  width, height = image.size
  if max_pixels is not None and width * height > max_pixels:   # checked before decoding
    raise ImageTooLargeError(f'{what} {name} is {width}x{height} = {width * height} pixels; '
                             f'at most {max_pixels}')
  try:
    image.load()   # decode now, so that truncated files fail here
    return image
  except (OSError, SyntaxError, ValueError) as err:
    raise ImageDecodeError(f'cannot decode {what} {name}: {err}') from err


def _to_uint8(array: np.ndarray) -> np.ndarray:
  if array.dtype == np.uint8:
    return array
  if array.dtype == np.bool_:
    return array.astype(np.uint8) * 255
  if np.issubdtype(array.dtype, np.integer):
    # 16-bit images (PIL mode I;16 / I): scale the type's range onto 0..255.
    top = 65535 if array.max() > 255 or array.dtype == np.uint16 else 255
    return np.round(array.astype(np.float64) * (255.0 / top)).clip(0, 255).astype(np.uint8)
  return np.round(np.clip(array, 0.0, 1.0) * 255).astype(np.uint8)   # float images in [0, 1]


# Single-channel modes that PIL cannot convert to 8-bit without clipping.
_DEEP_MODES = ('I', 'I;16', 'I;16B', 'I;16L', 'F', '1')


def _single_channel(image: Image.Image) -> Optional[np.ndarray]:
  """uint8 [H, W] for deep/bilevel single-channel images (scaled, not clipped), else None."""
  return _to_uint8(np.asarray(image)) if image.mode in _DEEP_MODES else None


def decode_image(source: PathOrBytes, max_pixels: Optional[int] = None) -> np.ndarray:
  """Any PNG/JPEG/BMP/TIFF (grey, RGB, RGBA, palette, 16-bit) -> RGB uint8 [H, W, 3].

  Raises:
    ImageTooLargeError: more than ``max_pixels`` pixels (from the header, before decoding).
    ImageDecodeError: not a readable image.
  """
  image = _open(source, 'image', max_pixels)
  grey = _single_channel(image)
  if grey is not None:
    return np.repeat(grey[:, :, None], 3, axis=2)
  if image.mode != 'RGB':
    image = image.convert('RGB')   # L, LA, P, RGBA, CMYK, YCbCr ...
  return np.asarray(image, dtype=np.uint8).copy()


def decode_mask(source: PathOrBytes, size: Optional[Tuple[int, int]] = None,
                threshold: int = 127) -> np.ndarray:
  """A ground-truth mask -> {0, 1} uint8 [H, W]; pixels above ``threshold`` are defective.

  Args:
    source: file path or encoded bytes.
    size: (height, width) of the image the mask belongs to; a mask of another
      size is resized with nearest neighbour, with a warning.
    threshold: 127 (half intensity) for black/white masks; 0 for masks that
      hold a small class id per region (VisA).
  """
  image = _open(source, 'mask')
  grey = _single_channel(image)
  if grey is None:
    grey = np.asarray(image.convert('L'))
  if size is not None and grey.shape != tuple(size):
    logging.warning('mask %s is %dx%d but its image is %dx%d; resizing it (nearest)',
                    source if isinstance(source, str) else '<bytes>',
                    grey.shape[0], grey.shape[1], size[0], size[1])
    grey = np.asarray(Image.fromarray(grey).resize((size[1], size[0]), Image.NEAREST))
  return (grey > threshold).astype(np.uint8)


def encode_png(array: np.ndarray) -> bytes:
  """uint8 [H, W] or [H, W, 3] -> PNG bytes (deterministic for equal pixels)."""
  buffer = io.BytesIO()
  Image.fromarray(array).save(buffer, format='PNG')
  return buffer.getvalue()
