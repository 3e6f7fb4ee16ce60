"""One prepared check of bgad_jax on an accelerator: numerics, speed, end to end.

  python benchmarks/accelerator_check.py --dry_run                  # what to send, here
  python3 benchmarks/accelerator_check.py --out "$OUT" --wheels .whl   # on the GPU machine
  python benchmarks/accelerator_check.py --out DIR --tiny           # the same, tiny, on a CPU

Installs the wheels in ``--wheels`` (what the GPU machine lacks; fill the folder
with ``python benchmarks/accelerator_wheels.py``), prints the device, then runs
each section as its own process under its own time limit, so that one slow or
broken section cannot eat the others' time (470 s of limits in all; on the
first H200 every section but ``device`` needed more, so ``--sections`` and
``--limit SECTION=SECONDS`` split the check over two calls: README, "Checking
a GPU in one command"):

  device      JAX's devices and versions, nvidia-smi
  tests       the numerical tests that matter on an accelerator, JAX on it:
              flow and loss against FrEIA and the reference loss (torch on the
              CPU as the reference), the condition-table gather and its kernel
              gradient, matmul precision, maps, 1 vs 8 devices, accelerator vs CPU
  flow_step   benchmarks/flow_step.py: ours vs FrEIA on the same device, fp32,
              and ours at precision 'default' (TF32), with % of the fp32 peak
  end_to_end  benchmarks/end_to_end.py: B6 at 256 px on an MVTec-sized class
              (280 normal, 10 known anomalies, 100 test images), published
              sub-epochs; features, s/meta-epoch, evaluation, 25x8 projection
  backbone    benchmarks/backbone.py: Lite0 and B6, ours fp32 and bf16 vs timm

Writes ``accelerator_check.json`` and ``accelerator_check.md`` (sections,
tables, the targets of the accelerator issue met or not) and one log per
section into ``--out``: at most 7 files, all of which the device tool returns.
Not included: the official PyTorch code end to end (its checkout and
dependencies do not fit the time), and the inference benchmark (not written yet).
"""

import argparse
import dataclasses
import glob
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import xml.etree.ElementTree as ElementTree
from typing import Dict, List, Optional, Sequence

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

from benchmarks.table import markdown  # noqa: E402  (imports jax, never initialises it)

# The tests whose numerics differ by platform (matmul libraries, reductions, gathers).
GPU_TESTS = ('tests/models/test_flow.py', 'tests/models/test_pos_embed.py',
             'tests/training/test_losses.py', 'tests/training/test_step.py',
             'tests/training/test_loop.py', 'tests/evaluation/test_maps.py')
TINY_TESTS = ('tests/models/test_pos_embed.py',)
DEVICE_SCRIPT = '''
import json, platform, jax, jaxlib
devices = jax.devices()
print(json.dumps(dict(python=platform.python_version(), jax=jax.__version__,
                      jaxlib=jaxlib.__version__, backend=jax.default_backend(),
                      devices=[d.device_kind for d in devices])))
'''


@dataclasses.dataclass
class Section:
  name: str
  limit_s: float
  commands: List[List[str]]   # run in turn, within the one limit


def _bench(script: str, *args: str) -> List[str]:
  return [sys.executable, os.path.join('benchmarks', script), *args]


def sections(tiny: bool, scratch: str) -> List[Section]:
  """What runs, in order; ``scratch`` receives the JSON rows and the test report."""
  def json_out(name):
    return os.path.join(scratch, f'{name}.json')

  tests = [sys.executable, '-m', 'pytest', '-q', '-p', 'no:cacheprovider',
           f'--junitxml={os.path.join(scratch, "tests.xml")}',
           *(TINY_TESTS if tiny else GPU_TESTS)]
  if tiny:   # also the CI smoke runs of these three benchmarks (tests/test_benchmarks.py)
    flow = [_bench('flow_step.py', '--dims', '6', '--side', '4', '--vectors', '64', '--steps',
                   '2', '--repeats', '1', '--json', json_out('flow_step_highest'))]
    end_to_end = [_bench('end_to_end.py', '--setups', 'demo,demo:dense', '--tiny',
                         '--meta_epochs', '1', '--json', json_out('end_to_end'))]
    backbone = [_bench('backbone.py', '--backbones', 'efficientnet_lite0', '--size', '64',
                       '--batch', '1', '--iters', '1', '--json', json_out('backbone_float32'))]
  else:
    flow = [_bench('flow_step.py', '--json', json_out('flow_step_highest')),
            _bench('flow_step.py', '--precision', 'default', '--backbone', 'tf_efficientnet_b6',
                   '--json', json_out('flow_step_default'))]
    end_to_end = [_bench('end_to_end.py', '--setups', 'b6', '--mvtec_sized', '--meta_epochs',
                         '2', '--json', json_out('end_to_end'))]
    backbone = [_bench('backbone.py', '--batch', '32', '--iters', '10', '--dtype', dtype,
                       '--json', json_out(f'backbone_{dtype}'))
                for dtype in ('float32', 'bfloat16')]
  device = [[sys.executable, '-c', DEVICE_SCRIPT]]
  if shutil.which('nvidia-smi'):
    device.append(['nvidia-smi', '-L'])
  return [Section('device', 30, device), Section('tests', 110, [tests]),
          Section('flow_step', 140, flow), Section('end_to_end', 140, end_to_end),
          Section('backbone', 50, backbone)]


def chosen_sections(all_sections: List[Section], names: str, limits: Sequence[str]
                    ) -> List[Section]:
  """``all_sections`` narrowed to ``names`` (comma-separated; empty: all), in their order,
  with the ``SECTION=SECONDS`` limits applied. Raises ValueError naming what is unknown."""
  known = [section.name for section in all_sections]
  wanted = [name for name in names.split(',') if name] or known
  new_limits = {}
  for item in limits:
    name, _, seconds = item.partition('=')
    try:
      new_limits[name] = float(seconds)
    except ValueError:
      raise ValueError(f'--limit {item!r}: expected SECTION=SECONDS') from None
  unknown = sorted(set(wanted) - set(known)) + sorted(set(new_limits) - set(known))
  if unknown:
    raise ValueError(f'unknown section(s) {", ".join(unknown)}: choose from {", ".join(known)}')
  return [dataclasses.replace(section, limit_s=new_limits.get(section.name, section.limit_s))
          for section in all_sections if section.name in wanted]


def _run(argv: Sequence[str], env: Dict[str, str], log, timeout: float) -> Optional[int]:
  """Return code of ``argv``, or None if it ran out of time (its whole process group dies)."""
  log.write(f'$ {" ".join(argv)}\n')
  log.flush()
  process = subprocess.Popen(argv, cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT,
                             start_new_session=True)
  try:
    return process.wait(timeout=max(timeout, 0.1))
  except subprocess.TimeoutExpired:
    os.killpg(process.pid, signal.SIGKILL)
    process.wait()
    return None


def run_section(section: Section, env: Dict[str, str], out: str) -> Dict:
  """Runs a section's commands under its limit; its output goes to ``<out>/<name>.log``."""
  start, status = time.time(), 'passed'
  with open(os.path.join(out, f'{section.name}.log'), 'w') as log:
    for argv in section.commands:
      code = _run(argv, env, log, section.limit_s - (time.time() - start))
      if code is None:
        status = 'timed out'
        break
      if code != 0:
        status = 'failed'
  seconds = time.time() - start
  print(f'{section.name:11s} {status:9s} {seconds:6.1f} s (limit {section.limit_s:.0f} s)',
        flush=True)
  return dict(status=status, seconds=seconds, limit_s=section.limit_s)


def install_wheels(wheels: str) -> str:
  """Installs ``wheels/*.whl`` (without dependencies or network) into a new folder; returns it."""
  files = sorted(glob.glob(os.path.join(wheels, '*.whl')))
  if not files:
    raise SystemExit(f'no wheels in {wheels}: fill it with python benchmarks/accelerator_wheels.py')
  site = tempfile.mkdtemp(prefix='bgad_site_')
  subprocess.run([sys.executable, '-m', 'pip', 'install', '-q', '--no-index', '--no-deps',
                  '--no-compile', '--no-cache-dir', '--upgrade', '--target', site, *files],
                 check=True)
  return site


def test_outcomes(junit_xml: str) -> List[Dict[str, str]]:
  """(test id, passed/failed/skipped) of every test in a pytest JUnit report."""
  if not os.path.isfile(junit_xml):
    return []
  outcomes = []
  for case in ElementTree.parse(junit_xml).iter('testcase'):
    outcome = 'passed'
    for child, name in (('failure', 'failed'), ('error', 'failed'), ('skipped', 'skipped')):
      if case.find(child) is not None:
        outcome = name
    outcomes.append(dict(test=f"{case.get('classname')}::{case.get('name')}", outcome=outcome))
  return outcomes


def _rows(scratch: str, name: str) -> List[Dict]:
  path = os.path.join(scratch, f'{name}.json')
  if not os.path.isfile(path):
    return []
  with open(path) as f:
    return json.load(f)


def targets(report: Dict) -> List[Dict]:
  """The accelerator issue's targets, each with the measured value and whether it is met."""
  found = []
  tests = report['tests']
  if tests:
    failed = [t['test'] for t in tests if t['outcome'] == 'failed']
    found.append(dict(target='all numerical tests pass (precision highest)',
                      value=f'{len(tests) - len(failed)} of {len(tests)} passed',
                      met=not failed))
  fp32 = report['results'].get('flow_step_highest', [])
  if fp32:
    worst = min(fp32, key=lambda r: r['ratio'])
    found.append(dict(target='flow step >= 3x FrEIA on the same device, fp32',
                      value=f"lowest {worst['ratio']:.2f}x (dim {worst['dim']})",
                      met=worst['ratio'] >= 3))
    wide = [r for r in fp32 if r['dim'] >= 112]
    if wide:
      low = min(wide, key=lambda r: r['percent_of_peak'])
      found.append(dict(target='>= 50% of the fp32 matmul peak at dims >= 112',
                        value=f"lowest {low['percent_of_peak']:.1f}% (dim {low['dim']})",
                        met=low['percent_of_peak'] >= 50))
  for row in report['results'].get('end_to_end', []):
    if row['backbone'] == 'tf_efficientnet_b6' and row['train_images'] >= 280:
      found.append(dict(target='B6, 256 px, MVTec-sized class: one meta-epoch < 10 s',
                        value=f"{row['last_meta_epoch_s']:.1f} s", met=row['last_meta_epoch_s'] < 10))
  return found


_TABLES = {
    'flow_step_highest': [('backbone', 'backbone', 's'), ('dim', 'dim', 'd'),
                          ('positions', 'positions', 'd'), ('ours_vps', 'ours vec/s', '.0f'),
                          ('freia_vps', 'FrEIA vec/s', '.0f'), ('ratio', 'ours/FrEIA', '.2f'),
                          ('gflops', 'GFLOP/s', '.1f'), ('peak_gflops', 'fp32 peak', '.1f'),
                          ('percent_of_peak', '% of peak', '.1f')],
    'end_to_end': [('backbone', 'backbone', 's'), ('size', 'size', 'd'),
                   ('train_images', 'train images', 'd'), ('sub_epochs', 'sub-epochs', 'd'),
                   ('features_s', 'features s', '.1f'), ('meta_epoch_s', 's/meta-epoch', '.1f'),
                   ('last_meta_epoch_s', 'last s/meta-epoch', '.1f'),
                   ('eval_s', 's/evaluation', '.1f'), ('projected_s', '25x8 projected s', '.0f')],
    'backbone_float32': [('backbone', 'backbone', 's'), ('size', 'size', 'd'),
                         ('batch', 'batch', 'd'), ('dtype', 'ours dtype', 's'),
                         ('flax_img_s', 'ours img/s', '.1f'), ('torch_img_s', 'timm img/s', '.1f'),
                         ('ratio', 'ours/timm', '.2f')],
}
_TABLES['flow_step_default'] = _TABLES['flow_step_highest']
_TABLES['backbone_bfloat16'] = _TABLES['backbone_float32']


def write_report(report: Dict, out: str) -> None:
  with open(os.path.join(out, 'accelerator_check.json'), 'w') as f:
    json.dump(report, f, indent=2)
  lines = [f"# Accelerator check, {report['date']}", '',
           f"Device: {', '.join(report['device'].get('devices', ['?']))} "
           f"(JAX {report['device'].get('jax', '?')}, backend "
           f"{report['device'].get('backend', '?')}); {'tiny sizes' if report['tiny'] else 'full'}.",
           '', '| section | status | seconds | limit |', '|---|---|---|---|']
  lines += [f"| {name} | {s['status']} | {s['seconds']:.1f} | {s['limit_s']:.0f} |"
            for name, s in report['sections'].items()]
  if report['targets']:
    lines += ['', '| target | measured | met |', '|---|---|---|']
    lines += [f"| {t['target']} | {t['value']} | {'yes' if t['met'] else 'no'} |"
              for t in report['targets']]
  failed = [t['test'] for t in report['tests'] if t['outcome'] == 'failed']
  if failed:
    lines += ['', 'Failed tests (see tests.log): ' + ', '.join(failed)]
  for name, rows in report['results'].items():
    if rows:
      lines += ['', f'## {name}', '', markdown(rows, _TABLES[name])]
  with open(os.path.join(out, 'accelerator_check.md'), 'w') as f:
    f.write('\n'.join(lines) + '\n')


def dry_run(wheels: str) -> str:
  """What to send to the GPU machine, as text."""
  found = sorted(glob.glob(os.path.join(wheels, '*.whl')))
  size = sum(os.path.getsize(f) for f in found) / 2 ** 20
  state = (f'{len(found)} wheels, {size:.1f} MiB' if found else
           'EMPTY: run python benchmarks/accelerator_wheels.py first (needs PyPI)')
  return '\n'.join([
      f'Working tree: the repository (tracked files); carry: ["{wheels}"]  ({state})',
      f'Command: python3 benchmarks/accelerator_check.py --out "$OUT" --wheels {wheels}',
      'timeout_s: 540 (the sections take at most 470 s, the wheels about 20 s); or, as on',
      '  the H100 (compiles eat the limits; benchmarks/RESULTS.md), two calls in 15 minutes:',
      '  --sections device,tests,backbone --limit tests=240 --limit backbone=150, then at once',
      '  --sections flow_step,end_to_end --limit flow_step=190 --limit end_to_end=190',
      'Files back: accelerator_check.json, accelerator_check.md and one log per section.'])


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument('--out', default=None, help='folder for the report and logs')
  parser.add_argument('--wheels', default='.whl', help='folder of wheels to install first')
  parser.add_argument('--tiny', action='store_true', help='tiny sizes (CPU, tests)')
  parser.add_argument('--platform', default='auto',
                      help="JAX_PLATFORMS of the sections; auto: cuda with nvidia-smi, else cpu")
  parser.add_argument('--sections', default='',
                      help='comma-separated subset of device,tests,flow_step,end_to_end,backbone '
                           '(default: all), e.g. to split the check over two calls')
  parser.add_argument('--limit', action='append', default=[], metavar='SECTION=SECONDS',
                      help="a section's time limit instead of its default (repeatable)")
  parser.add_argument('--dry_run', action='store_true')
  args = parser.parse_args(argv)
  try:
    chosen_sections(sections(args.tiny, ''), args.sections, args.limit)   # fail before any work
  except ValueError as error:
    parser.error(str(error))
  if args.dry_run:
    print(dry_run(args.wheels))
    return 0
  if not args.out:
    parser.error('--out is required (or --dry_run)')
  os.makedirs(args.out, exist_ok=True)
  platform = args.platform if args.platform != 'auto' else (
      'cuda' if shutil.which('nvidia-smi') else 'cpu')
  env = dict(os.environ, JAX_PLATFORMS=platform, PYTHONUNBUFFERED='1',
             # torch and JAX share the GPU: JAX must not take 75% of it up front.
             XLA_PYTHON_CLIENT_PREALLOCATE='false')
  paths = [REPO]
  if glob.glob(os.path.join(args.wheels, '*.whl')):
    paths.insert(0, install_wheels(args.wheels))
  env['PYTHONPATH'] = os.pathsep.join(paths + [env.get('PYTHONPATH', '')]).rstrip(os.pathsep)
  report = dict(date=time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime()), tiny=args.tiny,
                platform=platform, sections={}, results={}, tests=[], device={})
  with tempfile.TemporaryDirectory() as scratch:
    for section in chosen_sections(sections(args.tiny, scratch), args.sections, args.limit):
      report['sections'][section.name] = run_section(section, env, args.out)
      if section.name == 'device':
        report['device'] = _device_line(os.path.join(args.out, 'device.log'))
        print(f"device: {report['device']}", flush=True)
    report['tests'] = test_outcomes(os.path.join(scratch, 'tests.xml'))
    for name in _TABLES:
      report['results'][name] = _rows(scratch, name)
  report['targets'] = targets(report)
  write_report(report, args.out)
  print(f"Report: {os.path.join(args.out, 'accelerator_check.md')}")
  return 0 if all(s['status'] == 'passed' for s in report['sections'].values()) else 1


def _device_line(log_path: str) -> Dict:
  with open(log_path) as f:
    for line in f:
      if line.startswith('{'):
        return json.loads(line)
  return {}


if __name__ == '__main__':
  sys.exit(main())
