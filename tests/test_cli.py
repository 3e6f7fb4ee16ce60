"""cli: every user error is one line naming its culprit, exit code 2, nothing half-done.

The runs here stop before any training: they take the data path of a run on
the tiny MVTec-layout dummy folder (bottle: 3 normal training images, 2 normal
and 3 anomalous test images).
"""

import os
import shutil

import pytest

import tfds_mvtec
from bgad_jax import cli
from bgad_jax.errors import ConfigError
from configs import test as test_config

DUMMY = os.path.join(os.path.dirname(tfds_mvtec.__file__), 'dummy_data')


@pytest.fixture
def setup(tmp_path):
  """(config, argv, paths) of a folder-source run on a copy of the dummy bottle."""
  root = tmp_path / 'data root'
  shutil.copytree(os.path.join(DUMMY, 'bottle'), root / 'bottle')
  config = test_config.get_config()
  config.data.update(dict(source='folder', category='bottle', root=str(root),
                          tfds_dir=str(tmp_path / 'tfds'), num_anomalies=1))
  workdir = tmp_path / 'work dir'
  argv = ['main.py', '--config=configs/test.py', f'--workdir={workdir}']
  return config, argv, dict(root=root, workdir=workdir, tfds=tmp_path / 'tfds')


def _run(capsys, config, argv, mode='train', verbose=False):
  code = cli.main(config, str(argv[2].split('=', 1)[1]), mode, argv + [f'--mode={mode}'],
                  verbose)
  return code, capsys.readouterr().err


def _assert_one_line_error(code, err, *culprits):
  """One 'error:' line (a config error adds one line per bad field) naming every culprit."""
  assert code == cli.USER_ERROR_EXIT_CODE, err[-3000:]
  assert err.count('error: ') == 1 and 'Traceback' not in err, err[-3000:]
  message = err[err.index('error: '):]
  for culprit in culprits:
    assert culprit in message, (culprit, message)


def _corrupt_image(paths, config):
  path = paths['root'] / 'bottle' / 'train' / 'good' / '001.png'
  path.write_bytes(b'not a png')
  return [str(path)]


def _truncated_image(paths, config):
  path = paths['root'] / 'bottle' / 'test' / 'broken_large' / '000.png'
  path.write_bytes(path.read_bytes()[:60])
  return [str(path)]


def _no_train_good(paths, config):
  shutil.rmtree(paths['root'] / 'bottle' / 'train' / 'good')
  return ['train/good', str(paths['root'] / 'bottle')]


def _root_missing(paths, config):
  config.data.root = str(paths['root'] / 'elsewhere')
  return ['data.root', str(paths['root'] / 'elsewhere')]


def _too_many_anomalies(paths, config):
  config.data.num_anomalies = 7
  return ['data.num_anomalies=7', 'only 3']


def _unknown_defect_type(paths, config):
  config.data.known_defect_types = ('dent',)
  return ['data.known_defect_types', 'dent']


def _unknown_known_file(paths, config):
  config.data.known_anomaly_files = ('test/dent/000.png',)
  return ['data.known_anomaly_files', 'test/dent/000.png']


def _bad_strategy(paths, config):
  config.data.anomaly_strategy = ('real', 'cutpast')
  return ['data.anomaly_strategy', 'cutpast']


def _missing_weights(paths, config):
  config.backbone.weights = str(paths['root'] / 'b6.pth')
  return ['--config.backbone.weights', str(paths['root'] / 'b6.pth')]


def _missing_foreground_masks(paths, config):
  config.data.update(dict(foreground='folder', foreground_dir=str(paths['root']),
                          anomaly_strategy=('real', 'cutpaste')))
  return ['data.foreground_dir', 'train/good/000.png']


@pytest.mark.parametrize('make_problem', [
    _corrupt_image, _truncated_image, _no_train_good, _root_missing, _too_many_anomalies,
    _unknown_defect_type, _unknown_known_file, _bad_strategy, _missing_weights,
    _missing_foreground_masks])
def test_user_error_is_one_line_naming_the_culprit(setup, capsys, make_problem):
  config, argv, paths = setup
  culprits = make_problem(paths, config)
  code, err = _run(capsys, config, argv)
  _assert_one_line_error(code, err, *culprits)


@pytest.mark.parametrize('mode', ['eval', 'predict', 'export', 'serve'])
def test_eval_and_predict_without_model_stop_before_data_work(setup, capsys, mode):
  config, argv, paths = setup
  config.predict.images = str(paths['root'])
  code, err = _run(capsys, config, argv, mode=mode)
  _assert_one_line_error(code, err, 'no trained model', str(paths['workdir']),
                         # the command that trains it, with its --config, quoted
                         f"python main.py --config=configs/test.py '--workdir={paths['workdir']}'")
  assert not paths['tfds'].exists() and not (paths['workdir'] / 'checkpoints').exists()


def test_verbose_adds_the_traceback(setup, capsys):
  config, argv, paths = setup
  _root_missing(paths, config)
  code, err = _run(capsys, config, argv, verbose=True)
  assert code == cli.USER_ERROR_EXIT_CODE
  assert 'Traceback' in err and 'DatasetFolderError' in err and 'error: data.root' in err


def test_train_command_drops_the_mode_and_quotes_paths():
  command = cli.train_command(['main.py', '--config=configs/mvtec.py:carpet', '--mode', 'eval',
                               '--workdir=/runs/my run', '--mode=predict',
                               '--config.data.root=/data/mvtec'])
  assert command == ("python main.py --config=configs/mvtec.py:carpet '--workdir=/runs/my run' "
                     '--config.data.root=/data/mvtec')


@pytest.mark.parametrize('option, closest', [
    ('--config.train.foo=1', 'train.lr'),
    ('--config.trian.lr=1', 'train.lr'),
    ('--config.data.rot=/x', 'data.root'),
    ('--config.flow.coupling_layer=2', 'flow.coupling_layers'),
    ('--config.data.demo.sise=64', 'data.demo.size'),
])
def test_unknown_config_key_names_it_and_the_closest(option, closest):
  message = cli.unknown_config_key(['main.py', '--config=configs/test.py',
                                    '--config.train.lr=0.1', option])
  key = option[len('--config.'):].split('=')[0]
  assert message.startswith(f'unknown config key {key} ')
  assert closest in message.split('closest: ')[1].split(', ')


def test_known_config_keys_pass():
  assert cli.unknown_config_key(['main.py', '--config=configs/test.py',
                                 '--config.data.demo.size=64', '--config.seed=3']) is None
  assert cli.unknown_config_key(['main.py', '--config=configs/mvtec.py:carpet',
                                 '--config.data.root=/x']) is None


def test_set_field_reads_the_value_as_the_field_type():
  config = test_config.get_config()
  for assignment in ('data.synthetic_repeats=20', 'train.lr=1e-3', 'maps.score_unsmoothed=true',
                     'data.anomaly_strategy=real, cutpaste,perlin', 'maps.image_score=top_k_mean',
                     'train.lr_decay_epochs=40,80'):
    cli.set_field(config, assignment)
  assert config.data.synthetic_repeats == 20 and type(config.data.synthetic_repeats) is int
  assert config.train.lr == 1e-3 and config.maps.score_unsmoothed is True
  assert config.data.anomaly_strategy == ('real', 'cutpaste', 'perlin')
  assert config.maps.image_score == 'top_k_mean'
  assert config.train.lr_decay_epochs == (40, 80)
  cli.set_field(config, 'maps.score_unsmoothed=False')
  assert config.maps.score_unsmoothed is False


def test_a_list_of_paths_reaches_the_config_as_a_tuple():
  """ml_collections reads list overrides as Python literals; paths are none."""
  paths = '--config.data.known_anomaly_files=test/crack/001.png,test/hole/001.png'
  unchanged = ['--config.data.anomaly_strategy=0,2', '--config.train.lr=1e-3',
               '--config.data.root=/a,b', '--config.no_such_key=a/b,c']
  argv = cli.quote_list_overrides(['main.py', '--config=configs/test.py', paths, *unchanged])
  assert argv[2] == ("--config.data.known_anomaly_files=('test/crack/001.png', "
                     "'test/hole/001.png')")
  assert argv[3:] == unchanged   # a literal, not a list, a string field, an unknown key
  from ml_collections.config_flags import tuple_parser
  assert tuple_parser.TupleParser().parse(argv[2].split('=', 1)[1]) == (
      'test/crack/001.png', 'test/hole/001.png')
  with pytest.raises(ValueError):   # what absl made of the unquoted list
    tuple_parser.TupleParser().parse(paths.split('=', 1)[1])


@pytest.mark.parametrize('assignment, message', [
    ('data.synthetic_repeats', 'write KEY=VALUE'),
    ('data.synthetic_repets=3', 'unknown config key data.synthetic_repets .*data.synthetic_repeats'),
    ('data.synthetic_repeats=2.5', 'takes an integer .*not .2.5.'),
    ('maps.score_unsmoothed=maybe', 'takes true or false'),
])
def test_set_field_refuses_what_it_cannot_set(assignment, message):
  config = test_config.get_config()
  with pytest.raises(ConfigError, match=message):
    cli.set_field(config, assignment)
  assert config.to_dict() == test_config.get_config().to_dict()


def _checkpoints_of_the_test_model(workdir, channels):
  """Two saved checkpoints (epochs 1 and 2) of the test config's flows on three
  levels of ``channels`` (Lite0's are (24, 40, 112))."""
  import jax
  from bgad_jax.training import checkpoint
  from bgad_jax.training.state import FlowTrainState
  mngr = checkpoint.manager(str(workdir))
  state = FlowTrainState.create(test_config.get_config(), channels, jax.random.key(0))
  for epoch in (1, 2):
    checkpoint.save(mngr, state.replace(epoch=state.epoch + epoch), dict(history=[]))
  return workdir / 'checkpoints'


def test_unreadable_checkpoints_name_the_folder_to_delete(setup, capsys):
  config, argv, paths = setup
  # Any flows will do (their files go); the next test's, so that one init compiles.
  folder = _checkpoints_of_the_test_model(paths['workdir'], channels=(24, 40, 16))
  for step in ('1', '2'):
    os.remove(folder / step / 'file_digests.json')
    shutil.rmtree(folder / step / 'state')
  code, err = _run(capsys, config, argv, mode='eval')
  _assert_one_line_error(code, err, f'no checkpoint in {folder} can be read', 'Delete')
  assert sorted(os.listdir(folder)) == ['1', '2']   # nothing moved or deleted


def test_checkpoint_of_another_model_is_refused_in_one_line(setup, capsys):
  config, argv, paths = setup
  folder = _checkpoints_of_the_test_model(paths['workdir'], channels=(24, 40, 16))
  code, err = _run(capsys, config, argv, mode='eval')
  _assert_one_line_error(code, err, 'does not fit this configuration', str(folder),
                         'constants.level_2.blocks_0.rotation')
