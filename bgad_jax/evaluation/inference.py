"""Per-level log-likelihood maps of a trained state (the input of every anomaly map)."""

from typing import List, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh

from bgad_jax.models import flow as flow_lib
from bgad_jax.training.sharding import gather_rows, map_local_rows, process_share
from bgad_jax.training.state import FlowTrainState, LevelState


def level_lp(state: LevelState, features: jnp.ndarray, tables) -> jnp.ndarray:
  """Per-dimension log-likelihood map of one level: [N, h, w, C] float32 -> [N, h, w].

  Traceable with a symbolic N (the exported graph's dynamic batch).
  """
  n, h, w, c = features.shape
  x = features.reshape(n * h * w, c)
  z, logdet = state.apply(x, state.condition.image_kwargs(tables, n))
  return flow_lib.per_dim_log_likelihood(z, logdet).reshape(n, h, w)


_level_lp = jax.jit(level_lp)


def lp_maps(state: FlowTrainState, level_features: Sequence[np.ndarray], mesh: Mesh,
            vectors_per_call: int = 8192) -> List[np.ndarray]:
  """Per-dimension log-likelihood maps of every image at every level.

  Args:
    state: the trained flows.
    level_features: one float32 [N, h_l, w_l, C_l] array per level.
    mesh: the devices images are sharded over (each process computes its
      `process_share` of the images; every process gets all maps).
    vectors_per_call: feature vectors per device and jitted call. The flows'
      hidden layers are [vectors, 2 (C/2 + D)] float32: about 8192 vectors
      keep them in the CPU caches (a third faster than 8 whole images at
      level 0 of a 256 px input).

  Returns:
    One float32 [N, h_l, w_l] array per level (host memory).
  """
  maps = []
  for level, features in enumerate(level_features):
    _, h, w, _ = features.shape
    level_state = state.level(level).replace(opt_state=None)   # not needed here
    tables = level_state.condition.tables(h, w)
    images_per_call = max(1, vectors_per_call // (h * w)) * mesh.devices.size
    (local,) = map_local_rows(lambda batch: [_level_lp(level_state, batch, tables)],
                              features[process_share(len(features))], images_per_call, mesh)
    maps.append(gather_rows(local, len(features)))
  return maps
