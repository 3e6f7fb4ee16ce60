"""Lockstep: the official training loop and bgad_jax's, compared step by step.

  python benchmarks/parity.py --reference_dir DIR --lockstep [--demo_class surface]
      [--modes supervised,supervised_nofocal,unsupervised,unsupervised_nofocal]
      [--seeds 0] [--lockstep_features official|shared] [--json lockstep.json]

Both sides start from the same flows: the official code's own initialisation
(its ``load_flow_model`` after its ``init_seeds(seed)``), converted for
bgad_jax with `weight_conversion.flow_variables_from_freia`. Both follow
bgad_jax's plan: the official loaders yield bgad_jax's image batches
(`plan.sub_epoch_plan`) and every ``torch.randperm`` of the official loop
returns the permutation that cuts bgad_jax's chunks out of that batch
(`plan.reference_permutation`). The known anomalies, schedule, loss settings
and test images are parity.py's. The official ``train_meta_epoch`` and
``validate`` run unchanged; bgad_jax runs `loop.train_meta_epoch`, the loop
that training runs.

Recorded for every optimiser step of every level, on both sides: loss, ml
(the maximum-likelihood term), loss_n, loss_a, b_n, b_a, lr and the norm of
the level's parameters after the step; after every meta-epoch, the metrics.
On the official side these are read from its own functions as it calls them
(the loss from ``backward``, the boundaries and the semi-push-pull terms from
its loss functions, lr and parameters at ``optimizer.step``); ml is computed
from the lp it produced with its own ``log_theta`` and focal weights. A mean
over an empty set is NaN there and 0 in bgad_jax (neither passes a gradient):
such values, and a loss they made NaN, are compared as 0.

``--lockstep_features official`` (default): the official side extracts its
features with timm's encoder, as it would; ``shared``: it is handed bgad_jax's
features of the same images, so that only the loops differ.
"""

import contextlib
import io
import json
import math
import time
from typing import Dict, List

import jax
import numpy as np

from benchmarks import parity
from benchmarks import table
from bgad_jax import engine, settings
from bgad_jax.models import backbone as backbone_lib
from bgad_jax.models.weight_conversion import flow_variables_from_freia
from bgad_jax.data.pipeline import preprocess
from bgad_jax.training import loop
from bgad_jax.training.features import FrozenBackbone, training_images
from bgad_jax.training.plan import sub_epoch_plan
from bgad_jax.training.sharding import make_mesh
from bgad_jax.training.state import FlowTrainState
from bgad_jax.training.step import LossSettings

QUANTITIES = ('loss', 'ml', 'loss_n', 'loss_a', 'b_n', 'b_a', 'lr', 'param_norm')
TOLERANCE = 1e-4   # relative
FIRST_STEPS = 100


def relative_difference(a: float, b: float) -> float:
  """|a - b| / max(|a|, |b|); 0 when both are 0."""
  scale = max(abs(a), abs(b))
  return abs(a - b) / scale if scale > 0 else 0.0


# ----------------------------------------------------------------------------
# The plan both sides follow


def epoch_plans(config, epoch: int, num_normal: int, num_images: int, positions: List[int]):
  """bgad_jax's `plan.SubEpochPlan` of every sub-epoch of meta-epoch ``epoch``."""
  images = num_normal if epoch == 0 else num_images
  return [sub_epoch_plan(config.seed, epoch, sub_epoch, images, config.train.batch_size,
                         positions, config.train.num_vectors)
          for sub_epoch in range(config.train.sub_epochs)]


def step_labels(plans, level: int) -> List[Dict[str, int]]:
  """(sub_epoch, batch, chunk) of each of a level's steps, in the order both sides take them."""
  labels = []
  for sub_epoch, plan in enumerate(plans):
    _, owners = plan.levels[level]
    for b in range(len(plan.batches)):
      labels += [dict(sub_epoch=sub_epoch, batch=b, chunk=k)
                 for k in range(int((owners == b).sum()))]
  return labels


class _PlanSampler:
  """A torch batch sampler yielding the queued sub-epochs' batches, one sub-epoch per pass."""

  def __init__(self):
    self.queue = []

  def __iter__(self):
    return iter([list(map(int, batch)) for batch in self.queue.pop(0)])

  def __len__(self):
    return len(self.queue[0])


@contextlib.contextmanager
def _patched(obj, name, replacement):
  """``obj.name`` is ``replacement`` within."""
  original = getattr(obj, name)
  setattr(obj, name, replacement)
  try:
    yield
  finally:
    setattr(obj, name, original)


# ----------------------------------------------------------------------------
# The official side


class _OfficialRecorder:
  """Reads each optimiser step's quantities from the official loop as it runs."""

  def __init__(self, mods, decoders, optimizer, ref):
    self.mods, self.decoders, self.optimizer, self.ref = mods, decoders, optimizer, ref
    self.steps, self.epoch, self.current = [], 0, {}

  @contextlib.contextmanager
  def recording(self):
    """Within: the official loop's steps are recorded (its functions wrapped, not changed)."""
    import torch
    engine_mod, optimizer = self.mods.engine, self.optimizer
    get_logp, boundary = engine_mod.get_logp, engine_mod.get_logp_boundary
    spp, backward, step = engine_mod.calculate_bg_spp_loss, torch.Tensor.backward, optimizer.step

    def on_logp(dim, z, logdet):   # the first call of a chunk's loss
      logp = get_logp(dim, z, logdet)
      self.current = dict(lp=(logp / dim).detach(), mask=None, loss_n=0.0, loss_a=0.0,
                          b_n=0.0, b_a=0.0)
      return logp

    def on_boundary(logps, mask, *args, **kwargs):   # chunks with abnormal vectors only
      b_n, b_a = boundary(logps, mask, *args, **kwargs)
      self.current.update(mask=mask.detach(), b_n=float(b_n), b_a=float(b_a))
      return b_n, b_a

    def on_spp(*args, **kwargs):
      loss_n, loss_a = spp(*args, **kwargs)
      self.current.update(loss_n=float(loss_n.detach()), loss_a=float(loss_a.detach()))
      return loss_n, loss_a

    def on_backward(tensor, *args, **kwargs):
      self.current['loss'] = float(tensor.detach())
      return backward(tensor, *args, **kwargs)

    def on_step(*args, **kwargs):
      level = next(l for l, d in enumerate(self.decoders)
                   if any(p.grad is not None for p in d.parameters()))
      result = step(*args, **kwargs)
      self._finish(level)
      return result

    with _patched(engine_mod, 'get_logp', on_logp), \
        _patched(engine_mod, 'get_logp_boundary', on_boundary), \
        _patched(engine_mod, 'calculate_bg_spp_loss', on_spp), \
        _patched(torch.Tensor, 'backward', on_backward), \
        _patched(optimizer, 'step', on_step):
      yield

  def _finish(self, level: int) -> None:
    import torch
    record, lp = self.current, self.current['lp']
    mask = record['mask'] if record['mask'] is not None else torch.zeros_like(lp)
    normal = lp[mask == 0]
    # ml as the official loop forms it, from its lp with its own functions.
    terms = -self.mods.engine.log_theta(normal)
    if self.ref.focal_weighting and self.epoch > 0:
      terms = terms * self.mods.engine.normal_fl_weighting(normal)
    ml = float(terms.mean())
    loss_n = 0.0 if math.isnan(record['loss_n']) else record['loss_n']
    loss_a = 0.0 if math.isnan(record['loss_a']) else record['loss_a']
    loss = record['loss']
    if math.isnan(loss):   # an empty set's NaN mean (see the module docstring)
      loss = ml + self.ref.bgspp_lambda * (loss_n + loss_a)
    with torch.no_grad():
      norm = math.sqrt(sum(float((p.double() ** 2).sum())
                           for p in self.decoders[level].parameters() if p.requires_grad))
    self.steps.append(dict(epoch=self.epoch, level=level, loss=loss, ml=ml, loss_n=loss_n,
                           loss_a=loss_a, b_n=record['b_n'], b_a=record['b_a'],
                           lr=self.optimizer.param_groups[0]['lr'], param_norm=norm,
                           official_loss=record['loss']))


class _FeatureEncoder:
  """Stands in for the official encoder: image ids -> bgad_jax's features (``shared``)."""

  def __init__(self, features):
    import torch
    self.levels = [torch.from_numpy(f.transpose(0, 3, 1, 2).copy()) for f in features]

  def __call__(self, ids):
    rows = ids.reshape(-1).long()
    return [level[rows] for level in self.levels]

  def eval(self):
    return self


class _Ids:
  """A dataset returning an image's row in the shared features in place of its pixels."""

  def __init__(self, images: parity._Images):
    self.images = images

  def __len__(self):
    return len(self.images)

  def __getitem__(self, i):
    import torch
    item = self.images[i]
    return (torch.tensor([float(self.images.order[i])]),) + tuple(item[1:])


def run_official(mods, args, seed, mode, arrays, num_normal, shared_features, plans_of,
                 initial: List):
  """The official loop on bgad_jax's plan; fills ``initial`` with its initial flows.

  ``arrays``: (training, test) arrays of `pipeline.preprocess`; ``shared_features``:
  None, or bgad_jax's (training, test) features (``--lockstep_features shared``).
  """
  train_arrays, test_arrays = arrays
  import torch
  ref = parity.reference_args(args, 'lockstep', seed, mode)
  mods.utils.setting_lr_parameters(ref)
  mods.utils.init_seeds(seed)
  encoder = parity.reference_encoder()
  with contextlib.redirect_stdout(io.StringIO()):
    decoders = [mods.models.load_flow_model(ref, c) for c in encoder.feature_info.channels()]
  initial += [flow_variables_from_freia(d.state_dict()) for d in decoders]
  test_encoder = parity.reference_encoder()
  wrap = lambda dataset: dataset
  if shared_features is not None:
    encoder, test_encoder = (_FeatureEncoder(f) for f in shared_features)
    wrap = _Ids
  optimizer = torch.optim.Adam([p for d in decoders for p in d.parameters()], lr=ref.lr)
  known = np.arange(num_normal, len(train_arrays['labels']))
  samplers = [_PlanSampler(), _PlanSampler()]
  normal = torch.utils.data.DataLoader(
      wrap(parity._Images(train_arrays, np.arange(num_normal), True)), batch_sampler=samplers[0])
  order = np.concatenate([np.arange(num_normal), np.tile(known, parity.REPEATS)])
  train = torch.utils.data.DataLoader(wrap(parity._Images(train_arrays, order, False)),
                                      batch_sampler=samplers[1])
  test = torch.utils.data.DataLoader(wrap(parity._Images(test_arrays, np.arange(
      len(test_arrays['labels'])), True)), batch_size=1, shuffle=False)
  recorder = _OfficialRecorder(mods, decoders, optimizer, ref)
  epochs = []
  for epoch in range(args.meta_epochs):
    plans, positions = plans_of(epoch)
    samplers[0 if epoch == 0 else 1].queue = [plan.batches for plan in plans]
    permutations = [perm for plan in plans for b in range(len(plan.batches))
                    for perm in (plan.reference_permutations(level, p)[b]
                                 for level, p in enumerate(positions))]

    def planned_randperm(n, *rest, **kwargs):
      perm = permutations.pop(0)
      assert len(perm) == n, (len(perm), n)
      return torch.from_numpy(perm)

    recorder.epoch = epoch
    with _patched(torch, 'randperm', planned_randperm), recorder.recording(), \
        contextlib.redirect_stdout(io.StringIO()):
      mods.engine.train_meta_epoch(ref, epoch, [normal, train], encoder, decoders, optimizer)
    assert not permutations, f'{len(permutations)} planned permutations unused'
    epochs.append(parity.official_validate(mods, args, ref, epoch, test, test_encoder, decoders))
  return recorder.steps, epochs


# ----------------------------------------------------------------------------
# bgad_jax


def run_ours(config, training_set, test, initial, seconds=None):
  """bgad_jax's loop from the official initial flows; (steps, per-epoch metrics).

  ``seconds``: a dict that gets the ``train`` and ``evaluate`` seconds of each epoch.
  """
  channels = [v['params']['blocks_0']['global_scale'].shape[0] for v in initial]
  state = FlowTrainState.create(config, channels, jax.random.key(config.seed)).with_flows(initial)
  loss = LossSettings.from_config(config.loss)
  steps, epochs = [], []
  for epoch in range(config.train.meta_epochs):

    def record(sub_epoch, level, metrics):
      for k in np.flatnonzero(~metrics['skipped']):
        step = {q: float(metrics[q][k]) for q in QUANTITIES}
        if not metrics['has_abnormal'][k]:   # boundaries exist for abnormal chunks only
          step.update(loss_n=0.0, loss_a=0.0, b_n=0.0, b_a=0.0)
        steps.append(dict(epoch=epoch, sub_epoch=sub_epoch, level=level, **step))

    t0 = time.time()
    state, _ = loop.train_meta_epoch(state, training_set, config.train, loss, config.seed,
                                     on_level=record)
    t1 = time.time()
    result, _, _ = engine.score_test_set(config, state, test, training_set.mesh)
    if seconds is not None:
      seconds.setdefault('train', []).append(t1 - t0)
      seconds.setdefault('evaluate', []).append(time.time() - t1)
    epochs.append({m: result.get(m) for m in parity.METRICS})
  return steps, epochs


def official_initial_flows(mods, args, seed: int, mode: str) -> List:
  """The flows the official code starts a run of ``seed`` with, converted for bgad_jax.

  As its ``train()`` does: seeds, the encoder (its construction draws from
  torch's generator), then one flow per level.
  """
  ref = parity.reference_args(args, 'initial flows', seed, mode)
  mods.utils.init_seeds(seed)
  encoder = parity.reference_encoder()
  with contextlib.redirect_stdout(io.StringIO()):
    decoders = [mods.models.load_flow_model(ref, c) for c in encoder.feature_info.channels()]
  return [flow_variables_from_freia(d.state_dict()) for d in decoders]


def _our_side(args, data, seed: int, mode: str):
  """(config, training set, its features, test set, number of normal training images)."""
  known = parity.known_files_of(args, data, seed) if parity.MODES[mode][0] else []
  config = settings.resolve(parity.our_config(args, data, seed, mode, 'reference', known))
  train_examples, _, known_examples, test_examples = engine.load_data(config)
  images = training_images(config, train_examples, known_examples)
  backbone = FrozenBackbone.for_class(config, make_mesh(), images.texture)
  training_set, features = engine.build_training_set(config, backbone, images)
  test = engine.build_test_set(config, backbone, test_examples, len(known_examples))
  return config, training_set, features, test, (train_examples, known_examples, test_examples)


def free_run_from_official_init(mods, args, data, seed: int, mode: str) -> Dict:
  """bgad_jax's own loop and plan, started from the official initial flows of ``seed``
  (parity.py's side ``ours[official init]``): isolates the initialisation."""
  t0 = time.time()
  config, training_set, _, test, _ = _our_side(args, data, seed, mode)
  seconds = dict(features=time.time() - t0)
  with contextlib.redirect_stdout(io.StringIO()):
    _, epochs = run_ours(config, training_set, test, official_initial_flows(mods, args, seed, mode),
                         seconds)
  seconds['total'] = time.time() - t0
  return dict(epochs=epochs, seconds=seconds)


# ----------------------------------------------------------------------------
# Comparison


def compare_steps(official: List[Dict], ours: List[Dict], labels_of) -> Dict:
  """Per level: steps, the largest relative difference of each quantity over the
  first `FIRST_STEPS` steps and over all, and the first step and quantity above
  `TOLERANCE` (official execution order)."""
  levels = sorted({s['level'] for s in official} | {s['level'] for s in ours})
  report = dict(levels={}, first=None)
  order = []   # (position in the official order, level, index within the level)
  for level in levels:
    mine = [s for s in official if s['level'] == level]
    theirs = [s for s in ours if s['level'] == level]
    row = dict(official_steps=len(mine), our_steps=len(theirs), max_first={}, max_all={})
    for q in QUANTITIES:
      diffs = [relative_difference(a[q], b[q]) for a, b in zip(theirs, mine)]
      row['max_first'][q] = max(diffs[:FIRST_STEPS], default=0.0)
      row['max_all'][q] = max(diffs, default=0.0)
    report['levels'][level] = row
  position = {id(s): i for i, s in enumerate(official)}
  for level in levels:
    mine = [s for s in official if s['level'] == level]
    theirs = [s for s in ours if s['level'] == level]
    for k, (a, b) in enumerate(zip(theirs, mine)):
      for q in QUANTITIES:
        if relative_difference(a[q], b[q]) > TOLERANCE:
          order.append((position[id(b)], level, k, q, a[q], b[q]))
          break
  if order:
    pos, level, k, q, ours_value, official_value = min(order)
    epoch = [s for s in official if s['level'] == level][k]['epoch']
    report['first'] = dict(level=level, step=k, epoch=epoch, quantity=q, ours=ours_value,
                           official=official_value, **labels_of(epoch, level, k))
  return report


def print_report(mode: str, seed: int, report: Dict, epochs: Dict) -> None:
  print(f'\n### lockstep {mode}, seed {seed}\n')
  rows = []
  for level, row in report['levels'].items():
    rows.append(dict(level=level, steps=f"{row['our_steps']} / {row['official_steps']}",
                     **{f'first:{q}': row['max_first'][q] for q in QUANTITIES},
                     loss_all=row['max_all']['loss']))
  print(f'Largest relative difference over the first {FIRST_STEPS} steps of each level '
        '(and of the loss over all steps)\n')
  print(table.markdown(rows, [('level', 'level', 'd'), ('steps', 'steps ours / official', 's')]
                       + [(f'first:{q}', q, '.1e') for q in QUANTITIES]
                       + [('loss_all', 'loss, all steps', '.1e')]))
  first = report['first']
  if first is None:
    print(f'\nNo quantity of any step differs by more than {TOLERANCE:g} relative.')
  else:
    print(f"\nFirst difference above {TOLERANCE:g} relative: level {first['level']}, its step "
          f"{first['step']} (meta-epoch {first['epoch']}, sub-epoch {first['sub_epoch']}, "
          f"batch {first['batch']}, chunk {first['chunk']}): {first['quantity']} "
          f"ours {first['ours']:.8g}, official {first['official']:.8g}")
  print()
  rows = []
  for epoch, (ours, official) in enumerate(zip(epochs['ours'], epochs['official'])):
    row = dict(epoch=epoch + 1)
    for metric in parity.METRICS:
      a, b = ours.get(metric), official.get(metric)
      row[f'ours:{metric}'] = '-' if a is None else f'{100 * a:.2f}'
      row[f'official:{metric}'] = '-' if b is None else f'{100 * b:.2f}'
      row[f'diff:{metric}'] = '-' if a is None or b is None else f'{100 * (a - b):+.2f}'
    rows.append(row)
  print(table.markdown(rows, [('epoch', 'epoch', 'd')] + [
      (f'{side}:{metric}', f'{side} {metric}', 's') for metric in parity.METRICS
      for side in ('ours', 'official', 'diff')]))


def main(args, mods, data, seeds: List[int], modes: List[str]) -> Dict:
  results = {}
  for mode in modes:
    for seed in seeds:
      config, training_set, features, test, examples = _our_side(args, data, seed, mode)
      train_examples, known_examples, test_examples = examples
      positions = [f.shape[1] * f.shape[2] for f in features]
      num_normal = len(train_examples)
      plans = {}

      def plans_of(epoch):
        if epoch not in plans:
          plans[epoch] = epoch_plans(config, epoch, num_normal, training_set.num_images,
                                     positions)
        return plans[epoch], positions

      mean, std = backbone_lib.normalization('efficientnet_lite0', 'imagenet')
      train_arrays = preprocess(train_examples + known_examples, args.inp_size, mean, std)
      test_arrays = preprocess(test_examples, args.inp_size, mean, std)
      shared = (features, test.features) if args.lockstep_features == 'shared' else None
      initial = []
      t0 = time.time()
      official_steps, official_epochs = run_official(
          mods, args, seed, mode, (train_arrays, test_arrays), num_normal, shared, plans_of,
          initial)
      official_seconds = time.time() - t0
      t0 = time.time()
      with contextlib.redirect_stdout(io.StringIO()):
        our_steps, our_epochs = run_ours(config, training_set, test, initial)
      our_seconds = time.time() - t0
      labels = lambda epoch, level, k: step_labels(plans_of(epoch)[0], level)[
          k - sum(1 for s in official_steps if s['level'] == level and s['epoch'] < epoch)]
      report = compare_steps(official_steps, our_steps, labels)
      epochs = dict(ours=our_epochs, official=official_epochs)
      print_report(mode, seed, report, epochs)
      results.setdefault(mode, []).append(dict(
          seed=seed, report=report, epochs=epochs, seconds=dict(official=official_seconds,
                                                                ours=our_seconds),
          steps=dict(official=official_steps, ours=our_steps)))
      if args.json:   # after every run
        with open(args.json, 'w') as f:
          json.dump(dict(settings=vars(args), results=results), f, indent=1)
  return results
