"""Conditional normalizing flow: AllInOneBlock-equivalent coupling blocks (docs/METHOD.md, "Flows").

Variables of a flow live in two collections:
  * ``params``: subnet weights, global affine scale and offset (trained);
  * ``constants``: the fixed random rotation of each block. It is drawn once at
    ``init`` from the ``params`` rng, never sees the optimiser, and must be saved
    and restored with the parameters.
"""

import functools
import math
from typing import Any, Optional, Sequence, Tuple, Union

import jax
import numpy as np
import jax.numpy as jnp
import flax.linen as nn
from jax.custom_derivatives import SymbolicZero

CONSTANTS = 'constants'
# A condition: one [N, D] or [P, D] array, or a sequence of tables (and the
# matching ``cond_index``: one [N] int32 array, or one per table).
Condition = Union[jnp.ndarray, Sequence[jnp.ndarray]]
_LOG_SQRT_2PI = 0.5 * math.log(2.0 * math.pi)
# FrEIA's SOFTPLUS global affine: gamma such that 0.1 * softplus_beta(gamma) = 1.
_GLOBAL_SCALE_INIT = 2.0 * math.log(math.exp(5.0) - 1.0)


def torch_linear_init(key, shape, dtype=jnp.float32):
  """PyTorch's default nn.Linear init: U(-1/sqrt(fan_in), 1/sqrt(fan_in)).

  Used for kernels ([fan_in, fan_out]) and, through `torch_bias_init`, biases.
  """
  bound = 1.0 / math.sqrt(shape[0])
  return jax.random.uniform(key, shape, dtype, -bound, bound)


def torch_bias_init(fan_in: int):
  def init(key, shape, dtype=jnp.float32):
    bound = 1.0 / math.sqrt(fan_in)
    return jax.random.uniform(key, shape, dtype, -bound, bound)
  return init


def random_rotation(key, dim: int, dtype=jnp.float32) -> jnp.ndarray:
  """A Haar-random special-orthogonal [dim, dim] matrix (det = +1).

  QR of a Gaussian matrix with the signs of R's diagonal folded into Q gives a
  Haar-distributed orthogonal matrix; flipping one column when det = -1 maps
  that coset onto SO(dim) and keeps the Haar measure.
  """
  gauss = jax.random.normal(key, (dim, dim), jnp.float32)
  q, r = jnp.linalg.qr(gauss)
  q = q * jnp.sign(jnp.diag(r))[None, :]
  flip = jnp.where(jnp.linalg.det(q) < 0, -1.0, 1.0)
  q = q.at[:, 0].multiply(flip)
  return q.astype(dtype)


def softplus_beta_half(v: jnp.ndarray) -> jnp.ndarray:
  """Softplus with beta = 0.5: 2 * log(1 + exp(v / 2)), numerically stable."""
  return 2.0 * jax.nn.softplus(0.5 * v)


# Custom JVPs of the subnet's first layer, on [x1, c] with c the positional
# condition (constant in training). Each rule adds one matmul per input that
# has a tangent, so that reverse mode forms no gradient for the condition
# (autodiff of one matmul on the concatenation forms the input gradient of all
# C1 + D columns and slices x1's out of it: that wasted matmul was the
# costliest op of a training step at dims 24 and 40). Zero tangents arrive as
# SymbolicZero and get no matmul.


def _has_tangent(tangent) -> bool:
  return not isinstance(tangent, SymbolicZero)


def _sum_terms(terms, like: jnp.ndarray) -> jnp.ndarray:
  return functools.reduce(jnp.add, terms) if terms else jnp.zeros_like(like)


@functools.partial(jax.custom_jvp, nondiff_argnums=(3,))
def _concat_dense(x1: jnp.ndarray, cond: jnp.ndarray, kernel: jnp.ndarray,
                  precision=None) -> jnp.ndarray:
  """[x1, cond] @ kernel: [N, C1], [N, D], [C1 + D, H] float32 -> [N, H]."""
  return jnp.dot(jnp.concatenate([x1, cond], axis=-1), kernel, precision=precision)


@functools.partial(_concat_dense.defjvp, symbolic_zeros=True)
def _concat_dense_jvp(precision, primals, tangents):
  x1, cond, kernel = primals
  d_x1, d_cond, d_kernel = tangents
  len1 = x1.shape[-1]
  inputs = jnp.concatenate([x1, cond], axis=-1)
  out = jnp.dot(inputs, kernel, precision=precision)
  terms = []
  if _has_tangent(d_kernel):   # transposes to one inputs.T @ grad
    terms.append(jnp.dot(inputs, d_kernel, precision=precision))
  if _has_tangent(d_x1):
    terms.append(jnp.dot(d_x1, kernel[:len1], precision=precision))
  if _has_tangent(d_cond):
    terms.append(jnp.dot(d_cond, kernel[len1:], precision=precision))
  return out, _sum_terms(terms, out)


def _project_tangent_rows(table, index, d_kernel, precision=None):
  """(table @ d_kernel)[index]: its transpose sums the gradient per table row (a
  P x D x H matmul after an N x H scatter-add; cheapest on CPU)."""
  return jnp.dot(table, d_kernel, precision=precision)[index]


def _gathered_tangent_rows(table, index, d_kernel, precision=None):
  """table[index] @ d_kernel: the same value; its transpose is an N x D x H
  matmul with the gathered rows, deterministic on GPUs (scatter-adds are not)."""
  return jnp.dot(table[index], d_kernel, precision=precision)


@functools.partial(jax.custom_jvp, nondiff_argnums=(3,))
def _gathered_projection(tables: Tuple[jnp.ndarray, ...], kernels: Tuple[jnp.ndarray, ...],
                         indices: Tuple[jnp.ndarray, ...], precision=None) -> jnp.ndarray:
  """sum_k (tables[k] @ kernels[k])[indices[k]]: [P_k, D_k], [D_k, H], [N] int -> [N, H].

  The products are taken over the P_k table rows, not over the N gathered
  rows. Several tables are first summed into one table of every combination
  of their rows (P_0 * P_1 * ... rows: the h * w positions for the column
  and row codes), so that the N rows are gathered once.
  """
  table, index = None, None
  for rows, kernel, rows_index in zip(tables, kernels, indices):
    projected = jnp.dot(rows, kernel, precision=precision)
    if table is None:
      table, index = projected, rows_index
    else:
      table = (table[:, None, :] + projected[None, :, :]).reshape(-1, table.shape[-1])
      index = index * rows.shape[0] + rows_index
  return table[index]


@functools.partial(_gathered_projection.defjvp, symbolic_zeros=True)
def _gathered_projection_jvp(precision, primals, tangents):
  # Per-table tangents: their transposes sum the gradient into each small
  # table, never into the combined one.
  tables, kernels, indices = primals
  d_tables, d_kernels, _ = tangents
  out = _gathered_projection(tables, kernels, indices, precision)
  terms = []
  for table, kernel, index, d_table, d_kernel in zip(tables, kernels, indices,
                                                     d_tables, d_kernels):
    if _has_tangent(d_kernel):
      terms.append(jax.lax.platform_dependent(
          table, index, d_kernel,
          cpu=functools.partial(_project_tangent_rows, precision=precision),
          default=functools.partial(_gathered_tangent_rows, precision=precision)))
    if _has_tangent(d_table):
      terms.append(jnp.dot(d_table, kernel, precision=precision)[index])
  return out, _sum_terms(terms, out)


def condition_dim(cond) -> int:
  """Channels D of a flow condition: an [N, D] array, or a sequence of tables
  whose widths sum to D (see `NormalizingFlow`); 0 for None."""
  if cond is None:
    return 0
  if isinstance(cond, (tuple, list)):
    return sum(table.shape[-1] for table in cond)
  return cond.shape[-1]


class _ConditionedDense(nn.Module):
  """nn.Dense on [x1, c] (same parameters and init as the reference's first layer).

  With ``cond_index``, ``cond`` is a [P, D] table, or a sequence of [P_k, D_k]
  tables with one index each (c = the concatenated rows), and the layer
  computes x1 @ K[:C1] + sum_k (table_k @ K_k)[index_k], K_k the kernel rows of
  table k: each table row is projected once.
  """
  features: int
  precision: Any = None

  @nn.compact
  def __call__(self, x1, cond=None, cond_index=None):
    len1 = x1.shape[-1]
    in_dim = len1 + condition_dim(cond)
    kernel = self.param('kernel', torch_linear_init, (in_dim, self.features))
    bias = self.param('bias', torch_bias_init(in_dim), (self.features,))
    if cond is None:
      return jnp.dot(x1, kernel, precision=self.precision) + bias
    if cond_index is None:   # one forward matmul, as the reference: splitting it was no faster
      if isinstance(cond, (tuple, list)):
        raise ValueError('a sequence of condition tables needs cond_index, one index per table')
      return _concat_dense(x1, cond, kernel, self.precision) + bias
    tables, indices = ((tuple(cond), tuple(cond_index)) if isinstance(cond, (tuple, list))
                       else ((cond,), (cond_index,)))
    bounds = np.cumsum([len1] + [table.shape[-1] for table in tables])
    kernels = tuple(kernel[start:stop] for start, stop in zip(bounds[:-1], bounds[1:]))
    return (jnp.dot(x1, kernel[:len1], precision=self.precision) + bias
            + _gathered_projection(tables, kernels, indices, self.precision))


class _Subnet(nn.Module):
  """Dense(2 * in) -> ReLU -> Dense(out) on [x1, c], PyTorch-default init (reference's subnet_fc)."""
  out_dim: int
  precision: Any = None

  @nn.compact
  def __call__(self, x1: jnp.ndarray, cond: Optional[Condition] = None,
               cond_index: Optional[Condition] = None) -> jnp.ndarray:
    in_dim = x1.shape[-1] + condition_dim(cond)
    h = _ConditionedDense(2 * in_dim, self.precision, name='dense_in')(x1, cond, cond_index)
    h = nn.relu(h)
    return nn.Dense(self.out_dim, kernel_init=torch_linear_init,
                    bias_init=torch_bias_init(2 * in_dim),
                    precision=self.precision, name='dense_out')(h)


class CouplingBlock(nn.Module):
  """FrEIA ``AllInOneBlock`` with ``permute_soft=True`` and SOFTPLUS global affine.

  Forward: split x into x1 (ceil(C/2)) and x2 (floor(C/2)); a = 0.1 * subnet([x1, c]);
  s = clamp * tanh(a[:, :C2]); x2 <- x2 * exp(s) + a[:, C2:]; then
  y = ([x1, x2] * g + b) @ W.T with g = 0.1 * softplus_beta(gamma).

  Attributes:
    clamp_alpha: soft-clamp bound of the log-scale (reference: 1.9).
    precision: matmul precision for the Dense layers and the rotation.
  """
  clamp_alpha: float = 1.9
  precision: Any = None

  @nn.compact
  def __call__(self, x: jnp.ndarray, cond: Optional[Condition] = None,
               reverse: bool = False,
               cond_index: Optional[Condition] = None) -> Tuple[jnp.ndarray, jnp.ndarray]:
    """Applies the block.

    Args:
      x: [N, C] float32 input (output side when ``reverse``).
      cond: optional [N, D] float32 condition, or a [P, D] table with ``cond_index``,
        or a sequence of [P_k, D_k] tables (sum of D_k = D) with one index each.
      reverse: run the inverse map.
      cond_index: optional [N] int32: vector n is conditioned on ``cond[cond_index[n]]``;
        with a sequence of tables, a sequence of [N] int32 (the condition of vector
        n is the concatenation of ``cond[k][cond_index[k][n]]``).

    Returns:
      (y, logdet): [N, C] output and [N] log|det J| of the map applied
      (negative of the forward log-det when ``reverse``).
    """
    channels = x.shape[-1]
    len1 = channels - channels // 2
    len2 = channels // 2
    subnet = _Subnet(2 * len2, precision=self.precision, name='subnet')
    global_scale = self.param(
        'global_scale', nn.initializers.constant(_GLOBAL_SCALE_INIT), (channels,))
    global_offset = self.param('global_offset', nn.initializers.zeros, (channels,))
    rotation = self.variable(
        CONSTANTS, 'rotation',
        lambda: random_rotation(self.make_rng('params'), channels)).value

    scale = 0.1 * softplus_beta_half(global_scale)
    scale_logdet = jnp.sum(jnp.log(scale))

    def coupling(x1, x2, sign):
      a = 0.1 * subnet(x1, cond, cond_index)
      log_scale = self.clamp_alpha * jnp.tanh(a[:, :len2])
      shift = a[:, len2:]
      if sign > 0:
        x2 = x2 * jnp.exp(log_scale) + shift
      else:
        x2 = (x2 - shift) * jnp.exp(-log_scale)
      return x2, sign * jnp.sum(log_scale, axis=-1)

    if not reverse:
      x2, logdet = coupling(x[:, :len1], x[:, len1:], +1)
      u = jnp.concatenate([x[:, :len1], x2], axis=-1)
      y = jnp.dot(u * scale + global_offset, rotation.T, precision=self.precision)
      return y, logdet + scale_logdet
    u = (jnp.dot(x, rotation, precision=self.precision) - global_offset) / scale
    x2, logdet = coupling(u[:, :len1], u[:, len1:], -1)
    return jnp.concatenate([u[:, :len1], x2], axis=-1), logdet - scale_logdet


class NormalizingFlow(nn.Module):
  """A sequence of ``coupling_layers`` coupling blocks (FrEIA ``SequenceINN``).

  Conditional when called with ``cond`` (reference ``conditional_flow_model``),
  unconditional otherwise (reference ``flow_model``).
  """
  coupling_layers: int = 8
  clamp_alpha: float = 1.9
  precision: Any = None

  def setup(self):
    self.blocks = [CouplingBlock(self.clamp_alpha, self.precision)
                   for _ in range(self.coupling_layers)]

  def __call__(self, x: jnp.ndarray, cond: Optional[Condition] = None,
               reverse: bool = False,
               cond_index: Optional[Condition] = None) -> Tuple[jnp.ndarray, jnp.ndarray]:
    """Maps features to latents (or back when ``reverse``).

    Args:
      x: [N, C] float32 feature vectors (latents when ``reverse``).
      cond: optional [N, D] float32 positional condition, or a [P, D] table of
        conditions indexed by ``cond_index`` (same result; cheaper when P < N),
        or a sequence of tables whose indexed rows concatenate to the condition
        (the positional condition is a column table and a row table: see
        `pos_embed.positional_codes_2d`).
      reverse: run the inverse flow.
      cond_index: optional [N] int32 rows of ``cond``, or one per table.

    Returns:
      (z, logdet): [N, C] and [N] float32.
    """
    logdet = jnp.zeros(x.shape[:1], jnp.float32)
    blocks = reversed(self.blocks) if reverse else self.blocks
    for block in blocks:
      x, block_logdet = block(x, cond, reverse=reverse, cond_index=cond_index)
      logdet = logdet + block_logdet
    return x, logdet


def log_likelihood(z: jnp.ndarray, logdet: jnp.ndarray) -> jnp.ndarray:
  """logp = C * (-0.5 ln 2pi) - 0.5 ||z||^2 + logdet; z: [N, C], logdet: [N] -> [N]."""
  channels = z.shape[-1]
  return channels * -_LOG_SQRT_2PI - 0.5 * jnp.sum(z * z, axis=-1) + logdet


def per_dim_log_likelihood(z: jnp.ndarray, logdet: jnp.ndarray) -> jnp.ndarray:
  """lp = logp / C, BGAD's per-dimension log-likelihood: [N, C], [N] -> [N]."""
  return log_likelihood(z, logdet) / z.shape[-1]
