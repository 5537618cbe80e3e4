"""train_and_evaluate: the whole training run, from config to summary.json.

Reading order: `train_and_evaluate` sets up (checks, data, model, state or resume), then
`_Trainer.run` loops: step -> (log) -> (evaluate, early stopping) -> (checkpoint), then finishes:
best weights restored, test evaluation, report, summary.
"""

from __future__ import annotations

import dataclasses
import hashlib
import math
import os
import time
from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import linen as nn

from jaxformer import checkpoint as ckpt_lib
from jaxformer import models
from jaxformer.config import early_stopping_monitor
from jaxformer.metrics import bits_per_byte, perplexity
from jaxformer.training import budget, console, optim
from jaxformer.training import workdir as workdir_lib
from jaxformer.training.callbacks import (
  EarlyStopping,
  load_states,
  monitored_value,
  save_states,
  state_keys,
)
from jaxformer.training.errors import Diverged
from jaxformer.training.lock import WorkdirLock
from jaxformer.training.optim import make_optimizer
from jaxformer.training.preemption import PreemptionGuard
from jaxformer.training.prepare import PreparedRun, compiled_steps, prepare, write_run_files
from jaxformer.training.writers import MetricsWriter, plot_loss_curves, write_json_atomic


def params_fingerprint(params) -> str:
  """sha256 over every parameter's bytes, in sorted path order: equal iff the weights are equal."""
  h = hashlib.sha256()
  leaves = jax.tree_util.tree_flatten_with_path(params)[0]
  for path, leaf in sorted(leaves, key=lambda kv: jax.tree_util.keystr(kv[0])):
    if not leaf.is_fully_addressable:
      from jax.experimental import multihost_utils

      leaf = multihost_utils.process_allgather(leaf, tiled=True)
    h.update(jax.tree_util.keystr(path).encode())
    h.update(np.ascontiguousarray(np.asarray(leaf)).tobytes())
  return h.hexdigest()


def _log(msg: str) -> None:
  if jax.process_index() == 0:
    print(msg, flush=True)


def train_and_evaluate(
  config,
  workdir: str,
  *,
  callbacks: Sequence[Any] = (),
  on_log: Callable[[int, dict], None] | None = None,
) -> dict:
  """Trains `config` into `workdir` (resuming if it holds a run) and returns the summary."""
  t0 = time.time()
  s = prepare(config, workdir)
  lock = WorkdirLock(workdir)
  lock.acquire()  # before the first write: one run per workdir
  try:
    finished = workdir_lib.finished_summary(workdir, s.config)  # s.config: a budget's decided steps
    if finished is not None:
      _log(
        f'the run had already finished at step {finished["last_step"]}; nothing in '
        f'{workdir} was changed'
      )
      return finished
    if config.overwrite and lock.holds_a_run():
      lock = workdir_lib.move_aside(workdir, lock)
    if jax.process_index() == 0:
      write_run_files(s)
    trainer = _Trainer(s, list(callbacks), on_log)
    try:
      summary = trainer.run(t0)
    except BaseException:
      trainer.close(quiet=True)  # a failing close must not hide why the run stopped
      raise
    trainer.close()
    return summary
  finally:
    lock.release()


class _Trainer:
  def __init__(self, s: PreparedRun, callbacks: list, on_log):
    self.s, self.config, self.rt = s, s.config, s.runtime
    self.early = EarlyStopping(s.config.early_stopping.patience, s.config.early_stopping.min_delta)
    self.monitor = early_stopping_monitor(s.config)
    self.callbacks = [self.early] + callbacks
    state_keys(self.callbacks)  # two callbacks saving state under one key fail here, not later
    self.on_log = on_log
    self.ckpt = ckpt_lib.Checkpointer(
      os.path.join(s.workdir, 'checkpoints'),
      keep_last=int(s.config.keep_last),
      keep_every=int(s.config.get('keep_every_steps', 0)),
    )
    self.tokens_per_step = s.config.batch_size * models.tokens_per_example(
      s.config.task, s.model_cfg
    )
    self.writer: MetricsWriter | None = None
    self.throughput: list[float] = []  # real (non-padding) tokens/s per log window
    self.padded_throughput: list[float] = []  # positions/s, padding included

  def close(self, quiet: bool = False):
    """Closes the checkpointer and the writers; quiet: errors are dropped (one is in flight)."""
    errors = []
    for close in (self.ckpt.close, self.writer.close if self.writer else None):
      try:
        if close is not None:
          close()
      except Exception as e:
        errors.append(e)
    if errors and not quiet:
      raise errors[0]

  def _notify(self, event: str, *args) -> list:
    """Calls `event` on every callback that defines it (see callbacks.py); returns the results."""
    return [getattr(cb, event)(*args) for cb in self.callbacks if hasattr(cb, event)]

  # ------------------------------------------------------------------ setup
  def _initial_state(self):
    """Resume from the newest good checkpoint, or create a fresh (optionally pretrained) state."""
    s, config = self.s, self.config
    restored = self.ckpt.restore_latest(s.abstract_state)
    if restored is not None:
      _log(f'resuming from step {restored.step} ({self.ckpt.directory})')
      extra = restored.extra or {}
      load_states(self.callbacks, extra.get('callbacks', {}))
      return restored.state, extra.get('data_state')
    init_key, dropout_key = jax.random.split(jax.random.key(config.seed))
    state = s.runtime.jit_init(s.make_state, s.shardings)(init_key, dropout_key)
    if config.init_from:
      params = ckpt_lib.load_params_for_init(config.init_from, jax.device_get(state['params']))
      params = jax.device_put(params, s.shardings['params'])
      opt_state = jax.jit(s.tx.init, out_shardings=s.shardings['opt_state'])(params)
      state = dict(state, params=params, opt_state=opt_state)
      _log(f'initialized the backbone from {config.init_from}')
    return state, None

  # ------------------------------------------------------------------ loop
  def run(self, t0: float) -> dict:
    s, config, rt = self.s, self.config, self.rt
    self.t0 = t0
    state, data_state = self._initial_state()
    start = self.start = int(jax.device_get(state['step']))
    console.show_startup(s, tokens_per_step=self.tokens_per_step, start=start)
    self.writer = MetricsWriter(
      s.workdir,
      enabled=jax.process_index() == 0,
      resume_step=start,
    )
    it = s.data.train_iterator()
    if data_state is not None:
      it.set_state(data_state)
    train_step, self.eval_step = compiled_steps(s)
    self._notify('on_train_start', start)

    state = rt.from_canonical(state)
    step, total, pending = start, int(config.num_train_steps), []
    window_start, preempted = time.time(), None
    progress = console.Progress(config, start, total)
    timer = None
    if budget.enabled(config) and budget.RECORD_KEY not in s.resolved:
      timer = budget.StepTimer(config, start)
    with PreemptionGuard() as guard:
      while step < total and not self.early.stopped:
        if guard.requested:
          preempted = guard.requested
          break
        if timer:
          timer.before_step()
        batch = rt.put_batch(next(it))
        state, metrics = train_step(state, batch)
        step += 1
        pending.append(metrics)
        self._notify('on_step', step, state)
        timing = timer.after_step(step, state) if timer else None
        if timing:  # the time budget decides the number of steps, before any later checkpoint
          timer, total = None, self._apply_budget(step, *timing)
          train_step, progress.total = compiled_steps(self.s)[0], total
        is_eval = step % config.eval_every_steps == 0 or step == total
        keep_every = int(config.get('keep_every_steps', 0))  # a kept step must be saved first
        is_ckpt = (
          is_eval
          or step % config.checkpoint_every_steps == 0
          or (keep_every > 0 and step % keep_every == 0)
        )
        flush = is_eval or is_ckpt or step % config.log_every_steps == 0
        if flush:
          row = self._flush(pending, step, window_start, first=step - len(pending) == start)
          pending = []
          progress.update(step, row)
        monitored = self._evaluate(state, step) if is_eval else None
        if monitored is not None and config.reduce_on_plateau:
          state = self._after_evaluation(state, monitored)
        if is_ckpt:
          self._save(state, step, it, monitored)
        if flush:  # throughput windows exclude evaluation and checkpoint time
          window_start = time.time()
      if preempted:
        if pending:  # the finite checks run before every save
          self._flush(pending, step, window_start, first=step - len(pending) == start)
        self._save(state, step, it, None, wait=True)
        _log(f'{preempted}: saved at step {step}; re-run to resume')
    progress.close()
    self._notify('on_train_end', step)
    self.ckpt.wait_until_finished()
    return self._finish(rt.to_canonical(state), step, t0, preempted)

  def _apply_budget(self, step: int, seconds_per_step: float, compile_s: float) -> int:
    """Fixes num_train_steps from the measured speed; records it in config.json."""
    config = self.config
    eval_batches = len(self.s.data.eval_batches(config.dataset.eval_split))
    if int(config.eval_steps):
      eval_batches = min(eval_batches, int(config.eval_steps))
    record = budget.decide(
      config,
      step=step,
      elapsed_s=time.time() - self.t0,
      seconds_per_step=seconds_per_step,
      compile_s=compile_s,
      eval_batches=eval_batches,
    )
    config = budget.with_steps(config, record['decided_steps'])
    tx = make_optimizer(config, nn.unbox(self.s.boxed_params))
    resolved = dict(self.s.resolved, num_train_steps=config.num_train_steps)
    resolved[budget.RECORD_KEY] = record
    self.s = dataclasses.replace(self.s, config=config, tx=tx, resolved=resolved)
    self.config = config
    if jax.process_index() == 0:
      write_json_atomic(os.path.join(self.s.workdir, 'config.json'), resolved)
    _log(budget.describe(record))
    return int(config.num_train_steps)

  def _flush(self, pending, step: int, window_start: float, first: bool) -> dict:
    """Pulls the metrics of the last few steps from the device (the only host sync), checks them."""
    rows = jax.device_get(pending)
    seconds = time.time() - window_start  # after the sync: steps are dispatched asynchronously
    rows = [self.rt.host_metrics(r) for r in rows]
    for i, r in enumerate(rows):
      if not (math.isfinite(float(r['loss_sum'])) and math.isfinite(float(r['grad_norm']))):
        raise Diverged(step - len(rows) + i + 1, last_good=self._last_good())
      if not bool(r['state_finite']):
        what = 'parameters or optimizer state'
        raise Diverged(step - len(rows) + i + 1, what, last_good=self._last_good())
    loss_sum = sum(float(r['loss_sum']) for r in rows)
    weight = max(sum(float(r['weight_sum']) for r in rows), 1.0)
    tokens_per_s = sum(float(r['real_tokens']) for r in rows) / max(seconds, 1e-9)
    padded_tokens_per_s = len(rows) * self.tokens_per_step / max(seconds, 1e-9)
    if not first:  # the first window includes compilation
      self.throughput.append(tokens_per_s)
      self.padded_throughput.append(padded_tokens_per_s)
    row = {
      'loss': loss_sum / weight,
      'accuracy': sum(float(r['correct_sum']) for r in rows) / weight,
      # the rates the last update applied, per parameter group ('lr', 'lr_backbone')
      **{k: float(v) for k, v in rows[-1].items() if k.startswith('lr')},
      'grad_norm': float(rows[-1]['grad_norm']),
      'tokens_per_s': tokens_per_s,
      'padded_tokens_per_s': padded_tokens_per_s,
    }
    self.writer.write(step, 'train', **row)
    self._notify('on_log', step, row)
    if self.on_log:
      self.on_log(step, dict(row, split='train'))
    return row

  def evaluate(
    self,
    params,
    split: str,
    max_batches: int = 0,
    canonical: bool = False,
    batch_size: int | None = None,
  ) -> dict:
    """Loss and accuracy over `split` (every example once; max_batches > 0 takes a prefix)."""
    if canonical:
      params = self.rt.from_canonical(params)
    total = jnp.zeros(3, jnp.float32)
    batches = self.s.data.eval_batches(split, batch_size)
    for i, batch in enumerate(batches):
      if max_batches and i >= max_batches:
        break
      total = total + self.eval_step(params, self.rt.put_batch(batch))
    loss_sum, weight, correct = (float(x) for x in jax.device_get(total))
    weight = max(weight, 1.0)
    out = {'loss': loss_sum / weight, 'accuracy': correct / weight}
    if self.config.task == 'lm':
      out['perplexity'] = perplexity(out['loss'])
      rows = max_batches * batches.batch_size if max_batches else None
      out['bits_per_byte'] = bits_per_byte(loss_sum, self.s.data.scored_bytes(split, rows))
    return out

  def _evaluate(self, state, step: int) -> float:
    params = state['params']
    metrics = self.evaluate(params, self.config.dataset.eval_split, int(self.config.eval_steps))
    self.writer.write(step, 'val', elapsed_s=round(time.time() - self.t0, 2), **metrics)
    if self.on_log:
      self.on_log(step, dict(metrics, split='val'))
    if not math.isfinite(metrics['loss']):
      raise Diverged(step, 'validation loss', last_good=self._last_good())
    value = monitored_value(metrics, self.monitor)
    stop = any(self._notify('on_eval', step, value))  # every callback sees each eval
    _log(
      console.eval_line(
        step,
        int(self.config.num_train_steps),
        metrics,
        task=self.config.task,
        early=self.early,
        monitor=self.monitor,
      )
    )
    if stop and not self.early.stopped:
      self.early.stopped = True  # a user callback asked to stop
    return value

  def _after_evaluation(self, state, monitored: float):
    """reduce_on_plateau sees the monitored validation value (its state is replicated)."""
    opt_state = optim.after_evaluation(self.rt.to_canonical(state['opt_state']), monitored)
    return dict(state, opt_state=self.rt.place(opt_state, self.s.shardings['opt_state']))

  def _last_good(self) -> int | None:
    """The newest checkpoint on disk: every saved one passed the finite checks."""
    self.ckpt.wait_until_finished()
    return self.ckpt.latest_step()

  def _save(self, state, step: int, it, monitored, wait: bool = False):
    extra = {
      'data_state': it.get_state(),
      'callbacks': save_states(self.callbacks),
      'config': self.s.resolved,
      f'best_val_{self.monitor}': self.early.best,
    }
    # The checkpointer keeps the step with the lowest value as "best". It is given only the
    # evaluations early stopping counted as improvements (min_delta may reject a slightly lower
    # value), so the step it keeps is the one early stopping will restore.
    improved = monitored is not None and step == self.early.best_step
    self.ckpt.save(
      step,
      self.rt.to_canonical(state),
      extra=extra,
      val_loss=monitored if improved else None,
      wait=wait,
    )

  # ------------------------------------------------------------------ end
  def _finish(self, state, step: int, t0: float, preempted) -> dict:
    s, config = self.s, self.config
    best_step = self.early.best_step if self.early.best_step >= 0 else None
    params = state['params']
    restored_best = False
    if config.restore_best and best_step is not None and best_step != step and not preempted:
      _, params = self.ckpt.restore_params(best_step, s.abstract_state['params'])
      restored_best = True
      _log(
        f'restored the best checkpoint (step {best_step}, val {self.monitor} '
        f'{self.early.best_value:.4f})'
      )
    summary = {
      'best_step': best_step,
      'monitor': self.monitor,
      f'best_val_{self.monitor}': self.early.best,
      'stopped_early': bool(self.early.stopped),
      'last_step': step,
      'preempted': bool(preempted),
      'wall_s': round(time.time() - t0, 2),
      'tokens_per_s': float(np.median(self.throughput)) if self.throughput else None,
      'padded_tokens_per_s': (
        float(np.median(self.padded_throughput)) if self.padded_throughput else None
      ),
      'params_fingerprint': params_fingerprint(params),
    }
    if preempted:
      return summary
    # The figure the README quotes: the whole test split, else the whole validation split.
    final_split = config.dataset.test_split or config.dataset.eval_split
    t_final = time.time()  # not in wall_s, which ends with training: reported on its own
    final = self.evaluate(params, final_split, canonical=True, batch_size=self._final_batch_size())
    final_s = round(time.time() - t_final, 2)
    if config.dataset.test_split:
      summary['test'] = final
    step_used = best_step if restored_best else step
    summary['final'] = dict(final, split=final_split, step=step_used, eval_s=final_s)
    from jaxformer.training import report  # decoding code is only needed at the very end

    with s.runtime.context():  # decoding traced like the steps: the constraints are live
      summary['report'] = report.final_report(s, params)
    if jax.process_index() == 0:
      write_json_atomic(os.path.join(s.workdir, 'summary.json'), summary)
      plot_loss_curves(s.workdir)
      report.print_report(summary, s)
      _log(console.final_line(summary['final'], config.task))
    return summary

  def _final_batch_size(self) -> int:
    """Rows per batch of the final evaluation: at least ~4k tokens, so a tiny model's whole
    split takes tens of steps instead of thousands (the default config keeps its training batch,
    which needs no second compilation)."""
    return int(self.config.batch_size) * max(1, 4096 // self.tokens_per_step)
