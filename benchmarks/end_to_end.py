"""End to end: seconds of feature extraction, per meta-epoch and per evaluation.

  python benchmarks/end_to_end.py [--setups demo,b6] [--meta_epochs 2] [--json out.json]
  python benchmarks/end_to_end.py --setups b6,b6:dense   # the factored condition's effect
  python benchmarks/end_to_end.py --setups b6 --mvtec_sized   # the paper's setup, timed

Runs the real engine (`bgad_jax.engine.train_and_evaluate`) on the generated
demo dataset in a temporary folder:
  * demo: `configs/demo.py` as shipped (Lite0, 128x128), for ``--meta_epochs``;
  * b6: the same data at 256x256 through tf_efficientnet_b6 (the paper's
    encoder) with random weights, which cost the same time as real ones;
  * a ``:dense`` suffix sets ``flow.factored_condition=False`` (the
    reference's one matmul on [x1, c]).
Feature extraction covers the training and test images once per run (they
are not augmented); each evaluation computes the test set's lp maps and the
metrics. ``--mvtec_sized`` makes the class as large as an MVTec AD one (280
normal training images, 10 known anomalies, 100 test images) and trains with
the published 8 sub-epochs, batch 32 and 4096 vectors per step (strategy
real only). "last s/meta-epoch" is the last meta-epoch's time (no compiling);
"25x8 projected s" is features + 25 x (last meta-epoch + one evaluation), the
published schedule with an evaluation after every meta-epoch. ``--tiny``
shrinks everything for the CI smoke run.
"""

import argparse
import os
import sys
import tempfile

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from bgad_jax import engine  # noqa: E402
from configs import demo  # noqa: E402
from benchmarks import table  # noqa: E402


def random_b6_weights(path: str) -> str:
  """Writes a randomly initialised timm tf_efficientnet_b6 state dict as .npz."""
  from references.timm_shim import import_timm
  model = import_timm().create_model('tf_efficientnet_b6', pretrained=False)
  np.savez(path, **{k: v.numpy() for k, v in model.state_dict().items()})
  return path


def setup_config(setup: str, meta_epochs: int, tiny: bool, tmp: str, mvtec_sized: bool = False):
  setup, _, variant = setup.partition(':')
  if variant not in ('', 'dense'):
    raise ValueError(f'unknown variant {variant!r}: use :dense or none')
  config = demo.get_config()
  config.flow.factored_condition = variant != 'dense'
  config.train.meta_epochs = meta_epochs
  config.data.val_fraction = 0.0   # the reference's flows train on every normal image
  config.data.root = os.path.join(tmp, 'demo_data')   # generated here, then built
  if setup == 'b6':
    config.backbone.name = 'tf_efficientnet_b6'
    config.backbone.weights = random_b6_weights(os.path.join(tmp, 'b6_random.npz'))
    config.data.inp_size = 256   # the demo's 128 px images, resized as any input is
  elif setup != 'demo':
    raise ValueError(f'unknown setup {setup!r}: use demo or b6')
  if mvtec_sized:   # 30 + 4 x 20 test images, 10 of them the known anomalies
    config.data.demo.update(dict(num_train=280, num_test_good=30, num_per_defect=20))
    config.data.num_anomalies = 10
    config.train.update(dict(sub_epochs=8, batch_size=32, num_vectors=4096))
  if tiny:
    config.data.inp_size = config.data.demo.size = 32
    config.data.demo.num_train, config.data.demo.num_test_good = 8, 4
    config.data.demo.num_per_defect = 2
    config.data.num_anomalies = 4
    config.train.sub_epochs, config.train.batch_size, config.train.num_vectors = 1, 4, 64
  return config


def bench(setup: str, meta_epochs: int, tiny: bool, mvtec_sized: bool = False):
  with tempfile.TemporaryDirectory() as tmp:
    config = setup_config(setup, meta_epochs, tiny, tmp, mvtec_sized)
    results = engine.train_and_evaluate(config, os.path.join(tmp, 'run'))
  seconds, history = results['seconds'], results['history']
  evaluations = [row['eval_seconds'] for row in history if 'eval_seconds' in row]
  last_epoch_s, last_eval_s = history[-1]['train_seconds'], evaluations[-1]
  return dict(setup=setup, backbone=config.backbone.name, size=config.data.inp_size,
              sub_epochs=config.train.sub_epochs, meta_epochs=meta_epochs,
              train_images=config.data.demo.num_train,
              features_s=seconds['features'], meta_epoch_s=seconds['train'] / meta_epochs,
              last_meta_epoch_s=last_epoch_s,
              eval_s=seconds['eval'] / len(evaluations), total_s=seconds['total'],
              projected_s=seconds['features'] + 25 * (last_epoch_s + last_eval_s),
              img_auroc=results['img_auroc'])


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument('--setups', default='demo,b6')
  parser.add_argument('--meta_epochs', type=int, default=2)
  parser.add_argument('--tiny', action='store_true', help='CI smoke sizes')
  parser.add_argument('--mvtec_sized', action='store_true',
                      help='280 normal / 10 known / 100 test images, published sub-epochs')
  parser.add_argument('--json', default=None)
  args = parser.parse_args(argv)
  rows = [bench(s, args.meta_epochs, args.tiny, args.mvtec_sized)
          for s in args.setups.split(',')]
  table.report(rows, [('setup', 'setup', '8s'), ('backbone', 'backbone', '18s'),
                      ('size', 'size', '4d'), ('train_images', 'train images', '12d'),
                      ('sub_epochs', 'sub-epochs', '10d'),
                      ('features_s', 'features s', '10.1f'),
                      ('meta_epoch_s', 's/meta-epoch', '12.1f'),
                      ('last_meta_epoch_s', 'last s/meta-epoch', '17.1f'),
                      ('eval_s', 's/evaluation', '12.1f'), ('total_s', 'total s', '7.1f'),
                      ('projected_s', '25x8 projected s', '16.0f')],
               f'{args.meta_epochs} meta-epochs, demo dataset, an evaluation after each',
               args.json)
  return rows


if __name__ == '__main__':
  main()
