"""Flow log-likelihoods with accelerators' fast float32 matmuls vs true float32.

  python benchmarks/precision.py [--vectors 4096] [--train_steps 100] [--dims 24,40]
                                 [--json out.json]

With ``flow.matmul_precision='default'``, float32 matmuls on accelerators round
their operands: to TF32 on recent NVIDIA GPUs (10 explicit mantissa bits) and
to bfloat16 for the one pass of a TPU (7 bits), accumulating in float32. This
emulates both on any machine: the flow's forward pass is evaluated from its
jaxpr with the operands of every matmul rounded to nearest even, and its
per-dimension log-likelihood lp is compared with true float32. The flows are
first trained with the published settings (normal-only maximum likelihood,
lr 2e-4) on synthetic features, and evaluated on held-out vectors. The
boundary margin of the loss is tau * normalizer = 1.0 in lp units.
"""

import argparse
import os
import sys

import jax
import jax.numpy as jnp
import numpy as np
from jax.extend import core as jax_core

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from bgad_jax.models import flow as flow_lib  # noqa: E402
from bgad_jax.models.pos_embed import condition_tables, flow_condition  # noqa: E402
from bgad_jax.training import step as step_lib  # noqa: E402
from bgad_jax.training.state import FlowTrainState, make_flow  # noqa: E402
from bgad_jax.training.training_set import LevelData  # noqa: E402
from configs import common  # noqa: E402
from benchmarks import table  # noqa: E402

MODES = (('tf32', 10), ('bf16', 7))   # name, explicit mantissa bits kept


def round_mantissa(x: jnp.ndarray, bits: int) -> jnp.ndarray:
  """float32 values rounded to ``bits`` explicit mantissa bits, to nearest even.

  Other dtypes pass unchanged (finite inputs assumed).
  """
  drop = 23 - bits
  if x.dtype != jnp.float32 or drop == 0:
    return x
  raw = jax.lax.bitcast_convert_type(x, jnp.uint32)
  odd = (raw >> drop) & 1
  raw = (raw + (1 << (drop - 1)) - 1 + odd) & ~jnp.uint32((1 << drop) - 1)
  return jax.lax.bitcast_convert_type(raw, jnp.float32)


def eval_rounding_matmuls(closed: jax_core.ClosedJaxpr, args, bits: int):
  """Evaluates ``closed`` with the operands of every dot_general rounded."""
  env = {}

  def read(var):
    return var.val if isinstance(var, jax_core.Literal) else env[var]

  for var, value in zip(closed.jaxpr.constvars, closed.consts):
    env[var] = value
  for var, value in zip(closed.jaxpr.invars, args):
    env[var] = value
  for eqn in closed.jaxpr.eqns:
    inputs = [read(var) for var in eqn.invars]
    inner = eqn.params.get('jaxpr', eqn.params.get('call_jaxpr'))
    if eqn.primitive.name == 'dot_general':
      outputs = [eqn.primitive.bind(*[round_mantissa(x, bits) for x in inputs], **eqn.params)]
    elif isinstance(inner, jax_core.ClosedJaxpr):   # pjit, custom_jvp_call: look inside
      outputs = eval_rounding_matmuls(inner, inputs, bits)
    else:
      outputs = eqn.primitive.bind(*inputs, **eqn.params)
      outputs = outputs if eqn.primitive.multiple_results else [outputs]
    for var, value in zip(eqn.outvars, outputs):
      env[var] = value
  return [read(var) for var in closed.jaxpr.outvars]


def _features(rng, count, dim):
  """Gaussian vectors with per-vector scales (a spread of lp, as real features)."""
  return (rng.standard_normal((count, dim))
          * rng.uniform(0.5, 2.0, (count, 1))).astype(np.float32)


def trained_flow(dim, side, vectors, steps, seed=0):
  """(config, params, constants) after ``steps`` normal-only steps of ``vectors``."""
  config = common.get_config()
  config.train.num_vectors = vectors
  positions = side * side
  rng = np.random.default_rng(seed)
  images = max(1, -(-steps * vectors // positions))
  data = LevelData(
      features=jnp.asarray(_features(rng, images * positions, dim)),
      masks=jnp.zeros(images * positions, jnp.float32),
      cond=jax.tree.map(jnp.asarray, condition_tables(config.flow.pos_embed_dim, side, side)),
      positions=positions)
  state = FlowTrainState.create(config, (dim,), jax.random.key(seed)).level(0)
  if steps:
    chunks = rng.permutation(images * positions)[:steps * vectors].astype(np.int32)
    state, _ = step_lib.train_chunks(state, data, jnp.asarray(chunks.reshape(steps, vectors)),
                                     jnp.full(steps, 2e-4, jnp.float32),
                                     step_lib.LossSettings.from_config(config.loss), True)
  params, constants = state.params, state.constants
  return config, params, constants


def lp_differences(dim, side, vectors, train_steps):
  """Row of |lp(rounded matmuls) - lp(float32)| statistics per emulated mode."""
  config, params, constants = trained_flow(dim, side, vectors, train_steps)
  flow = make_flow(config.flow)
  rng = np.random.default_rng(1)
  x = jnp.asarray(_features(rng, vectors, dim))
  positions = jnp.asarray(rng.integers(0, side * side, vectors), jnp.int32)
  tables = condition_tables(config.flow.pos_embed_dim, side, side)
  condition = flow_condition(tables, positions, factored=False)

  def lp(p, x, cond):
    z, logdet = flow.apply({'params': p, flow_lib.CONSTANTS: constants}, x, cond)
    return flow_lib.per_dim_log_likelihood(z, logdet)

  args = (params, x, condition['cond'])
  exact = np.asarray(jax.jit(lp)(*args))
  closed = jax.make_jaxpr(lp)(*args)
  flat = jax.tree.leaves(args)
  row = dict(dim=dim, positions=side * side, lp_median=float(np.median(exact)),
             lp_p1=float(np.percentile(exact, 1)))
  for name, bits in MODES:
    rounded = jax.jit(lambda *a, bits=bits: eval_rounding_matmuls(closed, a, bits)[0])(*flat)
    diff = np.abs(np.asarray(rounded) - exact)
    row.update({f'{name}_max': float(diff.max()), f'{name}_median': float(np.median(diff)),
                f'{name}_p999': float(np.percentile(diff, 99.9))})
  return row


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  table.add_flow_level_flags(parser)
  parser.add_argument('--train_steps', type=int, default=100)
  parser.add_argument('--json', default=None)
  args = parser.parse_args(argv)
  rows = []
  for backbone, level, dim, side in table.flow_levels(args):
    row = lp_differences(dim, side, args.vectors, args.train_steps)
    rows.append(dict(backbone=backbone, level=level, **row))
  columns = [('backbone', 'backbone', '19s'), ('level', 'level', '5d'), ('dim', 'dim', '4d'),
             ('lp_median', 'lp median', '9.2f'), ('lp_p1', 'lp 1%', '7.2f')]
  for name, _ in MODES:
    columns += [(f'{name}_median', f'{name} median', '11.2e'),
                (f'{name}_p999', f'{name} 99.9%', '10.2e'),
                (f'{name}_max', f'{name} max', '9.2e')]
  table.report(rows, columns,
               f'|lp - lp_fp32| over {args.vectors} held-out vectors, flows trained '
               f'{args.train_steps} steps', args.json)
  return rows


if __name__ == '__main__':
  main()
