"""One configuration over several seeds (``config.seeds``): a run per seed, then mean +- sd.

One BGAD run moves by several points with its seed (the flows'
initialisation, the shuffles, the known anomalies drawn), so a single run is
a poor estimate of what a configuration gives. ``--config.seeds=0,1,2``
trains (or evaluates) one run per seed in ``<workdir>/seed_<s>`` and writes
``seeds.md`` / ``seeds.json`` with every run and the mean and sample standard
deviation of each metric.
"""

import os
from typing import Any, Callable, Dict, Optional, Sequence

from bgad_jax.evaluation import report
from bgad_jax.training.sharding import is_main_process


def seed_folder(workdir: str, seed: int) -> str:
  return os.path.join(workdir, f'seed_{seed}')


def run_seeds(config, workdir: str, seeds: Sequence[int],
              run_one: Callable[[Any, str], Dict[str, Optional[float]]]
              ) -> Dict[str, Optional[float]]:
  """``run_one(config of one seed, its folder)`` for each seed, then the summary.

  Returns:
    The mean of each headline metric over the seeds (what a sweep's summary
    shows for this configuration).
  """
  os.makedirs(workdir, exist_ok=True)
  rows = {}
  for seed in seeds:
    seed_config = config.copy_and_resolve_references()
    seed_config.seed, seed_config.seeds = seed, ()
    rows[seed] = run_one(seed_config, seed_folder(workdir, seed))
  if is_main_process():
    table = report.seeds_markdown(rows)
    with open(os.path.join(workdir, 'seeds.md'), 'w') as f:
      f.write(table)
    report.write_json(os.path.join(workdir, 'seeds.json'),
                      dict(runs={str(s): r for s, r in rows.items()},
                           statistics=report.seed_statistics(rows)))
    print(f'\n{len(seeds)} seeds of one configuration (sd: sample standard deviation):\n\n'
          + table + f"\nSummary: {os.path.join(workdir, 'seeds.md')}")
  return {k: s['mean'] for k, s in report.seed_statistics(rows).items()}
