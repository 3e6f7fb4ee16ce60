"""Orbax checkpoints of the flows: parameters, fixed rotations, Adam state, epoch.

One checkpoint per completed meta-epoch (step = epoch count), plus a JSON
``meta`` item with the run's history, so that a killed run restarts from its
last meta-epoch and ends exactly where an uninterrupted run ends. With several
processes every process saves and restores (Orbax lets process 0 write the
replicated arrays and the metadata); process 0 lists the files.

Each checkpoint also gets a list of its files with sizes and SHA-256 digests.
A checkpoint whose files no longer match (truncated, changed, missing) is moved
aside to ``<workdir>/checkpoints_unreadable/`` with a warning, and the previous
one is used; nothing is moved unless an older checkpoint restores.
"""

import hashlib
import json
import logging
import os
from typing import Any, Dict, List, Optional, Tuple

import flax
import jax
import orbax.checkpoint as ocp

from bgad_jax.errors import CheckpointError
from bgad_jax.training.sharding import is_main_process, sync
from bgad_jax.training.state import FlowTrainState

_DIGESTS = 'file_digests.json'


class CheckpointMismatchError(CheckpointError):
  """A workdir's checkpoint belongs to another model configuration."""


def checkpoint_dir(workdir: str) -> str:
  return os.path.abspath(os.path.join(workdir, 'checkpoints'))


def has_checkpoint(workdir: str) -> bool:
  """Whether ``workdir`` holds at least one checkpoint (creates nothing)."""
  folder = checkpoint_dir(workdir)
  return os.path.isdir(folder) and any(name.isdigit() for name in os.listdir(folder))


def manager(workdir: str, max_to_keep: int = 2) -> ocp.CheckpointManager:
  # Handlers named up front: a new manager can then read a checkpoint's metadata.
  return ocp.CheckpointManager(
      checkpoint_dir(workdir),
      options=ocp.CheckpointManagerOptions(max_to_keep=max_to_keep, create=True),
      item_handlers=dict(state=ocp.StandardCheckpointHandler(),
                         meta=ocp.JsonCheckpointHandler()))


def _files(step_dir: str) -> List[str]:
  found = []
  for folder, _, names in os.walk(step_dir):
    found += [os.path.relpath(os.path.join(folder, n), step_dir) for n in names]
  return sorted(f for f in found if f != _DIGESTS)


def _sha256(path: str) -> str:
  digest = hashlib.sha256()
  with open(path, 'rb') as f:
    for block in iter(lambda: f.read(1 << 20), b''):
      digest.update(block)
  return digest.hexdigest()


def _write_digests(step_dir: str) -> None:
  digests = {name: [os.path.getsize(os.path.join(step_dir, name)),
                    _sha256(os.path.join(step_dir, name))] for name in _files(step_dir)}
  temporary = os.path.join(step_dir, _DIGESTS + '.tmp')
  with open(temporary, 'w') as f:
    json.dump(digests, f)
  os.replace(temporary, os.path.join(step_dir, _DIGESTS))


def _damage(step_dir: str) -> Optional[str]:
  """What is wrong with a checkpoint's files; None if they match (or were never listed)."""
  listing = os.path.join(step_dir, _DIGESTS)
  if not os.path.isfile(listing):
    return None   # written before the listing (killed in between, or an older bgad_jax)
  with open(listing) as f:
    digests = json.load(f)
  for name, (size, sha256) in sorted(digests.items()):
    path = os.path.join(step_dir, name)
    if not os.path.isfile(path):
      return f'{name} is missing'
    if os.path.getsize(path) != size:
      return f'{name} has {os.path.getsize(path)} bytes instead of {size}'
    if _sha256(path) != sha256:
      return f'{name} changed since it was written'
  return None


def save(mngr: ocp.CheckpointManager, state: FlowTrainState, meta: Dict[str, Any]) -> None:
  """Saves ``state`` under its epoch count and waits for the write to finish."""
  state_dict = flax.serialization.to_state_dict(state)
  step = int(state.epoch)
  mngr.save(step, args=ocp.args.Composite(
      state=ocp.args.StandardSave(state_dict), meta=ocp.args.JsonSave(meta)))
  mngr.wait_until_finished()
  if is_main_process():   # every process saved its part; one lists the files
    _write_digests(os.path.join(os.fspath(mngr.directory), str(step)))
  sync(f'checkpoint {step} listed')


def _shapes(tree) -> Dict[str, Tuple[int, ...]]:
  return {'.'.join(str(getattr(k, 'key', k)) for k in path): tuple(leaf.shape)
          for path, leaf in jax.tree_util.tree_leaves_with_path(tree)}


def _mismatch(mngr, step: int, template: FlowTrainState) -> Optional[str]:
  """How the checkpoint's arrays differ from ``template``'s; None if they fit or are unknown.

  Checked on the metadata so that a wrong model never reaches TensorStore reads.
  """
  try:
    saved = _shapes(mngr.item_metadata(step)['state'])
  except Exception:   # pylint: disable=broad-except  (unreadable metadata: restore decides)
    return None
  if not saved:
    return None
  wanted = _shapes(flax.serialization.to_state_dict(template))
  for key in sorted(wanted.keys() | saved.keys()):
    if saved.get(key) != wanted.get(key):
      return (f'{key} has shape {saved.get(key, "(absent)")} in the checkpoint, '
              f'{wanted.get(key, "(absent)")} in this configuration')
  return None


def _restore(mngr, step: int, template: FlowTrainState):
  target = flax.serialization.to_state_dict(template)
  restored = mngr.restore(step, args=ocp.args.Composite(
      state=ocp.args.StandardRestore(target), meta=ocp.args.JsonRestore()))
  return flax.serialization.from_state_dict(template, restored['state']), restored['meta']


def _first_line(err: Exception) -> str:
  """The gist of an Orbax/TensorStore error (their messages run to pages)."""
  text = str(err).split(' See full TensorStore details')[0].strip().splitlines()
  return text[0][:200] if text else type(err).__name__


def _move_aside(mngr, step: int) -> str:
  directory = os.fspath(mngr.directory)
  base = os.path.join(os.path.dirname(directory), 'checkpoints_unreadable', str(step))
  target, suffix = base, 0
  while os.path.exists(target):   # an earlier damaged checkpoint of the same step
    suffix += 1
    target = f'{base}_{suffix}'
  os.makedirs(os.path.dirname(target), exist_ok=True)
  os.rename(os.path.join(directory, str(step)), target)
  return target


def _read(mngr, step: int, template: FlowTrainState):
  """(restored state and meta, None), or (None, why the checkpoint cannot be read).

  Raises:
    CheckpointMismatchError: the checkpoint is intact but of another configuration.
  """
  directory = os.fspath(mngr.directory)
  damage = _damage(os.path.join(directory, str(step)))
  if damage is not None:
    return None, damage
  mismatch = _mismatch(mngr, step, template)
  if mismatch:
    raise CheckpointMismatchError(
        f'the checkpoint of meta-epoch {step} in {directory} does not fit this '
        f'configuration ({mismatch}): use the config it was trained with, another '
        f'--workdir, or delete {directory} to train this configuration from scratch')
  try:
    return _restore(mngr, step, template), None
  except Exception as err:   # pylint: disable=broad-except  (TensorStore read errors)
    return None, _first_line(err)


def restore_latest(mngr: ocp.CheckpointManager, template: FlowTrainState
                   ) -> Optional[Tuple[FlowTrainState, Dict[str, Any]]]:
  """The newest checkpoint that restores into ``template``'s structure, or None if none exist.

  Unreadable newer checkpoints are moved aside (with a warning) once an older
  one restores.

  Raises:
    CheckpointMismatchError: the checkpoint is intact but of another configuration.
    CheckpointError: checkpoints exist and none of them can be read.
  """
  directory = os.fspath(mngr.directory)
  unreadable: List[Tuple[int, str]] = []
  for step in sorted(mngr.all_steps(), reverse=True):
    restored, damage = _read(mngr, step, template)
    if restored is None:
      unreadable.append((step, damage))
      continue
    if unreadable:
      sync(f'checkpoint {step} restored')   # every process has read before one moves
      for bad_step, reason in unreadable if is_main_process() else ():
        logging.warning('The checkpoint of meta-epoch %d cannot be read (%s): moved it to '
                        '%s; using meta-epoch %d instead.', bad_step, reason,
                        _move_aside(mngr, bad_step), step)
      sync('unreadable checkpoints moved')
      mngr.reload()
    return restored
  if unreadable:
    details = '; '.join(f'meta-epoch {step}: {reason}' for step, reason in unreadable)
    raise CheckpointError(f'no checkpoint in {directory} can be read ({details}). Delete '
                          f'{directory} to train from scratch, or use another --workdir.')
  return None
