"""bgad_jax.data.image_io: every common format to RGB uint8, masks to {0, 1}, clear errors."""

import logging

import numpy as np
import pytest
from PIL import Image

from tfds_mvtec import image_io

RGB = (np.arange(4 * 5 * 3).reshape(4, 5, 3) * 3 % 256).astype(np.uint8)


def _write(tmp_path, name, image):
  path = str(tmp_path / name)
  image.save(path)
  return path


def test_rgb_png_and_bmp(tmp_path):
  for name in ('x.png', 'x.bmp'):
    decoded = image_io.decode_image(_write(tmp_path, name, Image.fromarray(RGB)))
    np.testing.assert_array_equal(decoded, RGB)


def test_jpeg_is_close(tmp_path):
  smooth = np.broadcast_to(np.linspace(0, 200, 16, dtype=np.uint8)[None, :, None], (16, 16, 3))
  decoded = image_io.decode_image(_write(tmp_path, 'x.jpg', Image.fromarray(smooth.copy())))
  assert decoded.shape == (16, 16, 3) and decoded.dtype == np.uint8
  assert np.abs(decoded.astype(int) - smooth).max() < 12


def test_grey_is_repeated(tmp_path):
  grey = RGB[..., 0]
  decoded = image_io.decode_image(_write(tmp_path, 'g.png', Image.fromarray(grey)))
  np.testing.assert_array_equal(decoded, np.repeat(grey[:, :, None], 3, axis=2))


def test_rgba_and_palette(tmp_path):
  rgba = np.concatenate([RGB, np.full((4, 5, 1), 128, np.uint8)], axis=2)
  np.testing.assert_array_equal(
      image_io.decode_image(_write(tmp_path, 'a.png', Image.fromarray(rgba))), RGB)
  palette = Image.fromarray(RGB).convert('P', palette=Image.ADAPTIVE, colors=8)
  expected = np.asarray(palette.convert('RGB'))
  np.testing.assert_array_equal(image_io.decode_image(_write(tmp_path, 'p.png', palette)), expected)


def test_16_bit_png_is_scaled(tmp_path):
  deep = np.array([[0, 257, 65535], [32896, 1000, 2570]], np.uint16)
  decoded = image_io.decode_image(_write(tmp_path, 'd.png', Image.fromarray(deep)))
  np.testing.assert_array_equal(decoded[..., 0], [[0, 1, 255], [128, 4, 10]])


def test_mask_binarised_and_resized_with_warning(tmp_path, caplog):
  mask = np.zeros((4, 4), np.uint8)
  mask[:2, :2] = 255
  path = _write(tmp_path, 'm_mask.png', Image.fromarray(mask))
  np.testing.assert_array_equal(image_io.decode_mask(path), mask // 255)
  with caplog.at_level(logging.WARNING):
    resized = image_io.decode_mask(path, size=(8, 8))
  assert resized.shape == (8, 8) and resized[:4, :4].all() and not resized[4:].any()
  assert 'm_mask.png' in caplog.text


def test_corrupt_file_names_the_file(tmp_path):
  path = tmp_path / 'bad.png'
  path.write_bytes(b'\x89PNG\r\n\x1a\n garbage')
  with pytest.raises(image_io.ImageDecodeError, match='bad.png'):
    image_io.decode_image(str(path))
  truncated = tmp_path / 'cut.png'
  truncated.write_bytes(image_io.encode_png(RGB)[:40])
  with pytest.raises(image_io.ImageDecodeError, match='cut.png'):
    image_io.decode_image(str(truncated))
