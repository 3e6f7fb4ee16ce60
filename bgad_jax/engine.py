"""The product: train + evaluate, evaluate a checkpoint, predict on a folder of images.

  train:   data -> frozen features (once) -> meta-epochs of flow training with a
           checkpoint after each -> evaluation each ``eval_every`` epochs ->
           results.json / results.md / overlays / TensorBoard / predict constants.
  eval:    the workdir's latest checkpoint on the test set (same numbers).
  predict: anomaly maps and scores for any images, with constants fixed at
           training time (no test set needed).
"""

import csv
import json
import logging
import os
import time
from typing import Any, Dict, List, Tuple

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh

from bgad_jax import anomaly_maps
from bgad_jax import backbone as backbone_lib
from bgad_jax import checkpoint
from bgad_jax import demo_data
from bgad_jax import image_io
from bgad_jax import input_pipeline
from bgad_jax import metrics
from bgad_jax import report
from bgad_jax import train
from bgad_jax import weight_conversion

STRATEGIES = ('0', '1', '2')   # real anomalies, CutPaste, Perlin pseudo anomalies


# ----------------------------------------------------------------------------
# Data


def _expand(path: str) -> str:
  return os.path.abspath(os.path.expanduser(path))


def dataset_location(config) -> Tuple[str, str, str]:
  """(manual_dir, tfds data_dir, category) for the configured source."""
  data = config.data
  if data.source == 'demo':
    root = _expand(data.root or '~/.cache/bgad_jax/demo')
    return os.path.join(root, 'images'), os.path.join(root, 'tfds'), data.category
  if data.source in ('mvtec', 'folder'):
    return (_expand(data.root) if data.root else ''), _expand(data.tfds_dir), data.category
  raise ValueError(f"data.source must be 'demo', 'mvtec' or 'folder', got {data.source!r}")


def load_splits(config) -> Tuple[List[Dict], List[Dict]]:
  """Train and test examples, building the TFDS dataset first when needed."""
  import tfds_mvtec   # slow import, only where data is read
  manual_dir, data_dir, category = dataset_location(config)
  data = config.data
  built = os.fspath(tfds_mvtec.builder(category, data_dir).data_path)
  stale = False   # a demo folder regenerated after its dataset was built
  if data.source == 'demo':
    demo = data.demo
    category_dir = demo_data.generate(manual_dir, category, demo.size, demo.num_train,
                                      demo.num_test_good, demo.num_per_defect, config.seed)
    stamp = os.path.join(category_dir, 'demo_settings.json')
    stale = os.path.isdir(built) and os.path.getmtime(stamp) > os.path.getmtime(built)
  if manual_dir and (stale or not os.path.isdir(built)):
    tfds_mvtec.build(category, data_dir, manual_dir, force=stale)
  return (input_pipeline.load_examples(data_dir, category, 'train'),
          input_pipeline.load_examples(data_dir, category, 'test'))


def strategies(config) -> List[str]:
  """The data strategies of ``data.anomaly_strategy`` ('0', '0,1', '2', ...)."""
  chosen = [s.strip() for s in str(config.data.anomaly_strategy).split(',') if s.strip()]
  unknown = sorted(set(chosen) - set(STRATEGIES))
  if unknown or not chosen:
    raise ValueError(f'data.anomaly_strategy must combine {STRATEGIES}, got '
                     f'{config.data.anomaly_strategy!r}')
  if '1' in chosen and config.data.num_anomalies <= 0:
    raise ValueError('strategy 1 (CutPaste) pastes known anomalies: it needs '
                     'data.num_anomalies > 0')
  return chosen


def known_defect_types(config) -> List[str]:
  """``data.known_defect_types`` as a list ([] = every type may be known)."""
  return [t.strip() for t in str(config.data.known_defect_types).split(',') if t.strip()]


def split_known(config, test: List[Dict]) -> Tuple[List[Dict], List[Dict]]:
  """Known anomalies for training and the test set to evaluate on."""
  data = config.data
  strategies(config)
  if data.num_anomalies <= 0:
    return [], test
  known_types = known_defect_types(config)
  known, rest = input_pipeline.select_known_anomalies(
      test, data.num_anomalies, data.anomaly_count_mode, known_types, config.seed)
  return known, (rest if data.not_in_test else test)


# ----------------------------------------------------------------------------
# Models


def make_mesh() -> Mesh:
  """A 1-D data-parallel mesh over all local devices."""
  return Mesh(np.array(jax.devices()), ('data',))


def load_frozen_backbone(config):
  dtype = jnp.bfloat16 if config.backbone.dtype == 'bfloat16' else jnp.float32
  model, variables = weight_conversion.load_backbone(
      config.backbone.name, config.backbone.weights or None, dtype=dtype)
  model = model.clone(depthwise_impl=config.backbone.depthwise_impl)
  mean, std = backbone_lib.normalization(config.backbone.name, config.backbone.normalization)
  return model, variables, mean, std


def _check_devices(config, mesh: Mesh) -> None:
  devices = mesh.devices.size
  if config.train.num_vectors % devices:
    raise ValueError(f'train.num_vectors ({config.train.num_vectors}) must be divisible by '
                     f'the number of devices ({devices})')


# ----------------------------------------------------------------------------
# Evaluation


def evaluate_lp(config, lp_maps: List[np.ndarray], arrays: Dict[str, np.ndarray],
                known_types) -> Tuple[Dict[str, Any], np.ndarray]:
  maps = anomaly_maps.test_set_anomaly_maps(lp_maps, config.data.inp_size)
  result = metrics.evaluate(maps, arrays['masks'], arrays['labels'], arrays['defect_types'],
                            arrays['has_mask'], known_types,
                            config.report.aupro_thresholds)
  return result, maps


# ----------------------------------------------------------------------------
# Train


def train_and_evaluate(config, workdir: str) -> Dict[str, Any]:
  """Trains (resuming from the workdir's checkpoint), evaluates, writes the outputs."""
  os.makedirs(workdir, exist_ok=True)
  started = time.time()
  mesh = make_mesh()
  _check_devices(config, mesh)
  train_examples, test_examples = load_splits(config)
  known, test_examples = split_known(config, test_examples)
  known_types = known_defect_types(config)
  logging.info('%d normal training images, %d known anomalies, %d test images',
               len(train_examples), len(known), len(test_examples))
  if known:
    print('Known anomalies used for training: ' + ', '.join(e['filename'] for e in known))

  backbone, backbone_vars, mean, std = load_frozen_backbone(config)
  size = config.data.inp_size
  train_arrays = input_pipeline.preprocess(train_examples + known, size, mean, std)
  test_arrays = input_pipeline.preprocess(test_examples, size, mean, std)
  t0 = time.time()
  train_feats = train.extract_features(backbone, backbone_vars, train_arrays['images'],
                                       config.train.batch_size, mesh)
  test_feats = train.extract_features(backbone, backbone_vars, test_arrays['images'],
                                      config.train.batch_size, mesh)
  feature_seconds = time.time() - t0

  num_normal = len(train_examples)
  train_levels, num_train_images = _training_set(
      config, mesh, backbone, backbone_vars, mean, std, train_arrays, train_feats, num_normal)
  channels = [f.shape[-1] for f in train_feats]

  state = train.create_state(config, channels, jax.random.key(config.seed))
  mngr = checkpoint.manager(workdir)
  meta = dict(history=[], seconds=dict(train=0.0, eval=0.0))
  restored = checkpoint.restore_latest(mngr, state)
  if restored is not None:
    state, meta = restored
    print(f'Resuming from the checkpoint of meta-epoch {int(state.epoch)} in {workdir}')

  trainer = train.make_chunk_trainer(config, mesh)
  lp_evaluator = train.make_lp_evaluator(config, mesh)
  writer = report.ScalarWriter(os.path.join(workdir, 'tensorboard'))
  total_epochs = config.train.meta_epochs
  session_start, session_epoch = time.time(), int(state.epoch)
  warmup_total = train.warmup_batches(config, num_normal, num_train_images)

  def evaluate_test_set(state):
    t0 = time.time()
    outcome = evaluate_lp(config, lp_evaluator(state, test_feats), test_arrays, known_types)
    meta['seconds']['eval'] += time.time() - t0
    return outcome

  result, maps = None, None
  try:
    while int(state.epoch) < total_epochs:
      epoch = int(state.epoch)
      t0 = time.time()
      warm_done = train.warmup_batches(config, num_normal, num_train_images, before_epoch=epoch)
      state, stats = train.train_meta_epoch(state, config, train_levels, num_normal,
                                            num_train_images, trainer, (warm_done, warmup_total))
      meta['seconds']['train'] += time.time() - t0
      row = dict(epoch=epoch + 1, **stats)   # meta-epochs completed, 1-based
      if (epoch + 1) % config.train.eval_every == 0 or epoch + 1 == total_epochs:
        result, maps = evaluate_test_set(state)
        row.update(report.headline(result))
      meta['history'].append(row)
      writer.write(epoch, {k: v for k, v in row.items() if k != 'epoch'})
      checkpoint.save(mngr, state, meta)
      done = epoch + 1
      eta = (time.time() - session_start) / (done - session_epoch) * (total_epochs - done)
      scores = (f"img {report.format_percent(row['img_auroc'])}  "
                f"pix {report.format_percent(row['pix_auroc'])}  " if 'img_auroc' in row else '')
      print(f"epoch {done}/{total_epochs}  loss {stats['loss']:.4f}  lr {stats['lr']:.2e}  "
            f'{scores}ETA {eta:.0f}s', flush=True)
  finally:
    writer.close()

  if result is None:   # resumed after the last epoch: evaluate the final state
    result, maps = evaluate_test_set(state)

  # Deployable constants, from the normal training images' lp maps.
  normal_lp = lp_evaluator(state, [f[:num_normal] for f in train_feats])
  constants = anomaly_maps.fixed_constants(normal_lp, size)
  normal_scores = anomaly_maps.apply_fixed_constants(normal_lp, size, constants).reshape(
      num_normal, -1).max(axis=1)
  constants['score_threshold'] = float(normal_scores.max())
  constants['nll_threshold'] = float(anomaly_maps.nll_scores(normal_lp, size, constants).max())
  report.write_json(os.path.join(workdir, 'predict_constants.json'), constants)

  outputs = _write_outputs(config, workdir, state, meta, result, maps, test_arrays, known,
                           feature_seconds, time.time() - started)
  return outputs


def _training_set(config, mesh, backbone, backbone_vars, mean, std, train_arrays, train_feats,
                  num_normal):
  """Per-level training vectors, and the number of training images.

  Images: the normal ones first; then, with strategy 0, each known anomaly
  ``anomaly_repeats`` times; then the synthetic ones (strategy 1: per known
  anomaly ``synthetic_repeats`` CutPaste copies; strategy 2:
  ``synthetic_repeats`` Perlin anomalies per known anomaly, or 10x that
  without known anomalies). Synthetic images are drawn anew every sub-epoch
  (the reference re-augments on every access) and only their features are
  recomputed; the rest stay cached.
  """
  from bgad_jax import synthesis
  data = config.data
  chosen = strategies(config)
  num_known = len(train_arrays['labels']) - num_normal
  real = np.arange(num_normal, num_normal + num_known)
  order = np.concatenate([np.arange(num_normal),
                          np.tile(real, data.anomaly_repeats if '0' in chosen else 0)]).astype(int)
  num_paste = num_known * data.synthetic_repeats if '1' in chosen else 0
  num_pseudo = (num_known or 10) * data.synthetic_repeats if '2' in chosen else 0
  dim = config.flow.pos_embed_dim
  cached_feats = [f[order] for f in train_feats]
  cached_masks = train_arrays['masks'][order]
  static = [train.level_data(f, cached_masks, dim, mesh) for f in cached_feats]
  if not num_paste and not num_pseudo:
    return static, len(order)

  pixels, masks = train_arrays['pixels'], train_arrays['masks']
  foreground = None
  if num_paste and data.in_fg_region:
    foreground = synthesis.foreground_masks(
        pixels[:num_normal], data.category, data.foreground,
        list(train_arrays['filenames'][:num_normal]), data.foreground_dir, data.inp_size)
  paste_augmenters = synthesis.cutpaste_augmenters() if num_paste else None
  pseudo_augmenters = synthesis.pseudo_augmenters() if num_pseudo else None
  textures = synthesis.texture_sources(data.anomaly_source_path) if num_pseudo else None

  def levels(epoch, sub_epoch):
    if epoch == 0:   # the first meta-epoch sees normal images only
      return static
    rng = train.plan_rng(config.seed, epoch, sub_epoch, 1000)
    images, synth_masks = [], []
    for j in range(num_paste):
      k, n = num_normal + j // data.synthetic_repeats, int(rng.integers(num_normal))
      image, mask = synthesis.cut_paste(pixels[k], masks[k], pixels[n],
                                        None if foreground is None else foreground[n], rng,
                                        paste_augmenters)
      images.append(image)
      synth_masks.append(mask)
    for _ in range(num_pseudo):
      n = int(rng.integers(num_normal))
      texture = textures[int(rng.integers(len(textures)))]
      image, mask = synthesis.pseudo_anomaly(pixels[n], texture, rng, pseudo_augmenters)
      images.append(image)
      synth_masks.append(mask)
    feats = train.extract_features(backbone, backbone_vars,
                                   input_pipeline.normalise(np.stack(images), mean, std),
                                   config.train.batch_size, mesh)
    all_masks = np.concatenate([cached_masks, np.stack(synth_masks)])
    return [train.level_data(np.concatenate([c, f]), all_masks, dim, mesh)
            for c, f in zip(cached_feats, feats)]

  return levels, len(order) + num_paste + num_pseudo


def _best_epoch(history):
  scored = [r for r in history if r.get('img_auroc') is not None]
  if not scored:
    return None
  best = max(scored, key=lambda r: (r['img_auroc'], r.get('pix_auroc') or 0.0))
  return dict(epoch=best['epoch'], img_auroc=best['img_auroc'], pix_auroc=best.get('pix_auroc'),
              aupro=best.get('aupro'), note='selected on the test set; report the last epoch')


def _write_outputs(config, workdir, state, meta, result, maps, test_arrays, known,
                   feature_seconds, total_seconds):
  results = dict(
      name=f'{config.data.source}/{config.data.category}', epoch=int(state.epoch),
      **report.headline(result), per_type=result['per_type'],
      best_epoch=_best_epoch(meta['history']),
      seconds=dict(features=feature_seconds, train=meta['seconds']['train'],
                   eval=meta['seconds']['eval'], total=total_seconds),
      known_anomalies=[e['filename'] for e in known], history=meta['history'],
      device=f'{jax.devices()[0].device_kind} x{jax.device_count()}',
      config=config.to_dict())
  for group in ('seen', 'unseen'):
    if group in result:
      results[group] = result[group]
  report.write_json(os.path.join(workdir, 'results.json'), results)
  with open(os.path.join(workdir, 'results.md'), 'w') as f:
    f.write(report.results_markdown(results))
  _save_test_overlays(config, workdir, maps, test_arrays)
  return results


def _save_test_overlays(config, workdir, maps, arrays):
  """Overlays of up to ``report.num_overlays`` test images, every defect type represented."""
  n = len(arrays['labels'])
  count = min(config.report.num_overlays, n)
  rng = np.random.default_rng(config.seed)
  picks = []
  for defect_type in sorted(set(arrays['defect_types'])):
    members = np.flatnonzero(arrays['defect_types'] == defect_type)
    picks.append(int(rng.choice(members)))
  rest = [i for i in rng.permutation(n) if i not in picks]
  picks = sorted((picks + rest)[:count])
  report.save_overlays(os.path.join(workdir, 'overlays'), arrays['pixels'][picks], maps[picks],
                       list(arrays['filenames'][picks]), arrays['masks'][picks],
                       low=float(np.median(maps)), high=float(maps.max()))   # median: typical normal


# ----------------------------------------------------------------------------
# Eval and predict


def _restore_for_inference(config, workdir, channels):
  mngr = checkpoint.manager(workdir)
  template = train.create_state(config, channels, jax.random.key(config.seed))
  restored = checkpoint.restore_latest(mngr, template)
  if restored is None:
    raise FileNotFoundError(f'no checkpoint in {os.path.join(workdir, "checkpoints")}; '
                            f'train first: python main.py --workdir={workdir}')
  return restored


def evaluate_checkpoint(config, workdir: str) -> Dict[str, Any]:
  """Re-evaluates the latest checkpoint on the test set; rewrites results.json/md."""
  mesh = make_mesh()
  _, test_examples = load_splits(config)
  known, test_examples = split_known(config, test_examples)
  known_types = known_defect_types(config)
  backbone, backbone_vars, mean, std = load_frozen_backbone(config)
  arrays = input_pipeline.preprocess(test_examples, config.data.inp_size, mean, std)
  t0 = time.time()
  feats = train.extract_features(backbone, backbone_vars, arrays['images'],
                                 config.train.batch_size, mesh)
  feature_seconds = time.time() - t0
  state, meta = _restore_for_inference(config, workdir, [f.shape[-1] for f in feats])
  t0 = time.time()
  result, maps = evaluate_lp(config, train.make_lp_evaluator(config, mesh)(state, feats),
                             arrays, known_types)
  meta['seconds']['eval'] = time.time() - t0
  return _write_outputs(config, workdir, state, meta, result, maps, arrays, known,
                        feature_seconds, feature_seconds + meta['seconds']['eval'])


def predict(config, workdir: str) -> str:
  """Maps and scores for the images in ``config.predict.images``; returns the CSV path."""
  folder = _expand(config.predict.images) if config.predict.images else ''
  if not folder or not os.path.isdir(folder):
    raise FileNotFoundError(f'predict needs a folder of images: --config.predict.images=DIR '
                            f'(got {folder!r})')
  constants_path = os.path.join(workdir, 'predict_constants.json')
  if not os.path.isfile(constants_path):
    raise FileNotFoundError(f'{constants_path} is missing; train first: '
                            f'python main.py --workdir={workdir}')
  with open(constants_path) as f:
    constants = json.load(f)
  names = sorted(n for n in os.listdir(folder)
                 if n.lower().endswith(image_io.IMAGE_EXTENSIONS))
  if not names:
    raise FileNotFoundError(f'no images in {folder}')
  examples = []
  for name in names:
    image = image_io.decode_image(os.path.join(folder, name))
    examples.append(dict(image=image, mask=np.zeros(image.shape[:2], np.uint8),
                         has_mask=False, label=0, defect_type='unknown', filename=name))
  mesh = make_mesh()
  backbone, backbone_vars, mean, std = load_frozen_backbone(config)
  arrays = input_pipeline.preprocess(examples, config.data.inp_size, mean, std)
  feats = train.extract_features(backbone, backbone_vars, arrays['images'],
                                 config.train.batch_size, mesh)
  state, _ = _restore_for_inference(config, workdir, [f.shape[-1] for f in feats])
  lp = train.make_lp_evaluator(config, mesh)(state, feats)
  maps = anomaly_maps.apply_fixed_constants(lp, config.data.inp_size, constants)
  scores = maps.reshape(len(maps), -1).max(axis=1)
  nll = anomaly_maps.nll_scores(lp, config.data.inp_size, constants)
  out_dir = os.path.join(workdir, 'predictions')
  report.save_overlays(out_dir, arrays['pixels'], maps, names,
                       low=0.0, high=max(float(constants['score_threshold']) * 2, 1e-6))
  csv_path = os.path.join(out_dir, 'scores.csv')
  with open(csv_path, 'w', newline='') as f:
    writer = csv.writer(f)
    # score: the reference's image score (saturates at map_max far from normal);
    # nll_score ranks the same way where it does not saturate, and decides.
    writer.writerow(['filename', 'score', 'nll_score', 'nll_threshold', 'anomalous'])
    for name, score, image_nll in zip(names, scores, nll):
      writer.writerow([name, f'{score:.6f}', f'{image_nll:.6f}',
                       f"{constants['nll_threshold']:.6f}",
                       int(image_nll > constants['nll_threshold'])])
  return csv_path
