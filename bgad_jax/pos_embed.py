"""2D sinusoidal positional condition for the conditional flows (spec section 3)."""

import math
from typing import Tuple

import jax.numpy as jnp


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
