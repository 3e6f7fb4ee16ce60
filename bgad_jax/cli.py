"""What main.py dispatches to: one run, or every MVTec category with a summary."""

import os

from bgad_jax import engine
from bgad_jax import validation
from bgad_jax.evaluation import report


def _print_result(results, workdir):
  with open(os.path.join(workdir, 'results.md')) as f:
    print('\n' + f.read())
  print(f'Results: {os.path.join(workdir, "results.json")} and results.md')
  print(f'Overlays: {os.path.join(workdir, "overlays")}')
  print(f'TensorBoard: tensorboard --logdir {os.path.join(workdir, "tensorboard")}')
  seconds = results['seconds']
  print(f"Time: features {seconds['features']:.0f}s, training {seconds['train']:.0f}s, "
        f"evaluation {seconds['eval']:.0f}s")


def run(config, workdir: str, mode: str):
  """Runs ``mode`` ('train', 'eval' or 'predict') of ``config`` in ``workdir``."""
  validation.validate(config)
  if config.data.category == 'all':
    from tfds_mvtec.layout import CATEGORIES
    rows = {}
    for category in CATEGORIES:
      category_config = config.copy_and_resolve_references()
      category_config.data.category = category
      rows[category] = run(category_config, os.path.join(workdir, category), mode)
    summary = report.summary_markdown(rows)
    with open(os.path.join(workdir, 'summary.md'), 'w') as f:
      f.write(summary)
    report.write_json(os.path.join(workdir, 'summary.json'), rows)
    print('\n' + summary + f'\nSummary: {os.path.join(workdir, "summary.md")}')
    return rows
  if mode == 'predict':
    csv_path = engine.predict(config, workdir)
    print(f'Scores: {csv_path}\nOverlays: {os.path.dirname(csv_path)}')
    return None
  results = (engine.train_and_evaluate(config, workdir) if mode == 'train'
             else engine.evaluate_checkpoint(config, workdir))
  _print_result(results, workdir)
  return report.headline(results)
