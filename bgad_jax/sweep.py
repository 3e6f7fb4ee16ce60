"""Every class of a dataset in one command: one after another, or spread over processes.

  python main.py --config=configs/mvtec.py:all
  python -m bgad_jax.launch --num_processes 2 -- main.py --config=configs/mvtec.py:all \
      --config.parallel=categories

With ``parallel='data'`` (the default) the processes of a run
(`bgad_jax.distributed`) train each class together, one after another.
With ``parallel='categories'`` process i of n runs classes i, i + n, ...
(each on its own devices, nothing shared); process 0 then waits for every
class's outcome and writes the summary. A class that fails is reported (in
the summary and its ``<workdir>/<class>/outcome.json``) and the others go on.
The launcher (`bgad_jax.launch`) hands each process its id and the sweep's id
in the environment.
"""

import json
import os
import time
import traceback
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

from bgad_jax.errors import UserError
from bgad_jax.evaluation import report

PROCESS_ID, NUM_PROCESSES, SWEEP_ID = 'BGAD_PROCESS_ID', 'BGAD_NUM_PROCESSES', 'BGAD_SWEEP_ID'
OUTCOME = 'outcome.json'


class SweepFailedError(UserError):
  """Some classes of a sweep failed (the others finished and are summarised)."""


def process_from_env() -> Tuple[int, int, str]:
  """(process id, number of processes, sweep id) set by `bgad_jax.launch`; (0, 1, '') alone."""
  return (int(os.environ.get(PROCESS_ID, 0)), int(os.environ.get(NUM_PROCESSES, 1)),
          os.environ.get(SWEEP_ID, ''))


def share(categories: Sequence[str], process_id: int, num_processes: int) -> List[str]:
  """The classes process ``process_id`` of ``num_processes`` runs: every n-th from its id."""
  return list(categories[process_id::num_processes])


def _write_outcome(folder: str, outcome: Dict[str, Any]) -> None:
  os.makedirs(folder, exist_ok=True)
  report.write_json(os.path.join(folder, OUTCOME), outcome)


def _read_outcome(folder: str, sweep_id: str) -> Optional[Dict[str, Any]]:
  path = os.path.join(folder, OUTCOME)
  try:
    with open(path) as f:
      outcome = json.load(f)
  except (OSError, ValueError):
    return None
  return outcome if outcome.get('sweep') == sweep_id else None   # not an earlier sweep's


def run_share(categories: Sequence[str], workdir: str, run_one: Callable[[str, str], Any],
              sweep_id: str = '', write: bool = True) -> Dict[str, Dict[str, Any]]:
  """Runs ``run_one(category, folder)`` for each class; an error fails that class only.

  Returns:
    {category: outcome}: dict(sweep, status='ok', row=<run_one's return>) or
    dict(sweep, status='failed', error=<one line>); with ``write`` each is
    also written to ``<workdir>/<category>/outcome.json``.
  """
  outcomes = {}
  for category in categories:
    folder = os.path.join(workdir, category)
    try:
      outcome = dict(sweep=sweep_id, status='ok', row=run_one(category, folder))
    except UserError as error:
      outcome = dict(sweep=sweep_id, status='failed', error=str(error).splitlines()[0])
    except Exception as error:   # pylint: disable=broad-except
      traceback.print_exc()   # a bug: keep its traceback, but let the other classes run
      outcome = dict(sweep=sweep_id, status='failed', error=f'{type(error).__name__}: {error}')
    if outcome['status'] == 'failed' and write:
      print(f"error: class {category} failed: {outcome['error']}", flush=True)
    if write:
      _write_outcome(folder, outcome)
    outcomes[category] = outcome
  return outcomes


def wait_for_outcomes(categories: Sequence[str], workdir: str, sweep_id: str,
                      timeout_s: float = 7 * 24 * 3600, poll_s: float = 2.0
                      ) -> Dict[str, Dict[str, Any]]:
  """The outcome of every class of sweep ``sweep_id``, waiting for the other processes.

  A class with no outcome after ``timeout_s`` counts as failed.
  """
  deadline, outcomes = time.time() + timeout_s, {}
  while True:
    for category in categories:
      if category not in outcomes:
        outcome = _read_outcome(os.path.join(workdir, category), sweep_id)
        if outcome is not None:
          outcomes[category] = outcome
    if len(outcomes) == len(categories) or time.time() > deadline:
      break
    time.sleep(poll_s)
  for category in categories:
    outcomes.setdefault(category, dict(sweep=sweep_id, status='failed',
                                       error='no outcome: its process did not finish'))
  return {category: outcomes[category] for category in categories}


def write_summary(workdir: str, outcomes: Dict[str, Dict[str, Any]]) -> str:
  """summary.md / summary.json of the classes' headline metrics and failures; returns the table."""
  rows = {c: o['row'] for c, o in outcomes.items() if o['status'] == 'ok'}
  failed = {c: o['error'] for c, o in outcomes.items() if o['status'] == 'failed'}
  summary = report.summary_markdown(rows) if rows else 'No class finished.\n'
  if failed:
    summary += '\nFailed classes:\n' + ''.join(f'- {c}: {e}\n' for c, e in failed.items())
  os.makedirs(workdir, exist_ok=True)
  with open(os.path.join(workdir, 'summary.md'), 'w') as f:
    f.write(summary)
  report.write_json(os.path.join(workdir, 'summary.json'), dict(rows, failed=failed) if failed
                    else rows)
  return summary


def run_all(categories: Sequence[str], workdir: str, run_one: Callable[[str, str], Any],
            parallel: str, summarise: bool, process: Tuple[int, int, str] = (0, 1, '')
            ) -> Optional[Dict[str, Dict[str, Any]]]:
  """Runs a sweep over ``categories``: this process's share when ``parallel='categories'``;
  with ``parallel='data'`` every process takes part in every class (one
  `jax.distributed` run) and process 0 writes the outcomes.

  Args:
    run_one: (category, its workdir) -> that class's headline row (or None).
    summarise: whether the mode has metrics to summarise (train, eval).
    process: (process id, number of processes, sweep id), `process_from_env`.

  Returns:
    Every class's outcome when this process writes the summary, else None.

  Raises:
    SweepFailedError: after the summary, when a class (of this process's
      share; for process 0, of the sweep) failed.
  """
  process_id, num_processes, sweep_id = process
  mine = share(categories, process_id, num_processes) if parallel == 'categories' else list(
      categories)
  outcomes = run_share(mine, workdir, run_one, sweep_id,
                       write=parallel == 'categories' or process_id == 0)
  if process_id == 0:
    if len(mine) < len(categories):
      print(f'Process 0 waits for the other {num_processes - 1} processes\' classes', flush=True)
      outcomes = wait_for_outcomes(categories, workdir, sweep_id)
    if summarise:
      summary = write_summary(workdir, outcomes)
      print('\n' + summary + f'\nSummary: {os.path.join(workdir, "summary.md")}')
  failed = [c for c, o in outcomes.items() if o['status'] == 'failed']
  if failed and (parallel == 'categories' or process_id == 0):
    raise SweepFailedError(f'{len(failed)} of {len(outcomes)} classes failed: '
                           + ', '.join(failed) + ' (see their outcome.json)')
  return outcomes if process_id == 0 else None
