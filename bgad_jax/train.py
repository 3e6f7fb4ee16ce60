"""Training core: flow state, frozen features, jitted chunk steps, lp maps (spec 6-7, 9).

Data layout: for every feature level l the frozen backbone's features of all
images are flattened to ``[N_images * h_l * w_l, C_l]`` once and kept on the
devices. A sub-epoch's optimiser steps for one level are described on the host
by a *plan*: which vectors form each chunk of ``num_vectors`` and the learning
rate of each chunk; one jitted ``lax.scan`` then runs all of them. Shuffles
are drawn from ``(seed, epoch, sub_epoch, level)``, so a run resumed from a
meta-epoch checkpoint replays exactly the same steps.

Each level has its own Adam state: the reference's single torch Adam only
steps parameters that received a gradient, so levels never share moments or
step counts.
"""

import dataclasses
from typing import Any, Dict, List, Sequence, Tuple

import flax
import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from bgad_jax import flow as flow_lib
from bgad_jax import losses
from bgad_jax import schedule
from bgad_jax.pos_embed import positional_codes_2d


class FlowTrainState(flax.struct.PyTreeNode):
  """Everything a checkpoint holds about the flows; one entry per level."""
  epoch: jnp.ndarray                  # meta-epochs completed
  params: Dict[str, Any]
  constants: Dict[str, Any]           # fixed rotations (never optimised)
  opt_state: Dict[str, Any]


def level_key(level: int) -> str:
  return f'level_{level}'


def make_optimizer():
  """torch.optim.Adam defaults; the learning rate is set per chunk."""
  return optax.inject_hyperparams(optax.adam)(learning_rate=0.0, b1=0.9, b2=0.999, eps=1e-8)


def make_flow(config) -> flow_lib.NormalizingFlow:
  precision = config.flow.matmul_precision
  return flow_lib.NormalizingFlow(config.flow.coupling_layers, config.flow.clamp_alpha,
                                  None if precision == 'default' else precision)


def create_state(config, channels: Sequence[int], rng) -> FlowTrainState:
  """Initial flows (PyTorch-default init, fresh rotations) for the given channel counts."""
  flow = make_flow(config)
  optimizer = make_optimizer()
  params, constants, opt_state = {}, {}, {}
  cond_dim = config.flow.pos_embed_dim
  for level, channel in enumerate(channels):
    rng, key = jax.random.split(rng)
    cond = jnp.zeros((1, cond_dim)) if config.flow.conditional else None
    variables = flow.init(key, jnp.zeros((1, channel)), cond)
    params[level_key(level)] = variables['params']
    constants[level_key(level)] = variables[flow_lib.CONSTANTS]
    opt_state[level_key(level)] = optimizer.init(variables['params'])
  return FlowTrainState(epoch=jnp.zeros((), jnp.int32), params=params,
                        constants=constants, opt_state=opt_state)


# ----------------------------------------------------------------------------
# Frozen features


def sharded_batches(array: np.ndarray, batch_size: int, mesh: Mesh):
  """Yields (device batch sharded over ``mesh``, number of real rows).

  The batch size is rounded down to a multiple of the device count (at least
  one row per device) and the last batch is padded by repeating its last row,
  so that every call sees the same static shape.
  """
  devices = mesh.devices.size
  batch_size = max(devices, batch_size - batch_size % devices)
  sharding = NamedSharding(mesh, P('data'))
  for start in range(0, len(array), batch_size):
    batch = array[start:start + batch_size]
    real = len(batch)
    if real < batch_size:
      batch = np.concatenate([batch, np.repeat(batch[-1:], batch_size - real, axis=0)])
    yield jax.device_put(batch, sharding), real


def extract_features(backbone, backbone_vars, images: np.ndarray, batch_size: int,
                     mesh: Mesh) -> List[np.ndarray]:
  """Backbone taps of all images, computed in batches sharded over ``mesh``.

  Args:
    images: [N, S, S, 3] float32, normalised.

  Returns:
    One float32 array [N, h_l, w_l, C_l] per level (host memory).
  """
  apply = jax.jit(lambda v, x: [t.astype(jnp.float32) for t in backbone.apply(v, x)])
  outputs: List[List[np.ndarray]] = []
  for batch, real in sharded_batches(images, batch_size, mesh):
    outputs.append([np.asarray(t)[:real] for t in apply(backbone_vars, batch)])
  return [np.concatenate(level) for level in zip(*outputs)]


def downsample_masks(masks: np.ndarray, height: int, width: int) -> np.ndarray:
  """torch ``F.interpolate(mode='nearest')``: [N, S, S] -> [N, height, width]."""
  rows = np.floor(np.arange(height) * (masks.shape[1] / height)).astype(int)
  cols = np.floor(np.arange(width) * (masks.shape[2] / width)).astype(int)
  return masks[:, rows][:, :, cols]


def condition_tables(pos_embed_dim: int, height: int,
                     width: int) -> Tuple[np.ndarray, np.ndarray]:
  """The positional condition of an h x w level as its two factors.

  Returns:
    (column codes [w, D/2], row codes [h, D/2]) float32: position p = r * w + c
    has the condition concat(column_codes[c], row_codes[r]).
  """
  return tuple(np.asarray(code) for code in positional_codes_2d(pos_embed_dim, height, width))


@dataclasses.dataclass
class LevelData:
  """One level's training vectors on the devices."""
  features: jnp.ndarray    # [V, C] float32
  masks: jnp.ndarray       # [V] float32, 1 = abnormal
  cond: Tuple[jnp.ndarray, jnp.ndarray]   # `condition_tables` of the level
  positions: int           # h * w


def level_data(features: np.ndarray, masks: np.ndarray, pos_embed_dim: int,
               mesh: Mesh) -> LevelData:
  """Flattens one level's features [N, h, w, C] and pixel masks [N, S, S]."""
  n, h, w, c = features.shape
  replicated = NamedSharding(mesh, P())
  return LevelData(
      features=jax.device_put(features.reshape(n * h * w, c), replicated),
      masks=jax.device_put(downsample_masks(masks, h, w).reshape(-1).astype(np.float32),
                           replicated),
      cond=jax.device_put(condition_tables(pos_embed_dim, h, w), replicated),
      positions=h * w)


# ----------------------------------------------------------------------------
# Plans and steps


def image_batches(num_images: int, batch_size: int, rng: np.random.Generator) -> List[np.ndarray]:
  """Shuffled image batches, the last partial batch dropped (the reference's loaders)."""
  order = rng.permutation(num_images)
  return [order[i:i + batch_size] for i in range(0, num_images - batch_size + 1, batch_size)]


def chunk_plan(batches: Sequence[np.ndarray], positions: int, num_vectors: int,
               rng: np.random.Generator) -> Tuple[np.ndarray, np.ndarray]:
  """Chunks of one level for a sub-epoch.

  The vectors of each image batch are shuffled and cut into chunks of
  ``num_vectors``; the remainder of each batch is dropped.

  Returns:
    (chunks int32 [n_chunks, num_vectors] of flat vector ids,
     batch_of_chunk int32 [n_chunks]: index of the image batch of each chunk).
  """
  chunks, owners = [], []
  for b, images in enumerate(batches):
    vectors = (images[:, None] * positions + np.arange(positions)[None]).reshape(-1)
    vectors = vectors[rng.permutation(len(vectors))]
    for start in range(0, len(vectors) - num_vectors + 1, num_vectors):
      chunks.append(vectors[start:start + num_vectors])
      owners.append(b)
  if not chunks:
    return np.zeros((0, num_vectors), np.int32), np.zeros((0,), np.int32)
  return np.stack(chunks).astype(np.int32), np.array(owners, np.int32)


def plan_rng(seed: int, epoch: int, sub_epoch: int, stream: int) -> np.random.Generator:
  """Independent, reproducible generator for one (epoch, sub_epoch, stream)."""
  return np.random.default_rng([seed, epoch, sub_epoch, stream])


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


def make_train_step(config, normal_only: bool):
  """Returns the pure optimiser step of one chunk.

  ``step(params, opt_state, constants, x, abnormal, cond, lr)`` with ``x`` [N, C]
  float32 vectors, ``abnormal`` [N] float32, ``cond`` the flow's condition
  keywords (`flow_condition`, or {} when unconditional) and ``lr`` a float32
  scalar returns ``(params, opt_state, loss, skipped)``. A skipped step (first
  meta-epoch chunk with abnormal vectors, or a non-finite loss) returns the
  inputs unchanged.
  """
  flow = make_flow(config)
  optimizer = make_optimizer()
  loss_config = config.loss

  def step(params, opt_state, constants, x, abnormal, cond, lr):
    def loss_fn(p):
      z, logdet = flow.apply({'params': p, flow_lib.CONSTANTS: constants}, x, **cond)
      lp = flow_lib.per_dim_log_likelihood(z, logdet)
      if normal_only:
        return losses.normal_only_loss(lp, abnormal)
      loss, _ = losses.bgad_loss(lp, abnormal, loss_config)
      return loss, jnp.zeros((), bool)

    (loss, skip), grads = jax.value_and_grad(loss_fn, has_aux=True)(params)
    skip = skip | ~jnp.isfinite(loss)
    opt_state = opt_state._replace(hyperparams={**opt_state.hyperparams, 'learning_rate': lr})
    updates, new_opt = optimizer.update(grads, opt_state, params)
    new_params = optax.apply_updates(params, updates)
    keep = lambda old, new: jax.tree.map(lambda a, b: jnp.where(skip, a, b), old, new)
    return keep(params, new_params), keep(opt_state, new_opt), loss, skip

  return step


def make_chunk_trainer(config, mesh: Mesh):
  """Returns ``train(params, opt_state, constants, data, chunks, lrs, normal_only)``.

  Runs one optimiser step (`make_train_step`) per chunk with ``lax.scan``;
  returns the new params and Adam state, the per-chunk losses and which chunks
  were skipped (the first meta-epoch skips chunks that contain abnormal
  vectors; non-finite losses are never applied).
  """
  conditional = config.flow.conditional
  factored = config.flow.factored_condition
  chunk_sharding = NamedSharding(mesh, P(None, 'data'))

  def run(params, opt_state, constants, features, masks, cond, positions, chunks, lrs,
          normal_only):
    train_step = make_train_step(config, normal_only)

    def step(carry, inputs):
      ids, lr = inputs
      condition = flow_condition(cond, ids % positions, factored) if conditional else {}
      params, opt_state, loss, skip = train_step(*carry, constants, features[ids], masks[ids],
                                                 condition, lr)
      return (params, opt_state), (loss, skip)

    (params, opt_state), (chunk_losses, skipped) = jax.lax.scan(
        step, (params, opt_state), (chunks, lrs))
    return params, opt_state, chunk_losses, skipped

  jitted = jax.jit(run, static_argnums=(6, 9), donate_argnums=(0, 1))

  replicated = NamedSharding(mesh, P())

  def train(params, opt_state, constants, data: LevelData, chunks: np.ndarray,
            lrs: np.ndarray, normal_only: bool):
    # The same placement on every call (fresh states are uncommitted, returned
    # ones are replicated on the mesh): otherwise the second call recompiles.
    params, opt_state, constants = jax.device_put((params, opt_state, constants), replicated)
    chunks = jax.device_put(chunks, chunk_sharding)
    return jitted(params, opt_state, constants, data.features, data.masks, data.cond,
                  data.positions, chunks, jnp.asarray(lrs, jnp.float32), normal_only)

  return train


def train_meta_epoch(state: FlowTrainState, config, train_levels: Sequence[LevelData],
                     normal_images: int, all_images: int, trainer,
                     warmup: Tuple[int, int]) -> Tuple[FlowTrainState, Dict[str, float]]:
  """One meta-epoch: ``sub_epochs`` passes, every level, every chunk.

  Args:
    train_levels: per-level vectors of the training images (normal images first).
    normal_images: number of normal images (the first meta-epoch uses only them).
    all_images: number of training images (normal + known anomalies).
    warmup: (batches trained so far in warm-up epochs, their total).

  Returns:
    The new state and averaged loss statistics (``loss``, ``lr``, ``skipped``).

  Raises:
    FloatingPointError: on a non-finite loss, naming epoch, sub-epoch and level.
  """
  epoch = int(state.epoch)
  normal_only = epoch == 0
  num_images = normal_images if normal_only else all_images
  train = config.train
  params, opt_state = dict(state.params), dict(state.opt_state)
  loss_sum, loss_count, skipped_count, warm_step = 0.0, 0, 0, warmup[0]
  last_lr = 0.0
  for sub_epoch in range(train.sub_epochs):
    levels = train_levels(epoch, sub_epoch) if callable(train_levels) else train_levels
    batches = image_batches(num_images, train.batch_size, plan_rng(config.seed, epoch, sub_epoch, 0))
    batch_lrs = np.array([schedule.batch_lr(train, epoch, warm_step + b, max(warmup[1], 1))
                          for b in range(len(batches))], np.float32)
    warm_step += len(batches)
    for level, data in enumerate(levels):
      chunks, owners = chunk_plan(batches, data.positions, train.num_vectors,
                                  plan_rng(config.seed, epoch, sub_epoch, level + 1))
      if not len(chunks):
        continue
      key = level_key(level)
      params[key], opt_state[key], chunk_losses, skipped = trainer(
          params[key], opt_state[key], state.constants[key], data, chunks,
          batch_lrs[owners], normal_only)
      chunk_losses, skipped = np.asarray(chunk_losses), np.asarray(skipped)
      bad = ~np.isfinite(chunk_losses)
      if bad.any():
        raise FloatingPointError(
            f'non-finite loss at meta-epoch {epoch}, sub-epoch {sub_epoch}, level {level} '
            f'(chunk {int(np.argmax(bad))} of {len(chunk_losses)}); the parameters of that '
            'step were not applied. Try a lower --config.train.lr.')
      used = ~skipped
      loss_sum += float(chunk_losses[used].sum())
      loss_count += int(used.sum())
      skipped_count += int(skipped.sum())
    if len(batch_lrs):
      last_lr = float(batch_lrs[-1])
  stats = dict(loss=loss_sum / max(loss_count, 1), lr=last_lr, steps=loss_count,
               skipped=skipped_count)
  return state.replace(epoch=state.epoch + 1, params=params, opt_state=opt_state), stats


def warmup_batches(config, normal_images: int, all_images: int, before_epoch=None) -> int:
  """Image batches in the warm-up meta-epochs (only those before ``before_epoch``)."""
  train = config.train
  epochs = train.lr_warm_epochs if train.lr_warm else 0
  if before_epoch is not None:
    epochs = min(epochs, before_epoch)
  total = 0
  for epoch in range(epochs):
    images = normal_images if epoch == 0 else all_images
    total += (images // train.batch_size) * train.sub_epochs
  return total


# ----------------------------------------------------------------------------
# Evaluation


def make_lp_evaluator(config, mesh: Mesh, images_per_call: int = 8):
  """Returns ``lp_maps(state, level_features)``: per-level lp maps [N, h, w]."""
  flow = make_flow(config)
  conditional = config.flow.conditional
  factored = config.flow.factored_condition

  @jax.jit
  def level_lp(params, constants, feats, cond):
    n, h, w, c = feats.shape
    x = feats.reshape(n * h * w, c)
    condition = (flow_condition(cond, jnp.tile(jnp.arange(h * w), n), factored)
                 if conditional else {})
    z, logdet = flow.apply({'params': params, flow_lib.CONSTANTS: constants}, x, **condition)
    return flow_lib.per_dim_log_likelihood(z, logdet).reshape(n, h, w)

  def lp_maps(state: FlowTrainState, level_features: Sequence[np.ndarray]) -> List[np.ndarray]:
    maps = []
    for level, feats in enumerate(level_features):
      _, h, w, _ = feats.shape
      cond = condition_tables(config.flow.pos_embed_dim, h, w)
      key = level_key(level)
      out = [np.asarray(level_lp(state.params[key], state.constants[key], batch, cond))[:real]
             for batch, real in sharded_batches(feats, images_per_call, mesh)]
      maps.append(np.concatenate(out))
    return maps

  return lp_maps
