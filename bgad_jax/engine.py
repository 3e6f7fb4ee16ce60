"""Orchestration: train + evaluate, evaluate a checkpoint, predict on a folder of images.

  train:   data -> frozen features (once) -> meta-epochs of flow training with a
           checkpoint after each -> evaluation every ``eval_every`` epochs ->
           results.json / results.md / test_scores.csv / overlays / TensorBoard /
           predict constants.
  eval:    the workdir's latest checkpoint on the test set (same numbers).
  predict: anomaly maps and scores for any images, with constants fixed at
           training time (no test set needed).

Every ``config`` here is the run's resolved settings (`settings.resolve`):
the public entry points resolve what they get (a no-op for cli.run's), and
the helpers they call read list fields as the tuples resolve made them.
"""

import csv
import dataclasses
import json
import logging
import os
import time
from typing import Any, Dict, List, Optional, Sequence, Tuple

import jax
import numpy as np

from bgad_jax import settings
from bgad_jax.data import strategies as strategies_lib
from bgad_jax.data.dataset import (expand_path, hold_out_normals, prepare_dataset,
                                   read_splits, read_validation_split)
from bgad_jax.data.known_anomalies import split_known
from bgad_jax.detector import Detector, read_predict_constants, require_trained_model
from bgad_jax.errors import ConfigError, DataError, MissingFileError
from bgad_jax.evaluation import calibration as calibration_lib
from bgad_jax.evaluation import maps as maps_lib
from bgad_jax.evaluation import metrics
from bgad_jax.evaluation import report
from bgad_jax.evaluation.inference import lp_maps
from bgad_jax.training import checkpoint
from bgad_jax.training.features import (FrozenBackbone, class_mask_pooling, class_neighbourhood,
                                        training_images)
from bgad_jax.training.loop import train_meta_epoch
from bgad_jax.training.plan import untrained_level_notes
from bgad_jax.training.schedule import warmup_overshoot_note
from bgad_jax.training.sharding import is_main_process, make_mesh, replicate, sync
from bgad_jax.training.state import FlowTrainState
from bgad_jax.training.step import LossSettings
from bgad_jax.training.training_set import TrainingSet
from tfds_mvtec import image_io


@dataclasses.dataclass
class TestSet:
  """The evaluation images: preprocessed arrays, their backbone features, the known
  types, and what a reader of the metrics must know about them (`test_set_notes`)."""
  arrays: Dict[str, np.ndarray]
  features: List[np.ndarray]
  known_types: List[str]
  notes: List[str] = dataclasses.field(default_factory=list)


def use_compile_cache(config) -> None:
  """Keeps compiled programs in ``config.compile_cache_dir`` for later runs ('' = off)."""
  if config.compile_cache_dir:
    jax.config.update('jax_compilation_cache_dir',
                      expand_path(config.compile_cache_dir))
    # Every program, however small: a process otherwise recompiles the many
    # small ones that run op by op (about a second of a short run, megabytes on disk).
    jax.config.update('jax_persistent_cache_min_compile_time_secs', 0.0)


def score_test_set(config, state: FlowTrainState, test: TestSet,
                   mesh) -> Tuple[Dict[str, Any], np.ndarray, List[np.ndarray]]:
  """Metrics (`metrics.detection_metrics`), [N, S, S] anomaly maps of ``test`` the
  reference's way and the per-level log-likelihood maps they came from."""
  lp = lp_maps(state, test.features, mesh)
  return (*_metrics_of_lp(config, lp, test), lp)


def _metrics_of_lp(config, lp: List[np.ndarray],
                   test: TestSet) -> Tuple[Dict[str, Any], np.ndarray]:
  """(metrics, [N, S, S] anomaly maps) of per-level log-likelihood maps of ``test``."""
  maps, scores = maps_lib.test_set_outputs(lp, config.data.inp_size,
                                           maps_lib.MapOptions.of(config.maps))
  arrays = test.arrays
  result = metrics.detection_metrics(maps, arrays['masks'], arrays['labels'],
                                     arrays['defect_types'], arrays['has_mask'], test.known_types,
                                     config.report.aupro_thresholds, scores)
  return result, maps


def load_data(config) -> Tuple[List[Dict], List[Dict], List[Dict], List[Dict]]:
  """(the flows' normal training examples, held-out normal calibration examples,
  known anomalies, test examples).

  With several processes, process 0 generates or builds the dataset first;
  the others then find it ready (or build their own copy where the disks are
  not shared).
  """
  if is_main_process():
    prepare_dataset(config.data, config.seed)
  sync('dataset prepared')
  if not is_main_process():
    prepare_dataset(config.data, config.seed)
  train_examples, test_examples = read_splits(config.data)
  # A dataset's own validation images (MVTec LOCO AD, MVTec AD 2) calibrate;
  # otherwise a held-out share of the training images does.
  calibration = read_validation_split(config.data)
  if not calibration:
    train_examples, calibration = hold_out_normals(
        train_examples, config.data.val_fraction, config.data.val_min_images, config.seed)
  known, test_examples = split_known(config.data, test_examples,
                                     list(config.data.known_defect_types), config.seed,
                                     list(config.data.known_anomaly_files))
  logging.info('%d normal training images (+%d held out for calibration), %d known anomalies, '
               '%d test images', len(train_examples), len(calibration), len(known),
               len(test_examples))
  return train_examples, calibration, known, test_examples


def _without_mask(arrays: Dict[str, np.ndarray]) -> List[str]:
  """File names of the anomalous test images that have no ground-truth mask."""
  return [str(name) for name, label, has in zip(
      arrays['filenames'], arrays['labels'], arrays['has_mask']) if label and not has]


def test_set_notes(config, arrays: Dict[str, np.ndarray], num_known: int) -> List[str]:
  """One line each for what leaves metrics n/a or partial: no anomalous test image, or
  anomalous images without a ground-truth mask."""
  notes, anomalous = [], int(np.sum(arrays['labels']))
  if not anomalous and num_known:
    files = ' / data.known_anomaly_files' if config.data.known_anomaly_files else ''
    notes.append(
        f'No anomalous test image is left: all {num_known} are known anomalies used for '
        f'training (data.num_anomalies={config.data.num_anomalies}{files}), so image AUROC, '
        'pixel AUROC and AUPRO are n/a. Use fewer known anomalies (e.g. '
        '--config.data.num_anomalies=' + str(max(num_known // 2, 0)) + ') to keep some '
        'for the test.')
  elif not anomalous:
    notes.append('The test set has no anomalous image, so image AUROC, pixel AUROC and AUPRO '
                 'are n/a: put defective images in test/<defect type>/ folders.')
  missing = _without_mask(arrays)
  if missing and len(missing) == anomalous:
    notes.append(f'None of the {anomalous} anomalous test images has a ground-truth mask: '
                 'pixel AUROC and AUPRO are n/a (the image AUROC counts them all).')
  elif missing:
    shown = ', '.join(missing[:3]) + (', ...' if len(missing) > 3 else '')
    notes.append(f'{len(missing)} of {anomalous} anomalous test images have no ground-truth '
                 f'mask ({shown}): they count in the image AUROC only, not in the pixel '
                 'metrics.')
  return notes


def build_test_set(config, backbone: FrozenBackbone, test_examples,
                   num_known: int = 0) -> TestSet:
  """The test images' arrays and backbone features; `test_set_notes` are logged once.

  ``num_known``: how many anomalous test images became known anomalies.
  """
  arrays, features = backbone.extract(test_examples, config.data.inp_size)
  notes = test_set_notes(config, arrays, num_known)
  for note in notes:
    logging.warning('%s', note)
  return TestSet(arrays, features, list(config.data.known_defect_types), notes)


def build_training_set(config, backbone: FrozenBackbone, images: strategies_lib.TrainingImages
                       ) -> Tuple[TrainingSet, List[np.ndarray]]:
  """(TrainingSet, the backbone features of ``images``, per level).

  ``images``: `training_images`, decoded once with the class's texture verdict,
  which the mask pooling and the strategies read (the backbone's taps:
  `FrozenBackbone.for_class`).
  """
  features = backbone.pixel_features(images.pixels)
  chosen = strategies_lib.build(config.data.anomaly_strategy, config.data, images)
  training_set = TrainingSet(backbone, images, features, chosen, config.flow.pos_embed_dim,
                             config.seed, class_mask_pooling(config, images.texture))
  return training_set, features


def _new_state(config, channels, mesh) -> FlowTrainState:
  """Initial flows, replicated on every device of the mesh (the same on every process)."""
  return replicate(FlowTrainState.create(config, channels, jax.random.key(config.seed)), mesh)


@dataclasses.dataclass
class RunLog:
  """What a run has done so far, saved with every checkpoint (as `to_meta`'s dict):
  one row per meta-epoch and the seconds spent training and evaluating."""
  history: List[Dict[str, Any]] = dataclasses.field(default_factory=list)
  train_seconds: float = 0.0
  eval_seconds: float = 0.0

  @classmethod
  def from_meta(cls, meta: Dict[str, Any]) -> 'RunLog':
    return cls(list(meta['history']), meta['seconds']['train'], meta['seconds']['eval'])

  def to_meta(self) -> Dict[str, Any]:
    return dict(history=self.history,
                seconds=dict(train=self.train_seconds, eval=self.eval_seconds))


@dataclasses.dataclass
class Run:
  """One run in its workdir: its settings, mesh, current flows, log and checkpoints."""
  config: Any
  workdir: str
  mesh: Any
  state: FlowTrainState
  log: RunLog
  checkpoints: Any = None   # the Orbax manager (training only)

  def score_test_set(self, test: TestSet) -> Tuple[Dict[str, Any], np.ndarray, List[np.ndarray]]:
    """`score_test_set` of the current flows, its seconds added to the log."""
    t0 = time.time()
    outcome = score_test_set(self.config, self.state, test, self.mesh)
    self.log.eval_seconds += time.time() - t0
    return outcome


def _restore_or_create(config, workdir: str, channels, mesh) -> Run:
  mngr = checkpoint.manager(workdir)
  run = Run(config, workdir, mesh, _new_state(config, channels, mesh), RunLog(), mngr)
  restored = checkpoint.restore_latest(mngr, run.state)
  if restored is not None:
    run.state, run.log = restored[0], RunLog.from_meta(restored[1])
    if is_main_process():
      print(f'Resuming from the checkpoint of meta-epoch {int(run.state.epoch)} in {workdir}')
  return run


def _progress_line(row: Dict[str, Any], total_epochs: int, eta: float) -> str:
  scores = (f"img {report.format_percent(row['img_auroc'])}  "
            f"pix {report.format_percent(row['pix_auroc'])}  " if 'img_auroc' in row else '')
  return (f"epoch {row['epoch']}/{total_epochs}  loss {row['loss']:.4f}  lr {row['lr']:.2e}  "
          f'{scores}ETA {eta:.0f}s')


def _train_epochs(run: Run, training_set: TrainingSet, test: TestSet):
  """Meta-epochs from ``run.state.epoch`` to the end, a checkpoint after each.

  Updates ``run.state`` and ``run.log``; returns the last evaluation (None if none ran).
  """
  config, total = run.config, run.config.train.meta_epochs
  loss = LossSettings.from_config(config.loss)
  writer = (report.ScalarWriter(os.path.join(run.workdir, 'tensorboard'))
            if is_main_process() else None)
  session_start, session_epoch, evaluation = time.time(), int(run.state.epoch), None
  try:
    while int(run.state.epoch) < total:
      epoch, t0 = int(run.state.epoch), time.time()
      run.state, stats = train_meta_epoch(run.state, training_set, config.train, loss,
                                          config.seed)
      train_seconds = time.time() - t0
      run.log.train_seconds += train_seconds
      row = dict(epoch=epoch + 1, **stats, train_seconds=train_seconds)   # 1-based epochs
      if (epoch + 1) % config.train.eval_every == 0 or epoch + 1 == total:
        t0 = time.time()
        evaluation = run.score_test_set(test)
        row.update(report.headline(evaluation[0]), eval_seconds=time.time() - t0)
      run.log.history.append(row)
      checkpoint.save(run.checkpoints, run.state, run.log.to_meta())
      if writer:   # process 0 logs and reports
        writer.write(epoch, {k: v for k, v in row.items() if k != 'epoch'})
        eta = (time.time() - session_start) / (epoch + 1 - session_epoch) * (total - epoch - 1)
        print(_progress_line(row, total, eta), flush=True)
  finally:
    if writer:
      writer.close()
  return evaluation


def _write_predict_constants(run: Run, normal_features, files, source: str,
                             neighbourhood: int) -> Dict[str, Any]:
  """Map constants and thresholds for `predict` from normal images (`calibration`),
  and the ``neighbourhood`` the run's taps got (`class_neighbourhood`).

  ``source``: 'held-out' (never trained on: ``data.val_fraction`` of the
  training images, or the dataset's validation split) or 'training' images.
  """
  config = run.config
  constants = calibration_lib.predict_constants(
      lp_maps(run.state, normal_features, run.mesh), config.data.inp_size,
      config.predict.threshold, config.predict.target_fpr, source,
      maps_lib.MapOptions.of(config.maps))
  constants['calibration']['files'] = list(files)
  constants['neighbourhood'] = neighbourhood
  if is_main_process():
    report.write_json(os.path.join(run.workdir, 'predict_constants.json'), constants)
  return constants


def _at_threshold(config, test_lp, test: TestSet, constants) -> Dict[str, Any]:
  """Test precision / recall / F1 of predict's verdicts (fixed constants, nll scores)."""
  nll = maps_lib.nll_scores(test_lp, config.data.inp_size, constants)
  threshold = calibration_lib.nll_threshold(constants, config.predict.threshold,
                                            config.predict.target_fpr)
  source = constants.get('calibration', {}).get('source', 'training')
  return dict(rule=config.predict.threshold, calibration=source,
              **calibration_lib.verdict_metrics(nll, test.arrays['labels'], threshold))


def train_and_evaluate(config, workdir: str) -> Dict[str, Any]:
  """Trains (resuming from the workdir's checkpoint), evaluates, writes the outputs."""
  config = settings.resolve(config)   # a no-op for cli.run's resolved config
  use_compile_cache(config)
  os.makedirs(workdir, exist_ok=True)
  started, mesh = time.time(), make_mesh()
  train_examples, calibration, known, test_examples = load_data(config)
  if known and is_main_process():
    print('Known anomalies used for training: ' + ', '.join(e['filename'] for e in known))
  t0 = time.time()
  images = training_images(config, train_examples, known)
  decode_seconds = time.time() - t0
  backbone = FrozenBackbone.for_class(config, mesh, images.texture)
  t0 = time.time()
  training_set, train_features = build_training_set(config, backbone, images)
  training_notes = untrained_level_notes([f.shape[1] * f.shape[2] for f in train_features],
                                         training_set.num_normal, config.train.batch_size,
                                         config.train.num_vectors, mesh.size)
  overshoot = warmup_overshoot_note(config.train, training_set.num_normal,
                                    training_set.num_images)
  training_notes += [overshoot] if overshoot else []
  for note in training_notes:
    logging.warning('%s', note)
  test = build_test_set(config, backbone, test_examples, len(known))
  test.notes.extend(training_notes)   # results.json and results.md carry them with the metrics
  if calibration:
    calibration_features = backbone.extract(calibration, config.data.inp_size)[1]
  else:   # the flows' own normal images, as the reference would
    calibration_features = [f[:len(train_examples)] for f in train_features]
  feature_seconds = decode_seconds + time.time() - t0   # the backbone's loading left out
  run = _restore_or_create(config, workdir, [f.shape[-1] for f in train_features], mesh)
  evaluation = _train_epochs(run, training_set, test)
  result, maps, test_lp = evaluation or run.score_test_set(test)   # resumed after the last epoch
  calibration_files = [e['filename'] for e in (calibration or train_examples)]
  constants = _write_predict_constants(run, calibration_features, calibration_files,
                                       'held-out' if calibration else 'training',
                                       backbone.neighbourhood)
  result['at_threshold'] = _at_threshold(config, test_lp, test, constants)
  return _write_outputs(run, (result, maps), test, known,
                        dict(features=feature_seconds, total=time.time() - started))


def _write_outputs(run: Run, evaluation, test: TestSet, known,
                   seconds: Dict[str, float]) -> Dict[str, Any]:
  """results.json / results.md / test_scores.csv / overlays of ``evaluation`` =
  (metrics, maps [N, S, S]); ``seconds``: features and total (training and
  evaluation come from the run's log)."""
  config, (result, maps) = run.config, evaluation
  results = dict(
      name=f'{config.data.source}/{config.data.category}', epoch=int(run.state.epoch),
      **report.headline(result), per_type=result['per_type'],
      best_epoch=report.best_epoch(run.log.history),
      seconds=dict(features=seconds['features'], train=run.log.train_seconds,
                   eval=run.log.eval_seconds, total=seconds['total']),
      known_anomalies=[e['filename'] for e in known],
      anomalies_without_mask=_without_mask(test.arrays), notes=test.notes,
      history=run.log.history,
      test_scores=report.image_score_rows(test.arrays['filenames'], test.arrays['defect_types'],
                                          test.arrays['labels'], result['image_scores']),
      device=f'{jax.devices()[0].device_kind} x{jax.device_count()}',
      config=config.to_dict())
  for group in ('seen', 'unseen', 'at_threshold'):
    if group in result:
      results[group] = result[group]
  if is_main_process():
    report.write_results(run.workdir, results, maps, test.arrays, config.report.num_overlays,
                         config.seed)
  sync('results written')
  return results


def evaluate_checkpoint(config, workdir: str) -> Dict[str, Any]:
  """Re-evaluates the latest checkpoint on the test set; rewrites results.json/md."""
  config = settings.resolve(config)   # a no-op for cli.run's resolved config
  require_trained_model(workdir)   # before any data work
  use_compile_cache(config)
  mesh = make_mesh()
  train_examples, _, known, test_examples = load_data(config)
  finished = os.path.isfile(os.path.join(workdir, 'predict_constants.json'))
  constants = read_predict_constants(workdir) if finished else {}
  backbone = FrozenBackbone.load(config, mesh, _trained_neighbourhood(
      config, constants.get('neighbourhood'), train_examples))
  t0 = time.time()
  test = build_test_set(config, backbone, test_examples, len(known))
  feature_seconds = time.time() - t0
  state, meta = _restore_flows(config, workdir, test, mesh)
  run = Run(config, workdir, mesh, state, RunLog.from_meta(meta))
  run.log.eval_seconds = 0.0   # this evaluation's seconds only
  result, maps, test_lp = run.score_test_set(test)
  if finished:
    result['at_threshold'] = _at_threshold(config, test_lp, test, constants)
  return _write_outputs(run, (result, maps), test, known,
                        dict(features=feature_seconds,
                             total=feature_seconds + run.log.eval_seconds))


def _trained_neighbourhood(config, saved: Optional[int], train_examples) -> int:
  """The taps the training decided on (``saved``: from its predict constants), as
  predict uses them; decided again for a run stopped before it saved them (or
  saved before they were recorded)."""
  if saved is not None:
    return saved
  return class_neighbourhood(config, training_images(config, train_examples, []).texture)


def _restore_flows(config, workdir: str, test: TestSet, mesh):
  """(flows, log meta) of ``workdir``'s latest checkpoint, shaped for ``test``'s features."""
  channels = [f.shape[-1] for f in test.features]
  return checkpoint.restore_latest(checkpoint.manager(workdir),
                                   _new_state(config, channels, mesh))


def _ensemble_members(config, workdirs: Sequence[str], known_files: List[str]) -> int:
  """Checks that every member is a finished run on the same known files; their taps."""
  if not workdirs:
    raise ConfigError('an ensemble needs at least one trained run')
  neighbourhoods = set()
  for workdir in workdirs:
    neighbourhoods.add(read_predict_constants(workdir).get('neighbourhood'))
    with open(os.path.join(workdir, 'results.json')) as f:
      theirs = json.load(f)['known_anomalies']
    if theirs != known_files:
      raise ConfigError(f'{workdir} was trained on other known anomalies than '
                        f'{config.data.category}\'s ensemble ({theirs} against {known_files}): '
                        'set data.known_anomaly_files to the same files in every member')
  if len(neighbourhoods) > 1:
    raise ConfigError(f'the members of an ensemble averaged their taps differently '
                      f'(backbone.neighbourhood {sorted(map(str, neighbourhoods))})')
  return neighbourhoods.pop()


def evaluate_ensemble(config, workdirs: Sequence[str]) -> Dict[str, Any]:
  """Several trained runs scored as one detector on ``config``'s test set; writes nothing.

  The members are finished runs of one configuration that differ in
  ``seed`` only, trained on the same known anomalies (``data.known_anomaly_files``):
  their per-level log-likelihood maps are averaged, then scored as one run's
  (docs/METHOD.md, "Ensembles of runs").

  Returns:
    The metrics as results.json has them (the headline, ``per_type``, ``seen``,
    ``unseen``) and ``members``, the workdirs.

  Raises:
    ConfigError: no members, or members trained on other known anomalies or taps.
  """
  config = settings.resolve(config)
  use_compile_cache(config)
  mesh = make_mesh()
  train_examples, _, known, test_examples = load_data(config)
  neighbourhood = _ensemble_members(config, workdirs, [e['filename'] for e in known])
  backbone = FrozenBackbone.load(config, mesh,
                                 _trained_neighbourhood(config, neighbourhood, train_examples))
  test = build_test_set(config, backbone, test_examples, len(known))
  member_lp = [lp_maps(_restore_flows(config, workdir, test, mesh)[0], test.features, mesh)
               for workdir in workdirs]
  lp = [np.mean(levels, axis=0) for levels in zip(*member_lp)]
  result, _ = _metrics_of_lp(config, lp, test)
  return dict(**report.headline(result), per_type=result['per_type'],
              **{group: result[group] for group in ('seen', 'unseen') if group in result},
              members=list(workdirs))


def _read_predict_images(config) -> Tuple[Dict[str, np.ndarray], Dict[str, str]]:
  """({name: RGB uint8 image} of the readable images, {name: error} of the others)."""
  folder = expand_path(config.predict.images) if config.predict.images else ''
  if not folder or not os.path.isdir(folder):
    raise MissingFileError(f'predict.images={config.predict.images!r}: predict needs a folder '
                           'of images (--config.predict.images=DIR)')
  names = sorted(n for n in os.listdir(folder)
                 if n.lower().endswith(image_io.IMAGE_EXTENSIONS))
  if not names:
    raise MissingFileError(f'no images ({", ".join(image_io.IMAGE_EXTENSIONS)}) in {folder} '
                           '(predict.images)')
  images, errors = {}, {}
  for name in names:
    try:
      images[name] = image_io.decode_image(os.path.join(folder, name))
    except image_io.ImageDecodeError as err:
      errors[name] = str(err)
      logging.warning('Skipped %s', err)
  if not images:
    raise DataError(f'none of the {len(names)} images in {folder} could be read; the first: '
                    f'{errors[names[0]]}')
  return images, errors


def _write_scores(path: str, scored: Dict[str, Tuple[float, float]], threshold: float,
                  errors: Dict[str, str]) -> None:
  """scores.csv: one row per image (``scored``: name -> (score, nll score)), unreadable
  ones with empty scores and their error."""
  rows = {name: [f'{score:.6f}', f'{image_nll:.6f}', f'{threshold:.6f}',
                 int(image_nll > threshold), '']
          for name, (score, image_nll) in scored.items()}
  rows.update({name: ['', '', f'{threshold:.6f}', '', error] for name, error in errors.items()})
  with open(path, 'w', newline='') as f:
    writer = csv.writer(f)
    # score: the reference's image score (saturates at map_max far from normal);
    # nll_score ranks the same way where it does not saturate, and decides.
    writer.writerow(['filename', 'score', 'nll_score', 'nll_threshold', 'anomalous', 'error'])
    for name in sorted(rows):
      writer.writerow([name] + rows[name])


def predict(config, workdir: str) -> str:
  """Maps and scores for the images in ``config.predict.images``; returns the CSV path.

  Unreadable images are skipped and listed in the CSV's ``error`` column.

  Raises:
    NoTrainedModelError: ``workdir`` holds no finished training (checked first).
    DataError: no image could be read.
  """
  config = settings.resolve(config)   # a no-op for cli.run's resolved config
  constants = read_predict_constants(workdir)   # before any image is read
  images, errors = _read_predict_images(config)
  use_compile_cache(config)
  detector = Detector.load(workdir, config)
  pixels, maps, scores, nll = detector.score_pixels(list(images.values()))
  out_dir = os.path.join(workdir, 'predictions')
  report.save_overlays(out_dir, pixels, maps, list(images),
                       low=0.0, high=max(float(constants['score_threshold']) * 2, 1e-6))
  csv_path = os.path.join(out_dir, 'scores.csv')
  _write_scores(csv_path, dict(zip(images, zip(scores, nll))), detector.threshold, errors)
  return csv_path
