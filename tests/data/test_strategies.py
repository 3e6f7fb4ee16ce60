"""bgad_jax.data.strategies: the config fields reach the CutPaste copies."""

import numpy as np

from bgad_jax.data import strategies
from configs import demo


def _copies(reach_border: bool, draws: int = 3, share: float = 1.0):
  size, rng = 64, np.random.default_rng(0)
  normal = rng.integers(90, 110, size=(4, size, size, 3)).astype(np.uint8)
  anomaly = normal[0].copy()
  mask = np.zeros((size, size), np.uint8)
  mask[20:44, 24:40] = 1
  anomaly[mask > 0] = 250
  images = strategies.TrainingImages(np.concatenate([normal, anomaly[None]]),
                                     np.concatenate([np.zeros((4, size, size), np.uint8),
                                                     mask[None]]),
                                     [f'{i}.png' for i in range(5)], num_normal=4)
  data = demo.get_config('').data
  data.inp_size, data.foreground = size, 'all'   # a texture: every copy moved
  data.cutpaste_placement, data.cutpaste_reach_border = 'random', reach_border
  data.cutpaste_border_share = share
  data.synthetic_repeats = 10
  strategy = strategies.STRATEGIES['cutpaste'](data, images)
  masks = []
  for draw in range(draws):
    masks += strategy.draw(np.random.default_rng(draw))[1]
  return np.stack(masks)


def test_reach_border_from_the_config_lets_copies_touch_the_border():
  border = np.ones((64, 64), bool)
  border[1:-1, 1:-1] = False
  touching = lambda masks: int(sum((m[border] > 0).any() for m in masks))   # noqa: E731
  whole, reaching = _copies(False), _copies(True)
  assert len(whole) == len(reaching) == 30
  # The reference keeps a moved copy inside by half its extent around its
  # centroid, so a lopsided (distorted) copy can still touch the border: 6 of
  # 30 here, against 21 of 30 whose centres may lie anywhere.
  assert touching(reaching) >= touching(whole) + 10
  # data.cutpaste_border_share: about half of them may.
  assert touching(whole) + 3 <= touching(_copies(True, share=0.5)) <= touching(reaching) - 3
  assert touching(_copies(False, share=0.5)) == touching(whole)   # the option off
