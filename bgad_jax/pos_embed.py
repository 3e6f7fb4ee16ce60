"""2D sinusoidal positional condition for the conditional flows (spec section 3)."""

import math

import jax.numpy as jnp


def positional_encoding_2d(dim: int, height: int, width: int,
                           dtype=jnp.float32) -> jnp.ndarray:
  """Sinusoidal position map with BGAD's channel layout.

  Channels [0, dim/2) encode the column index and [dim/2, dim) the row index;
  inside each half, even channels hold sin(pos * freq_k) and odd ones
  cos(pos * freq_k), with freq_k = exp(-2k * ln(1e4) / (dim/2)).

  Args:
    dim: number of channels D; must be a multiple of 4.
    height: rows h of the feature map.
    width: columns w of the feature map.
    dtype: output dtype.

  Returns:
    [height, width, dim] array (NHWC without the batch axis).
  """
  if dim % 4 != 0:
    raise ValueError(f'pos_embed_dim must be a multiple of 4, got {dim}.')
  half = dim // 2
  freqs = jnp.exp(jnp.arange(0, half, 2, dtype=jnp.float32)
                  * -(math.log(1e4) / half))                   # [half/2]
  cols = jnp.arange(width, dtype=jnp.float32)[:, None] * freqs  # [w, half/2]
  rows = jnp.arange(height, dtype=jnp.float32)[:, None] * freqs  # [h, half/2]
  # Interleave sin/cos so that channel 2k is sin and 2k+1 is cos.
  col_code = jnp.stack([jnp.sin(cols), jnp.cos(cols)], -1).reshape(width, half)
  row_code = jnp.stack([jnp.sin(rows), jnp.cos(rows)], -1).reshape(height, half)
  col_map = jnp.broadcast_to(col_code[None, :, :], (height, width, half))
  row_map = jnp.broadcast_to(row_code[:, None, :], (height, width, half))
  return jnp.concatenate([col_map, row_map], axis=-1).astype(dtype)
