"""What a workdir already holds when a run starts: a finished run, or one that overwrite moves.

A finished run is left untouched: running its command again prints where it stopped and changes
nothing. `overwrite=true` never deletes: the previous run moves aside to `<workdir>.old-<time>`.
"""

from __future__ import annotations

import json
import os
import shutil
import time

import jax

from jaxformer.training.lock import WorkdirLock


def finished_summary(workdir: str, config) -> dict | None:
  """The summary of a run that already finished in `workdir`, or None when there is something to
  do: overwrite, no readable summary.json, a newer checkpoint than the summary's last step, a
  preempted run, or steps left that it neither trained nor stopped early before. `config` is the
  prepared run's: with a time budget, its num_train_steps is the recorded decision."""
  path = os.path.join(workdir, 'summary.json')
  checkpoints = os.path.join(workdir, 'checkpoints')
  if config.overwrite or not os.path.isfile(path) or not os.path.isdir(checkpoints):
    return None
  try:
    with open(path) as f:
      summary = json.load(f)
    last_step = int(summary['last_step'])
    done = bool(summary['stopped_early']) or last_step >= int(config.num_train_steps)
  except (OSError, ValueError, TypeError, KeyError):
    return None  # unreadable: the run restores its last checkpoint and writes it again
  steps = [int(name) for name in os.listdir(checkpoints) if name.isdigit()]
  if not done or summary.get('preempted') or max(steps, default=None) != last_step:
    return None
  return summary


def move_aside(workdir: str, lock: WorkdirLock) -> WorkdirLock:
  """overwrite=true: the previous run moves to <workdir>.old-<time>; returns the new run's lock."""
  aside = f'{workdir.rstrip(os.sep)}.old-{time.strftime("%Y%m%d-%H%M%S")}'
  if jax.process_index() == 0:
    shutil.move(workdir, aside)
    print(f'overwrite: moved the previous run to {aside}', flush=True)
  lock.release()
  lock = WorkdirLock(workdir)
  lock.acquire()
  return lock
