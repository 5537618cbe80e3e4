"""Training callbacks: a small protocol, and early stopping on a validation metric.

A callback is any object with some of these methods; the loop calls the ones it finds:
  on_train_start(step)               before the first step (after a resume: the resumed step)
  on_step(step, state)               after every optimizer update (no host sync: don't pull arrays)
  on_log(step, metrics: dict)        after host metrics are pulled (every `log_every_steps`)
  on_eval(step, value) -> bool       after each evaluation (value: the monitored validation metric,
                                     lower is better; see monitored_value); True stops training
  on_train_end(step)                 once, at the end
  state_dict() / load_state_dict(d)  JSON-able state saved in every checkpoint
  name                               optional: the key of that state in checkpoints (default:
                                     the callback's position, 'callback_<i>'; see state_keys)
"""

from __future__ import annotations

import math
from typing import Protocol, runtime_checkable


@runtime_checkable
class Callback(Protocol):
  def on_eval(self, step: int, value: float) -> bool: ...


def monitored_value(metrics: dict, monitor: str) -> float:
  """The number early stopping and the best checkpoint minimise: 'loss', or 'error' = 1 - accuracy.

  Why 'error': on a few hundred labelled examples the validation cross-entropy turns up (a few
  confidently wrong answers) while accuracy is still improving. Accuracy on a small split ties
  often, so ties are broken by the loss: 1e-4 x min(loss, 10) stays below one example's share of
  the error up to 1,000 validation examples. Meant for classifiers on small validation sets.
  """
  if monitor == 'loss':
    return float(metrics['loss'])
  return 1.0 - float(metrics['accuracy']) + 1e-4 * min(float(metrics['loss']), 10.0)


def state_keys(callbacks) -> list[str]:
  """The key each callback's state is saved under: its `name`, else 'callback_<position>'.

  Keys never depend on the class, so two callbacks of one class keep separate state.
  """
  keys = [getattr(cb, 'name', None) or f'callback_{i}' for i, cb in enumerate(callbacks)]
  if len(set(keys)) != len(keys):
    raise ValueError(f'callbacks need distinct names to be checkpointed, got {keys}')
  return keys


def save_states(callbacks) -> dict:
  """{key: state_dict()} of every callback that has state (the checkpoint's 'callbacks')."""
  return {
    key: cb.state_dict()
    for key, cb in zip(state_keys(callbacks), callbacks, strict=True)
    if hasattr(cb, 'state_dict')
  }


def load_states(callbacks, saved: dict) -> None:
  """Gives each callback its saved state (from save_states) when the checkpoint holds one.

  Checkpoints written before the keys existed hold states under class names; those still load
  where the class name is unambiguous.
  """
  classes = [type(cb).__name__ for cb in callbacks]
  for key, cb, cls in zip(state_keys(callbacks), callbacks, classes, strict=True):
    state = saved.get(key)
    if state is None and classes.count(cls) == 1:
      state = saved.get(cls)
    if state is not None and hasattr(cb, 'load_state_dict'):
      cb.load_state_dict(state)


class EarlyStopping:
  """Stops at the `patience`-th evaluation in a row that fails to beat the best by `min_delta`.

  With patience=2 and validation losses [3, 2, 2.5, 2.4] it stops at the 4th evaluation: the
  2nd consecutive one without improvement. (flax.training.early_stopping checks before it
  counts, so it would stop one evaluation later.) patience=0 disables it.
  """

  name = 'early_stopping'  # its checkpointed state's key

  def __init__(self, patience: int, min_delta: float = 0.0):
    if patience < 0 or min_delta < 0:
      raise ValueError(
        f'early_stopping.patience and min_delta must be >= 0, got {patience}, {min_delta}'
      )
    self.patience, self.min_delta = int(patience), float(min_delta)
    self.best_value, self.best_step, self.bad_evals = math.inf, -1, 0
    self.stopped = False

  def on_eval(self, step: int, value: float) -> bool:
    if value < self.best_value - self.min_delta:
      self.best_value, self.best_step, self.bad_evals = float(value), int(step), 0
    else:
      self.bad_evals += 1
    self.stopped = bool(self.patience) and self.bad_evals >= self.patience
    return self.stopped

  @property
  def best(self) -> float | None:
    """The best monitored value so far, None before the first evaluation (JSON-able)."""
    return None if math.isinf(self.best_value) else self.best_value

  def state_dict(self) -> dict:
    # 'best_loss' names the monitored value (loss or error): the key predates `monitor`, and
    # checkpoints already written with it must resume.
    return {
      'best_loss': self.best,
      'best_step': self.best_step,
      'bad_evals': self.bad_evals,
      'stopped': self.stopped,
    }

  def load_state_dict(self, d: dict) -> None:
    self.best_value = math.inf if d.get('best_loss') is None else float(d['best_loss'])
    self.best_step, self.bad_evals = int(d['best_step']), int(d['bad_evals'])
    self.stopped = bool(d.get('stopped', False))
