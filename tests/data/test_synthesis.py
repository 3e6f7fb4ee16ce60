"""bgad_jax.data.synthesis: foreground, CutPaste and Perlin anomalies."""

import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest
from PIL import Image
from skimage import data, draw

from bgad_jax.data import synthesis

_REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _object_on_background(size=128, seed=0):
  rng = np.random.default_rng(seed)
  image = np.clip(rng.normal(60, 4, size=(size, size, 3)), 0, 255).astype(np.uint8)
  truth = np.zeros((size, size), bool)
  rr, cc = draw.ellipse(size // 2, size // 2 + 5, size // 3, size // 4, shape=truth.shape)
  truth[rr, cc] = True
  cat = np.asarray(Image.fromarray(data.chelsea()).resize((size, size)))
  image[truth] = cat[truth]   # a textured object, not a flat one
  return image, truth


def test_foreground_of_an_object_on_uniform_background():
  image, truth = _object_on_background()
  fg = synthesis.estimate_foreground(image)
  assert (fg & truth).sum() / (fg | truth).sum() >= 0.9


def test_textures_are_all_foreground():
  texture = np.asarray(Image.fromarray(data.gravel()).convert('RGB').resize((96, 96)))
  (mask,) = synthesis.foreground_masks([texture], 'carpet')
  assert mask.all()
  (estimated,) = synthesis.foreground_masks([texture], 'gravel_like_product')
  assert estimated.mean() > 0.95   # border looks like the rest: whole image


def _moon_crops(size=64, count=12):
  """A cratered texture: some crops hold a bright crater on grey ground."""
  photo = np.asarray(Image.fromarray(data.moon()).convert('RGB'))
  rng = np.random.default_rng(0)
  corners = rng.integers(0, photo.shape[0] - size, size=(count, 2))
  return [photo[r:r + size, c:c + size] for r, c in corners]


def test_a_cratered_texture_is_all_foreground_though_some_crops_look_like_objects():
  crops = _moon_crops()
  assert not all(synthesis.estimate_foreground(crop).all() for crop in crops)   # the trap
  assert synthesis.looks_like_texture(crops)
  assert all(mask.all() for mask in synthesis.foreground_masks(crops, 'moon_surface'))


def test_coins_touching_the_border_keep_their_own_foreground():
  """Neighbouring coins in the corners made the border's colour spread so wide
  that only specks passed (recall 0.04 on some); the foreground is the coin
  (its known mask), and the neighbours' edges in the corners."""
  from bgad_jax.data import demo_data
  pose = demo_data.coin_poser(64, np.random.default_rng(0))
  images, coins = zip(*(pose(k) for k in range(12)))
  assert not synthesis.looks_like_texture(images)
  for mask, coin in zip(synthesis.foreground_masks(images, 'coins'), coins):
    assert (mask & coin).sum() / coin.sum() >= 0.9
    assert (mask & coin).sum() / (mask | coin).sum() >= 0.7


def test_treated_as_texture_follows_the_foreground_mode():
  """One rule for the foreground masks and the texture-only options."""
  from bgad_jax.data import demo_data
  pose = demo_data.coin_poser(64, np.random.default_rng(0))
  coins = [pose(k)[0] for k in range(12)]
  crops = _moon_crops()
  assert synthesis.treated_as_texture(crops, 'moon_surface')
  assert not synthesis.treated_as_texture(coins, 'coins')
  assert synthesis.treated_as_texture(coins, 'carpet')        # MVTec's textures by name
  assert synthesis.treated_as_texture(coins, 'coins', 'all')   # the whole image, as told
  assert not synthesis.treated_as_texture(crops, 'moon_surface', 'folder')   # masks given


def test_foreground_masks_from_folder(tmp_path):
  mask = np.zeros((32, 32), np.uint8)
  mask[8:24, 8:24] = 255
  Image.fromarray(mask).save(tmp_path / 'img_007.png')
  (loaded,) = synthesis.foreground_masks([np.zeros((16, 16, 3), np.uint8)], 'x', 'folder',
                                         ['train/good/img_007.jpg'], str(tmp_path), 16)
  assert loaded.shape == (16, 16) and loaded[4:12, 4:12].all() and not loaded[:4].any()


def _anomaly(size=96):
  normal, _ = _object_on_background(size, seed=1)
  anomaly = normal.copy()
  mask = np.zeros((size, size), np.uint8)
  mask[40:52, 30:60] = 1
  anomaly[mask > 0] = (255, 0, 255)
  return anomaly, mask


def _unaugmented():
  """The magenta-block anomaly, a flat normal image and no augmentation (known pixels)."""
  albumentations = synthesis.albumentations_offline()
  anomaly, mask = _anomaly()
  return anomaly, mask, np.full(anomaly.shape, 50, np.uint8), [albumentations.NoOp()] * 3


def _border_ring_and_inner_point(shape):
  """A 1-px foreground ring at the border plus one inner point, (50, 50), where
  the whole 12 x 30 block of `_anomaly` fits centred."""
  foreground = np.zeros(shape, bool)
  foreground[[0, -1]], foreground[:, [0, -1]] = True, True
  foreground[50, 50] = True
  return foreground


@pytest.mark.parametrize('seed', range(4))
def test_cut_paste_changes_only_its_mask(seed):
  anomaly, mask = _anomaly()
  normal, truth = _object_on_background(96, seed=2)
  out, out_mask = synthesis.cut_paste(anomaly, mask, normal, truth, np.random.default_rng(seed))
  assert out_mask.dtype == np.uint8 and set(np.unique(out_mask)) <= {0, 1}
  assert out_mask.sum() > 0
  np.testing.assert_array_equal(out[out_mask == 0], normal[out_mask == 0])
  # The mask marks the pasted (magenta-ish) pixels.
  pasted = out[out_mask == 1].astype(int)
  assert np.mean(np.abs(pasted - normal[out_mask == 1]).sum(-1) > 30) > 0.8


def test_cut_paste_moves_regions_into_a_small_foreground():
  anomaly, mask = _anomaly()
  normal = np.full((96, 96, 3), 50, np.uint8)
  foreground = np.zeros((96, 96), bool)
  foreground[5:35, 60:92] = True   # far from the defect's position
  from scipy import ndimage
  near = ndimage.binary_dilation(foreground, iterations=2)   # centroid rounding
  for seed in range(5):
    _, out_mask = synthesis.cut_paste(anomaly, mask, normal, foreground,
                                      np.random.default_rng(seed))
    # Each region's centre is moved onto a foreground point (as the reference does).
    for region in range(1, ndimage.label(out_mask, np.ones((3, 3)))[1] + 1):
      labels = ndimage.label(out_mask, np.ones((3, 3)))[0]
      cy, cx = np.round(ndimage.center_of_mass(labels == region)).astype(int)
      assert near[cy, cx], (seed, cy, cx)


def test_cut_paste_is_deterministic():
  anomaly, mask = _anomaly()
  normal, truth = _object_on_background(96, seed=2)
  a = synthesis.cut_paste(anomaly, mask, normal, truth, np.random.default_rng(7))
  b = synthesis.cut_paste(anomaly, mask, normal, truth, np.random.default_rng(7))
  np.testing.assert_array_equal(a[0], b[0])
  np.testing.assert_array_equal(a[1], b[1])


def test_random_placement_moves_the_unchanged_defect_to_other_backgrounds():
  anomaly, mask, normal, identity = _unaugmented()
  in_place, in_place_mask = synthesis.cut_paste(anomaly, mask, normal, None,
                                                np.random.default_rng(0), identity)
  np.testing.assert_array_equal(in_place_mask, mask)   # the reference keeps it where it was
  corners = set()
  for seed in range(6):
    out, out_mask = synthesis.cut_paste(anomaly, mask, normal, None, np.random.default_rng(seed),
                                        identity, 'random')
    rows, cols = np.nonzero(out_mask)
    assert out_mask.sum() == mask.sum()   # the whole 12 x 30 block, inside the image
    assert (rows.max() - rows.min(), cols.max() - cols.min()) == (11, 29)
    assert (out[out_mask > 0] == (255, 0, 255)).all()
    np.testing.assert_array_equal(out[out_mask == 0], normal[out_mask == 0])
    corners.add((rows.min(), cols.min()))
  assert len(corners) == 6 and (40, 30) not in corners


def test_reach_border_lets_the_border_cut_moved_copies():
  anomaly, mask, normal, identity = _unaugmented()
  foreground = _border_ring_and_inner_point(mask.shape)
  cut = 0
  for seed in range(6):
    paste = lambda reach: synthesis.cut_paste(   # noqa: E731
        anomaly, mask, normal, foreground, np.random.default_rng(seed), identity, 'random', reach)
    _, inside = paste(False)
    rows, cols = np.nonzero(inside)   # the reference: only the inner point keeps it whole
    assert inside.sum() == mask.sum() and (rows.min(), cols.min()) == (44, 36)
    out, reaching = paste(True)       # a centre on the ring: the border cuts the block
    rows, cols = np.nonzero(reaching)
    assert 0 < reaching.sum() <= mask.sum()
    assert {rows.min(), cols.min()} & {0} or {rows.max(), cols.max()} & {95}
    assert (out[reaching > 0] == (255, 0, 255)).all()
    np.testing.assert_array_equal(out[reaching == 0], normal[reaching == 0])
    cut += reaching.sum() < mask.sum()
    # The reference's own move (in_place, the defect off the foreground) keeps it whole.
    np.testing.assert_array_equal(synthesis.cut_paste(
        anomaly, mask, normal, foreground, np.random.default_rng(seed), identity, 'in_place',
        True)[1], inside)
  assert cut == 6


def test_a_share_of_the_moved_copies_reaches_the_border():
  """reach_border as a share: 1 is True and 0 False, draw for draw; in between,
  each region flips a coin."""
  anomaly, mask, normal, identity = _unaugmented()
  foreground = _border_ring_and_inner_point(mask.shape)
  paste = lambda reach, seed: synthesis.cut_paste(   # noqa: E731
      anomaly, mask, normal, foreground, np.random.default_rng(seed), identity, 'random', reach)
  for seed in range(3):
    np.testing.assert_array_equal(paste(1.0, seed)[1], paste(True, seed)[1])
    np.testing.assert_array_equal(paste(0.0, seed)[1], paste(False, seed)[1])
  cut = [paste(0.5, seed)[1].sum() < mask.sum() for seed in range(40)]
  assert 10 <= sum(cut) <= 30   # about half (the ring is nearly every allowed point)


def test_random_on_textures_moves_defects_on_textures_only():
  anomaly, mask, normal, identity = _unaugmented()
  texture = np.ones(mask.shape, bool)
  thing = np.zeros(mask.shape, bool)
  thing[20:80, 10:90] = True   # an object that holds the defect where it is
  for seed in range(3):
    rng = lambda: np.random.default_rng(seed)   # noqa: E731
    _, on_texture = synthesis.cut_paste(anomaly, mask, normal, texture, rng(), identity,
                                        'random_on_textures')
    _, randomly = synthesis.cut_paste(anomaly, mask, normal, texture, rng(), identity, 'random')
    _, on_thing = synthesis.cut_paste(anomaly, mask, normal, thing, rng(), identity,
                                      'random_on_textures')
    np.testing.assert_array_equal(on_texture, randomly)
    assert not np.array_equal(on_texture, mask)
    np.testing.assert_array_equal(on_thing, mask)


def test_unknown_placement_is_refused():
  anomaly, mask = _anomaly()
  with pytest.raises(ValueError, match='placement'):
    synthesis.cut_paste(anomaly, mask, anomaly, None, np.random.default_rng(0), placement='near')


def test_perlin_noise_any_shape():
  noise = synthesis.perlin_noise((50, 70), (4, 8), np.random.default_rng(0))
  assert noise.shape == (50, 70) and np.abs(noise).max() <= 1.5 and noise.std() > 0.1


def test_pseudo_anomalies_binary_nonempty_deterministic():
  image, _ = _object_on_background(64)
  texture = synthesis.texture_sources()[0]
  nonempty = 0
  for seed in range(8):
    out, mask = synthesis.pseudo_anomaly(image, texture, np.random.default_rng(seed))
    assert set(np.unique(mask)) <= {0, 1}
    np.testing.assert_array_equal(out[mask == 0], image[mask == 0])
    nonempty += mask.any()
  assert nonempty >= 6
  a = synthesis.pseudo_anomaly(image, texture, np.random.default_rng(3))
  b = synthesis.pseudo_anomaly(image, texture, np.random.default_rng(3))
  np.testing.assert_array_equal(a[0], b[0])


def test_texture_source_folder(tmp_path):
  (tmp_path / 'dtd' / 'blotchy').mkdir(parents=True)
  Image.fromarray(np.zeros((10, 12, 3), np.uint8)).save(tmp_path / 'dtd' / 'blotchy' / 'a.jpg')
  (texture,) = synthesis.texture_sources(str(tmp_path / 'dtd'))
  assert texture.shape == (10, 12, 3)
  with pytest.raises(FileNotFoundError, match='anomaly_source_path'):
    synthesis.texture_sources(str(tmp_path / 'empty_missing'))


def test_albumentations_is_imported_without_its_network_update_check():
  """Its import would ask PyPI for a newer version: no network call at run time."""
  probe = textwrap.dedent("""
      import socket
      attempts = []
      def refuse(*args, **kwargs):
        attempts.append(args[:1])
        raise OSError('network call')
      socket.getaddrinfo = refuse
      socket.create_connection = refuse
      from bgad_jax.data import synthesis
      augmenters = synthesis.cutpaste_augmenters()
      import os, sys
      assert 'albumentations' in sys.modules and len(augmenters) == 10
      print('attempts', attempts, os.environ['NO_ALBUMENTATIONS_UPDATE'])
  """)
  env = {k: v for k, v in os.environ.items() if k != 'NO_ALBUMENTATIONS_UPDATE'}
  result = subprocess.run([sys.executable, '-c', probe], env=env, capture_output=True,
                          text=True, cwd=_REPO, timeout=120)
  assert result.returncode == 0, result.stderr
  assert 'attempts [] 1' in result.stdout, result.stdout + result.stderr
