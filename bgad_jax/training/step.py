"""The training step of one level: `train_chunks`, a ``lax.scan`` of Adam steps over chunks.

`train_chunks` is the one step function: training (`loop.train_meta_epoch`),
the tests and the benchmarks all call it, on one device or many. Each chunk
is one optimiser step; its vectors are split over the devices of the mesh
(`_device_step`).
"""

import dataclasses
import functools
from typing import Dict, Optional, Tuple

import jax
import jax.numpy as jnp
import optax
from jax.sharding import Mesh, PartitionSpec as P

from bgad_jax.models import flow as flow_lib
from bgad_jax.training import losses
from bgad_jax.training.sharding import AXIS, make_mesh
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
  push_average: str = 'vector'
  push_trim: float = 0.0

  @classmethod
  def from_config(cls, loss_config) -> 'LossSettings':
    return cls(**{f.name: loss_config[f.name] for f in dataclasses.fields(cls)})


def _loss_of_lp(lp, abnormal, images, num_images: int, loss: LossSettings,
                normal_only: bool):
  """(loss, (skip, terms)) of one chunk's per-dimension log-likelihoods lp [N]
  (images: None, or [N] int32 image of each vector, in [0, num_images))."""
  if normal_only:
    value, skip = losses.normal_only_loss(lp, abnormal)
    zero = jnp.zeros((), value.dtype)
    terms = dict(ml=value, loss_n=zero, loss_a=zero, b_n=zero, b_a=zero, has_abnormal=skip)
    return value, (skip, terms)
  value, terms = losses.bgad_loss(lp, abnormal, loss, images, num_images)
  return value, (jnp.zeros((), bool), terms)


def apply_gradients(state: LevelState, grads, lr: jnp.ndarray, value: jnp.ndarray,
                    skip: jnp.ndarray) -> Tuple[LevelState, jnp.ndarray]:
  """The Adam update with learning rate ``lr``; (new state, skipped).

  A step whose ``skip`` is set or whose loss ``value`` is not finite returns
  the input state.
  """
  skip = skip | ~jnp.isfinite(value)
  opt_state = state.opt_state._replace(
      hyperparams={**state.opt_state.hyperparams, 'learning_rate': lr})
  updates, new_opt_state = state.tx.update(grads, opt_state, state.params)
  new_params = optax.apply_updates(state.params, updates)
  keep = lambda old, new: jax.tree.map(lambda a, b: jnp.where(skip, a, b), old, new)
  return state.replace(params=keep(state.params, new_params),
                       opt_state=keep(state.opt_state, new_opt_state)), skip


def _device_step(state: LevelState, data: LevelData, ids: jnp.ndarray, lr: jnp.ndarray,
                 loss: LossSettings, normal_only: bool, reduction: str):
  """One Adam step on the chunk whose share on this device is ``ids`` (inside ``shard_map``).

  The flow runs on this device's vectors only. Their log-likelihoods are
  gathered (exact copies), so that every device computes the loss of the
  whole chunk; the loss's gradient with respect to this device's lp is pulled
  back through its flow pass. ``reduction='ordered'`` then gathers every
  device's parameter gradients and sums them in mesh order: the same sum,
  bit for bit, however the devices are spread over processes. 'psum' lets
  the runtime reduce them (less traffic on large meshes; the summation
  order, and so the last bits, depend on the process layout).
  """
  def local_lp(params):
    condition = state.condition.flow_kwargs(data.cond, ids % data.positions)
    z, logdet = state.apply(data.features[ids], condition, params)
    return flow_lib.per_dim_log_likelihood(z, logdet)

  lp_local, pullback = jax.vjp(local_lp, state.params)
  lp = jax.lax.all_gather(lp_local, AXIS, tiled=True)
  abnormal = jax.lax.all_gather(data.masks[ids], AXIS, tiled=True)
  # Each vector's image, gathered only for the loss that reads it.
  images = (jax.lax.all_gather(ids // data.positions, AXIS, tiled=True)
            if loss.push_average == 'image' else None)
  num_images = data.features.shape[0] // data.positions
  (value, (skip, terms)), lp_grad = jax.value_and_grad(_loss_of_lp, has_aux=True)(
      lp, abnormal, images, num_images, loss, normal_only)
  share = ids.shape[0]
  (grads,) = pullback(jax.lax.dynamic_slice_in_dim(
      lp_grad, jax.lax.axis_index(AXIS) * share, share))
  if reduction == 'ordered':
    grads = jax.tree.map(lambda g: jax.lax.all_gather(g, AXIS).sum(axis=0), grads)
  else:
    grads = jax.lax.psum(grads, AXIS)
  new_state, skip = apply_gradients(state, grads, lr, value, skip)
  # The learning rate and the parameters' global norm after the step are
  # reported for step-by-step comparisons with the reference (lockstep).
  return new_state, dict(loss=value, skipped=skip, lr=lr,
                         param_norm=optax.tree.norm(new_state.params), **terms)


@functools.partial(jax.jit, static_argnames=('loss', 'normal_only', 'mesh', 'reduction'),
                   donate_argnums=0)
def train_chunks(state: LevelState, data: LevelData, chunks: jnp.ndarray, lrs: jnp.ndarray,
                 loss: LossSettings, normal_only: bool, mesh: Optional[Mesh] = None,
                 reduction: str = 'ordered') -> Tuple[LevelState, Dict[str, jnp.ndarray]]:
  """One Adam step per chunk of a plan, in order (the input state's buffers are donated).

  Args:
    state: the level's flow, replicated on ``mesh``.
    data: the level's vectors (`training_set.LevelData`), replicated.
    chunks: int32 [n_chunks, num_vectors] flat vector ids, sharded over the
      devices along the vectors (num_vectors a multiple of the device count).
    lrs: float32 [n_chunks] learning rate of each chunk.
    mesh: the devices (default: every device, `sharding.make_mesh`).
    reduction: how the devices' gradients are summed, 'ordered' or 'psum'
      (see `_device_step`).

  Returns:
    (new state, metrics): [n_chunks] arrays: ``loss`` (the chunk's loss before
    its step), ``skipped`` (a first-meta-epoch chunk with abnormal vectors, or a
    non-finite loss: the state is left as it was), the `TERMS` of the loss,
    ``lr`` and ``param_norm`` (the global norm of the parameters after the step).
  """
  step = jax.shard_map(
      functools.partial(_device_step, loss=loss, normal_only=normal_only, reduction=reduction),
      mesh=mesh or make_mesh(), in_specs=(P(), P(), P(AXIS), P()), out_specs=(P(), P()),
      check_vma=False)

  def body(state, inputs):
    ids, lr = inputs
    return step(state, data, ids, lr)

  return jax.lax.scan(body, state, (chunks, lrs))
