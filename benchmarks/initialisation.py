"""Do bgad_jax's initial flows follow the reference's distribution? Many draws of each.

  python benchmarks/initialisation.py [--draws 200] [--demo_class surface] [--vectors 2048]

A training run's result depends mostly on its initial flows (parity.py's
side ``ours[official init]``), so the two initialisations must be draws from
one distribution. This script draws ``--draws`` initial flows per level on each
side (FrEIA 0.2 ``AllInOneBlock`` flows built as the reference builds them,
and `FlowTrainState.create`), evaluates every draw on the same real feature
vectors (Lite0 features of a demo class's training images, at their
positions), and compares per level the distribution over draws of: the mean,
the sd and the 1% quantile of the per-dimension log-likelihood lp, and the
mean |weight| of the subnets' layers. Two-sample Kolmogorov-Smirnov and Welch
tests per statistic; with ~15 statistics, expect one p below 0.05 in about
half of the runs by chance.
"""

import argparse
import os
import sys
import tempfile

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from benchmarks import table  # noqa: E402


def level_vectors(demo_class: str, vectors: int, seed: int = 0):
  """Per level: (features [V, C], positions [V] row-major, height, width), V = ``vectors``."""
  from bgad_jax.data import demo_data, pipeline
  from bgad_jax.models import backbone as backbone_lib
  from bgad_jax.models import weight_conversion
  import jax
  root = os.path.join(tempfile.gettempdir(), 'bgad_initialisation')
  category_dir = demo_data.generate(root, demo_class, 128, 16, 2, 1, seed=0)
  folder = os.path.join(category_dir, 'train', 'good')
  from tfds_mvtec import image_io
  images = [image_io.decode_image(os.path.join(folder, n)) for n in sorted(os.listdir(folder))]
  examples = [dict(image=i, mask=np.zeros(i.shape[:2], np.uint8), has_mask=False, label=0,
                   defect_type='good', filename='') for i in images]
  mean, std = backbone_lib.normalization('efficientnet_lite0', 'imagenet')
  arrays = pipeline.preprocess(examples, 256, mean, std)
  model, variables = weight_conversion.load_backbone('efficientnet_lite0')
  taps = jax.jit(model.apply)(variables, arrays['images'])
  rng = np.random.default_rng(seed)
  levels = []
  for tap in taps:
    tap = np.asarray(tap, np.float32)
    n, h, w, c = tap.shape
    ids = rng.choice(n * h * w, vectors, replace=False)
    levels.append((tap.reshape(-1, c)[ids], ids % (h * w), h, w))
  return levels


def _statistics(lp: np.ndarray, weights) -> dict:
  return dict(lp_mean=float(lp.mean()), lp_sd=float(lp.std()),
              lp_q01=float(np.quantile(lp, 0.01)),
              weight_in=float(np.mean([np.abs(w).mean() for w in weights[0]])),
              weight_out=float(np.mean([np.abs(w).mean() for w in weights[1]])))


def freia_draws(levels, draws: int, cond_dim: int = 128):
  import torch
  from bgad_jax.models.pos_embed import condition_tables, flow_condition
  from references import freia_reference
  rows = [[] for _ in levels]
  for draw in range(draws):
    for level, (x, positions, h, w) in enumerate(levels):
      flow = freia_reference.build_freia_flow(x.shape[1], cond_dim=cond_dim,
                                              seed=1000 * draw + level)
      cond = np.array(flow_condition(condition_tables(cond_dim, h, w), positions,
                                     factored=False)['cond'])
      with torch.no_grad():
        lp, _, _ = freia_reference.freia_lp(flow, torch.from_numpy(x), torch.from_numpy(cond))
      state = flow.state_dict()
      weights = ([state[k].numpy() for k in state if k.endswith('subnet.0.weight')],
                 [state[k].numpy() for k in state if k.endswith('subnet.2.weight')])
      rows[level].append(_statistics(lp.numpy(), weights))
  return rows


def our_draws(levels, draws: int):
  import jax
  import jax.numpy as jnp
  from bgad_jax.models import flow as flow_lib
  from bgad_jax.training.state import FlowTrainState
  from configs import common
  config = common.get_config()
  channels = [x.shape[1] for x, *_ in levels]
  tables = [FlowTrainState.create(config, channels, jax.random.key(0)).condition.tables(h, w)
            for _, _, h, w in levels]

  @jax.jit
  def lp_of(level_state, x, positions, table):
    z, logdet = level_state.apply(x, level_state.condition.flow_kwargs(table, positions))
    return flow_lib.per_dim_log_likelihood(z, logdet)

  rows = [[] for _ in levels]
  for draw in range(draws):
    state = FlowTrainState.create(config, channels, jax.random.key(draw))
    for level, (x, positions, _, _) in enumerate(levels):
      level_state = state.level(level).replace(opt_state=None)
      lp = np.asarray(lp_of(level_state, jnp.asarray(x), jnp.asarray(positions, jnp.int32),
                            tables[level]))
      blocks = level_state.params.values()
      weights = ([np.asarray(b['subnet']['dense_in']['kernel']) for b in blocks],
                 [np.asarray(b['subnet']['dense_out']['kernel']) for b in blocks])
      rows[level].append(_statistics(lp, weights))
  return rows


def compare(freia, ours):
  from scipy import stats as scipy_stats
  rows = []
  for level, (theirs, mine) in enumerate(zip(freia, ours)):
    for key in mine[0]:
      a = np.array([r[key] for r in mine])
      b = np.array([r[key] for r in theirs])
      rows.append(dict(level=level, statistic=key, ours=f'{a.mean():.4g} ± {a.std(ddof=1):.3g}',
                       freia=f'{b.mean():.4g} ± {b.std(ddof=1):.3g}',
                       ks_p=float(scipy_stats.ks_2samp(a, b).pvalue),
                       welch_p=float(scipy_stats.ttest_ind(a, b, equal_var=False).pvalue)))
  return rows


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument('--draws', type=int, default=200)
  parser.add_argument('--demo_class', default='surface')
  parser.add_argument('--vectors', type=int, default=2048)
  parser.add_argument('--json', default='')
  args = parser.parse_args(argv)
  from references.timm_shim import import_timm  # noqa: F401  (torch first, as the tests)
  levels = level_vectors(args.demo_class, args.vectors)
  rows = compare(freia_draws(levels, args.draws), our_draws(levels, args.draws))
  print(f'\n{args.draws} initial flows per side and level, lp on {args.vectors} Lite0 feature '
        f'vectors of the {args.demo_class} class per level\n')
  print(table.markdown(rows, [('level', 'level', 'd'), ('statistic', 'statistic', 's'),
                              ('ours', 'bgad_jax mean ± sd', 's'),
                              ('freia', 'FrEIA mean ± sd', 's'), ('ks_p', 'KS p', '.3f'),
                              ('welch_p', 'Welch p', '.3f')]))
  if args.json:
    import json
    with open(args.json, 'w') as f:
      json.dump(dict(settings=vars(args), rows=rows), f, indent=1)
  return rows


if __name__ == '__main__':
  main()
