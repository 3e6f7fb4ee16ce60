"""2D sinusoidal positional condition for the conditional flows (docs/METHOD.md, "Condition")."""

import dataclasses
import math
from typing import Any, Dict, Tuple

import jax.numpy as jnp
import numpy as np


def positional_codes_2d(dim: int, height: int, width: int,
                        dtype=jnp.float32) -> Tuple[jnp.ndarray, jnp.ndarray]:
  """The two halves of the positional condition: one code per column, one per row.

  The condition of position (row, col) is ``concat(col_code[col], row_code[row])``.
  Inside each half, even channels hold sin(pos * freq_k) and odd ones
  cos(pos * freq_k), with freq_k = exp(-2k * ln(1e4) / (dim/2)).

  Args:
    dim: number of channels D; must be a multiple of 4.
    height: rows h of the feature map.
    width: columns w of the feature map.
    dtype: output dtype.

  Returns:
    (col_code [width, dim/2], row_code [height, dim/2]).
  """
  if dim % 4 != 0:
    raise ValueError(f'pos_embed_dim must be a multiple of 4, got {dim}.')
  half = dim // 2
  freqs = jnp.exp(jnp.arange(0, half, 2, dtype=jnp.float32)
                  * -(math.log(1e4) / half))                   # [half/2]

  def code(length):   # interleaved: channel 2k is sin, 2k+1 is cos
    angles = jnp.arange(length, dtype=jnp.float32)[:, None] * freqs
    return jnp.stack([jnp.sin(angles), jnp.cos(angles)], -1).reshape(length, half).astype(dtype)

  return code(width), code(height)


def positional_encoding_2d(dim: int, height: int, width: int,
                           dtype=jnp.float32) -> jnp.ndarray:
  """Sinusoidal position map with BGAD's channel layout.

  Channels [0, dim/2) encode the column index and [dim/2, dim) the row index;
  arguments as `positional_codes_2d`.

  Returns:
    [height, width, dim] array (NHWC without the batch axis).
  """
  col_code, row_code = positional_codes_2d(dim, height, width, dtype)
  half = dim // 2
  col_map = jnp.broadcast_to(col_code[None, :, :], (height, width, half))
  row_map = jnp.broadcast_to(row_code[:, None, :], (height, width, half))
  return jnp.concatenate([col_map, row_map], axis=-1)


def condition_tables(pos_embed_dim: int, height: int,
                     width: int) -> Tuple[np.ndarray, np.ndarray]:
  """The positional condition of an h x w level as its two factors (host arrays).

  Returns:
    (column codes [w, D/2], row codes [h, D/2]) float32: position p = r * w + c
    has the condition concat(column_codes[c], row_codes[r]).
  """
  return tuple(np.asarray(code) for code in positional_codes_2d(pos_embed_dim, height, width))


def flow_condition(tables: Tuple[jnp.ndarray, jnp.ndarray], positions: jnp.ndarray,
                   factored: bool = True) -> Dict[str, Any]:
  """Keyword arguments ``cond``/``cond_index`` of the flow for vectors at ``positions``.

  Args:
    tables: `condition_tables` of the level: [w, D/2] and [h, D/2] float32.
    positions: [N] int32 row-major position (r * w + c) of each vector.
    factored: pass the two tables with a column and a row index: the flow
      then projects each table row once, (w + h) * D/2 * H multiply-adds per
      first layer instead of N * D * H (same values up to float rounding).
      False: the [N, D] conditions, projected with the vectors as in the
      reference.

  Returns:
    dict(cond=..., cond_index=...) for `flow.NormalizingFlow`.
  """
  column_codes, row_codes = tables
  width = column_codes.shape[0]
  cols, rows = positions % width, positions // width
  if factored:
    return dict(cond=(column_codes, row_codes), cond_index=(cols, rows))
  return dict(cond=jnp.concatenate([column_codes[cols], row_codes[rows]], axis=-1),
              cond_index=None)


@dataclasses.dataclass(frozen=True)
class PositionalCondition:
  """How a flow is conditioned on position (config.flow's condition fields).

  Attributes:
    dim: channels D of the condition (``pos_embed_dim``).
    conditional: False gives the unconditional flow (no condition at all).
    factored: see `flow_condition`.
  """
  dim: int = 128
  conditional: bool = True
  factored: bool = True

  @classmethod
  def from_config(cls, flow_config) -> 'PositionalCondition':
    return cls(flow_config.pos_embed_dim, flow_config.conditional,
               flow_config.factored_condition)

  def tables(self, height: int, width: int) -> Tuple[np.ndarray, np.ndarray]:
    """`condition_tables` of an h x w level."""
    return condition_tables(self.dim, height, width)

  def flow_kwargs(self, tables, positions: jnp.ndarray) -> Dict[str, Any]:
    """The flow's condition keywords for vectors at ``positions`` ({} when unconditional)."""
    return flow_condition(tables, positions, self.factored) if self.conditional else {}

  def image_kwargs(self, tables, images) -> Dict[str, Any]:
    """`flow_kwargs` for ``images`` whole h x w maps, row-major, image after image.

    The position arithmetic runs on the host over one image; the traced graph
    only repeats constants ``images`` times, so ``images`` may be a symbolic
    dimension (an exported graph's batch) and converters need no integer
    remainder.
    """
    if not self.conditional:
      return {}
    height, width = tables[1].shape[0], tables[0].shape[0]
    one_image = flow_condition(tables, np.arange(height * width), self.factored)

    def repeat(per_vector):
      per_vector = jnp.asarray(per_vector)
      tiled = jnp.broadcast_to(per_vector, (images,) + per_vector.shape)
      return tiled.reshape((images * per_vector.shape[0],) + per_vector.shape[1:])

    if self.factored:
      return dict(cond=one_image['cond'],
                  cond_index=tuple(repeat(index) for index in one_image['cond_index']))
    return dict(cond=repeat(one_image['cond']), cond_index=None)
