"""Shared by the benchmarks: best-of timing, the flow levels, the host's facts, and a
device line, a table, optional JSON rows."""

import json
import os
import platform
import re
import subprocess
import time
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import jax

Column = Tuple[str, str, str]   # (row key, header, format spec such as '11.0f')
# The flow levels of Lite0 and B6 at 256x256 input:
# (backbone, level, channels, side of the square feature map).
FLOW_LEVELS = [('efficientnet_lite0', 0, 24, 64), ('efficientnet_lite0', 1, 40, 32),
               ('efficientnet_lite0', 2, 112, 16), ('tf_efficientnet_b6', 0, 40, 64),
               ('tf_efficientnet_b6', 1, 72, 32), ('tf_efficientnet_b6', 2, 200, 16)]


def add_flow_level_flags(parser) -> None:
  """``--backbone`` (the real levels of one backbone), ``--dims``/``--side`` (channel
  counts instead of the real levels) and ``--vectors``."""
  parser.add_argument('--backbone', default=None,
                      help='only the levels of this backbone (efficientnet_lite0, '
                           'tf_efficientnet_b6)')
  parser.add_argument('--dims', default=None, help='channel counts instead of the real levels')
  parser.add_argument('--side', type=int, default=16, help='feature map side with --dims')
  parser.add_argument('--vectors', type=int, default=4096)


def flow_levels(args) -> List[Tuple[str, int, int, int]]:
  """`FLOW_LEVELS`, or one row per ``--dims`` entry on a ``--side`` square map."""
  if args.dims is None:
    return [row for row in FLOW_LEVELS if args.backbone in (None, row[0])]
  return [('-', 0, int(dim), args.side) for dim in args.dims.split(',')]


# The vector extensions XLA's CPU compiler may target: two hosts that differ in
# them may round a long training differently from the same inputs.
_SIMD_FLAG = re.compile(r'^(sse4_\d|fma|avx\w*|amx\w*)$')


def host_facts() -> Dict[str, Any]:
  """Where a benchmark ran, for results that drift between machines: the CPU model and
  its vector extensions (Linux's /proc/cpuinfo; '' / [] elsewhere), the core count,
  the JAX device, the jax and jaxlib versions and this checkout's commit ('' outside
  git; '+' marks uncommitted changes)."""
  import jaxlib
  cpu, flags = platform.processor(), []
  try:
    with open('/proc/cpuinfo') as f:
      for line in f:
        key, _, value = line.partition(':')
        if key.strip() == 'model name' and value.strip():
          cpu = value.strip()
        elif key.strip() == 'flags':
          flags = sorted(flag for flag in value.split() if _SIMD_FLAG.match(flag))
          break
  except OSError:
    pass
  repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  try:
    commit = subprocess.run(['git', 'rev-parse', 'HEAD'], cwd=repo, capture_output=True,
                            text=True, check=True).stdout.strip()
    dirty = subprocess.run(['git', 'status', '--porcelain', '--untracked-files=no'],
                           cwd=repo, capture_output=True, text=True, check=True).stdout
    commit += '+' if dirty.strip() else ''
  except (OSError, subprocess.CalledProcessError):
    commit = ''
  return dict(cpu=cpu, simd=flags, cores=os.cpu_count(), device=jax.devices()[0].device_kind,
              jax=jax.__version__, jaxlib=jaxlib.__version__, commit=commit)


def torch_device() -> str:
  """'cuda' when torch sees a GPU (the reference then runs on the same GPU as ours), else 'cpu'.

  On the GPU, TF32 stays off: the reference's fp32 is true float32.
  """
  import torch
  if torch.cuda.is_available():
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    return 'cuda'
  torch.set_num_threads(os.cpu_count())
  return 'cpu'


def torch_sync(device: str) -> None:
  """Waits for the GPU's queued torch work (timings then cover it)."""
  if device == 'cuda':
    import torch
    torch.cuda.synchronize()


def best_of(fn: Callable[[], Any], repeats: int, warmup: bool = False) -> Tuple[float, Any]:
  """(shortest wall time in seconds of ``repeats`` calls of ``fn``, the last call's result).

  With ``warmup``, one untimed call first (compilation, caches).
  """
  if warmup:
    fn()
  best, value = float('inf'), None
  for _ in range(repeats):
    start = time.perf_counter()
    value = fn()
    best = min(best, time.perf_counter() - start)
  return best, value


def best_of_interleaved(fns: Sequence[Callable[[], Any]], repeats: int) -> List[float]:
  """Shortest wall time in seconds of each of ``fns`` over ``repeats`` rounds.

  Each round calls every function once, in turn, after one untimed warm-up
  call each: on a machine whose speed drifts, all of them see the same drift.
  """
  for fn in fns:
    fn()
  best = [float('inf')] * len(fns)
  for _ in range(repeats):
    for i, fn in enumerate(fns):
      best[i] = min(best[i], best_of(fn, 1)[0])
  return best


def report(rows: List[Dict], columns: Sequence[Column], setting: str,
           json_path: Optional[str] = None) -> None:
  """Prints ``device: ..., setting`` and a table of ``rows``; writes them as JSON."""
  print(f'device: {jax.devices()[0].device_kind}, {os.cpu_count()} cores, {setting}')
  widths = [max(len(header), int(spec.split('.')[0].rstrip('sdf') or 0))
            for _, header, spec in columns]
  print(' '.join(f'{header:>{w}s}' for (_, header, _), w in zip(columns, widths)))
  for row in rows:
    print(' '.join(f'{row[key]:>{w}{spec.lstrip("0123456789")}}'
                   for (key, _, spec), w in zip(columns, widths)))
  if json_path:
    write_rows(json_path, rows)


def write_rows(json_path: str, rows: List[Dict]) -> None:
  """``rows`` as a JSON list (rewritten whole: a run cut short keeps what it finished)."""
  with open(json_path, 'w') as f:
    json.dump(rows, f, indent=2)


def markdown(rows: List[Dict], columns: Sequence[Column]) -> str:
  """``rows`` as a markdown table (None cells read n/a), for benchmarks/RESULTS.md."""
  lines = ['| ' + ' | '.join(header for _, header, _ in columns) + ' |',
           '|' + '---|' * len(columns)]
  for row in rows:
    cells = ['n/a' if row.get(key) is None else format(row[key], spec.lstrip('0123456789'))
             for key, _, spec in columns]
    lines.append('| ' + ' | '.join(cells) + ' |')
  return '\n'.join(lines)
