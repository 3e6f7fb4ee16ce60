"""The jitted optimiser steps of one level: a ``lax.scan`` over the chunks of a sub-epoch.

`train_step` is the pure update of one chunk of feature vectors;
`train_chunks` runs it over all chunks of one level's plan on the devices.
"""

import dataclasses
import functools
from typing import Any, Dict, Tuple

import jax
import jax.numpy as jnp
import optax

from bgad_jax.models import flow as flow_lib
from bgad_jax.training import losses
from bgad_jax.training.state import LevelState
from bgad_jax.training.training_set import LevelData

# The loss terms a step reports (see `losses.bgad_loss`), one value per chunk.
TERMS = ('ml', 'loss_n', 'loss_a', 'b_n', 'b_a', 'has_abnormal')


@dataclasses.dataclass(frozen=True)
class LossSettings:
  """``config.loss`` as a hashable value (a static argument of the jitted step)."""
  pos_beta: float = 0.01
  margin_tau: float = 0.1
  normalizer: float = 10.0
  bgspp_lambda: float = 1.0
  focal_weighting: bool = True

  @classmethod
  def from_config(cls, loss_config) -> 'LossSettings':
    return cls(**{f.name: loss_config[f.name] for f in dataclasses.fields(cls)})


def _chunk_loss(params, state: LevelState, x, abnormal, condition, loss: LossSettings,
                normal_only: bool):
  z, logdet = state.apply(x, condition, params)
  lp = flow_lib.per_dim_log_likelihood(z, logdet)
  if normal_only:
    value, skip = losses.normal_only_loss(lp, abnormal)
    zero = jnp.zeros((), value.dtype)
    terms = dict(ml=value, loss_n=zero, loss_a=zero, b_n=zero, b_a=zero, has_abnormal=skip)
    return value, (skip, terms)
  value, terms = losses.bgad_loss(lp, abnormal, loss)
  return value, (jnp.zeros((), bool), terms)


def train_step(state: LevelState, x: jnp.ndarray, abnormal: jnp.ndarray,
               condition: Dict[str, Any], lr: jnp.ndarray, loss: LossSettings,
               normal_only: bool) -> Tuple[LevelState, Dict[str, jnp.ndarray]]:
  """One Adam step on one chunk (pure).

  Args:
    state: the level's flow.
    x: [N, C] float32 feature vectors; abnormal: [N] float32 {0, 1}.
    condition: the flow's condition keywords (`PositionalCondition.flow_kwargs`).
    lr: float32 scalar learning rate of this chunk.
    loss: the loss settings.
    normal_only: the first meta-epoch's loss (chunks with abnormal vectors are skipped).

  Returns:
    (new state, metrics): scalars ``loss``, ``skipped`` and the `TERMS`. A
    skipped step (first meta-epoch chunk with abnormal vectors, or a
    non-finite loss) returns the input state.
  """
  (value, (skip, terms)), grads = jax.value_and_grad(_chunk_loss, has_aux=True)(
      state.params, state, x, abnormal, condition, loss, normal_only)
  skip = skip | ~jnp.isfinite(value)
  opt_state = state.opt_state._replace(
      hyperparams={**state.opt_state.hyperparams, 'learning_rate': lr})
  updates, new_opt_state = state.tx.update(grads, opt_state, state.params)
  new_params = optax.apply_updates(state.params, updates)
  keep = lambda old, new: jax.tree.map(lambda a, b: jnp.where(skip, a, b), old, new)
  new_state = state.replace(params=keep(state.params, new_params),
                            opt_state=keep(state.opt_state, new_opt_state))
  return new_state, dict(loss=value, skipped=skip, **terms)


@functools.partial(jax.jit, static_argnames=('loss', 'normal_only'), donate_argnums=0)
def train_chunks(state: LevelState, data: LevelData, chunks: jnp.ndarray, lrs: jnp.ndarray,
                 loss: LossSettings, normal_only: bool
                 ) -> Tuple[LevelState, Dict[str, jnp.ndarray]]:
  """`train_step` on every chunk of a plan, in order (the input state's buffers are donated).

  Args:
    data: the level's vectors (`training_set.LevelData`).
    chunks: int32 [n_chunks, num_vectors] flat vector ids, sharded over the
      devices along the vectors.
    lrs: float32 [n_chunks] learning rate of each chunk.

  Returns:
    (new state, metrics): each metric of `train_step` as an [n_chunks] array.
  """
  def body(state, inputs):
    ids, lr = inputs
    condition = state.condition.flow_kwargs(data.cond, ids % data.positions)
    return train_step(state, data.features[ids], data.masks[ids], condition, lr, loss,
                      normal_only)

  return jax.lax.scan(body, state, (chunks, lrs))
