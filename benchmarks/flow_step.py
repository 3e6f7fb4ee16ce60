"""One BGAD training step (flow forward, loss, backward, Adam) on 4096 vectors.

  python benchmarks/flow_step.py [--vectors 4096] [--steps 20] [--repeats 3]
                                 [--dims 24,40 --side 16] [--json out.json]

By default one row per flow level of Lite0 and B6 at 256x256 input: dims 24,
40, 112 and 40, 72, 200 on 64x64, 32x32 and 16x16 positions. Compares, in one
run and on the same inputs: bgad_jax (the jitted lax.scan trainer used in
training, vectors gathered from random positions of whole images) and FrEIA
0.2 + the reference loss in torch 2.13 (threads = cores, conditions gathered
beforehand). Throughputs are the best of ``--repeats`` timed passes of
``--steps`` steps each.

GFLOP/s: XLA's count of the floating-point operations of our compiled step
divided by its time. peak_gflops: the highest fp32 matmul throughput that
jnp or torch reach on any of the step's matmul shapes on this machine.
"""

import argparse
import os
import sys

import jax
import jax.numpy as jnp
import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from bgad_jax import train  # noqa: E402
from bgad_jax.engine import make_mesh  # noqa: E402
from configs import common  # noqa: E402
from benchmarks import table  # noqa: E402

COND = 128
# (backbone, level, channels, side of the square feature map at 256x256 input)
LEVELS = [('efficientnet_lite0', 0, 24, 64), ('efficientnet_lite0', 1, 40, 32),
          ('efficientnet_lite0', 2, 112, 16), ('tf_efficientnet_b6', 0, 40, 64),
          ('tf_efficientnet_b6', 1, 72, 32), ('tf_efficientnet_b6', 2, 200, 16)]


def _best_rate(fn, items: int, repeats: int) -> float:
  """Items per second of ``fn()``, best of ``repeats`` timed calls after a warm-up."""
  return items / table.best_of(fn, repeats, warmup=True)[0]


def matmul_shapes(dim: int, vectors: int, positions: int):
  """(m, k, n) of every matmul of our step: forward, input and weight gradients."""
  len1, len2 = dim - dim // 2, dim // 2
  hidden = 2 * (len1 + COND)
  forward = [(vectors, hidden, 2 * len2), (vectors, dim, dim)]
  if positions < vectors:   # indexed condition table (bgad_jax.train.flow_condition)
    forward += [(vectors, len1, hidden), (positions, COND, hidden)]
  else:
    forward += [(vectors, len1 + COND, hidden)]
  grads = []
  for m, k, n in forward:
    grads += [(m, n, k), (k, m, n)]   # dX = dY @ W.T, dW = X.T @ dY
  return forward + grads


def matmul_peak(shapes, repeats: int = 3):
  """Highest GFLOP/s of jnp and of torch fp32 matmuls over ``shapes``."""
  import torch
  rng = np.random.default_rng(0)
  best = {'jnp': 0.0, 'torch': 0.0}
  jitted = jax.jit(jnp.dot)
  for m, k, n in set(shapes):
    a = rng.standard_normal((m, k)).astype(np.float32)
    b = rng.standard_normal((k, n)).astype(np.float32)
    flops = 2.0 * m * k * n * 10
    ja, jb, ta, tb = jnp.asarray(a), jnp.asarray(b), torch.from_numpy(a), torch.from_numpy(b)

    def jnp_ten():
      for _ in range(10):
        out = jitted(ja, jb)
      out.block_until_ready()

    def torch_ten():
      for _ in range(10):
        torch.mm(ta, tb)

    best['jnp'] = max(best['jnp'], _best_rate(jnp_ten, flops, repeats) / 1e9)
    best['torch'] = max(best['torch'], _best_rate(torch_ten, flops, repeats) / 1e9)
  return best


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
  cond = rng.standard_normal((positions, COND)).astype(np.float32)
  return feats, masks, chunks, cond


def bench_ours(dim, positions, vectors, steps, repeats):
  """(vectors/s, XLA flops of one step) of the bgad_jax trainer."""
  config = common.get_config()
  config.train.num_vectors = vectors
  feats, masks, chunks, cond = _inputs(dim, positions, vectors, steps)
  state = train.create_state(config, (dim,), jax.random.key(0))
  data = train.LevelData(features=jnp.asarray(feats), masks=jnp.asarray(masks),
                         cond=jnp.asarray(cond), positions=positions)
  trainer = train.make_chunk_trainer(config, make_mesh())
  key = train.level_key(0)
  carry = [state.params[key], state.opt_state[key]]
  lrs = np.full(steps, 2e-4, np.float32)

  def run():
    params, opt, losses, _ = trainer(*carry, state.constants[key], data, chunks, lrs, False)
    jax.block_until_ready(losses)
    carry[:] = [params, opt]   # the trainer donates its inputs

  rate = _best_rate(run, steps * vectors, repeats)
  ids = jnp.asarray(chunks[0])
  step = jax.jit(train.make_train_step(config, normal_only=False))
  compiled = step.lower(state.params[key], state.opt_state[key], state.constants[key],
                        data.features[ids], data.masks[ids],
                        train.flow_condition(data.cond, ids % positions),
                        jnp.float32(2e-4)).compile()
  analysis = compiled.cost_analysis()
  analysis = analysis[0] if isinstance(analysis, (list, tuple)) else analysis
  return rate, float(analysis['flops'])


def bench_freia(dim, positions, vectors, steps, repeats):
  import torch
  from tests.support import freia_reference
  torch.set_num_threads(os.cpu_count())
  feats, masks, chunks, cond = _inputs(dim, positions, vectors, steps)
  model = freia_reference.build_freia_flow(dim, cond_dim=COND)
  optimizer = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=2e-4)
  x = [torch.from_numpy(feats[c]) for c in chunks]
  c = [torch.from_numpy(cond[ch % positions]) for ch in chunks]
  m = [torch.from_numpy(masks[ch]) for ch in chunks]

  def run():
    for i in range(steps):
      lp, _, _ = freia_reference.freia_lp(model, x[i], c[i])
      loss = freia_reference.reference_chunk_loss(lp, m[i])
      optimizer.zero_grad()
      loss.backward()
      optimizer.step()

  return _best_rate(run, steps * vectors, repeats)


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument('--dims', default=None, help='channel counts instead of the real levels')
  parser.add_argument('--side', type=int, default=16, help='feature map side with --dims')
  parser.add_argument('--vectors', type=int, default=4096)
  parser.add_argument('--steps', type=int, default=20)
  parser.add_argument('--repeats', type=int, default=3)
  parser.add_argument('--json', default=None)
  args = parser.parse_args(argv)
  levels = LEVELS if args.dims is None else [
      ('-', 0, int(d), args.side) for d in args.dims.split(',')]
  rows = []
  for backbone, level, dim, side in levels:
    positions = side * side
    ours, flops = bench_ours(dim, positions, args.vectors, args.steps, args.repeats)
    freia = bench_freia(dim, positions, args.vectors, args.steps, args.repeats)
    peak = matmul_peak(matmul_shapes(dim, args.vectors, positions))
    gflops = flops * ours / args.vectors / 1e9
    peak_gflops = max(peak.values())
    rows.append(dict(backbone=backbone, level=level, dim=dim, positions=positions,
                     ours_vps=ours, freia_vps=freia, ratio=ours / freia,
                     step_gflop=flops / 1e9, gflops=gflops, peak_gflops=peak_gflops,
                     peak_jnp_gflops=peak['jnp'], peak_torch_gflops=peak['torch'],
                     percent_of_peak=100 * gflops / peak_gflops))
  table.report(rows, [('backbone', 'backbone', '19s'), ('level', 'level', '5d'),
                      ('dim', 'dim', '4d'), ('positions', 'positions', '9d'),
                      ('ours_vps', 'ours vec/s', '10.0f'), ('freia_vps', 'FrEIA vec/s', '11.0f'),
                      ('ratio', 'ours/FrEIA', '10.2f'), ('step_gflop', 'GFLOP/step', '10.2f'),
                      ('gflops', 'GFLOP/s', '7.1f'), ('peak_jnp_gflops', 'jnp peak', '8.1f'),
                      ('peak_torch_gflops', 'torch peak', '10.1f'),
                      ('percent_of_peak', '% of peak', '9.1f')],
               f'{args.vectors} vectors per step, 8 coupling blocks, condition {COND}, '
               f'best of {args.repeats} x {args.steps} steps', args.json)
  return rows


if __name__ == '__main__':
  main()
