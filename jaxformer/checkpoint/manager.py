"""Checkpointer: orbax CheckpointManager plus the guarantees a long training run needs.

What orbax gives us: asynchronous, multi-process, atomic saves (a step directory appears only
once complete; a killed save leaves a '<step>.orbax-checkpoint-tmp-*' directory instead).
What we add on top:
  * keep the latest `keep_last` steps AND the best by validation loss, via preservation policies
    (orbax 0.12's `max_to_keep` + `best_fn` deletes the newest step when it is not the best,
    which would break resume);
  * a per-array sha256 in a metadata JSON, verified on every restore (orbax restores a flipped
    byte silently);
  * a bad newest checkpoint (truncated, missing files, bad JSON, wrong bytes) is moved aside to
    `corrupt_dir` with a warning, and the previous good one is used;
  * restores always go into an abstract target, so optax's tuples stay tuples and arrays land
    directly on the current mesh, whatever mesh they were saved from.

Layout of one step: <directory>/<step>/{params,opt_state,step,rng,...}/ (one orbax item per
top-level key of `state`), meta/ (our JSON, see meta.py) and metrics/ (orbax's copy of val_loss,
which the preservation policy reads back after a restart).
"""

import dataclasses
import errno
import json
import logging
import math
import os
import warnings
from collections.abc import Mapping
from typing import Any

import jax
import orbax.checkpoint as ocp
from etils import epath

from jaxformer import sharding as jf_sharding
from jaxformer.checkpoint import integrity
from jaxformer.checkpoint import meta as meta_lib
from jaxformer.checkpoint.abstract import (
  nested_target,
  restore_target,
  unwrap,
  wrap,
)
from jaxformer.checkpoint.errors import CheckpointError, CorruptCheckpointWarning
from jaxformer.checkpoint.processes import everywhere, short_error, sync

log = logging.getLogger(__name__)

RESERVED_ITEMS = (meta_lib.ITEM, 'metrics')  # 'metrics' is orbax's own item name
TMP_MARKER = '.orbax-checkpoint-tmp'


@dataclasses.dataclass(frozen=True)
class Restored:
  """A verified checkpoint: its step, the restored state dict and the JSON `extra` saved with it."""

  step: int
  state: dict
  extra: dict
  val_loss: float | None


class _Unusable(Exception):
  """Internal: this step cannot be read or verified (corruption, not a user mistake)."""


def _rank(metrics) -> float:
  """Preservation rank: lower val_loss is better; a step saved without one ranks last."""
  return metrics.get('val_loss', math.inf) if isinstance(metrics, Mapping) else math.inf


def _finite_or_none(value) -> float | None:
  if value is None:
    return None
  value = float(value)
  return value if math.isfinite(value) else None  # a NaN loss must never become "the best"


class Checkpointer:
  """Saves and restores training state; see the module docstring for the guarantees.

  directory: where step directories live (created if missing).
  keep_last: how many of the newest steps to keep, besides the best-by-val_loss one.
  keep_every: > 0 also keeps every step that is a multiple of it (a history of the weights, for
    analyses over training such as the heads_dynamics experiment); 0 keeps no extra steps.
  async_save: save in the background so training continues (use save(wait=True) at the end).
  corrupt_dir: where unusable checkpoints are moved (default '<directory>_corrupt').
  read_only: never write, clean or move anything (for reading another run's checkpoints);
    unusable steps are then skipped in place.
  """

  def __init__(
    self,
    directory,
    *,
    keep_last: int = 2,
    keep_every: int = 0,
    async_save: bool = True,
    corrupt_dir=None,
    read_only: bool = False,
  ):
    if int(keep_last) < 1:
      raise ValueError(
        f'keep_last must be >= 1, got {keep_last}; resume needs at least one recent checkpoint'
      )
    if int(keep_every) < 0:
      raise ValueError(f'keep_every must be >= 0 (0 = off), got {keep_every}')
    self.directory = epath.Path(directory).absolute()
    self.corrupt_dir = (
      epath.Path(corrupt_dir).absolute()
      if corrupt_dir is not None
      else self.directory.parent / f'{self.directory.name}_corrupt'
    )
    self.read_only = read_only
    self._skipped: set[int] = set()  # unusable steps left in place (read_only mode)
    self._val_losses: dict[int, float | None] = {}
    if not read_only:
      if jax.process_index() == 0:
        self._remove_tmp_dirs()
      sync('jaxformer_checkpointer_init')
      self._set_aside_unreadable_metrics()  # collective: every process sees the same files
    policies = [
      ocp.checkpoint_managers.LatestN(n=int(keep_last)),
      ocp.checkpoint_managers.BestN(
        get_metric_fn=_rank, reverse=True, n=1, keep_checkpoints_without_metrics=False
      ),
    ]
    if int(keep_every) > 0:
      policies.append(ocp.checkpoint_managers.EveryNSteps(interval_steps=int(keep_every)))
    policy = ocp.checkpoint_managers.AnyPreservationPolicy(policies)
    options = ocp.CheckpointManagerOptions(
      # best_fn is what makes orbax write (and re-read after a restart) each step's metrics;
      # which steps survive is decided by the preservation policy alone.
      best_fn=_rank,
      best_mode='min',
      preservation_policy=policy,
      cleanup_tmp_directories=not read_only,
      enable_async_checkpointing=async_save,
      read_only=read_only,
      create=not read_only,
      save_interval_steps=0 if read_only else 1,
      # Read-only: do not let orbax parse every step's metrics at start-up (it crashes on a
      # bad file, which a reader may not move away); _saved_val_loss reads them one by one.
      lightweight_initialize=read_only,
    )
    self._manager = ocp.CheckpointManager(self.directory, options=options)
    self._val_losses = {step: self._saved_val_loss(step) for step in self._manager.all_steps()}

  # ---- start-up housekeeping -------------------------------------------------------------

  def _remove_tmp_dirs(self) -> None:
    """A save killed mid-way leaves '<step>.orbax-checkpoint-tmp-*'; it is never a checkpoint."""
    if not self.directory.exists():
      return
    for path in self.directory.iterdir():
      if TMP_MARKER in path.name:
        log.warning('removing unfinished checkpoint %s (a save was interrupted)', path)
        path.rmtree() if path.is_dir() else path.unlink()

  def _set_aside_unreadable_metrics(self) -> None:
    # orbax reads every step's metrics JSON when it starts and crashes on a bad one, so a
    # corrupt metrics file must be dealt with before the manager exists.
    if not self.directory.exists():
      return
    for path in self.directory.iterdir():
      metrics = path / 'metrics' / 'metrics'
      if path.name.isdigit() and metrics.exists():
        try:
          json.loads(metrics.read_text())
        except ValueError as e:
          self._set_aside(
            int(path.name), f'unreadable metrics JSON: {short_error(e)}', reload=False
          )

  def _saved_val_loss(self, step: int) -> float | None:
    try:
      metrics = self._manager.metrics(step)
    except Exception:  # a bad metrics file only costs us the "best" ranking of that step
      return None
    return _finite_or_none(metrics.get('val_loss')) if isinstance(metrics, Mapping) else None

  # ---- queries ---------------------------------------------------------------------------

  def all_steps(self) -> list[int]:
    return sorted(s for s in self._manager.all_steps() if s not in self._skipped)

  def latest_step(self) -> int | None:
    steps = self.all_steps()
    return steps[-1] if steps else None

  def best_step(self) -> int | None:
    """Step with the lowest val_loss (ties: the later one, as orbax keeps); None if none has one."""
    scored = [
      (self._val_losses[s], -s) for s in self.all_steps() if self._val_losses.get(s) is not None
    ]
    return -min(scored)[1] if scored else None

  def val_loss(self, step: int) -> float | None:
    """The val_loss saved with `step` (None if it was saved without one)."""
    return self._val_losses.get(int(step))

  def _best_first(self) -> list[int]:
    """Restore order for 'best': by val_loss, then steps without one, newest first."""
    steps = self.all_steps()
    scored = sorted((self._val_losses[s], -s) for s in steps if self._val_losses.get(s) is not None)
    rest = [s for s in reversed(steps) if self._val_losses.get(s) is None]
    return [-neg for _, neg in scored] + rest

  # ---- save ------------------------------------------------------------------------------

  def save(
    self,
    step: int,
    state: Mapping[str, Any],
    *,
    extra: dict | None = None,
    val_loss: float | None = None,
    wait: bool = False,
  ) -> bool:
    """Saves `state` (dict of pytrees) at `step`; returns False if that step already exists.

    Asynchronous unless wait=True: the arrays are copied to host before returning, so the
    caller may keep training (and donate buffers) while the write finishes.
    extra: JSON-able dict stored alongside (data iterator state, callbacks, config, ...).
    val_loss: makes this step a candidate for "best" (lower is better).
    """
    if self.read_only:
      raise CheckpointError(f'cannot save to {self.directory}: this Checkpointer is read-only')
    step = int(step)
    if not isinstance(state, Mapping) or not state:
      raise ValueError(
        "state must be a non-empty dict of pytrees, e.g. {'params': ..., 'opt_state': ...}"
      )
    for key, tree in state.items():
      if not isinstance(key, str) or key in RESERVED_ITEMS or '/' in key:
        raise ValueError(
          f'state key {key!r} is not allowed; use a plain name other than {RESERVED_ITEMS}'
        )
      if tree is None:
        raise ValueError(f'state[{key!r}] is None; leave the key out instead')
    if step in self._manager.all_steps():
      log.info('checkpoint step %d already exists in %s; not saving it again', step, self.directory)
      if wait:
        self.wait_until_finished()
      return False
    val_loss = _finite_or_none(val_loss)
    meta = meta_lib.record(step, state, extra=extra, val_loss=val_loss)
    args = {key: ocp.args.StandardSave(wrap(tree)) for key, tree in state.items()}
    args[meta_lib.ITEM] = ocp.args.JsonSave(meta)
    metrics = {'val_loss': val_loss} if val_loss is not None else {}
    self._saving = (step, meta_lib.array_bytes(meta))
    try:
      self._manager.save(step, args=ocp.args.Composite(**args), metrics=metrics, force=True)
      if wait:
        self._manager.wait_until_finished()
    except Exception as e:
      raise self._save_failed(e) from e
    self._val_losses[step] = val_loss
    return True

  def wait_until_finished(self) -> None:
    """Blocks until background saves are on disk (and raises if one failed)."""
    try:
      self._manager.wait_until_finished()
    except Exception as e:
      raise self._save_failed(e) from e

  def _save_failed(self, error: Exception) -> CheckpointError:
    """The error for a failed save; its half-written step directory is removed."""
    step, nbytes = getattr(self, '_saving', (None, 0))
    if jax.process_index() == 0:
      try:
        self._remove_tmp_dirs()
      except OSError:
        pass  # the next start removes them (cleanup_tmp_directories)
    text = str(error)
    known = [os.strerror(n) for n in (errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES)]
    reason = next((m for m in known if m in text), short_error(error))
    return CheckpointError(
      f'could not save checkpoint step {step} to {self.directory} ({reason}); it needs '
      f'about {nbytes / 2**20:.1f} MiB: check free disk space and permissions; the earlier '
      'checkpoints are intact'
    )

  def close(self) -> None:
    self.wait_until_finished()
    self._manager.close()

  def __enter__(self):
    return self

  def __exit__(self, *exc):
    self.close()

  # ---- restore ---------------------------------------------------------------------------

  def restore_latest(self, abstract_state: Mapping[str, Any]) -> Restored | None:
    """Newest good checkpoint restored into `abstract_state`; None if there are no checkpoints."""
    self.wait_until_finished()
    steps = self.all_steps()
    if not steps:
      return None
    return self._first_good(
      list(reversed(steps)), lambda step: self._restore_verified(step, abstract_state)
    )

  def restore_best(self, abstract_state: Mapping[str, Any]) -> Restored | None:
    """Good checkpoint with the lowest val_loss (the latest if none recorded one); None if none."""
    self.wait_until_finished()
    candidates = self._best_first()
    if not candidates:
      return None
    return self._first_good(candidates, lambda step: self._restore_verified(step, abstract_state))

  def restore_params(self, step: int | None = None, abstract_params=None) -> tuple[int, Any]:
    """(step, params) of just the 'params' item: the best good step unless `step` is given.

    Without abstract_params the saved shapes and dtypes are used and arrays land on one device
    (replicated across hosts in multi-process runs).
    """
    self.wait_until_finished()
    if step is not None and int(step) not in self.all_steps():
      raise CheckpointError(
        f'no checkpoint step {step} in {self.directory} (steps: {self.all_steps()})'
      )
    candidates = [int(step)] if step is not None else self._best_first()
    if not candidates:
      raise CheckpointError(
        f'no checkpoints in {self.directory}; train a model there first or check the path'
      )

    def restore(s):
      target = abstract_params if abstract_params is not None else self._saved_params_target(s)
      restored = self._restore_verified(s, {'params': target})
      return restored.step, restored.state['params']

    return self._first_good(candidates, restore)

  def _first_good(self, candidates: list[int], restore):
    tried = []
    for step in candidates:
      try:
        return restore(step)
      except _Unusable as e:
        self._set_aside(step, str(e))
        tried.append(step)
    where = 'left in place (read-only)' if self.read_only else f'moved to {self.corrupt_dir}'
    raise CheckpointError(
      f'no usable checkpoint in {self.directory}: step(s) {tried} are corrupt ({where}); '
      f'inspect them, or start fresh in a new directory'
    )

  def _read_meta(self, step: int) -> dict:
    error = None
    try:
      meta = self._manager.restore(
        step, args=ocp.args.Composite(**{meta_lib.ITEM: ocp.args.JsonRestore()})
      )[meta_lib.ITEM]
      error = meta_lib.unusable_reason(meta)
    except MemoryError:
      raise
    except Exception as e:
      error = f'unreadable metadata JSON: {short_error(e)}'
    if not everywhere(error is None):
      raise _Unusable(error or 'metadata unreadable on another process')
    return meta

  def _saved_params_target(self, step: int):
    """Abstract 'params' tree with the shapes/dtypes recorded in `step`'s metadata."""
    return nested_target(self._read_meta(step)['arrays'], 'params', jf_sharding.unplaced_default())

  def _restore_verified(self, step: int, abstract_state: Mapping[str, Any]) -> Restored:
    meta = self._read_meta(step)
    missing = sorted(set(abstract_state) - set(meta['items']))
    if missing:
      raise CheckpointError(
        f'checkpoint step {step} in {self.directory} has no {missing} '
        f'(it holds {meta["items"]}); restore only what was saved'
      )
    lines = integrity.structure_mismatches(abstract_state, meta['arrays'])
    if lines:
      raise CheckpointError(
        f'checkpoint step {step} in {self.directory} does not fit the model '
        f'({len(lines)} difference(s)); '
        f'use the config it was saved with, or a new directory:\n  ' + '\n  '.join(lines)
      )
    error, out_of_memory, state = None, None, None
    try:
      args = {
        k: ocp.args.StandardRestore(wrap(restore_target(v))) for k, v in abstract_state.items()
      }
      restored = self._manager.restore(step, args=ocp.args.Composite(**args))
      state = {k: unwrap(restored[k], v) for k, v in abstract_state.items()}
      bad = integrity.checksum_mismatches(state, meta['arrays'])
      if bad:
        error = f'checksum mismatch in {", ".join(bad[:3])}' + (
          f' and {len(bad) - 3} more' if len(bad) > 3 else ''
        )
    except MemoryError:
      raise
    except Exception as e:
      error = f'could not read arrays: {short_error(e)}'
      if 'RESOURCE_EXHAUSTED' in str(e):  # out of device memory says nothing about the file
        out_of_memory = error
    if not everywhere(out_of_memory is None):
      raise CheckpointError(
        f'out of memory restoring checkpoint step {step} '
        f'({out_of_memory or "on another process"}); use more devices or a smaller model'
      )
    if not everywhere(error is None):
      raise _Unusable(error or 'arrays unreadable on another process')
    return Restored(
      step=step, state=state, extra=meta.get('extra', {}), val_loss=meta.get('val_loss')
    )

  # ---- quarantine ------------------------------------------------------------------------

  def _set_aside(self, step: int, reason: str, reload: bool = True) -> None:
    """Moves an unusable step out of the way (kept for inspection, never deleted)."""
    message = f'checkpoint step {step} in {self.directory} is unusable ({reason})'
    if self.read_only:
      self._skipped.add(step)
      message += '; skipping it (read-only, left in place)'
    else:
      dest = self.corrupt_dir / str(step)
      n = 1
      while dest.exists():  # a step number can go bad more than once across restarts
        dest, n = self.corrupt_dir / f'{step}.{n}', n + 1
      sync(f'jaxformer_set_aside_start_{step}')  # every process has chosen `dest` before it moves
      failure = None
      if jax.process_index() == 0:
        try:
          dest.parent.mkdir(parents=True, exist_ok=True)
          (self.directory / str(step)).rename(dest)
        except OSError as e:
          failure = e
      if not everywhere(failure is None):  # also the barrier: the move is done everywhere
        raise CheckpointError(
          f'{message}, and it could not be moved to {dest} '
          f'({short_error(failure) if failure else "failed on process 0"}); '
          f'move or delete it by hand'
        )
      if reload:
        self._manager.reload()
      self._val_losses.pop(step, None)
      message += f'; moved it to {dest} for inspection'
    message += '; trying the next checkpoint, if any'
    log.warning(message)
    warnings.warn(message, CorruptCheckpointWarning, stacklevel=4)
