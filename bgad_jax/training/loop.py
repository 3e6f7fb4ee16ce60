"""One meta-epoch of flow training: ``sub_epochs`` passes over every level's chunks."""

from typing import Callable, Dict, Optional, Sequence, Tuple

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import NamedSharding, PartitionSpec as P

from bgad_jax.errors import TrainingDivergedError
from bgad_jax.training import schedule
from bgad_jax.training.plan import sub_epoch_plan
from bgad_jax.training.sharding import AXIS, replicate, to_host
from bgad_jax.training.state import FlowTrainState
from bgad_jax.training.step import TERMS, LossSettings, train_chunks
from bgad_jax.training.training_set import TrainingSet


def _train_level(state: FlowTrainState, level: int, data, chunks: np.ndarray, lrs: np.ndarray,
                 loss: LossSettings, normal_only: bool, mesh, reduction: str):
  # The same placement on every call (fresh states are uncommitted, returned
  # ones are replicated on the mesh): otherwise the second call recompiles.
  level_state = replicate(state.level(level), mesh)
  chunks = jax.device_put(chunks, NamedSharding(mesh, P(None, AXIS)))
  level_state, metrics = train_chunks(level_state, data, chunks, jnp.asarray(lrs, jnp.float32),
                                      loss, normal_only, mesh, reduction)
  return state.with_level(level, level_state), to_host(metrics)


def _mean(values: np.ndarray) -> Optional[float]:
  return float(values.mean()) if len(values) else None


def epoch_stats(collected: Sequence[Dict[str, np.ndarray]],
                last_lr: float) -> Dict[str, Optional[float]]:
  """Averages of a meta-epoch's per-chunk metrics (one dict per `train_chunks` call).

  ``loss`` and ``ml`` average the applied steps; the semi-push-pull terms and
  the boundaries average the applied steps whose chunk had abnormal vectors
  (None when there were none); ``abnormal_chunks`` is their fraction.
  """
  steps = sum(int((~m['skipped']).sum()) for m in collected)
  stats = dict(loss=sum(float(m['loss'][~m['skipped']].sum()) for m in collected) / max(steps, 1),
               lr=last_lr, steps=steps,
               skipped=sum(int(m['skipped'].sum()) for m in collected))
  metrics = {key: np.concatenate([m[key] for m in collected]) if collected else np.zeros(0)
             for key in ('skipped',) + TERMS}
  used = ~metrics['skipped'].astype(bool)
  with_abnormal = used & metrics['has_abnormal'].astype(bool)
  stats['ml'] = _mean(metrics['ml'][used])
  stats['abnormal_chunks'] = float(with_abnormal.sum()) / max(steps, 1)
  for term in ('loss_n', 'loss_a', 'b_n', 'b_a'):
    stats[term] = _mean(metrics[term][with_abnormal])
  return stats


def train_meta_epoch(state: FlowTrainState, training_set: TrainingSet, train_config,
                     loss: LossSettings, seed: int,
                     on_level: Optional[Callable[[int, int, Dict[str, np.ndarray]], None]] = None
                     ) -> Tuple[FlowTrainState, Dict[str, float]]:
  """Meta-epoch ``state.epoch``: every sub-epoch, every level, every chunk.

  Args:
    training_set: the training vectors (its first ``num_normal`` images are
      the only ones of the first meta-epoch).
    train_config: ``config.train`` (schedule, batch size, chunk size).
    loss: the loss settings.
    seed: the run's seed (plans depend on it, the epoch and the sub-epoch).
    on_level: called after each level's steps of a sub-epoch with
      (sub_epoch, level, the per-chunk metrics of `step.train_chunks` as host
      arrays), e.g. to record every step.

  Returns:
    The new state (its buffers replace the input's, which are donated) and
    `epoch_stats`.

  Raises:
    TrainingDivergedError: on a non-finite loss, naming epoch, sub-epoch and level.
  """
  epoch = int(state.epoch)
  normal_only = epoch == 0
  num_images = training_set.num_normal if normal_only else training_set.num_images
  rates = schedule.make_schedule(train_config, training_set.num_normal, training_set.num_images)
  collected, last_lr = [], 0.0
  for sub_epoch in range(train_config.sub_epochs):
    levels = training_set.levels(epoch, sub_epoch)
    plan = sub_epoch_plan(seed, epoch, sub_epoch, num_images, train_config.batch_size,
                          [data.positions for data in levels], train_config.num_vectors)
    batch_lrs = np.array([rates(epoch, sub_epoch, b) for b in range(len(plan.batches))],
                         np.float32)
    for level, data in enumerate(levels):
      chunks, owners = plan.levels[level]
      if not len(chunks):
        continue
      state, metrics = _train_level(state, level, data, chunks, batch_lrs[owners], loss,
                                    normal_only, training_set.mesh,
                                    train_config.grad_reduction)
      bad = ~np.isfinite(metrics['loss'])
      if bad.any():
        raise TrainingDivergedError(
            f'non-finite loss at meta-epoch {epoch}, sub-epoch {sub_epoch}, level {level} '
            f'(chunk {int(np.argmax(bad))} of {len(bad)}); the parameters of that '
            'step were not applied. Try a lower --config.train.lr.')
      if on_level is not None:
        on_level(sub_epoch, level, metrics)
      collected.append(metrics)
    if len(batch_lrs):
      last_lr = float(batch_lrs[-1])
  return state.replace(epoch=state.epoch + 1), epoch_stats(collected, last_lr)
