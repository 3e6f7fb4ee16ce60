"""bgad_jax.evaluation.report: the tables people read."""

import numpy as np

from bgad_jax.evaluation import report


def test_results_markdown_marks_unavailable_and_best_epoch():
  results = dict(name='folder/widget', epoch=25, img_auroc=0.9876, pix_auroc=None, aupro=None,
                 per_type={'crack': dict(n=3, img_auroc=1.0, pix_auroc=None)},
                 unseen=dict(n=3, img_auroc=0.5, pix_auroc=None),
                 best_epoch=dict(epoch=7, img_auroc=0.99, pix_auroc=None),
                 known_anomalies=['test/crack/000.png'])
  text = report.results_markdown(results)
  assert '| image AUROC | 98.76 |' in text and '| pixel AUROC | n/a |' in text
  assert '| crack | 3 | 100.00 | n/a |' in text and '*unseen types*' in text
  assert 'Best epoch 7 (selected on the test set' in text


def test_summary_mean_skips_unavailable():
  rows = {'a': dict(img_auroc=0.9, pix_auroc=0.8, aupro=None),
          'b': dict(img_auroc=0.7, pix_auroc=None, aupro=None)}
  text = report.summary_markdown(rows)
  assert '| **mean** | 80.00 | 80.00 | n/a |' in text


def test_overlay_outlines_mask_and_keeps_size():
  image = np.full((8, 8, 3), 100, np.uint8)
  mask = np.zeros((8, 8), np.uint8)
  mask[2:6, 2:6] = 1
  out = report.overlay(image, np.zeros((8, 8)), 0.0, 1.0, mask)
  assert out.shape == (8, 16, 3)
  assert tuple(out[2, 2]) == (0, 255, 0) and tuple(out[3, 3]) == (100, 100, 100)
