"""One BGAD training step (flow forward, loss, backward, Adam) on 4096 vectors.

  python benchmarks/flow_step.py [--dims 24,40,72,112,200] [--vectors 4096] [--steps 20]
                                 [--json out.json]

Compares, in one run and on the same inputs: bgad_jax (the jitted lax.scan
trainer used in training) and FrEIA 0.2 + the reference loss in torch 2.13
(threads = cores). GFLOP/s counts the matmuls of the step (forward x 3 for
forward + backward); peak_gflops is jnp's fp32 matmul throughput measured
on the step's largest matmul shape on this machine.
"""

import argparse
import json
import os
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from bgad_jax import train  # noqa: E402
from bgad_jax.engine import make_mesh  # noqa: E402
from configs import common  # noqa: E402
from benchmarks import table  # noqa: E402

COND = 128


def step_flops(dim: int, vectors: int, blocks: int = 8) -> float:
  """Matmul FLOPs of one training step (forward x 3 for forward + backward)."""
  c1, c2 = dim - dim // 2, dim // 2
  fan_in = c1 + COND
  per_block = 2 * vectors * (fan_in * 2 * fan_in + 2 * fan_in * 2 * c2 + dim * dim)
  return 3.0 * blocks * per_block


def matmul_peak(dim: int, vectors: int, repeats: int = 20) -> float:
  """GFLOP/s of jnp fp32 matmul on the step's subnet-input shape."""
  fan_in = dim - dim // 2 + COND
  a = jnp.asarray(np.random.default_rng(0).standard_normal((vectors, fan_in)), jnp.float32)
  b = jnp.asarray(np.random.default_rng(1).standard_normal((fan_in, 2 * fan_in)), jnp.float32)
  f = jax.jit(lambda a, b: a @ b)
  f(a, b).block_until_ready()
  start = time.perf_counter()
  for _ in range(repeats):
    f(a, b).block_until_ready()
  seconds = (time.perf_counter() - start) / repeats
  return 2 * vectors * fan_in * 2 * fan_in / seconds / 1e9


def _inputs(dim, vectors, steps):
  rng = np.random.default_rng(dim)
  feats = (rng.standard_normal((steps * vectors, dim)) * rng.uniform(0.5, 2.0, (steps * vectors, 1))
           ).astype(np.float32)
  masks = np.zeros(steps * vectors, np.float32)
  masks[rng.choice(steps * vectors, steps * vectors // 50, replace=False)] = 1.0
  positions = rng.integers(0, 64 * 64, size=steps * vectors)
  return feats, masks, positions


def bench_ours(dim, vectors, steps):
  config = common.get_config()
  config.train.num_vectors = vectors
  mesh = make_mesh()
  feats, masks, positions = _inputs(dim, vectors, steps)
  state = train.create_state(config, (dim,), jax.random.key(0))
  data = train.LevelData(features=jnp.asarray(feats), masks=jnp.asarray(masks),
                         cond=jnp.asarray(np.random.default_rng(1).standard_normal((64 * 64, COND)),
                                          jnp.float32), positions=64 * 64)
  # Chunk ids whose position (id % 4096) follows `positions`: identity layout is enough here.
  chunks = np.arange(steps * vectors, dtype=np.int32).reshape(steps, vectors)
  trainer = train.make_chunk_trainer(config, mesh)
  key = train.level_key(0)
  params, opt = state.params[key], state.opt_state[key]
  lrs = np.full(steps, 2e-4, np.float32)
  params, opt, losses, _ = trainer(params, opt, state.constants[key], data, chunks, lrs, False)
  jax.block_until_ready(losses)   # compiled and warm
  start = time.perf_counter()
  params, opt, losses, _ = trainer(params, opt, state.constants[key], data, chunks, lrs, False)
  jax.block_until_ready(losses)
  return steps * vectors / (time.perf_counter() - start)


def bench_freia(dim, vectors, steps):
  import torch
  from tests.support import freia_reference
  torch.set_num_threads(os.cpu_count())
  feats, masks, _ = _inputs(dim, vectors, steps)
  cond = np.random.default_rng(1).standard_normal((steps * vectors, COND)).astype(np.float32)
  model = freia_reference.build_freia_flow(dim, cond_dim=COND)
  optimizer = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=2e-4)
  x, c, m = torch.from_numpy(feats), torch.from_numpy(cond), torch.from_numpy(masks)

  def step(i):
    sl = slice(i * vectors, (i + 1) * vectors)
    lp, _, _ = freia_reference.freia_lp(model, x[sl], c[sl])
    loss = freia_reference.reference_chunk_loss(lp, m[sl])
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()

  step(0)
  start = time.perf_counter()
  for i in range(steps):
    step(i)
  return steps * vectors / (time.perf_counter() - start)


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument('--dims', default='24,40,72,112,200')
  parser.add_argument('--vectors', type=int, default=4096)
  parser.add_argument('--steps', type=int, default=20)
  parser.add_argument('--json', default=None)
  args = parser.parse_args(argv)
  rows = []
  for dim in [int(d) for d in args.dims.split(',')]:
    ours = bench_ours(dim, args.vectors, args.steps)
    freia = bench_freia(dim, args.vectors, args.steps)
    gflops = step_flops(dim, args.vectors) * ours / args.vectors / 1e9
    peak = matmul_peak(dim, args.vectors)
    rows.append(dict(dim=dim, ours_vps=ours, freia_vps=freia, ratio=ours / freia,
                     gflops=gflops, peak_gflops=peak))
  shown = [dict(r, percent=100 * r['gflops'] / r['peak_gflops']) for r in rows]
  table.report(shown, [('dim', 'dim', '5d'), ('ours_vps', 'ours vec/s', '11.0f'),
                       ('freia_vps', 'FrEIA vec/s', '12.0f'), ('ratio', 'ours/FrEIA', '10.2f'),
                       ('gflops', 'GFLOP/s', '8.1f'), ('peak_gflops', 'matmul peak', '11.1f'),
                       ('percent', '% of peak', '9.1f')],
               f'{args.vectors} vectors per step, 8 coupling blocks, condition {COND}')
  if args.json:   # the rows without the derived percentage
    with open(args.json, 'w') as f:
      json.dump(rows, f, indent=2)
  return rows


if __name__ == '__main__':
  main()
