"""CI-sized smoke runs of the benchmarks, so that they cannot rot."""

import contextlib
import importlib
import io
import json
import os
import re
import shutil
import subprocess
import sys
import time

import numpy as np
import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _run_process(script, *args):
  """Runs benchmarks/<script> as its own process; returns its stdout."""
  result = subprocess.run([sys.executable, os.path.join('benchmarks', script), *args],
                          cwd=REPO, capture_output=True, text=True, timeout=900)
  assert result.returncode == 0, result.stderr[-3000:]
  return result.stdout


def _run(script, *args):
  """Runs benchmarks/<script>'s main(argv) in this process (a process of its own
  would import JAX and torch again and reload every compiled program); returns
  what it printed."""
  module = importlib.import_module('benchmarks.' + os.path.splitext(script)[0])
  printed, cwd = io.StringIO(), os.getcwd()
  try:
    os.chdir(REPO)
    with contextlib.redirect_stdout(printed):
      module.main(list(args))
  finally:
    os.chdir(cwd)
  return printed.getvalue()


@pytest.fixture(scope='module')
def accelerator_check(tmp_path_factory):
  """(report, output folder, stdout) of the accelerator check's tiny run on the CPU. Its
  sections run the backbone, flow-step and end-to-end benchmarks at CI sizes: their
  smoke tests below read them."""
  out = tmp_path_factory.mktemp('accelerator') / 'out'
  stdout = _run_process('accelerator_check.py', '--out', str(out), '--tiny', '--platform', 'cpu',
                        '--wheels', str(out.parent / 'no wheels'))
  return json.loads((out / 'accelerator_check.json').read_text()), out, stdout


@pytest.mark.slow
def test_backbone_benchmark_smoke(accelerator_check):
  report, out, _ = accelerator_check
  (row,) = report['results']['backbone_float32']
  assert row['taps'] == '16x16x24 8x8x40 4x4x112'
  assert row['flax_img_s'] > 0 and row['torch_img_s'] > 0
  assert 'flax/torch' in (out / 'backbone.log').read_text()


@pytest.mark.slow
def test_flow_step_benchmark_smoke(accelerator_check):
  report, out, _ = accelerator_check
  (row,) = report['results']['flow_step_highest']
  stdout = (out / 'flow_step.log').read_text()
  assert {'dim', 'ours_vps', 'freia_vps', 'ratio', 'gflops', 'peak_gflops'} <= set(row)
  assert row['dim'] == 6 and row['positions'] == 16 and row['ours_vps'] > 0
  assert row['freia_vps'] > 0 and row['peak_gflops'] == max(row['peak_jnp_gflops'],
                                                             row['peak_torch_gflops'])
  assert row['step_gflop'] > 0 and 'ours/FrEIA' in stdout and row['dense_vps'] > 0
  assert row['ref_gflop'] > row['step_gflop']   # the factored condition does less work
  assert abs(row['ref_gflops'] / row['gflops'] - row['ref_gflop'] / row['step_gflop']) < 1e-9
  assert row['floor_ms'] > 0 and '% of floor' in stdout
  assert 'level 0 (dim 6): ours' in stdout   # each row printed as measured, before the table
  assert abs(row['percent_of_floor'] - 100 * row['floor_ms'] / row['step_ms']) < 1e-9


def _step_matmuls(dim, vectors, side, factored):
  import jax
  from benchmarks import flow_step
  config, state, data = flow_step.one_level(dim, side * side, vectors, factored)
  chunk = jax.numpy.arange(vectors, dtype=jax.numpy.int32)[None]
  return flow_step.step_matmuls(flow_step.compiled_step(config, state, data, chunk).as_text())


def test_flow_step_reads_the_matmuls_of_the_compiled_step():
  # dim 8: x1 4 channels, condition 128, hidden 2 * (4 + 128) = 264, output 8.
  # Factored on a 4 x 4 level: a column table and a row table, [4, 64] each.
  table = _step_matmuls(8, vectors=64, side=4, factored=True)
  assert table[((4, 64), (64, 264), 1, 0)] == 16     # both tables projected once per block
  assert table[((4, 64), (4, 264), 0, 0)] == 16      # kernel gradients over summed rows
  assert table[((64, 4), (4, 264), 1, 0)] == 8       # x1's share of the first layer
  assert not any(128 in lhs or 132 in lhs for lhs, *_ in table)   # no [N, D] condition
  dense = _step_matmuls(8, vectors=64, side=4, factored=False)
  assert dense[((64, 132), (132, 264), 1, 0)] == 8
  assert dense[((64, 132), (64, 264), 0, 0)] == 8   # one kernel gradient for [x1, c]
  # Input gradient for x1 only (block 0's input needs none); none for the condition.
  assert dense[((64, 264), (4, 264), 1, 1)] == 7
  assert not any(rhs[0] == 132 and lc == 1 and rc == 1 for _, rhs, lc, rc in dense)


def test_matmul_floor_and_peaks_from_per_shape_times():
  from benchmarks import flow_step
  small, large = ((10, 20), (20, 30), 1, 0), ((100, 20), (100, 30), 0, 0)
  assert flow_step.matmul_flops(small) == 2 * 10 * 20 * 30
  assert flow_step.matmul_flops(large) == 2 * 20 * 100 * 30
  times = {small: {'jnp': 1e-6, 'torch': 2e-6}, large: {'jnp': 3e-5, 'torch': 2e-5}}
  limits = flow_step.matmul_limits({small: 3, large: 2}, times)
  assert limits['floor_s'] == 3 * 1e-6 + 2 * 2e-5
  assert abs(limits['peak_jnp_gflops'] - 12000 / 1e-6 / 1e9) < 1e-9
  assert abs(limits['peak_torch_gflops'] - 120000 / 2e-5 / 1e9) < 1e-9
  assert abs(limits['floor_gflops'] - (3 * 12000 + 2 * 120000) / 4.3e-5 / 1e9) < 1e-6


@pytest.mark.slow
def test_aupro_benchmark_smoke(tmp_path):
  out = tmp_path / 'aupro.json'
  stdout = _run('aupro.py', '--images', '6', '--size', '32', '--repeats', '1',
                '--json', str(out))
  loop, exact, option = json.loads(out.read_text())
  assert loop['method'] == '1000-threshold loop' and loop['diff_to_loop'] == 0
  assert option['diff_to_loop'] < 1e-12 and 0 < exact['aupro'] < 1
  assert 'speedup' in stdout


@pytest.mark.slow
def test_end_to_end_benchmark_smoke(accelerator_check):
  report, out, _ = accelerator_check
  rows = report['results']['end_to_end']
  stdout = (out / 'end_to_end.log').read_text()
  assert [row['setup'] for row in rows] == ['demo', 'demo:dense'] and 's/meta-epoch' in stdout
  for row in rows:
    assert row['size'] == 32 and row['meta_epochs'] == 1
    assert row['features_s'] > 0 and row['meta_epoch_s'] > 0 and row['eval_s'] > 0
    assert row['total_s'] > row['meta_epoch_s']


@pytest.mark.slow
def test_precision_benchmark_smoke(tmp_path):
  out = tmp_path / 'precision.json'
  stdout = _run('precision.py', '--dims', '6', '--side', '4', '--vectors', '64',
                '--train_steps', '2', '--json', str(out))
  (row,) = json.loads(out.read_text())
  assert row['dim'] == 6 and 'bf16 max' in stdout
  # Fewer mantissa bits, larger differences; neither is zero.
  assert 0 < row['tf32_max'] < row['bf16_max'] < 1.0


def test_mantissa_rounding_equals_bfloat16_cast():
  import jax.numpy as jnp
  import numpy as np
  from benchmarks.precision import round_mantissa
  x = np.random.default_rng(0).standard_normal(10000).astype(np.float32) * 100
  x[:4] = [1 + 2 ** -8, 1 + 3 * 2 ** -8, 0.0, -1 - 2 ** -8]   # ties to even, zero, sign
  expected = np.asarray(jnp.asarray(x).astype(jnp.bfloat16).astype(jnp.float32))
  np.testing.assert_array_equal(np.asarray(round_mantissa(jnp.asarray(x), 7)), expected)
  np.testing.assert_array_equal(np.asarray(round_mantissa(jnp.asarray(x), 23)), x)


def test_rounding_interpreter_is_exact_with_all_bits():
  # With all 23 mantissa bits kept, evaluating the flow's jaxpr (custom JVP
  # calls and jitted helpers inside) must give the compiled flow's lp.
  import jax
  import jax.numpy as jnp
  import numpy as np
  from benchmarks.precision import eval_rounding_matmuls
  from bgad_jax.models import flow as flow_lib
  flow = flow_lib.NormalizingFlow(coupling_layers=2)
  rng = np.random.default_rng(0)
  x = jnp.asarray(rng.standard_normal((32, 5)), jnp.float32)
  cond = jnp.asarray(rng.standard_normal((32, 8)), jnp.float32)
  variables = flow.init(jax.random.key(0), x, cond)
  lp = lambda v, x, c: flow_lib.per_dim_log_likelihood(*flow.apply(v, x, c))
  closed = jax.make_jaxpr(lp)(variables, x, cond)
  flat = jax.tree.leaves((variables, x, cond))
  exact = np.asarray(jax.jit(lp)(variables, x, cond))
  # Jitted, as the benchmark runs it (op by op, it would compile every primitive).
  rounded = lambda bits: np.asarray(
      jax.jit(lambda *a: eval_rounding_matmuls(closed, a, bits)[0])(*flat))
  np.testing.assert_allclose(rounded(23), exact, rtol=1e-6, atol=1e-6)
  assert not np.allclose(rounded(7), exact, rtol=1e-6, atol=1e-6)


@pytest.mark.slow
def test_parity_benchmark_smoke_ours_only(tmp_path):
  out = tmp_path / 'parity.json'
  stdout = _run('parity.py', '--ours_only', '--seeds', '0', '--modes', 'supervised,unsupervised',
                '--warmups', 'reference,linear', '--meta_epochs', '2', '--sub_epochs', '1',
                '--inp_size', '48', '--demo_size', '48', '--num_train', '8', '--num_test_good', '4',
                '--num_per_defect', '2', '--num_anomalies', '4', '--batch_size', '4',
                '--num_vectors', '64', '--workdir', str(tmp_path / 'work'), '--json', str(out))
  results = json.loads(out.read_text())['results']
  assert set(results) == {'supervised', 'unsupervised'}
  for mode in results.values():
    assert set(mode) == {'ours[reference]', 'ours[linear]'}
    (run,) = mode['ours[linear]']
    assert len(run['epochs']) == 2 and len(run['seconds']['evaluate']) == 2
    assert all(0.0 <= e['img_auroc'] <= 1.0 for e in run['epochs'])
  # The two warm-ups train differently (the reference ramp overshoots).
  assert (results['supervised']['ours[reference]'][0]['epochs']
          != results['supervised']['ours[linear]'][0]['epochs'])
  assert '### supervised' in stdout and 'end to end s' in stdout
  # --resume reuses the saved runs (same settings) instead of training again.
  saved = out.read_text()
  shutil.rmtree(tmp_path / 'work' / 'runs')   # a run would make its folder again
  again = _run('parity.py', '--ours_only', '--seeds', '0', '--modes', 'supervised,unsupervised',
               '--warmups', 'reference,linear', '--meta_epochs', '2', '--sub_epochs', '1',
               '--inp_size', '48', '--demo_size', '48', '--num_train', '8', '--num_test_good',
               '4', '--num_per_defect', '2', '--num_anomalies', '4', '--batch_size', '4',
               '--num_vectors', '64', '--workdir', str(tmp_path / 'work'), '--json', str(out),
               '--resume')
  assert json.loads(out.read_text())['results'] == json.loads(saved)['results']
  assert not (tmp_path / 'work' / 'runs').exists()
  assert '### unsupervised' in again


@pytest.mark.slow
def test_accelerator_check_runs_every_section_on_the_cpu(accelerator_check):
  report, out, stdout = accelerator_check
  assert list(report['sections']) == ['device', 'tests', 'flow_step', 'end_to_end', 'backbone']
  assert all(s['status'] == 'passed' for s in report['sections'].values()), report['sections']
  assert report['device']['backend'] == 'cpu' and 'device: ' in stdout
  assert report['tests'] and all(t['outcome'] == 'passed' for t in report['tests'])
  assert report['results']['flow_step_highest'][0]['ours_vps'] > 0
  assert report['results']['end_to_end'][0]['projected_s'] > 0
  assert report['results']['backbone_float32'][0]['dtype'] == 'float32'
  markdown = (out / 'accelerator_check.md').read_text()
  assert '| tests | passed |' in markdown and '## end_to_end' in markdown
  # What the device tool returns: at most 8 plain files with plain names.
  names = os.listdir(out)
  assert len(names) <= 8 and all(re.fullmatch(r'[A-Za-z0-9._-]+', n) for n in names)


@pytest.mark.slow
def test_accelerator_check_section_limit_stops_only_that_section(tmp_path):
  from benchmarks import accelerator_check
  sleeper = [sys.executable, '-c', 'import subprocess, sys; subprocess.run([sys.executable, '
             '"-c", "import time; time.sleep(60)"])']   # a child process too: both must die
  start = time.time()
  result = accelerator_check.run_section(
      accelerator_check.Section('slow', 2, [sleeper, [sys.executable, '-c', 'pass']]),
      dict(os.environ), str(tmp_path))
  assert result['status'] == 'timed out' and time.time() - start < 20
  failing = accelerator_check.run_section(
      accelerator_check.Section('broken', 30, [[sys.executable, '-c', 'raise SystemExit(3)']]),
      dict(os.environ), str(tmp_path))
  assert failing['status'] == 'failed' and (tmp_path / 'broken.log').is_file()


def test_accelerator_targets_read_the_measurements():
  from benchmarks import accelerator_check
  flow = [dict(dim=40, ratio=3.4, percent_of_peak=30.0), dict(dim=200, ratio=2.9,
                                                             percent_of_peak=55.0)]
  e2e = [dict(backbone='tf_efficientnet_b6', train_images=280, last_meta_epoch_s=8.5)]
  report = dict(tests=[dict(test='a', outcome='passed'), dict(test='b', outcome='failed')],
                results=dict(flow_step_highest=flow, end_to_end=e2e))
  met = {t['target']: (t['value'], t['met']) for t in accelerator_check.targets(report)}
  assert met['all numerical tests pass (precision highest)'] == ('1 of 2 passed', False)
  assert met['flow step >= 3x FrEIA on the same device, fp32'] == ('lowest 2.90x (dim 200)', False)
  assert met['>= 50% of the fp32 matmul peak at dims >= 112'] == ('lowest 55.0% (dim 200)', True)
  assert met['B6, 256 px, MVTec-sized class: one meta-epoch < 10 s'] == ('8.5 s', True)


@pytest.mark.slow
def test_accelerator_check_dry_run_names_what_to_send(tmp_path):
  wheels = tmp_path / 'whl'
  wheels.mkdir()
  (wheels / 'a-1.0-py3-none-any.whl').write_bytes(b'x' * 1024)
  stdout = _run_process('accelerator_check.py', '--dry_run', '--wheels', str(wheels))
  assert f'carry: ["{wheels}"]' in stdout and '1 wheels' in stdout
  assert f'python3 benchmarks/accelerator_check.py --out "$OUT" --wheels {wheels}' in stdout


@pytest.mark.slow
def test_inference_benchmark_times_three_sides(tmp_path):
  out = tmp_path / 'inference.json'
  stdout = _run('inference.py', '--tiny', '--size', '64', '--batches', '1,2', '--repeats', '1',
                '--json', str(out))
  rows = json.loads(out.read_text())['rows']
  sides = ('bgad_jax', 'onnxruntime', 'official')
  assert [(r['side'], r['batch']) for r in rows] == [(s, b) for b in (1, 2) for s in sides]
  assert all(r['images_per_s'] > 0 for r in rows)
  for row in rows:
    assert row['ms_per_image'] == pytest.approx(row['ms_per_call'] / row['batch'])
    if row['side'] == 'official':
      assert row['vs_official'] == 1.0
  # Both runtimes run the same exported function: equal maps.
  diff = float(re.search(r'max \|diff\| (\S+)', stdout).group(1))
  assert diff < 1e-3


def test_heldout_class_writes_the_mvtec_layout_reproducibly(tmp_path):
  from PIL import Image
  from benchmarks import heldout_class
  assert 'wrote' in _run('heldout_class.py', '--out', str(tmp_path / 'a'))
  heldout_class.write(str(tmp_path / 'b'))
  root = tmp_path / 'a' / 'fundus'
  assert len(os.listdir(root / 'train' / 'good')) == heldout_class.NUM_TRAIN
  assert len(os.listdir(root / 'test' / 'good')) == heldout_class.NUM_TEST_GOOD
  assert sorted(os.listdir(root / 'test')) == ['blur', 'good', 'scratch', 'spot', 'warp']
  for name in heldout_class.DEFECTS:
    images = sorted(os.listdir(root / 'test' / name))
    masks = sorted(os.listdir(root / 'ground_truth' / name))
    assert len(images) == heldout_class.NUM_PER_DEFECT
    assert masks == [image.replace('.png', '_mask.png') for image in images]
    for mask_name in masks:
      mask = np.asarray(Image.open(root / 'ground_truth' / name / mask_name))
      assert set(np.unique(mask)) == {0, 255} and (mask > 0).sum() >= 15
  image = Image.open(root / 'test' / 'warp' / '000.png')
  assert image.mode == 'L' and image.size == (heldout_class.SIZE, heldout_class.SIZE)
  for folder, _, files in os.walk(root):   # the same seed writes the same bytes
    for name in files:
      other = os.path.join(str(tmp_path / 'b'), os.path.relpath(os.path.join(folder, name),
                                                                  str(tmp_path / 'a')))
      with open(os.path.join(folder, name), 'rb') as a, open(other, 'rb') as b:
        assert a.read() == b.read(), name
  root = heldout_class.write(str(tmp_path / 'c'), size=256)
  assert Image.open(os.path.join(root, 'test', 'warp', '000.png')).size == (256, 256)
  mask = np.asarray(Image.open(os.path.join(root, 'ground_truth', 'spot', '000_mask.png')))
  assert mask.shape == (256, 256) and (mask > 0).sum() >= 4 * 15
  with pytest.raises(ValueError, match='size 200'):
    heldout_class.write(str(tmp_path / 'd'), size=200)
  # More training crops leave the default files as they are.
  root = heldout_class.write(str(tmp_path / 'e'), num_train=heldout_class.NUM_TRAIN + 3)
  train = sorted(os.listdir(os.path.join(root, 'train', 'good')))
  assert len(train) == heldout_class.NUM_TRAIN + 3
  for folder, _, files in os.walk(str(tmp_path / 'a' / 'fundus')):
    for name in files:
      path = os.path.join(folder, name)
      other = os.path.join(root, os.path.relpath(path, str(tmp_path / 'a' / 'fundus')))
      with open(path, 'rb') as a, open(other, 'rb') as b:
        assert a.read() == b.read(), name
  extra = [np.asarray(Image.open(os.path.join(root, 'train', 'good', name)))
           for name in train[-4:]]
  assert all(not np.array_equal(extra[0], other) for other in extra[1:])
  with pytest.raises(ValueError, match='num_train 79'):
    heldout_class.write(str(tmp_path / 'f'), num_train=heldout_class.NUM_TRAIN - 1)


@pytest.mark.parametrize('size', [128, 256])
@pytest.mark.parametrize('defect', ['blur', 'scratch', 'spot', 'warp'])
def test_heldout_class_masks_hold_every_visible_change(defect, size):
  """A defect's mask is the region it changed: outside it no pixel moved by the
  visible step, inside it some did (a soft edge left outside would fail)."""
  from benchmarks import heldout_class
  rng = np.random.default_rng(1)
  photo = heldout_class.fundus_photograph(size)
  visible_masks = 0
  for _ in range(6):
    image = heldout_class.crop(photo, rng, 'test', size)
    out, mask = heldout_class.DEFECTS[defect](image, rng)
    assert mask.shape == image.shape == (size, size)
    change = np.abs(np.clip(out, 0, 255) - np.clip(image, 0, 255))
    assert (change[~mask] < heldout_class._VISIBLE_CHANGE).all()
    if mask.any():
      visible_masks += 1
      assert change[mask].max() >= heldout_class._VISIBLE_CHANGE
  assert visible_masks >= 3


def test_heldout_class_without_specks(tmp_path):
  """--min_region drops a mask's small 8-connected regions, never its largest, and
  leaves every image as it was."""
  from PIL import Image
  from benchmarks import heldout_class
  mask = np.zeros((12, 12), bool)
  mask[1:4, 1:4] = True        # 9 px
  mask[6, 6] = mask[7, 7] = True   # 2 px, 8-connected
  mask[10, 1] = True           # 1 px
  kept = heldout_class.without_specks(mask, 3)
  assert kept.sum() == 9 and kept[1:4, 1:4].all()
  assert heldout_class.without_specks(mask, 2).sum() == 11
  assert heldout_class.without_specks(mask, 0) is mask
  assert heldout_class.without_specks(mask, 50).sum() == 9   # the largest stays
  assert not heldout_class.without_specks(np.zeros((4, 4), bool), 3).any()
  plain = heldout_class.write(str(tmp_path / 'a'))
  cleaned = heldout_class.write(str(tmp_path / 'b'), min_region=8)
  changed = 0
  for folder, _, files in os.walk(plain):
    for name in files:
      path = os.path.join(folder, name)
      a = np.asarray(Image.open(path)) > 0 if 'ground_truth' in path else None
      other = os.path.join(cleaned, os.path.relpath(path, plain))
      if a is None:
        with open(path, 'rb') as x, open(other, 'rb') as y:
          assert x.read() == y.read(), name
        continue
      b = np.asarray(Image.open(other)) > 0
      assert not (b & ~a).any() and b.any()   # only pixels removed, never all
      if not np.array_equal(a, b):
        changed += 1
        regions, count = heldout_class.ndimage.label(b, structure=np.ones((3, 3)))
        sizes = np.bincount(regions.ravel())[1:]
        assert count == 1 or sizes.min() >= 8
  assert changed > 0


@pytest.mark.parametrize('defect', ['scratch', 'spot'])
def test_heldout_class_at_256_px_doubles_every_defect_length(defect):
  """--size 256 crops the full-resolution photograph: the same extent at twice the
  detail, so a scratch or spot (fixed shapes) covers about four times the pixels."""
  from benchmarks import heldout_class
  mean_area = {}
  for size in (128, 256):
    photo, rng = heldout_class.fundus_photograph(size), np.random.default_rng(2)
    assert photo.shape == (705 * size // 128,) * 2
    mean_area[size] = np.mean([heldout_class.DEFECTS[defect](
        heldout_class.crop(photo, rng, 'test', size), rng)[1].sum() for _ in range(12)])
  assert 3 < mean_area[256] / mean_area[128] < 5


@pytest.mark.slow
def test_quality_benchmark_smoke(tmp_path):
  """bgad_jax's side, tiny; PatchCore needs the bench extra (anomalib), not installed here."""
  stdout = _run('quality.py', '--tiny', '--classes', 'surface', '--runs',
                'faithful,top_k,mean_log,best',
                '--meta_epochs', '2', '--set', 'data.synthetic_repeats=1', '--out', str(tmp_path))
  payload = json.loads((tmp_path / 'quality.json').read_text())
  assert payload['args']['set'] == ['data.synthetic_repeats=1']
  assert payload['host']['cores'] == os.cpu_count()
  assert payload['known_types'] == {'surface': ['contamination', 'deformation', 'discoloration']}
  results = {name: runs[0] for name, runs in payload['results']['surface'].items()}
  assert list(results) == ['faithful', 'top_k', 'mean_log', 'best']
  assert [len(runs) for runs in payload['results']['surface'].values()] == [1, 1, 1, 1]
  for name, result in results.items():
    assert result['seed'] == 0
    assert len(result['history']) == 2 and 0 <= result['img_auroc'] <= 1, name
    assert result['seen']['n'] > 0 and set(result['per_type']) == {
        'contamination', 'deformation', 'discoloration', 'smudge'}
    assert len(result['test_scores']) == 4 + 3 * (4 - 3) + 4, name   # as PatchCore's below
  # Options only change scoring or training: top_k and mean_log train the faithful flows
  # and score differently (mean_log: other maps).
  assert results['top_k']['pix_auroc'] == results['faithful']['pix_auroc']
  losses = {name: [row['loss'] for row in results[name]['history']] for name in results}
  assert losses['mean_log'] == losses['faithful'] == losses['top_k']
  assert results['mean_log']['pix_auroc'] != results['faithful']['pix_auroc']
  assert results['best']['config']['maps']['image_score'] == 'top_k_mean'
  assert results['best']['config']['maps']['level_aggregation'] == 'mean_log'
  assert results['best']['config']['data']['synthetic_repeats'] == 1   # --set, not best's 10
  assert '| surface | best |' in stdout and 'smudge (unseen)' in stdout
  with open(tmp_path / 'quality_curves.png', 'rb') as f:
    assert f.read(8) == b'\x89PNG\r\n\x1a\n'


@pytest.mark.slow
def test_quality_benchmark_reads_a_folder_class(tmp_path, monkeypatch):
  """--data on the held-out class's MVTec-layout folder: built, every type scored."""
  from benchmarks import heldout_class
  heldout_class.write(str(tmp_path / 'data'))
  monkeypatch.setenv('HOME', str(tmp_path))   # data.tfds_dir is ~/tensorflow_datasets
  stdout = _run('quality.py', '--tiny', '--data', str(tmp_path / 'data'), '--classes', 'fundus',
                '--runs', 'faithful', '--meta_epochs', '1', '--out', str(tmp_path / 'out'))
  payload = json.loads((tmp_path / 'out' / 'quality.json').read_text())
  assert payload['known_types'] == {'fundus': ['blur', 'scratch', 'spot']}
  (result,) = payload['results']['fundus']['faithful']
  assert set(result['per_type']) == set(heldout_class.DEFECTS)
  assert result['unseen']['n'] == heldout_class.NUM_PER_DEFECT
  # The 3 known files of each seen type leave the test set.
  defective = len(heldout_class.DEFECTS) * heldout_class.NUM_PER_DEFECT - 3 * 3
  assert len(result['test_scores']) == heldout_class.NUM_TEST_GOOD + defective
  assert os.path.isdir(tmp_path / 'tensorflow_datasets')
  assert 'warp (unseen)' in stdout


@pytest.mark.slow
def test_quality_ensemble_rows_train_members_on_the_first_runs_files(tmp_path):
  stdout = _run('quality.py', '--tiny', '--classes', 'surface', '--runs', 'faithful',
                '--meta_epochs', '1', '--ensemble', '2', '--out', str(tmp_path))
  results = json.loads((tmp_path / 'quality.json').read_text())['results']['surface']
  assert list(results) == ['faithful', 'faithful_x2']
  (single,), (ensemble,) = results['faithful'], results['faithful_x2']
  first, second = ensemble['members']
  assert first.endswith(os.path.join('surface', 'faithful', '0')) and second == first + '_member1'
  assert ensemble['known_anomalies'] == single['known_anomalies'] and ensemble['seed'] == 0
  assert ensemble['wall_seconds'] > single['wall_seconds']   # both members' training
  assert ensemble['per_type'].keys() == single['per_type'].keys()
  assert ensemble['pix_auroc'] != single['pix_auroc']   # the second member counts
  assert '| surface | faithful_x2 |' in stdout


@pytest.mark.slow
@pytest.mark.skipif(__import__('importlib').util.find_spec('anomalib') is None,
                    reason='anomalib comes with the bench extra only')
def test_quality_benchmark_runs_patchcore(tmp_path):
  _run('quality.py', '--tiny', '--classes', 'tissue', '--runs', 'patchcore', '--out', str(tmp_path))
  (patchcore,) = json.loads((tmp_path / 'quality.json').read_text())['results']['tissue'][
      'patchcore']
  assert patchcore['memory_bank'] == int(0.1 * 8 * (48 // 8) ** 2)   # 10% of the stride-8 patches
  assert all(0 <= patchcore[k] <= 1 for k in ('img_auroc', 'pix_auroc', 'aupro'))
  # 4 normal, 4 per type; the 3 known per seen type left it
  assert patchcore['test_images'] == 4 + 3 * (4 - 3) + 4
  assert len(patchcore['test_scores']) == patchcore['test_images']


def test_supersimplenet_needs_a_checkout(tmp_path):
  from benchmarks import supersimplenet
  with pytest.raises(FileNotFoundError, match='--supersimplenet_dir .* blaz-r/SuperSimpleNet'):
    supersimplenet.import_supersimplenet(str(tmp_path))


SUPERSIMPLENET_DIR = os.environ.get('SUPERSIMPLENET_DIR', '')
needs_supersimplenet = pytest.mark.skipif(
    importlib.util.find_spec('anomalib') is None or not SUPERSIMPLENET_DIR,
    reason='needs the bench extra and a SuperSimpleNet checkout in $SUPERSIMPLENET_DIR')


@pytest.mark.slow
@needs_supersimplenet
def test_supersimplenet_sees_balanced_flipped_positives():
  """Their supervised dataset over our arrays: 4 flips of each known anomaly (flipped
  every time, although albumentations 2 ignores their always_apply), as many normals."""
  from benchmarks import supersimplenet
  mods = supersimplenet.import_supersimplenet(SUPERSIMPLENET_DIR)
  rng = np.random.default_rng(0)
  labels = np.array([0] * 5 + [1] * 2)
  arrays = dict(images=rng.normal(size=(7, 8, 8, 3)).astype(np.float32),
                masks=(rng.random((7, 8, 8)) > 0.5) * labels[:, None, None], labels=labels)
  data = supersimplenet._arrays_dataset(mods, arrays, True, 'train', flips=True)
  assert len(data) == 2 * 4 * 2
  items = [data[i] for i in range(len(data))]
  image = lambda i: items[i]['image'].numpy().transpose(1, 2, 0)   # noqa: E731
  assert [item['label'] for item in items] == [1] * 8 + [0] * 8
  for k in range(2):   # none, vertical, horizontal, 180 degrees
    np.testing.assert_array_equal(image(k), arrays['images'][5 + k])
    np.testing.assert_array_equal(image(2 + k), arrays['images'][5 + k][::-1])
    np.testing.assert_array_equal(image(4 + k), arrays['images'][5 + k][:, ::-1])
    np.testing.assert_allclose(image(6 + k), arrays['images'][5 + k][::-1, ::-1], atol=1e-6)
    np.testing.assert_array_equal(items[2 + k]['mask'].numpy(), arrays['masks'][5 + k][::-1])


@pytest.mark.slow
@needs_supersimplenet
def test_supersimplenet_trains_and_returns_maps_in_our_order():
  from benchmarks import supersimplenet
  mods = supersimplenet.import_supersimplenet(SUPERSIMPLENET_DIR)
  rng = np.random.default_rng(0)

  def arrays(labels):
    labels = np.asarray(labels)
    return dict(images=rng.normal(size=(len(labels), 72, 72, 3)).astype(np.float32),
                masks=(rng.random((len(labels), 72, 72)) > 0.7) * labels[:, None, None],
                labels=labels)
  train, test = arrays([0] * 6 + [1] * 2), arrays([1, 0, 1, 0, 0])
  for supervised in (True, False):
    out = supersimplenet.run(mods, train, test, 72, seed=0, supervised=supervised, epochs=2,
                             eval_every=1)
    assert [epoch for epoch, _, _ in out['history']] == [1, 2] and out['epochs'] == 2
    assert out['maps'].shape == (5, 72, 72) and out['scores'].shape == (5,)
    np.testing.assert_array_equal(out['maps'], out['history'][-1][1])
  # The same training (seeded), the test images reversed: so are their maps and scores.
  reversed_test = {k: v[::-1].copy() for k, v in test.items()}
  again = supersimplenet.run(mods, train, reversed_test, 72, seed=0, supervised=False, epochs=2,
                             eval_every=1)
  np.testing.assert_allclose(again['maps'], out['maps'][::-1], atol=1e-5)
  np.testing.assert_allclose(again['scores'], out['scores'][::-1], atol=1e-5)
  with pytest.raises(ValueError, match='more than 64 px'):
    supersimplenet.run(mods, train, test, 64, seed=0, supervised=True)


def test_quality_runs_share_the_images_across_seeds_and_differ_in_schedule(tmp_path, capsys):
  from benchmarks import quality
  args = quality.build_parser().parse_args([])
  types = ['chip', 'deformation', 'scratch', 'stain']
  best, short, faithful = (quality.run_config(args, 'coins', str(tmp_path), run, types, seed)
                           for run, seed in (('best', 1), ('best_short', 2), ('faithful', 0)))
  assert (best.seed, short.seed, faithful.seed) == (1, 2, 0)
  assert best.data.demo.seed == short.data.demo.seed == faithful.data.demo.seed == 0
  assert (best.train.sub_epochs, short.train.sub_epochs, faithful.train.sub_epochs) == (8, 2, 2)
  assert best.train.meta_epochs == short.train.meta_epochs == 12
  assert best.data.known_defect_types == ('chip', 'deformation', 'scratch')
  assert best.data.num_anomalies == faithful.data.num_anomalies == 3   # per seen type
  short.train.sub_epochs = best.train.sub_epochs
  assert short.to_dict() == best.to_dict() | dict(seed=2)
  args.data_seed = -1
  assert quality.run_config(args, 'coins', str(tmp_path), 'best', types, 1).data.demo.seed == -1
  # Four times the demo config's test set by default, every method alike; 0: the config's.
  for sizes, expected in (([], (64, 16)), (['--test_good', '48'], (48, 16)),
                          (['--test_good', '0', '--test_per_defect', '0'], (16, 8))):
    args = quality.build_parser().parse_args(sizes)
    for run in ('best', 'faithful'):
      demo = quality.run_config(args, 'coins', str(tmp_path), run, types, 1).data.demo
      assert (demo.num_test_good, demo.num_per_defect, demo.num_train) == (*expected, 64)
  # Where defects lie: every method's images alike (baselines take the faithful config),
  # a flag and never --set, which changes the bgad_jax runs only.
  args = quality.build_parser().parse_args(['--defect_placement', 'anywhere'])
  for run in ('best', 'faithful'):
    demo = quality.run_config(args, 'coins', str(tmp_path), run, types, 1).data.demo
    assert demo.defect_placement == 'anywhere'
  assert quality.base_config(quality.build_parser().parse_args([]), 'coins', str(tmp_path),
                             0).data.demo.defect_placement == 'centre'
  with pytest.raises(SystemExit):   # (were it not refused: a tiny run)
    quality.main(['--set', 'data.demo.defect_placement=anywhere', '--tiny', '--runs', 'faithful',
                  '--classes', 'coins', '--out', str(tmp_path)])
  assert 'use --data_seed, --test_good, --test_per_defect, --defect_placement or --demo_split' in (
      capsys.readouterr().err)


def test_quality_known_seed_gives_every_seed_the_same_known_files(tmp_path):
  """--known_seed: another run seed trains with the known files (and so is scored on
  the test set) of the fixed seed's draw, not of its own."""
  from bgad_jax import engine, settings
  from benchmarks import quality
  args = quality.build_parser().parse_args(['--tiny'])
  types = ['chip', 'deformation', 'scratch', 'stain']
  fixed = quality.drawn_known_files(args, 'coins', str(tmp_path), types, seed=0)
  assert sorted(name.split('/')[1] for name in fixed) == [
      'chip', 'chip', 'chip', 'deformation', 'deformation', 'deformation', 'scratch', 'scratch',
      'scratch']
  assert quality.drawn_known_files(args, 'coins', str(tmp_path), types, seed=1) != fixed
  config = quality.run_config(args, 'coins', str(tmp_path), 'best', types, 1, fixed)
  assert config.seed == 1
  _, _, known, test = engine.load_data(settings.resolve(config))
  assert [example['filename'] for example in known] == fixed
  assert not set(fixed) & {example['filename'] for example in test}
  own = quality.run_config(args, 'coins', str(tmp_path), 'best', types, 1)
  _, _, _, own_test = engine.load_data(settings.resolve(own))
  assert {example['filename'] for example in own_test} != {e['filename'] for e in test}


def test_quality_common_test_scores_every_seed_on_the_same_images(tmp_path, capsys):
  """--common_test: each seed trains with its own draw, and every seed's test set is
  what none of the named seeds' draws labels."""
  from bgad_jax import engine, settings
  from benchmarks import quality
  args = quality.build_parser().parse_args(['--tiny', '--common_test', '0,1'])
  types = ['chip', 'deformation', 'scratch', 'stain']
  draws = {seed: quality.drawn_known_files(args, 'coins', str(tmp_path), types, seed)
           for seed in (0, 1)}
  assert set(draws[0]) != set(draws[1])
  excluded = quality.common_test_exclusions(args, 'coins', str(tmp_path), types, [0, 1], ())
  test_sets = {}
  for seed in (0, 1):
    config = quality.run_config(args, 'coins', str(tmp_path), 'best', types, seed,
                                exclude_from_test=excluded[seed])
    _, _, known, test = engine.load_data(settings.resolve(config))
    assert [example['filename'] for example in known] == draws[seed]
    test_sets[seed] = {example['filename'] for example in test}
  assert test_sets[0] == test_sets[1]
  assert not (set(draws[0]) | set(draws[1])) & test_sets[0]
  assert any(name.startswith('test/good/') for name in test_sets[0])
  # With --known_seed every seed has the same files: nothing else leaves.
  assert quality.common_test_exclusions(args, 'coins', str(tmp_path), types, [0, 1],
                                        draws[0]) == {0: (), 1: ()}
  plain = quality.build_parser().parse_args(['--tiny'])
  assert quality.common_test_exclusions(plain, 'coins', str(tmp_path), types, [0], ()) == {0: ()}
  with pytest.raises(SystemExit):   # a seed outside the pool would see other images
    quality.main(['--tiny', '--common_test', '0', '--seeds', '0,1', '--runs', 'faithful',
                  '--classes', 'coins', '--out', str(tmp_path)])
  assert 'name every seed of --seeds' in capsys.readouterr().err


def test_quality_demo_split_reaches_the_demo_images(tmp_path):
  from bgad_jax import engine, settings
  from benchmarks import quality
  args = quality.build_parser().parse_args(['--tiny', '--demo_split', 'quadrants'])
  config = quality.base_config(args, 'tissue', str(tmp_path), seed=0)
  engine.load_data(settings.resolve(config))   # makes the images
  stamp = tmp_path / 'demo_data' / 'images' / 'tissue' / 'demo_settings.json'
  assert json.loads(stamp.read_text())['split'] == 'quadrants'


def test_quality_tables_give_mean_and_sd_over_the_seeds():
  from benchmarks import quality

  def run(img, seen, per_type_img, train_s):
    return dict(img_auroc=img, pix_auroc=0.5, aupro=None, seen=dict(img_auroc=seen, aupro=0.7),
                unseen=None, per_type=dict(dent=dict(img_auroc=per_type_img, pix_auroc=0.9)),
                wall_seconds=2 * train_s, seconds=dict(train=train_s))
  runs = {'best': [run(0.80, 0.9, 0.6, 10), run(0.90, 1.0, 0.8, 20), run(0.85, None, 0.7, 30)]}
  (row,) = quality.summary_rows('coins', runs)
  assert row['img'] == '85.0 ± 5.0' and row['pix'] == '50.0 ± 0.0'
  assert row['aupro'] == '-' and row['unseen_img'] == '-'
  assert row['seen_img'] == '95.0 ± 7.1'   # the seeds where it is defined
  assert row['seen_aupro'] == '70.0 ± 0.0' and row['unseen_aupro'] == '-'
  assert row['seconds'] == '40 (train 20)'
  (per_type,) = quality.per_type_rows('coins', runs, known=[])
  assert per_type['type'] == 'dent (unseen)' and per_type['img'] == '70.0 ± 10.0'
  assert per_type['aupro'] == '-'   # runs recorded before the per-type AUPRO
  (single,) = quality.summary_rows('coins', {'best': runs['best'][:1]})
  assert single['img'] == '80.0'
  # Seed by seed, in seed order; chi-square 90% interval of the sd with 2 degrees of
  # freedom: 5.0 * sqrt(2 / 5.991) and 5.0 * sqrt(2 / 0.1026).
  seeded = {'best': [dict(r, seed=seed) for r, seed in zip(runs['best'], (4, 0, 2))],
            'patchcore': runs['best'][:2]}   # under 3 seeds: no rows
  rows = {row['metric']: row for row in quality.per_seed_rows('coins', seeded, known=[])}
  assert list(rows) == ['img AUROC', 'pix AUROC', 'AUPRO', 'dent (unseen) img',
                        'dent (unseen) pix']   # no per-type AUPRO recorded: no row
  for r, value in zip(seeded['best'], (0.6, 0.5, 0.4)):
    r['per_type'] = dict(dent=dict(r['per_type']['dent'], aupro=value))
  rows = {row['metric']: row for row in quality.per_seed_rows('coins', seeded, known=[])}
  assert rows['dent (unseen) AUPRO']['values'] == '50.0 40.0 60.0'
  assert rows['dent (unseen) AUPRO']['mean'] == '50.0 ± 10.0'
  assert rows['img AUROC']['seeds'] == '0 2 4'
  assert rows['img AUROC']['values'] == '90.0 85.0 80.0'
  assert rows['img AUROC']['mean'] == '85.0 ± 5.0' and rows['img AUROC']['sd_90'] == '2.9-22.1'
  assert rows['AUPRO']['values'] == '- - -' and rows['AUPRO']['sd_90'] == '-'
  assert quality.sd_interval([0.5, 0.6]) == '-'


def test_quality_goal_rows_name_each_miss_and_its_size():
  from benchmarks import quality

  def run(img, pix=0.9, seen_img=0.99, unseen_aupro=0.5):
    return dict(img_auroc=img, pix_auroc=pix, aupro=None,
                seen=dict(img_auroc=seen_img), unseen=dict(aupro=unseen_aupro))
  results = {
      'best': [run(0.90, 0.950), run(0.92, 0.951), run(0.94, 0.952, unseen_aupro=None)],
      'best_short': [run(0.5)] * 3,   # not held to the goals
      'patchcore': [run(0.91, unseen_aupro=0.4)] * 3,
      'patchcore_own_norm': [run(0.93, unseen_aupro=0.4)] * 3,
      'supersimplenet_unsup': [run(0.99, 0.99, 1.0, 0.9)] * 3,   # not a rival
      'faithful': [run(0.93, 0.8, 0.9, 0.1)] * 2}
  rows = {row['metric']: row for row in quality.goal_rows('coins', results)}
  assert list(rows) == ['img AUROC', 'pix AUROC', 'seen img AUROC', 'unseen AUPRO']
  img = rows['img AUROC']
  assert img['mean'] == '92.0 ± 2.0' and img['rival'] == 'patchcore_own_norm 93.0'
  assert img['margin'] == '-1.0' and img['faithful'] == '-1.0'
  assert img['verdict'] == ('under patchcore_own_norm by 1.0; under faithful by 1.0; '
                            'sd 2.00 over 1')
  pix = rows['pix AUROC']
  assert pix['margin'] == '+5.1' and pix['faithful'] == '+15.1' and pix['verdict'] == 'met'
  # Seen types: level is not enough.
  assert rows['seen img AUROC']['verdict'] == 'level with patchcore on seen types'
  unseen = rows['unseen AUPRO']   # one seed undefined: its mean is of two
  assert unseen['mean'] == '50.0 ± 0.0' and unseen['margin'] == '+10.0'
  assert unseen['verdict'] == '2 of 3 seeds'
  # An ensemble is held to them too; without rivals or faithful only the seeds count.
  (alone,) = quality.goal_rows('coins', {'best_x2': [run(0.9, None, None, None)]})
  assert alone['run'] == 'best_x2' and alone['rival'] == '-'
  assert alone['verdict'] == '1 of 3 seeds'


def test_quality_goal_rows_hold_each_unseen_type_when_several_are_unseen():
  from benchmarks import quality

  def run(dent, stain, unseen_pix=0.8):
    per_type = dict(chip=dict(pix_auroc=0.99), dent=dict(pix_auroc=dent),
                    stain=dict(pix_auroc=stain))
    return dict(img_auroc=None, pix_auroc=0.9, aupro=None, per_type=per_type,
                unseen=dict(pix_auroc=unseen_pix))
  results = {'best': [run(0.70, 0.95), run(0.72, 0.96), run(0.74, 0.97)],
             'patchcore': [run(0.75, 0.90, 0.7)] * 3}
  rows = {row['metric']: row for row in quality.goal_rows('coins', results, ['chip'])}
  # The group hides the dent, under PatchCore, behind the stains.
  assert rows['unseen pix AUROC']['verdict'] == 'met'
  dent = rows['dent (unseen) pix AUROC']
  assert dent['mean'] == '72.0 ± 2.0' and dent['margin'] == '-3.0'
  assert dent['verdict'] == 'under patchcore by 3.0; sd 2.00 over 1'
  assert rows['stain (unseen) pix AUROC']['margin'] == '+6.0'
  assert 'chip pix AUROC' not in rows and 'chip (unseen) pix AUROC' not in rows
  # One unseen type: its rows would repeat the group's; without known types, none.
  one = [row['metric'] for row in quality.goal_rows('coins', results, ['chip', 'dent'])]
  assert one == [row['metric'] for row in quality.goal_rows('coins', results)]
  assert one == ['pix AUROC', 'unseen pix AUROC']


def test_quality_unseen_types_choose_what_stays_unlabelled(tmp_path):
  from benchmarks import quality
  types = ['chip', 'deformation', 'scratch', 'stain']
  parse = quality.build_parser().parse_args
  assert quality.seen_types(parse([]), types) == ['chip', 'deformation', 'scratch']
  assert quality.seen_types(parse(['--num_unseen', '2']), types) == ['chip', 'deformation']
  assert quality.seen_types(parse(['--unseen_types', 'stain,chip']), types) == [
      'deformation', 'scratch']
  assert quality.seen_types(parse(['--unseen_types', 'chip', '--num_unseen', '0']), types) == [
      'deformation', 'scratch', 'stain']   # the names rule
  config = quality.run_config(parse(['--unseen_types', 'chip,stain']), 'coins', str(tmp_path),
                              'best', types, 0)
  assert config.data.known_defect_types == ('deformation', 'scratch')
  with pytest.raises(ValueError, match="'dent' is not a defect type of this class"):
    quality.seen_types(parse(['--unseen_types', 'dent']), types)
  for flags in (['--unseen_types', ','.join(types)], ['--num_unseen', '4'],
                ['--num_unseen', '5'], ['--num_unseen', '0']):
    with pytest.raises(ValueError, match='leave at least one type unseen and one to label'):
      quality.seen_types(parse(flags), types)


def test_quality_tables_from_saved_runs_merge_the_files(tmp_path, capsys):
  from benchmarks import quality

  def run(img):
    return dict(img_auroc=img, pix_auroc=0.9, aupro=0.8, seen=None, unseen=None,
                per_type=dict(dent=dict(img_auroc=img, pix_auroc=0.9)), wall_seconds=4,
                seconds=dict(train=2), history=[dict(epoch=0, img_auroc=img, pix_auroc=0.9,
                                                     aupro=0.8)])
  files = []
  for name, payload in (('a', dict(known_types={'coins': []},
                                   results={'coins': {'best': [run(0.5)], 'faithful': [run(0.6)]}})),
                        ('b', dict(known_types={'tissue': ['dent']},
                                   results={'tissue': {'best': [run(0.7), run(0.9)]},
                                            'coins': {'best': [run(0.8)]}}))):
    files.append(str(tmp_path / f'{name}.json'))
    with open(files[-1], 'w') as f:
      json.dump(payload, f)
  merged = quality.main(['--tables_from', ','.join(files), '--out', str(tmp_path / 'out')])
  assert merged['known_types'] == {'coins': [], 'tissue': ['dent']}
  # b's coins best replaced a's; a's faithful stays.
  assert merged['results']['coins'] == {'best': [run(0.8)], 'faithful': [run(0.6)]}
  stdout = capsys.readouterr().out
  assert '| coins | best | 80.0 |' in stdout and '| tissue | best | 80.0 ± 14.1 |' in stdout
  assert '| tissue | best | dent | 80.0 ± 14.1 |' in stdout
  assert (tmp_path / 'out' / 'quality_curves.png').is_file()


def test_quality_tables_from_gather_the_seeds_of_several_files(tmp_path, capsys):
  from benchmarks import quality

  def run(img, seed):
    return dict(img_auroc=img, pix_auroc=0.9, aupro=0.8, seen=None, unseen=None,
                per_type={}, wall_seconds=4, seconds=dict(train=2), history=[], seed=seed)
  files = []
  for name, runs, settings, cpu in (('a', [run(0.5, 0), run(0.6, 1)], [], 'cpu A'),
                                    ('b', [run(0.7, 2), run(0.9, 1)], ['loss.pos_beta=0.05'],
                                     'cpu B')):
    files.append(str(tmp_path / f'{name}.json'))
    with open(files[-1], 'w') as f:
      json.dump(dict(args=dict(seeds=name, set=settings), known_types={'coins': []},
                     host=dict(cpu=cpu, simd=['avx2'], jax='0.4', jaxlib='0.4', commit='c'),
                     results={'coins': {'best': runs}}), f)
  merged = quality.main(['--tables_from', ','.join(files), '--out', str(tmp_path / 'out')])
  # Seed 1 of the later file replaces the earlier one's; seeds 0 and 2 add up.
  assert merged['results']['coins']['best'] == [run(0.5, 0), run(0.7, 2), run(0.9, 1)]
  stdout = capsys.readouterr().out
  assert '| coins | best | 70.0 ± 20.0 |' in stdout
  assert 'note: the files differ in --set' in stdout and '--seeds' not in stdout
  assert 'note: the files differ in host cpu: "cpu A" in' in stdout
  assert 'host simd' not in stdout and 'host commit' not in stdout


def test_host_facts_name_this_machine_and_checkout():
  import jax
  import jaxlib
  from benchmarks import table
  host = table.host_facts()
  assert (host['cores'], host['jax'], host['jaxlib']) == (
      os.cpu_count(), jax.__version__, jaxlib.__version__)
  assert host['device'] == jax.devices()[0].device_kind
  if os.path.exists('/proc/cpuinfo'):
    assert host['cpu'] and host['simd'] == sorted(host['simd'])
    assert all(flag.startswith(('sse4', 'fma', 'avx', 'amx')) for flag in host['simd'])
  git = subprocess.run(['git', 'rev-parse', 'HEAD'], cwd=REPO, capture_output=True, text=True)
  if git.returncode == 0:
    assert host['commit'].rstrip('+') == git.stdout.strip()


def test_seed_statistics_known_answers():
  from scipy import stats as scipy_stats
  from benchmarks import stats
  a, b = [1.0, 2.0, 3.0], [4.0, 5.0, 6.0]
  # All 20 splits of 6 values into 3 + 3: only the observed one and its mirror
  # reach |difference of means| = 3.
  assert stats.permutation_p(a, b) == pytest.approx(2 / 20)
  assert stats.permutation_p(a, a) == 1.0
  ours, official = [0.61, 0.66, 0.57, 0.60, 0.64], [0.60, 0.65, 0.59, 0.70, 0.63, 0.58]
  row = stats.welch(ours, official)
  expected = scipy_stats.ttest_ind(ours, official, equal_var=False)
  assert row['p'] == pytest.approx(expected.pvalue, rel=1e-9)
  low, high = expected.confidence_interval(0.95)
  assert (row['low'], row['high']) == (pytest.approx(low), pytest.approx(high))
  assert row['diff'] == pytest.approx(np.mean(ours) - np.mean(official))
  summary = stats.compare(ours, official)
  assert summary['ours'] == dict(n=5, mean=pytest.approx(0.616), sd=pytest.approx(np.std(ours, ddof=1)))
  assert summary['differ'] is False
  assert stats.compare([0.9, 0.91, 0.92, 0.9], [0.5, 0.52, 0.49, 0.51])['differ'] is True


def test_lockstep_comparison_finds_the_first_difference_in_the_official_order():
  from benchmarks import lockstep
  step = lambda epoch, level, loss: dict(epoch=epoch, level=level, loss=loss, ml=loss,
                                         loss_n=0.0, loss_a=0.0, b_n=0.0, b_a=0.0, lr=1e-4,
                                         param_norm=3.0)
  # Official order: level 0, level 1, level 0, level 1 (one chunk per batch and level).
  official = [step(0, 0, 5.0), step(0, 1, 7.0), step(0, 0, 4.0), step(0, 1, 6.0)]
  ours = [step(0, 0, 5.0), step(0, 0, 4.0 * (1 + 3e-4)), step(0, 1, 7.0 * (1 + 1e-5)),
          step(0, 1, 6.0 * (1 + 2e-3))]
  labels = lambda epoch, level, k: dict(sub_epoch=0, batch=k, chunk=0)
  report = lockstep.compare_steps(official, ours, labels)
  assert report['levels'][0]['max_all']['loss'] == pytest.approx(3e-4 / (1 + 3e-4))   # of the larger
  assert report['levels'][1]['max_first']['loss'] == pytest.approx(2e-3 / (1 + 2e-3))
  first = report['first']   # level 0's second step comes before level 1's second
  assert (first['level'], first['step'], first['quantity'], first['batch']) == (0, 1, 'loss', 1)
  assert lockstep.compare_steps(official, official, labels)['first'] is None


def test_serve_load_benchmark_smoke(trained, tmp_path):
  """Against the session's trained run (the benchmark trains a tiny model without --workdir)."""
  from tests.support.runs import copy_of_run
  workdir = copy_of_run(trained[0], tmp_path / 'run')
  out = tmp_path / 'serve_load.json'
  stdout = _run('serve_load.py', '--workdir', str(workdir), '--config', 'configs/test.py',
                '--clients', '4', '--seconds', '2', '--slow', '1', '--json', str(out))
  report = json.loads(out.read_text())
  quiet, attacked = report['rows']
  assert quiet['requests'] > 0 and attacked['requests'] > 0
  assert quiet['errors'] == attacked['errors'] == 0 and attacked['slow'] == 1
  assert quiet['p50'] <= quiet['p99'] <= quiet['max']
  assert report['exit_code'] == 0 and 'p99 / without' in stdout


def test_seed_statistics_of_single_runs_are_undefined_not_significant():
  import math
  from benchmarks import stats
  row = stats.compare([0.61], [0.60])
  assert math.isnan(row['p']) and math.isnan(row['low']) and row['differ'] is False


def test_accelerator_check_runs_a_chosen_subset_under_new_limits():
  from benchmarks import accelerator_check
  every = accelerator_check.sections(False, '/scratch')
  chosen = accelerator_check.chosen_sections(every, 'backbone,tests', ['tests=200'])
  assert [(s.name, s.limit_s) for s in chosen] == [('tests', 200.0), ('backbone', 50.0)]
  assert chosen[0].commands == every[1].commands
  assert [s.name for s in accelerator_check.chosen_sections(every, '', [])] == [
      'device', 'tests', 'flow_step', 'end_to_end', 'backbone']
  for names, limits, message in (('tests,flow', [], 'unknown section(s) flow'),
                                 ('', ['bench=9'], 'unknown section(s) bench'),
                                 ('', ['tests'], "--limit 'tests': expected SECTION=SECONDS")):
    with pytest.raises(ValueError, match=re.escape(message)):
      accelerator_check.chosen_sections(every, names, limits)


def test_memory_bank_nearest_distances_are_the_brute_force_minimum():
  from benchmarks import memory_bank
  rng = np.random.default_rng(0)
  bank = [rng.normal(size=(3, 2, 2, 5)).astype(np.float32),
          rng.normal(size=(3, 1, 1, 7)).astype(np.float32)]
  queries = [rng.normal(size=(2, 2, 2, 5)).astype(np.float32),
             rng.normal(size=(2, 1, 1, 7)).astype(np.float32)]
  queries[0][0, 1, 1] = bank[0][2, 0, 1]   # a bank vector itself: distance 0
  got = memory_bank.nearest_distance_maps(bank, queries, chunk=3)   # padded last chunk
  for b, q, d in zip(bank, queries, got):
    flat_b, flat_q = b.reshape(-1, b.shape[-1]), q.reshape(-1, q.shape[-1])
    want = np.linalg.norm(flat_q[:, None] - flat_b[None], axis=2).min(axis=1)
    np.testing.assert_allclose(d.reshape(-1), want, atol=1e-4)
    assert d.shape == q.shape[:3]
  assert got[0][0, 1, 1] < 1e-3


def test_patch_features_pool_with_zero_padding_and_join_at_stride_8():
  """anomalib's AvgPool2d(3, 1, 1) counts the padding: a corner of ones is 4/9."""
  from benchmarks import memory_bank
  taps = [np.ones((2, 8, 8, 3), np.float32), np.ones((2, 4, 4, 2), np.float32),
          np.full((2, 2, 2, 5), 9.0, np.float32)]
  patches = memory_bank.patch_features(taps)
  assert patches.shape == (2, 4, 4, 7)
  np.testing.assert_allclose(patches[0, :, :, 0], [[4 / 9, 6 / 9, 6 / 9, 4 / 9],
                                                   [6 / 9, 1, 1, 6 / 9],
                                                   [6 / 9, 1, 1, 6 / 9],
                                                   [4 / 9, 6 / 9, 6 / 9, 4 / 9]], rtol=1e-6)
  np.testing.assert_allclose(patches[..., 2:], 4.0, rtol=1e-6)   # 2 x 2: every cell a corner


def test_memory_bank_border_row_known_answer():
  """40 px maps: the normal image and the defective one's outer 8 px ring score high,
  the defect (a 4 x 4 block at the centre) in between."""
  from benchmarks import memory_bank
  distance = memory_bank.border_distance(40)
  assert distance[0, 17] == distance[39, 5] == 0 and distance[20, 19] == 19
  assert distance.max() == 19 and (distance < 8).sum() == 40 ** 2 - 24 ** 2
  ring = (distance < 8).astype(np.float64)
  masks = np.zeros((2, 40, 40))
  masks[1, 18:22, 18:22] = 1
  maps = np.stack([ring, 3 * ring + 2 * masks[1]])
  row = memory_bank.border_row(maps, masks, np.array([0, 1]))
  # Everywhere: the 16 defect pixels (2) above the 576 + 560 zeros and the normal
  # ring's 1024 ones, below the defective image's 1024 threes.
  assert row['pix_from_0'] == pytest.approx(100 * 2160 / 3184)
  assert row['pix_from_8'] == row['pix_from_16'] == 100.0   # the rings left out
  # The normal image: 1024 of 1600 pixels are 1 (mean 0.64, sd 0.48).
  assert row['normal_z_0'] == pytest.approx(0.75)
  assert row['normal_z_8'] == pytest.approx(-0.64 / 0.48)
  assert row['normal_z_16'] == pytest.approx(-0.64 / 0.48)
  assert np.isnan(row['normal_z_32'])   # no pixel 32 px from the border of 40 px


@pytest.mark.slow
def test_memory_bank_benchmark_smoke(tmp_path):
  """Its `best` row is the trained run's own evaluation; a second call reuses the run."""
  _run('memory_bank.py', '--tiny', '--classes', 'surface', '--seeds', '0',
       '--scratch', str(tmp_path), '--json', str(tmp_path / 'out.json'))
  payload = json.loads((tmp_path / 'out.json').read_text())
  rows = {row['variant']: row for row in payload['rows']}
  assert list(rows) == ['best', 'knn', 'best+knn_image', 'best+knn_maps', 'patch_knn',
                        'best+patch_knn']
  run = json.loads((tmp_path / 'runs' / 'surface_0' / 'results.json').read_text())
  assert run['config']['maps']['image_score'] == 'top_k_mean'   # quality.py's best
  for key, metric in (('img', 'img_auroc'), ('pix', 'pix_auroc'), ('aupro', 'aupro')):
    assert rows['best'][key] == pytest.approx(100 * run[metric], abs=1e-6)
  assert rows['best+knn_image']['pix'] == rows['best']['pix']   # image scores only
  assert rows['knn']['pix'] != rows['best']['pix']
  assert rows['patch_knn']['pix'] not in (rows['knn']['pix'], rows['best']['pix'])
  assert all(0 <= rows[v][k] <= 100 for v in rows for k in ('img', 'pix', 'aupro'))
  assert [(e['variant'], e['seeds']) for e in payload['summary']] == [
      (v, 1) for v in rows]
  assert [row['variant'] for row in payload['border']] == ['best', 'patch_knn']
  assert payload['border'][0]['pix_from_0'] == pytest.approx(rows['best']['pix'], abs=1e-6)
  mtime = os.path.getmtime(tmp_path / 'runs' / 'surface_0' / 'results.json')
  _run('memory_bank.py', '--tiny', '--classes', 'surface', '--seeds', '0',
       '--scratch', str(tmp_path))
  assert os.path.getmtime(tmp_path / 'runs' / 'surface_0' / 'results.json') == mtime
