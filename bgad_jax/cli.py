"""What main.py dispatches to: one run, or every MVTec category with a summary.

User errors (`bgad_jax.errors.UserError`) end here as one line on stderr and
exit code 2; anything else keeps its traceback.
"""

import ast
import difflib
import functools
import importlib.util
import logging
import os
import re
import shlex
import sys
import traceback
from typing import Any, Dict, List, Optional, Sequence

import jax

from bgad_jax import detector
from bgad_jax import distributed
from bgad_jax import engine
from bgad_jax import export
from bgad_jax import seeds
from bgad_jax import serve
from bgad_jax import sweep
from bgad_jax import settings
from bgad_jax.data import dataset as dataset_lib
from bgad_jax.errors import ConfigError, UserError
from bgad_jax.evaluation import report
from bgad_jax.training.sharding import is_main_process

USER_ERROR_EXIT_CODE = 2


def _print_result(results, workdir):
  with open(os.path.join(workdir, 'results.md')) as f:
    print('\n' + f.read())
  print(f'Results: {os.path.join(workdir, "results.json")}, results.md and test_scores.csv '
        '(every test image\'s score, highest first)')
  print(f'Overlays: {os.path.join(workdir, "overlays")}')
  print('TensorBoard: ' + shlex.join(['tensorboard', '--logdir',
                                      os.path.join(workdir, 'tensorboard')]))
  seconds = results['seconds']
  print(f"Time: features {seconds['features']:.0f}s, training {seconds['train']:.0f}s, "
        f"evaluation {seconds['eval']:.0f}s")


def train_command(argv: Sequence[str]) -> str:
  """The shell command that trains what ``argv`` (a main.py command line) evaluates."""
  args, rest = [], list(argv[1:])
  while rest:
    arg = rest.pop(0)
    if arg == '--mode':
      rest = rest[1:]   # and its value
    elif not arg.startswith('--mode='):
      args.append(arg)
  return shlex.join(['python', 'main.py'] + args)


def run(config, workdir: str, mode: str, command: str = ''):
  """Runs ``mode`` ('train', 'eval', 'predict', 'export' or 'serve') of ``config`` in ``workdir``.

  ``command``: the command that trains this model, named when eval, predict
  or export find none (see `train_command`).
  """
  config = settings.resolve(config)
  if mode in ('predict', 'export', 'serve') and jax.process_count() > 1:
    raise ConfigError(f'--mode={mode} runs in one process (train and eval can use several)')
  seed_list = list(config.seeds)
  if seed_list and mode not in ('train', 'eval'):
    raise ConfigError(f'--mode={mode} uses one model: drop --config.seeds and pass '
                      f'--workdir={seeds.seed_folder(workdir, seed_list[0])} (or another seed)')
  if (mode in ('eval', 'predict', 'export', 'serve') and config.data.category != 'all'
      and not seed_list):
    detector.require_trained_model(workdir, command)   # before any data work
  if mode == 'serve':
    if config.data.category == 'all':
      raise ConfigError('--mode=serve shows one model: name its class, not all')
    serve.serve(config, workdir, ready=lambda url: print(f'Inspection page: {url}', flush=True))
    return None
  if config.data.category == 'all':

    def run_one(category, folder):
      category_config = config.copy_and_resolve_references()
      category_config.data.category = category
      return run(category_config, folder, mode, command)

    process = sweep.process_from_env()
    if config.parallel == 'data':   # one run over every process, class after class
      process = (jax.process_index(), jax.process_count(), process[2])
    outcomes = sweep.run_all(dataset_lib.all_categories(config.data), workdir, run_one,
                             config.parallel, summarise=mode in ('train', 'eval'),
                             process=process)
    if outcomes is None or mode in ('predict', 'export'):
      return None   # another process summarises, or no metrics to summarise
    return {c: o['row'] for c, o in outcomes.items()}
  if seed_list:
    return seeds.run_seeds(config, workdir, seed_list,
                           lambda seed_config, folder: run(seed_config, folder, mode, command))
  if mode == 'export':
    path = export.write_export(workdir, config, config.export.platforms,
                               config.export.format)
    size = config.data.inp_size
    loader = ('onnxruntime.InferenceSession loads it' if config.export.format == 'onnx'
              else 'jax.export.deserialize loads it')
    print(f'Exported: {path} ({os.path.getsize(path) / 2 ** 20:.1f} MiB; uint8 [batch, {size}, '
          f'{size}, 3] -> maps, scores, nll scores; {loader})')
    return None
  if mode == 'predict':
    csv_path = engine.predict(config, workdir)
    print(f'Scores: {csv_path}\nOverlays: {os.path.dirname(csv_path)}')
    return None
  results = (engine.train_and_evaluate(config, workdir) if mode == 'train'
             else engine.evaluate_checkpoint(config, workdir))
  if is_main_process():
    _print_result(results, workdir)
  return report.headline(results)


class _DropCustomConfigNotes(logging.Filter):
  """TFDS notes every non-MVTec category as a 'custom data configuration': expected here."""

  def filter(self, record):
    return not record.getMessage().startswith('Using custom data configuration')


def plain_warnings(handler: logging.Handler) -> None:
  """Warnings as 'WARNING: message' lines, without TFDS's per-category note."""
  handler.setFormatter(logging.Formatter('%(levelname)s: %(message)s'))
  handler.addFilter(_DropCustomConfigNotes())


def main(config, workdir: str, mode: str, argv: Sequence[str], verbose: bool = False,
         cluster: Optional[Dict[str, Any]] = None) -> int:
  """`run`, with user errors reported in one line; returns the exit code.

  ``cluster``: keyword arguments of `distributed.initialize` (main.py's
  --distributed, --coordinator_address, --num_processes, --process_id).
  """
  try:
    distributed.initialize(parallel=config.parallel, **(cluster or {}))
    if not is_main_process():   # process 0 logs; the others report errors only
      logging.getLogger().setLevel(logging.ERROR)
    run(config, workdir, mode, train_command(argv))
  except UserError as err:
    if verbose:
      traceback.print_exc()
    print(f'error: {err}', file=sys.stderr)
    return USER_ERROR_EXIT_CODE
  return 0


def _load_config(argv: Sequence[str]):
  """The config that ``argv``'s --config names, before overrides (None if it cannot load)."""
  path, _, arg = _config_arg(argv).partition(':')
  try:
    spec = importlib.util.spec_from_file_location('_bgad_config_for_keys', path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.get_config(arg) if arg else module.get_config()
  except Exception:   # pylint: disable=broad-except
    return None


_TYPE_NAMES = {bool: 'true or false', int: 'an integer', float: 'a number',
               str: 'a string', tuple: 'a comma-separated list'}


def _field_value(config, key: str) -> Any:
  """The value of dotted field ``key`` of ``config`` (None: no such field or no config)."""
  try:
    return functools.reduce(lambda section, name: section[name], key.split('.'), config)
  except (KeyError, AttributeError, TypeError):
    return None


def wrong_value_type(argv: Sequence[str], error: str) -> Optional[str]:
  """A message naming the field, the value and the type wanted, when absl's ``error``
  is about the value of a ``--config.<key>`` override (else None)."""
  match = re.match(r'flag --config\.([\w.]+)=(.*?): ', error)
  config = _load_config(argv) if match else None
  if config is None:
    return None
  key, value = match.groups()
  default = _field_value(config, key)
  if default is None:
    return None
  wanted = _TYPE_NAMES.get(type(default), type(default).__name__)
  return (f'--config.{key}={value}: {key} takes {wanted} (its default is {default!r}), '
          f'not {value!r}')


def _config_arg(argv: Sequence[str]) -> str:
  value = 'configs/demo.py'
  for i, arg in enumerate(argv):
    if arg.startswith('--config='):
      value = arg.split('=', 1)[1]
    elif arg == '--config' and i + 1 < len(argv):
      value = argv[i + 1]
  return value


def _field_keys(config, prefix: str = '') -> List[str]:
  """Dotted names of every field (not the sections) of a ConfigDict."""
  keys = []
  for name, value in config.items():
    keys += (_field_keys(value, prefix + name + '.') if hasattr(value, 'items')
             else [prefix + name])
  return keys


def unknown_config_key(argv: Sequence[str]) -> Optional[str]:
  """A message naming the first ``--config.<key>`` of ``argv`` that the config lacks.

  Returns None when every override names an existing field (or the config
  file itself cannot be loaded: the flag parser reports that).
  """
  config = _load_config(argv)
  if config is None:
    return None
  fields = _field_keys(config)
  for option in argv:
    if not option.startswith('--config.'):
      continue
    key = option[len('--config.'):].split('=', 1)[0]
    if key not in fields:
      return f'unknown config key {key} (in {option}); {_closest_keys(key, fields)}'
  return None


def _closest_keys(key: str, fields: Sequence[str]) -> str:
  section = key.rpartition('.')[0]
  closest = difflib.get_close_matches(key, fields, n=3, cutoff=0.6) or sorted(
      k for k in fields if k.rpartition('.')[0] == section)[:8]
  return f'closest: {", ".join(closest)}' if closest else 'every key is in configs/common.py'


_TRUE, _FALSE = ('true', '1', 'yes'), ('false', '0', 'no')


def _parse_like(default: Any, text: str) -> Any:
  """``text`` as a value of ``default``'s type (ValueError if it is not one)."""
  if isinstance(default, bool):
    if text.lower() not in _TRUE + _FALSE:
      raise ValueError(text)
    return text.lower() in _TRUE
  if isinstance(default, (int, float)):
    return type(default)(text)
  if isinstance(default, tuple):
    items = [item.strip() for item in text.split(',') if item.strip()]
    return tuple(_parse_like(default[0], item) if default else item for item in items)
  return text


def _is_literal(text: str) -> bool:
  try:
    ast.literal_eval(text)
    return True
  except (ValueError, SyntaxError):
    return False


def quote_list_overrides(argv: Sequence[str]) -> List[str]:
  """``argv`` with each ``--config.<key>=a,b`` of a list field written as a Python tuple.

  ml_collections reads a list override as a Python literal, and a list of
  paths (``test/crack/003.png,test/hole/010.png``) is not one: it would fail.
  Items are read as `set_field` reads them; literals and other fields pass unchanged.
  """
  config, out = None, []
  for option in argv:
    key, equals, text = option.partition('=')
    if key.startswith('--config.') and equals and ',' in text and not _is_literal(text):
      config = config if config is not None else _load_config(argv)
      default = _field_value(config, key[len('--config.'):])   # None: absl reports it
      if isinstance(default, tuple):
        try:
          option = f'{key}={_parse_like(default, text)!r}'
        except ValueError:   # a wrong item type: absl's error names the field
          pass
    out.append(option)
  return out


def set_field(config, assignment: str) -> None:
  """Sets one field of ``config`` from 'section.name=value', in place.

  The value is read as the field's type, as a ``--config.<key>`` override
  of main.py is: true/false, a number, a string, or a comma-separated list.

  Raises:
    ConfigError: no '=', no such field, or a value of the wrong type.
  """
  key, equals, text = assignment.partition('=')
  if not equals:
    raise ConfigError(f'{assignment!r}: write KEY=VALUE, e.g. data.synthetic_repeats=20')
  fields = _field_keys(config)
  if key not in fields:
    raise ConfigError(f'unknown config key {key} (in {assignment}); {_closest_keys(key, fields)}')
  *sections, name = key.split('.')
  section = functools.reduce(lambda node, part: node[part], sections, config)
  default = section[name]
  try:
    section[name] = _parse_like(default, text)
  except ValueError:
    wanted = _TYPE_NAMES.get(type(default), type(default).__name__)
    raise ConfigError(f'{assignment}: {key} takes {wanted} (it is {default!r} now), '
                      f'not {text!r}') from None
