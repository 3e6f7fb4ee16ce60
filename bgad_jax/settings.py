"""A run's settings: checked and parsed once, at entry (`resolve`).

`validate` raises one error naming every bad field. `resolve` then returns a
copy whose list-valued fields are canonical tuples, which the engine and
everything below it read as they are: ``data.anomaly_strategy`` (canonical
strategy names), ``data.known_defect_types``, ``data.known_anomaly_files``,
``data.exclude_from_test``, ``export.platforms`` (strings) and ``seeds``
(ints). In the configs they are tuples; on the command line they accept a comma string
(``--config.data.anomaly_strategy=0,1``) or a tuple
(``--config.data.anomaly_strategy="('real', 'cutpaste')"``).
"""

import weakref
from typing import Iterable, List, Tuple

import jax

from bgad_jax.data import demo_data, synthesis
from bgad_jax.data import strategies as strategies_lib
from bgad_jax.data.dataset import SOURCES, builder_dataset
from bgad_jax.errors import ConfigError
from bgad_jax.evaluation.calibration import THRESHOLD_RULES
from bgad_jax.evaluation.maps import IMAGE_SCORES, LEVEL_AGGREGATIONS
from bgad_jax.export import FORMATS as EXPORT_FORMATS
from bgad_jax.export import PLATFORMS as EXPORT_PLATFORMS
from bgad_jax.models import backbone as backbone_lib
from bgad_jax.training.features import MASK_POOLING_ON, NEIGHBOURHOOD_ON
from bgad_jax.training.losses import PUSH_AVERAGES
from bgad_jax.training.training_set import MASK_POOLINGS


def as_list(value) -> List[str]:
  """A list field as strings: a tuple/list of items, a comma string, or a mix of both."""
  items = value if isinstance(value, (tuple, list)) else [value]
  names = []
  for item in items:
    names += [part.strip() for part in str(item).split(',') if part.strip()]
  return names


def _strategies(config) -> Tuple[str, ...]:
  """The canonical anomaly strategies of ``config.data.anomaly_strategy``."""
  return strategies_lib.resolve(as_list(config.data.anomaly_strategy))


def _known_anomaly_files(config) -> List[str]:
  """``config.data.known_anomaly_files`` as a list ([] = draw ``num_anomalies``)."""
  return as_list(config.data.known_anomaly_files)


def _seeds(config) -> List[int]:
  """``config.seeds`` as ints ([] = one run with ``config.seed``).

  Raises:
    ConfigError: an entry is not a non-negative integer, or one repeats.
  """
  names = as_list(config.seeds)
  if not all(n.isdigit() for n in names) or len(set(names)) < len(names):
    raise ConfigError(f'seeds={config.seeds!r}: distinct non-negative integers, e.g. '
                      '--config.seeds=0,1,2')
  return [int(n) for n in names]


def _uses_known_anomalies(config) -> bool:
  return config.data.num_anomalies > 0 or bool(_known_anomaly_files(config))


def _known_defect_types(config) -> List[str]:
  """``config.data.known_defect_types`` as a list ([] = every type may be known)."""
  return as_list(config.data.known_defect_types)


def _one_of(errors, name, value, allowed: Iterable):
  allowed = tuple(allowed)
  if value not in allowed:
    errors.append(f'{name}={value!r}: must be one of {", ".join(map(str, allowed))}')


def _at_least(errors, name, value, low):
  if not value >= low:
    errors.append(f'{name}={value!r}: must be >= {low}')


def _check_backbone(config, errors):
  backbone = config.backbone
  _one_of(errors, 'backbone.name', backbone_lib.canonical_name(backbone.name),
          backbone_lib.BACKBONES)
  _one_of(errors, 'backbone.normalization', backbone.normalization, ('imagenet', 'backbone'))
  _one_of(errors, 'backbone.dtype', backbone.dtype, ('float32', 'bfloat16'))
  _one_of(errors, 'backbone.depthwise_impl', backbone.depthwise_impl, ('auto', 'conv', 'shifted'))
  neighbourhood = backbone.get('neighbourhood', 1)
  if not (isinstance(neighbourhood, int) and neighbourhood >= 1 and neighbourhood % 2):
    errors.append(f'backbone.neighbourhood={neighbourhood!r}: must be an odd integer >= 1 '
                  '(a window centred on each vector)')
  _one_of(errors, 'backbone.neighbourhood_on', backbone.get('neighbourhood_on', 'all'),
          NEIGHBOURHOOD_ON)
  if backbone.feature_levels != 3:   # the flows, positions and maps assume the three taps
    errors.append(f'backbone.feature_levels={backbone.feature_levels!r}: bgad_jax uses the '
                  'three levels of the reference (strides 4, 8, 16); only 3 is supported')


def _check_flow_and_loss(config, errors):
  flow, loss = config.flow, config.loss
  _at_least(errors, 'flow.coupling_layers', flow.coupling_layers, 1)
  if not flow.clamp_alpha > 0:
    errors.append(f'flow.clamp_alpha={flow.clamp_alpha!r}: must be > 0')
  if flow.pos_embed_dim <= 0 or flow.pos_embed_dim % 4:
    errors.append(f'flow.pos_embed_dim={flow.pos_embed_dim!r}: must be a positive multiple of 4')
  try:
    jax.lax.Precision(flow.matmul_precision)
  except ValueError:
    errors.append(f'flow.matmul_precision={flow.matmul_precision!r}: must be a JAX precision '
                  'name (highest, high, default)')
  if not 0 <= loss.pos_beta < 1:
    errors.append(f'loss.pos_beta={loss.pos_beta!r}: must be in [0, 1)')
  if not loss.normalizer > 0:
    errors.append(f'loss.normalizer={loss.normalizer!r}: must be > 0')
  _at_least(errors, 'loss.margin_tau', loss.margin_tau, 0)
  _at_least(errors, 'loss.bgspp_lambda', loss.bgspp_lambda, 0)
  _one_of(errors, 'loss.push_average', loss.push_average, PUSH_AVERAGES)
  if not 0 <= loss.push_trim < 1:
    errors.append(f'loss.push_trim={loss.push_trim!r}: must be in [0, 1)')


def _check_train(config, errors, num_devices):
  train = config.train
  for name in ('meta_epochs', 'sub_epochs', 'batch_size', 'num_vectors', 'eval_every'):
    _at_least(errors, f'train.{name}', train[name], 1)
  _at_least(errors, 'train.lr_warm_epochs', train.lr_warm_epochs, 0)
  _one_of(errors, 'train.lr_warmup', train.lr_warmup, ('linear', 'reference'))
  _one_of(errors, 'train.grad_reduction', train.grad_reduction, ('ordered', 'psum'))
  if not train.lr > 0:
    errors.append(f'train.lr={train.lr!r}: must be > 0')
  if not 0 < train.lr_decay_rate <= 1:
    errors.append(f'train.lr_decay_rate={train.lr_decay_rate!r}: must be in (0, 1]')
  if train.num_vectors >= 1 and train.num_vectors % num_devices:
    errors.append(f'train.num_vectors={train.num_vectors}: must be divisible by the number of '
                  f'devices ({num_devices})')


def _check_data(config, errors):
  data = config.data
  _one_of(errors, 'data.source', data.source, SOURCES)
  if not data.category:
    errors.append("data.category='': name the class (e.g. configs/folder.py:<category>)")
  elif data.source not in ('demo', 'folder') and data.source in SOURCES:
    from tfds_mvtec import DATASETS
    categories = DATASETS[builder_dataset(data.source)].categories
    _one_of(errors, 'data.category', data.category, categories + ('all',))
  _at_least(errors, 'data.inp_size', data.inp_size, 16)
  if data.source == 'demo':
    _check_demo(data, errors)
  _at_least(errors, 'data.num_anomalies', data.num_anomalies, 0)
  _at_least(errors, 'data.anomaly_repeats', data.anomaly_repeats, 0)
  _at_least(errors, 'data.synthetic_repeats', data.synthetic_repeats, 0)
  _one_of(errors, 'data.anomaly_count_mode', data.anomaly_count_mode, ('total', 'per_type'))
  _one_of(errors, 'data.mask_pooling', data.mask_pooling, MASK_POOLINGS)
  _one_of(errors, 'data.mask_pooling_on', data.get('mask_pooling_on', 'all'), MASK_POOLING_ON)
  if not 0.0 <= data.val_fraction <= 0.5:
    errors.append(f'data.val_fraction={data.val_fraction}: a fraction of the normal training '
                  'images in [0, 0.5] (0: none held out, as the reference)')
  _at_least(errors, 'data.val_min_images', data.val_min_images, 2)
  _one_of(errors, 'data.foreground', data.foreground, ('auto', 'all', 'folder'))
  _one_of(errors, 'data.cutpaste_placement', data.cutpaste_placement, synthesis.PLACEMENTS)
  if not 0.0 <= data.get('cutpaste_border_share', 1.0) <= 1.0:
    errors.append(f'data.cutpaste_border_share={data.cutpaste_border_share}: a share in [0, 1]')
  if data.get('cutpaste_reach_border', False) and data.cutpaste_placement == 'in_place':
    # The reference's own move (a copy off an object's foreground) keeps its margin.
    errors.append('data.cutpaste_reach_border=True acts on copies moved at random only, '
                  "and data.cutpaste_placement='in_place' moves none: set it to "
                  "'random_on_textures' (as best) or 'random', or the option to False")
  if data.foreground == 'folder' and not data.foreground_dir:
    errors.append("data.foreground_dir='': data.foreground=folder needs the mask folder")
  try:
    chosen = _strategies(config)
  except ValueError as err:
    errors.append(f'data.anomaly_strategy={data.anomaly_strategy!r}: {err}')
    return
  if not chosen:
    errors.append(f'data.anomaly_strategy={data.anomaly_strategy!r}: name at least one of '
                  f'{", ".join(strategies_lib.STRATEGIES)}')
  for name in chosen:
    if name in strategies_lib.NEEDS_KNOWN and not _uses_known_anomalies(config):
      errors.append(f'data.anomaly_strategy: {name} transforms known anomalies: it needs '
                    'data.num_anomalies > 0 or data.known_anomaly_files')


def _check_demo(data, errors):
  demo = data.get('demo')
  if demo is None:
    errors.append("data.demo: data.source='demo' needs its sizes (size, num_train, "
                  'num_test_good, num_per_defect; configs/demo.py sets them)')
    return
  for name, low in (('size', 16), ('num_train', 1), ('num_test_good', 0), ('num_per_defect', 0)):
    if name not in demo:
      errors.append(f'data.demo.{name}: missing (configs/demo.py sets it)')
    else:
      _at_least(errors, f'data.demo.{name}', demo[name], low)
  if demo.get('seed', -1) < -1:
    errors.append(f"data.demo.seed={demo.seed}: the images' seed, >= 0, or -1 for the run's "
                  'seed (config.seed)')
  _one_of(errors, 'data.demo.defect_placement', demo.get('defect_placement', 'centre'),
          demo_data.PLACEMENTS)
  _one_of(errors, 'data.demo.split', demo.get('split', 'rows'), demo_data.SPLITS)


def _check_predict(config, errors):
  _one_of(errors, 'predict.threshold', config.predict.threshold, THRESHOLD_RULES)
  if not 0.0 < config.predict.target_fpr < 1.0:
    errors.append(f'predict.target_fpr={config.predict.target_fpr}: a rate in (0, 1), '
                  'e.g. 0.01')


def _check_maps(config, errors):
  _at_least(errors, 'maps.smoothing_sigma', config.maps.smoothing_sigma, 0.0)
  max_filter = config.maps.get('max_filter', 0)   # configs saved before the option: off
  if isinstance(max_filter, bool) or not isinstance(max_filter, int) or (
      max_filter != 0 and (max_filter < 0 or max_filter % 2 == 0)):
    errors.append(f'maps.max_filter={max_filter!r}: 0 (off) or an odd window side in '
                  'pixels, e.g. 9')
  _one_of(errors, 'maps.image_score', config.maps.image_score, IMAGE_SCORES)
  _one_of(errors, 'maps.level_aggregation', config.maps.level_aggregation, LEVEL_AGGREGATIONS)
  if not 0.0 < config.maps.top_k_fraction <= 1.0:
    errors.append(f'maps.top_k_fraction={config.maps.top_k_fraction}: a fraction of the '
                  'pixels in (0, 1], e.g. 0.01')


def _check_parallel(config, errors):
  _one_of(errors, 'parallel', config.parallel, ('data', 'categories'))
  try:
    _seeds(config)
  except ConfigError as err:
    errors.append(str(err))


def _check_serve(config, errors):
  serve = config.serve
  if not 0 <= serve.port <= 65535:
    errors.append(f'serve.port={serve.port}: a TCP port in 0..65535 (0: any free one)')
  for name in ('max_upload_mb', 'read_timeout_s', 'request_timeout_s'):
    if not serve[name] > 0:
      errors.append(f'serve.{name}={serve[name]!r}: must be > 0')
  for name in ('max_pixels', 'max_files', 'max_connections', 'backlog'):
    _at_least(errors, f'serve.{name}', serve[name], 1)


def _check_export(config, errors):
  _one_of(errors, 'export.format', config.export.format, EXPORT_FORMATS)
  platforms = as_list(config.export.platforms)
  unknown = [p for p in platforms if p not in EXPORT_PLATFORMS]
  if unknown or not platforms:
    errors.append(f'export.platforms={config.export.platforms!r}: name one or more of '
                  f'{", ".join(EXPORT_PLATFORMS)}')


def validate(config, num_devices: int = None) -> None:
  """Checks every field bgad_jax reads.

  Raises:
    ConfigError: listing every bad field with its value and what is allowed.
  """
  errors: List[str] = []
  _check_backbone(config, errors)
  _check_flow_and_loss(config, errors)
  _check_train(config, errors, num_devices or jax.device_count())
  _check_data(config, errors)
  _check_predict(config, errors)
  _check_maps(config, errors)
  _check_parallel(config, errors)
  _check_serve(config, errors)
  _check_export(config, errors)
  _at_least(errors, 'report.aupro_thresholds', config.report.aupro_thresholds, 0)
  _at_least(errors, 'report.num_overlays', config.report.num_overlays, 0)
  if errors:
    raise ConfigError('invalid config:\n  ' + '\n  '.join(errors))


_RESOLVED = weakref.WeakValueDictionary()   # id -> a config `resolve` returned


def resolve(config, num_devices: int = None):
  """The run's settings: ``config`` validated, with its list fields parsed (see the module
  docstring), as a new ConfigDict. A config `resolve` returned comes back as it is,
  so each entry point may call it and a run is still checked once.

  Raises:
    ConfigError: listing every bad field (`validate`).
  """
  if _RESOLVED.get(id(config)) is config:
    return config
  validate(config, num_devices)
  resolved = config.copy_and_resolve_references()
  resolved.seeds = tuple(_seeds(config))
  resolved.data.anomaly_strategy = _strategies(config)
  resolved.data.known_defect_types = tuple(_known_defect_types(config))
  resolved.data.known_anomaly_files = tuple(_known_anomaly_files(config))
  resolved.data.exclude_from_test = tuple(as_list(config.data.exclude_from_test))
  resolved.export.platforms = tuple(as_list(config.export.platforms))
  _RESOLVED[id(resolved)] = resolved
  return resolved
