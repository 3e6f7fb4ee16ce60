"""bgad_jax.evaluation.report: the tables people read."""

import numpy as np
import pytest

from bgad_jax.evaluation import report


def test_results_markdown_marks_unavailable_and_best_epoch():
  results = dict(name='folder/widget', epoch=25, img_auroc=0.9876, pix_auroc=None, aupro=None,
                 per_type={'crack': dict(n=3, img_auroc=1.0, pix_auroc=None),
                           'hole': dict(n=2, img_auroc=0.75, pix_auroc=0.875, aupro=0.625)},
                 unseen=dict(n=3, img_auroc=0.5, pix_auroc=None),
                 best_epoch=dict(epoch=7, img_auroc=0.99, pix_auroc=None),
                 known_anomalies=['test/crack/000.png'])
  text = report.results_markdown(results)
  assert '| image AUROC | 98.76 |' in text and '| pixel AUROC | n/a |' in text
  # results.json of runs before the per-type AUPRO have none: n/a
  assert '| crack | 3 | 100.00 | n/a | n/a |' in text
  assert '| hole | 2 | 75.00 | 87.50 | 62.50 |' in text
  assert '| *unseen types* | 3 | 50.00 | n/a | n/a |' in text
  assert 'Best epoch 7 (selected on the test set' in text
  assert 'Known (training) anomalies: test/crack/000.png' in text
  assert 'Left out of the test set' not in text
  results['config'] = dict(data=dict(exclude_from_test=['test/crack/001.png', 'test/hole/002.png']))
  assert ('Left out of the test set (data.exclude_from_test): test/crack/001.png, '
          'test/hole/002.png') in report.results_markdown(results)


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


def test_image_score_rows_order_and_wrong_order_sum_to_auroc():
  from sklearn.metrics import roc_auc_score
  labels = np.array([0, 0, 0, 1, 1, 0, 1])
  scores = np.array([0.1, 0.9, 0.5, 0.5, 0.8, 0.2, 0.3])   # one tie across the classes
  names = [f'{i}.png' for i in range(7)]
  kinds = ['good' if y == 0 else 'crack' for y in labels]
  rows = report.image_score_rows(names, kinds, labels, scores)
  assert [r['filename'] for r in rows][:2] == ['1.png', '4.png']   # highest score first
  by_name = {r['filename']: r for r in rows}
  # 1.png (normal, 0.9) outscores all 3 anomalies; 2.png (0.5) beats 0.3, ties 0.5.
  assert by_name['1.png']['wrong_order'] == 1.0
  assert by_name['2.png']['wrong_order'] == (1 + 0.5) / 3
  # 6.png (anomalous, 0.3) lies below 1.png and 2.png of the 4 normal images.
  assert by_name['6.png']['wrong_order'] == 2 / 4
  normal = [r['wrong_order'] for r in rows if r['label'] == 0]
  anomalous = [r['wrong_order'] for r in rows if r['label'] == 1]
  auroc = roc_auc_score(labels, scores)
  np.testing.assert_allclose(np.mean(normal), 1 - auroc)
  np.testing.assert_allclose(np.mean(anomalous), 1 - auroc)


def test_image_score_rows_count_as_the_definition_says():
  # Many ties (scores on a grid of 7 values): each share against a brute-force count.
  rng = np.random.default_rng(0)
  labels = rng.integers(0, 2, 300)
  scores = rng.integers(0, 7, 300) / 7.0
  rows = report.image_score_rows([f'{i}' for i in range(300)], ['x'] * 300, labels, scores)
  for row in rows:
    score, others = row['score'], scores[labels != row['label']]
    beaten = others < score if row['label'] == 0 else others > score
    expected = beaten.mean() + 0.5 * (others == score).mean()
    assert row['wrong_order'] == pytest.approx(expected, abs=1e-12)


def test_test_scores_csv_and_one_class(tmp_path):
  rows = report.image_score_rows(['a.png', 'b.png'], ['good', 'good'], np.array([0, 0]),
                                 np.array([0.25, 0.75]))
  assert [r['wrong_order'] for r in rows] == [None, None]   # no anomalies to order against
  path = tmp_path / 'test_scores.csv'
  report.write_test_scores(str(path), rows)
  lines = path.read_text().splitlines()
  assert lines[0] == 'filename,defect_type,label,score,wrong_order'
  assert lines[1] == 'b.png,good,0,0.75,' and lines[2] == 'a.png,good,0,0.25,'
