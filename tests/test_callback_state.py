"""Callback state in checkpoints is keyed by name or position, never by class: two callbacks of
one class each resume their own state, and checkpoints keyed by class name still load."""

from __future__ import annotations

import pytest

from jaxformer.training.callbacks import EarlyStopping, load_states, save_states, state_keys


class Counter:
  """Counts every `every`-th step; its count is its checkpointed state."""

  def __init__(self, every: int = 1, name: str | None = None):
    self.every, self.count = every, 0
    if name:
      self.name = name

  def on_step(self, step, state):
    self.count += step % self.every == 0

  def state_dict(self):
    return {'count': self.count}

  def load_state_dict(self, d):
    self.count = d['count']


@pytest.mark.slow  # tens of seconds on 2 cores: .ci/run runs it with `pytest -m slow`
def test_two_callbacks_of_one_class_resume_their_own_state(tmp_path):
  from jaxformer.configs import tiny

  from jaxformer.training import train_and_evaluate

  config = tiny.get_config()
  config.mesh_shape, config.sample_tokens = (1, 1), 0
  config.num_train_steps, config.eval_every_steps, config.checkpoint_every_steps = 4, 4, 4
  first = [Counter(every=1), Counter(every=2)]
  train_and_evaluate(config, str(tmp_path), callbacks=first)
  assert [c.count for c in first] == [4, 2]

  config.num_train_steps = 6  # resume from step 4 for two more steps
  resumed = [Counter(every=1), Counter(every=2)]
  train_and_evaluate(config, str(tmp_path), callbacks=resumed)
  assert [c.count for c in resumed] == [6, 3]  # 4 + 2 and 2 + 1: each got its own state back


def test_keys_are_names_or_positions_and_must_be_distinct():
  callbacks = [EarlyStopping(2), Counter(), Counter(name='evals')]
  assert state_keys(callbacks) == ['early_stopping', 'callback_1', 'evals']
  with pytest.raises(ValueError, match='distinct names'):
    state_keys([Counter(name='x'), Counter(name='x')])


def test_states_saved_under_class_names_still_load_where_unambiguous():
  old = {
    'EarlyStopping': {'best_loss': 1.5, 'best_step': 10, 'bad_evals': 1},
    'Counter': {'count': 7},
  }
  early, counter = EarlyStopping(3), Counter()
  load_states([early, counter], old)
  assert (early.best, early.best_step, counter.count) == (1.5, 10, 7)
  twins = [Counter(), Counter()]
  load_states(twins, old)  # which of the two saved 'Counter' is unknowable: neither loads it
  assert [c.count for c in twins] == [0, 0]
  saved = save_states([early, *twins])
  assert set(saved) == {'early_stopping', 'callback_1', 'callback_2'}
