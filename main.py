"""bgad_jax command line: flags, config, dispatch.

  python main.py                               # embedded default (configs/demo.py)
  python main.py --config=configs/test.py --workdir=/tmp/run
"""

import os

from absl import app
from absl import flags
from ml_collections import config_flags

config_flags.DEFINE_config_file(
    'config', 'configs/demo.py', 'Config file, optionally with an argument: file.py:arg.',
    lock_config=True)
flags.DEFINE_string('workdir', None, 'Output folder (default: runs/<config name>).')
flags.DEFINE_enum('mode', 'flow_check', ['flow_check'],
                  'flow_check: train the flows on synthetic features and report.')
FLAGS = flags.FLAGS


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'Unexpected arguments: {argv[1:]}')
  # Imported after flag parsing so that --help stays fast.
  from bgad_jax import flow_check
  config_path = flags.FLAGS['config'].config_filename
  name = os.path.splitext(os.path.basename(config_path.split(':')[0]))[0]
  workdir = FLAGS.workdir or os.path.join('runs', name)
  if FLAGS.mode == 'flow_check':
    flow_check.run(FLAGS.config, workdir)


if __name__ == '__main__':
  app.run(main)
