"""bgad_jax command line: flags, config, dispatch.

  python main.py                                        # demo: train + evaluate, offline
  python main.py --config=configs/mvtec.py:carpet --config.data.root=/data/mvtec
  python main.py --config=configs/mvtec.py:all          # every class + a summary table
  python main.py --mode=eval --workdir=runs/demo        # re-evaluate the checkpoint
  python main.py --mode=predict --config.predict.images=DIR --workdir=runs/demo
  python main.py --mode=export --workdir=runs/demo      # one StableHLO file, no bgad_jax needed
  python main.py --mode=serve --workdir=runs/demo       # inspection page on 127.0.0.1:8080
  python -m bgad_jax.launch --num_processes 2 -- main.py   # one run over two processes

A problem with the config, data, checkpoint or weights ends in one line naming
it and exit code 2 (--verbose adds the traceback).
"""

import os
import sys

from absl import app
from absl import flags
from absl import logging
from ml_collections import config_flags


def _user_error(message: str) -> None:
  from bgad_jax import cli   # imported late so that --help stays fast
  print(f'error: {message}', file=sys.stderr)
  sys.exit(cli.USER_ERROR_EXIT_CODE)


if any(arg.startswith('--config.') and ',' in arg for arg in sys.argv):
  # Before the flag is defined: without --config, overrides apply at definition.
  from bgad_jax import cli
  sys.argv = cli.quote_list_overrides(sys.argv)

try:
  config_flags.DEFINE_config_file(
      'config', 'configs/demo.py', 'Config file, optionally with an argument: file.py:arg.',
      lock_config=True)
except (AttributeError, KeyError):
  # Without --config, the default file's overrides are applied here, at definition.
  from bgad_jax import cli
  if '--verbose' in sys.argv or cli.unknown_config_key(sys.argv) is None:
    raise
  _user_error(cli.unknown_config_key(sys.argv))
flags.DEFINE_string('workdir', None, 'Output folder (default: runs/<config name>[_<arg>]).')
flags.DEFINE_enum('mode', 'train', ['train', 'eval', 'predict', 'export', 'serve'],
                  'train: train then evaluate; eval: the workdir checkpoint on the test set; '
                  'predict: maps and scores for --config.predict.images; export: the '
                  'inference graph as <workdir>/export/bgad.<export.format>; serve: the '
                  'inspection page on serve.host:serve.port.')
flags.DEFINE_enum('distributed', 'auto', ['auto', 'on', 'off'],
                  'Join the processes of a multi-process run with jax.distributed: auto '
                  '(when the flags below, bgad_jax.launch, SLURM or a GKE TPU slice say so), '
                  'on (always: JAX finds the cluster, e.g. a Cloud TPU pod slice), off.')
flags.DEFINE_string('coordinator_address', '', 'host:port of process 0 (multi-process runs).')
flags.DEFINE_integer('num_processes', None, 'Processes of a multi-process run.')
flags.DEFINE_integer('process_id', None, 'This process in a multi-process run (0 = writes '
                     'the outputs).')
flags.DEFINE_bool('verbose', False, 'Show the Python traceback of configuration, data, '
                  'checkpoint and weights errors too.')
FLAGS = flags.FLAGS


def default_workdir(config_arg: str) -> str:
  path, _, arg = config_arg.partition(':')
  name = os.path.splitext(os.path.basename(path))[0]
  arg = arg.replace(',', '_')   # carpet,best -> runs/mvtec_carpet_best
  return os.path.join('runs', f'{name}_{arg}' if arg else name)


def parse_flags(argv):
  """absl's parsing; a flag or --config.<key> that is unknown or has a value of the
  wrong type ends in one 'error:' line and exit code 2, like every other user error."""
  try:
    return FLAGS(argv)
  except flags.Error as error:
    from bgad_jax import cli
    _user_error(cli.wrong_value_type(argv, str(error)) or str(error))
  except (AttributeError, KeyError):
    from bgad_jax import cli
    if '--verbose' in argv or cli.unknown_config_key(argv) is None:
      raise
    _user_error(cli.unknown_config_key(argv))


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'Unexpected arguments: {argv[1:]}')
  logging.set_verbosity(logging.WARNING)
  from bgad_jax import cli   # imported after flag parsing so that --help stays fast
  cli.plain_warnings(logging.get_absl_handler())
  workdir = FLAGS.workdir or default_workdir(flags.FLAGS['config'].config_filename)
  cluster = dict(mode=FLAGS.distributed, coordinator_address=FLAGS.coordinator_address,
                 num_processes=FLAGS.num_processes, process_id=FLAGS.process_id)
  return cli.main(FLAGS.config, workdir, FLAGS.mode, sys.argv, FLAGS.verbose, cluster)


if __name__ == '__main__':
  app.run(main, flags_parser=parse_flags)
