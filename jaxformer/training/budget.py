"""An opt-in time budget: `train_minutes` fixes the number of steps from the measured speed.

The run times its first steps, all inside the learning-rate warmup, whose rates do not depend on
the number of steps. It then decides `num_train_steps` so that training ends at the budget (counted
from the start of the run, setup and compilation included) with the schedule completing on the
last step. The decision is written to config.json (`num_train_steps`, and `train_budget` with what
it was decided from), so a resumed run continues to the same step, and the same config with
`--config.num_train_steps=N --config.train_minutes=0` reproduces the run bit for bit.
"""

from __future__ import annotations

import copy
import time

import jax
import numpy as np

from jaxformer.training.errors import ConfigError

MAX_TIMED_STEPS = 10  # enough to average out step-to-step noise; more delays the decision
# A validation batch is a forward pass: about a third of a training step's forward + backward.
EVAL_BATCH_COST = 1 / 3
RECORD_KEY = 'train_budget'


def check(config) -> None:
  minutes = float(config.get('train_minutes', 0.0))
  if minutes < 0:
    raise ConfigError(f'train_minutes must be >= 0 (0 = off), got {minutes}')
  if minutes > 0 and int(config.warmup_steps) < 3:
    raise ConfigError(
      f'train_minutes needs warmup_steps >= 3, got {config.warmup_steps}: the steps are timed '
      'during warmup, whose learning rates do not depend on the number of steps'
    )


def enabled(config) -> bool:
  return float(config.get('train_minutes', 0.0)) > 0


def decision_step(config, start: int) -> int:
  """The step after which the count is decided: warmup's end, at most MAX_TIMED_STEPS."""
  return max(min(int(config.warmup_steps), MAX_TIMED_STEPS), start + 1)


def with_steps(config, steps: int):
  """A copy of `config` with num_train_steps = steps (the caller's config is left alone)."""
  config = copy.deepcopy(config)
  config.num_train_steps = int(steps)
  return config


def resumed(config, saved: dict | None):
  """(config, record): a run resumed from a workdir whose budget was decided keeps that decision."""
  record = (saved or {}).get(RECORD_KEY)
  if not enabled(config) or not record or config.overwrite:
    return config, None
  if float(record['train_minutes']) != float(config.train_minutes):
    raise ConfigError(
      f'workdir holds a run whose {record["train_minutes"]:g}-minute budget fixed '
      f'{record["decided_steps"]} steps; train_minutes cannot change on resume: use a new '
      '--workdir or --config.overwrite=true'
    )
  return with_steps(config, record['decided_steps']), record


def decide(
  config, *, step: int, elapsed_s: float, seconds_per_step: float, compile_s: float, eval_batches
) -> dict:
  """The decision record: how many steps fit in what is left of the budget.

  elapsed_s: since the run started; compile_s: the first step's time, paid once more when the
  step is compiled with the decided schedule; eval_batches: validation batches per evaluation.
  """
  budget_s = 60.0 * float(config.train_minutes)
  eval_share = eval_batches * EVAL_BATCH_COST / int(config.eval_every_steps)
  left_s = budget_s - elapsed_s - compile_s
  more = max(int(left_s / (seconds_per_step * (1.0 + eval_share))), 0)
  decided = step + more
  if jax.process_count() > 1:  # every process must run the same steps: process 0 decides
    from jax.experimental import multihost_utils

    decided = int(multihost_utils.broadcast_one_to_all(np.int32(decided)))
  return {
    'decided_steps': int(decided),
    'decided_at_step': int(step),
    'train_minutes': float(config.train_minutes),
    'seconds_per_step': round(float(seconds_per_step), 5),
    'elapsed_s': round(float(elapsed_s), 2),
  }


class StepTimer:
  """Times each step up to the decision step, from fetching its batch to its result being ready.

  Evaluations, checkpoints and logging between steps are left out (the decision budgets for
  evaluations separately). The first step's time, which includes compilation, is kept apart.
  """

  def __init__(self, config, start: int):
    self.start, self.end = start, decision_step(config, start)
    self.began = self.first_s = None
    self.timed_s, self.timed = 0.0, 0

  def before_step(self) -> None:
    self.began = time.perf_counter()

  def after_step(self, step: int, state) -> tuple[float, float] | None:
    """(seconds per step, first step's seconds) at the decision step, else None."""
    jax.block_until_ready(state)  # a sync per step, for the few timed steps only
    seconds = time.perf_counter() - self.began
    if step == self.start + 1:
      self.first_s = seconds
    else:
      self.timed_s, self.timed = self.timed_s + seconds, self.timed + 1
    if step != self.end:
      return None
    return (self.timed_s / self.timed if self.timed else self.first_s), self.first_s


def describe(record: dict) -> str:
  return (
    f'time budget: {record["train_minutes"]:g} min, {record["seconds_per_step"]:.3f} s/step '
    f'measured by step {record["decided_at_step"]} -> {record["decided_steps"]:,} steps '
    '(recorded in config.json)'
  )
