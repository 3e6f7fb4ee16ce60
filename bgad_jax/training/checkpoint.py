"""Orbax checkpoints of the flows: parameters, fixed rotations, Adam state, epoch.

One checkpoint per completed meta-epoch (step = epoch count), plus a JSON
``meta`` item with the run's history, so that a killed run restarts from its
last meta-epoch and ends exactly where an uninterrupted run ends.
"""

import os
from typing import Any, Dict, Optional, Tuple

import flax
import orbax.checkpoint as ocp

from bgad_jax.training.state import FlowTrainState


class CheckpointMismatchError(ValueError):
  """A workdir's checkpoint belongs to another model configuration."""


def manager(workdir: str, max_to_keep: int = 2) -> ocp.CheckpointManager:
  return ocp.CheckpointManager(
      os.path.abspath(os.path.join(workdir, 'checkpoints')),
      options=ocp.CheckpointManagerOptions(max_to_keep=max_to_keep, create=True))


def save(mngr: ocp.CheckpointManager, state: FlowTrainState, meta: Dict[str, Any]) -> None:
  """Saves ``state`` under its epoch count and waits for the write to finish."""
  state_dict = flax.serialization.to_state_dict(state)
  mngr.save(int(state.epoch), args=ocp.args.Composite(
      state=ocp.args.StandardSave(state_dict), meta=ocp.args.JsonSave(meta)))
  mngr.wait_until_finished()


def restore_latest(mngr: ocp.CheckpointManager, template: FlowTrainState
                   ) -> Optional[Tuple[FlowTrainState, Dict[str, Any]]]:
  """The latest checkpoint restored into ``template``'s structure, or None."""
  step = mngr.latest_step()
  if step is None:
    return None
  target = flax.serialization.to_state_dict(template)
  try:
    restored = mngr.restore(step, args=ocp.args.Composite(
        state=ocp.args.StandardRestore(target), meta=ocp.args.JsonRestore()))
  except (ValueError, KeyError) as err:
    raise CheckpointMismatchError(
        f'the checkpoint in {mngr.directory} does not fit this configuration ({err}); '
        'use another --workdir or delete that folder') from err
  return flax.serialization.from_state_dict(template, restored['state']), restored['meta']
