"""One BGAD training step (flow forward, loss, backward, Adam) on 4096 vectors.

  python benchmarks/flow_step.py [--vectors 4096] [--steps 20] [--repeats 3]
                                 [--dims 24,40 --side 16] [--precision highest]
                                 [--json out.json]

By default one row per flow level of Lite0 and B6 at 256x256 input: dims 24,
40, 112 and 40, 72, 200 on 64x64, 32x32 and 16x16 positions. Compares, in one
run and on the same inputs: bgad_jax (the jitted lax.scan trainer used in
training, vectors gathered from random positions of whole images), the same
with ``flow.factored_condition=False`` ("dense": the reference's one matmul on
[x1, c]) and FrEIA 0.2 + the reference loss in torch (threads = cores,
conditions gathered beforehand; on the GPU when there is one, fp32 without
TF32). ``--precision default`` runs our flows' matmuls in the platform's fast
mode (TF32 on NVIDIA GPUs, bfloat16 passes on TPUs; the same as highest on CPU). Throughputs are the best of ``--repeats``
timed passes of ``--steps`` steps each; the three sides' passes alternate, so
that all see the same phases of a noisy machine.

GFLOP/step: XLA's count of the floating-point operations of our compiled
step; "ref GFLOP/step" that of the dense step, i.e. the reference's
computation. GFLOP/s: our step's own flops over its time; "ref % of peak":
the reference's flops over our step's time (the share of the peak that a
dense implementation would need to be as fast as ours); "dense % of peak":
the dense step's flops over its own time. Peak: the highest fp32 matmul
throughput that jnp or torch reach on any matmul shape of the two compiled
steps (read from their HLO) on this machine. Matmul floor: our step's
matmuls alone, each at the faster of jnp and torch for its shape and layout,
back to back; "% of floor" is that time over the step's. On an accelerator
the compiled step calls matmul libraries, so the peak is instead that of one
8192x8192x8192 fp32 product (jnp at precision highest; torch without TF32)
and the floor columns read nan.
"""

import argparse
import collections
import math
import os
import re
import sys
from typing import Dict, Tuple

import jax
import jax.numpy as jnp
import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from bgad_jax.models.pos_embed import condition_tables, flow_condition  # noqa: E402
from bgad_jax.training import step as step_lib  # noqa: E402
from bgad_jax.training.state import FlowTrainState  # noqa: E402
from bgad_jax.training.training_set import LevelData  # noqa: E402
from configs import common  # noqa: E402
from benchmarks import table  # noqa: E402

COND = 128


_ARRAY = re.compile(r'%(\S+) = f32\[([0-9,]*)\]\{[0-9,]*\} [a-z]')
_DOT = re.compile(r'= f32\[[0-9,]+\]\{[0-9,]*\} dot\(%(\S+), %(\S+)\), '
                  r'lhs_contracting_dims=\{(\d)\}, rhs_contracting_dims=\{(\d)\}')

Matmul = Tuple[Tuple[int, int], Tuple[int, int], int, int]   # lhs, rhs, contracting dims


def step_matmuls(hlo_text: str) -> collections.Counter:
  """The matmuls of a compiled XLA:CPU program, from its optimised HLO text.

  Returns:
    Counter of (lhs shape, rhs shape, lhs contracting dim, rhs contracting
    dim) -> how many times the program runs that matmul.
  """
  shapes = {m.group(1): tuple(int(d) for d in m.group(2).split(',') if d)
            for m in _ARRAY.finditer(hlo_text)}
  matmuls = collections.Counter(
      (shapes[m.group(1)], shapes[m.group(2)], int(m.group(3)), int(m.group(4)))
      for m in _DOT.finditer(hlo_text))
  found = hlo_text.count(' dot(')
  if sum(matmuls.values()) != found:
    raise ValueError(f'parsed {sum(matmuls.values())} of the {found} dots: only 2-D fp32 '
                     'matmuls with one contracting dimension are understood')
  return matmuls


def matmul_flops(matmul: Matmul) -> float:
  lhs, rhs, lhs_contract, rhs_contract = matmul
  return 2.0 * lhs[0] * lhs[1] * rhs[1 - rhs_contract]


def matmul_times(matmuls, repeats: int = 3) -> Dict[Matmul, Dict[str, float]]:
  """Seconds of one jnp and one torch fp32 matmul of each shape (best of ``repeats`` x 10).

  Operands keep the program's layouts: a contracting dim 0 on the left or 1
  on the right is a transposed view for torch, as for XLA.
  """
  import torch
  rng = np.random.default_rng(0)
  times = {}
  for matmul in matmuls:
    lhs, rhs, lhs_contract, rhs_contract = matmul
    a = rng.standard_normal(lhs).astype(np.float32)
    b = rng.standard_normal(rhs).astype(np.float32)
    dims = (((lhs_contract,), (rhs_contract,)), ((), ()))
    jitted = jax.jit(lambda x, y, dims=dims: jax.lax.dot_general(x, y, dims))
    ja, jb = jnp.asarray(a), jnp.asarray(b)
    ta = torch.from_numpy(a).t() if lhs_contract == 0 else torch.from_numpy(a)
    tb = torch.from_numpy(b).t() if rhs_contract == 1 else torch.from_numpy(b)

    def jnp_ten():
      for _ in range(10):
        out = jitted(ja, jb)
      out.block_until_ready()

    def torch_ten():
      for _ in range(10):
        torch.mm(ta, tb)

    times[matmul] = {'jnp': table.best_of(jnp_ten, repeats, warmup=True)[0] / 10,
                     'torch': table.best_of(torch_ten, repeats, warmup=True)[0] / 10}
  return times


def matmul_limits(matmuls, times) -> Dict[str, float]:
  """Peaks and the step's matmul floor from per-shape times.

  Returns:
    ``peak_jnp_gflops``/``peak_torch_gflops``: the fastest matmul of any of
    the shapes; ``floor_s``: the step's matmuls, each at the faster of jnp and
    torch, run back to back (no other work); ``floor_gflops``: their flops
    over that time.
  """
  peaks = {lib: max(matmul_flops(m) / t[lib] for m, t in times.items()) / 1e9
           for lib in ('jnp', 'torch')}
  floor = sum(count * min(times[m].values()) for m, count in matmuls.items())
  flops = sum(count * matmul_flops(m) for m, count in matmuls.items())
  return dict(peak_jnp_gflops=peaks['jnp'], peak_torch_gflops=peaks['torch'],
              floor_s=floor, floor_gflops=flops / floor / 1e9)


def accelerator_fp32_peak(size: int = 8192, repeats: int = 3) -> Dict[str, float]:
  """GFLOP/s of one true-fp32 square matmul on the default device, jnp and torch."""
  import torch
  rng = np.random.default_rng(0)
  a = rng.standard_normal((size, size)).astype(np.float32)
  matmul = jax.jit(lambda x, y: jnp.matmul(x, y, precision=jax.lax.Precision.HIGHEST))
  ja = jnp.asarray(a)
  jnp_s = table.best_of(lambda: matmul(ja, ja).block_until_ready(), repeats, warmup=True)[0]
  device = table.torch_device()
  ta = torch.from_numpy(a).to(device)

  def torch_matmul():
    torch.mm(ta, ta)
    table.torch_sync(device)

  torch_s = table.best_of(torch_matmul, repeats, warmup=True)[0]
  flops = 2.0 * size ** 3
  return dict(peak_jnp_gflops=flops / jnp_s / 1e9, peak_torch_gflops=flops / torch_s / 1e9,
              floor_s=float('nan'), floor_gflops=float('nan'))


def _inputs(dim, positions, vectors, steps):
  """Features of whole images, random chunks of them, and the condition table."""
  rng = np.random.default_rng(dim)
  total = steps * vectors
  images = -(-total // positions)
  feats = (rng.standard_normal((images * positions, dim))
           * rng.uniform(0.5, 2.0, (images * positions, 1))).astype(np.float32)
  masks = np.zeros(images * positions, np.float32)
  masks[rng.choice(images * positions, images * positions // 50, replace=False)] = 1.0
  chunks = rng.permutation(images * positions)[:total].astype(np.int32).reshape(steps, vectors)
  side = math.isqrt(positions)
  return feats, masks, chunks, condition_tables(COND, side, side)


def one_level(dim, positions, vectors, factored=True, precision='highest', steps=1):
  """(config, a fresh level state, `LevelData` of random features) for one flow level."""
  config = common.get_config()
  config.train.num_vectors = vectors
  config.flow.factored_condition = factored
  config.flow.matmul_precision = precision
  feats, masks, _, cond = _inputs(dim, positions, vectors, steps)
  state = FlowTrainState.create(config, (dim,), jax.random.key(0)).level(0)
  data = LevelData(features=jnp.asarray(feats), masks=jnp.asarray(masks),
                   cond=jax.tree.map(jnp.asarray, cond), positions=positions)
  return config, state, data


def compiled_step(config, state, data, chunk):
  """The training step (`step.train_chunks`) compiled for one chunk [1, vectors]."""
  return step_lib.train_chunks.lower(
      state, data, chunk, jnp.full((1,), 2e-4, jnp.float32),
      step_lib.LossSettings.from_config(config.loss), False).compile()


def ours_runner(dim, positions, vectors, steps, factored=True, precision='highest'):
  """(``run()`` of ``steps`` trainer steps, XLA flops of one step, its optimised HLO).

  ``factored``: config ``flow.factored_condition``; ``precision``: ``flow.matmul_precision``.
  """
  config, state, data = one_level(dim, positions, vectors, factored, precision, steps)
  chunks = jnp.asarray(_inputs(dim, positions, vectors, steps)[2])
  loss = step_lib.LossSettings.from_config(config.loss)
  carry = [jax.tree.map(jnp.array, state)]
  lrs = jnp.full(steps, 2e-4, jnp.float32)

  def run():
    new_state, metrics = step_lib.train_chunks(carry[0], data, chunks, lrs, loss, False)
    jax.block_until_ready(metrics['loss'])
    carry[0] = new_state   # train_chunks donates its input state

  # One step's cost, from the program training runs (compiled for one chunk).
  compiled = compiled_step(config, state, data, chunks[:1])
  analysis = compiled.cost_analysis()
  analysis = analysis[0] if isinstance(analysis, (list, tuple)) else analysis
  return run, float(analysis['flops']), compiled.as_text()


def freia_runner(dim, positions, vectors, steps):
  """``run()`` of ``steps`` FrEIA + reference-loss steps in torch on the same inputs."""
  import torch
  from references import freia_reference
  device = table.torch_device()
  feats, masks, chunks, cond = _inputs(dim, positions, vectors, steps)
  model = freia_reference.build_freia_flow(dim, cond_dim=COND).to(device)
  optimizer = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=2e-4)
  x = [torch.from_numpy(feats[c]).to(device) for c in chunks]
  cond = np.array(flow_condition(cond, chunks.reshape(-1) % positions,
                                 factored=False)['cond']).reshape(*chunks.shape, COND)
  c = [torch.from_numpy(rows).to(device) for rows in cond]
  m = [torch.from_numpy(masks[ch]).to(device) for ch in chunks]

  def run():
    for i in range(steps):
      lp, _, _ = freia_reference.freia_lp(model, x[i], c[i])
      loss = freia_reference.reference_chunk_loss(lp, m[i])
      optimizer.zero_grad()
      loss.backward()
      optimizer.step()
    table.torch_sync(device)

  return run


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  table.add_flow_level_flags(parser)
  parser.add_argument('--steps', type=int, default=20)
  parser.add_argument('--repeats', type=int, default=3)
  parser.add_argument('--precision', default='highest', choices=['highest', 'high', 'default'],
                      help="flow.matmul_precision of ours (FrEIA's side stays fp32)")
  parser.add_argument('--json', default=None)
  args = parser.parse_args(argv)
  rows = []
  accelerator_limits = (None if jax.default_backend() == 'cpu' else
                        accelerator_fp32_peak(repeats=args.repeats))
  for backbone, level, dim, side in table.flow_levels(args):
    positions = side * side
    run_ours, flops, hlo = ours_runner(dim, positions, args.vectors, args.steps,
                                       precision=args.precision)
    run_dense, dense_flops, dense_hlo = ours_runner(dim, positions, args.vectors, args.steps,
                                                    factored=False, precision=args.precision)
    run_freia = freia_runner(dim, positions, args.vectors, args.steps)
    seconds = table.best_of_interleaved([run_ours, run_dense, run_freia], args.repeats)
    ours, dense, freia = (args.steps * args.vectors / t for t in seconds)
    if accelerator_limits is None:
      matmuls, dense_matmuls = step_matmuls(hlo), step_matmuls(dense_hlo)
      # Peaks over the shapes of both steps; the floor is the factored step's.
      limits = matmul_limits(matmuls, matmul_times(set(matmuls) | set(dense_matmuls),
                                                   args.repeats))
    else:   # accelerators' HLO calls matmul libraries: no dots to read
      limits = accelerator_limits
    peak_gflops = max(limits['peak_jnp_gflops'], limits['peak_torch_gflops'])
    gflops = flops * ours / args.vectors / 1e9
    ref_gflops = dense_flops * ours / args.vectors / 1e9
    dense_gflops = dense_flops * dense / args.vectors / 1e9
    step_s = args.vectors / ours
    rows.append(dict(backbone=backbone, level=level, dim=dim, positions=positions,
                     precision=args.precision,
                     ours_vps=ours, dense_vps=dense, freia_vps=freia, ratio=ours / freia,
                     step_gflop=flops / 1e9, ref_gflop=dense_flops / 1e9, gflops=gflops,
                     ref_gflops=ref_gflops, dense_gflops=dense_gflops, peak_gflops=peak_gflops,
                     percent_of_peak=100 * gflops / peak_gflops,
                     ref_percent_of_peak=100 * ref_gflops / peak_gflops,
                     dense_percent_of_peak=100 * dense_gflops / peak_gflops,
                     step_ms=1e3 * step_s, floor_ms=1e3 * limits['floor_s'],
                     percent_of_floor=100 * limits['floor_s'] / step_s, **limits))
    # Each row as it is measured: a run cut short by a time limit keeps what it finished.
    print(f'{backbone} level {level} (dim {dim}): ours {ours:.0f} vec/s, FrEIA {freia:.0f} '
          f'vec/s, {ours / freia:.2f}x, {100 * gflops / peak_gflops:.1f}% of peak', flush=True)
    if args.json:
      table.write_rows(args.json, rows)
  table.report(rows, [('backbone', 'backbone', '19s'), ('level', 'level', '5d'),
                      ('dim', 'dim', '4d'), ('positions', 'positions', '9d'),
                      ('ours_vps', 'ours vec/s', '10.0f'), ('dense_vps', 'dense vec/s', '11.0f'),
                      ('freia_vps', 'FrEIA vec/s', '11.0f'),
                      ('ratio', 'ours/FrEIA', '10.2f'), ('step_gflop', 'GFLOP/step', '10.2f'),
                      ('ref_gflop', 'ref GFLOP/step', '14.2f'),
                      ('gflops', 'GFLOP/s', '7.1f'), ('peak_gflops', 'peak', '6.1f'),
                      ('percent_of_peak', '% of peak', '9.1f'),
                      ('ref_percent_of_peak', 'ref % of peak', '13.1f'),
                      ('dense_percent_of_peak', 'dense % of peak', '15.1f'),
                      ('step_ms', 'step ms', '7.1f'),
                      ('floor_ms', 'matmul floor ms', '15.1f'),
                      ('percent_of_floor', '% of floor', '10.1f')],
               f'{args.vectors} vectors per step, 8 coupling blocks, condition {COND}, '
               f'ours at precision {args.precision}, best of {args.repeats} x {args.steps} '
               'steps', args.json)
  return rows


if __name__ == '__main__':
  main()
