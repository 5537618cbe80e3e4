"""train_minutes: the step count is decided from the measured speed, recorded in config.json, kept
on resume, and the run is reproduced exactly by its config.json's num_train_steps."""

import json
import os
import time

import pytest
from jaxformer.configs import tiny

from jaxformer.training import budget, train_and_evaluate
from jaxformer.training.errors import ConfigError
from jaxformer.training.optim import learning_rate_schedule


class _Killed(Exception):
  pass


class _SlowThenKilled:
  """Makes each timed step (up to the decision after step 5) take >= 1 s, so that a 0.75-minute
  budget fits tens of steps rather than thousands, then stops the run at `kill_step`, as a kill
  would, after the decision and a checkpoint (step 8)."""

  def __init__(self, kill_step: int):
    self.kill_step = kill_step

  def on_step(self, step, state):
    if step <= 5:
      time.sleep(1.0)
    if step == self.kill_step:
      raise _Killed(step)


def _config(**overrides):
  config = tiny.get_config()  # warmup 5: the count is decided after step 5
  config.update(
    dict(sample_tokens=0, checkpoint_every_steps=4, eval_steps=1, log_every_steps=4), **overrides
  )
  config.early_stopping.patience = 0  # the run must reach its decided step count
  return config


def _saved(workdir):
  with open(os.path.join(workdir, 'config.json')) as f:
    config = json.load(f)
  with open(os.path.join(workdir, 'summary.json')) as f:
    return config, json.load(f)


@pytest.mark.slow  # tens of seconds on 2 cores: .ci/run runs it with `pytest -m slow`
def test_decided_steps_are_recorded_kept_on_resume_and_reproduce_the_run(tmp_path, capsys):
  workdir = str(tmp_path / 'budget')
  with pytest.raises(_Killed):
    train_and_evaluate(_config(train_minutes=0.75), workdir, callbacks=[_SlowThenKilled(9)])
  with open(os.path.join(workdir, 'config.json')) as f:
    record = json.load(f)['train_budget']
  decided = record['decided_steps']
  assert record['decided_at_step'] == 5 and 9 < decided < 50, record  # ~1 s per step

  train_and_evaluate(_config(train_minutes=0.75), workdir)  # resumes from step 8
  config, summary = _saved(workdir)
  assert config['num_train_steps'] == decided and config['train_budget'] == record
  assert summary['last_step'] == decided
  # The user's command again: a finished run is left as it is (its recorded count, not the
  # config's num_train_steps, says it is finished).
  with open(os.path.join(workdir, 'summary.json'), 'rb') as f:
    before = f.read()
  again = train_and_evaluate(_config(train_minutes=0.75), workdir)
  assert f'the run had already finished at step {decided}' in capsys.readouterr().out
  with open(os.path.join(workdir, 'summary.json'), 'rb') as f:
    assert f.read() == before
  assert again['params_fingerprint'] == summary['params_fingerprint']

  reference = str(tmp_path / 'reference')
  train_and_evaluate(_config(num_train_steps=decided), reference)
  assert _saved(reference)[1]['params_fingerprint'] == summary['params_fingerprint']


def test_decision_fits_what_is_left_of_the_budget():
  config = _config(train_minutes=1.0, eval_every_steps=10)
  record = budget.decide(
    config, step=5, elapsed_s=10.0, seconds_per_step=0.5, compile_s=2.0, eval_batches=3
  )
  # 60 - 10 - 2 = 48 s left; evaluations add 3 batches x 1/3 step per 10 steps: 0.55 s per step
  assert record['decided_steps'] == 5 + 87
  late = budget.decide(
    config, step=5, elapsed_s=70.0, seconds_per_step=0.5, compile_s=2.0, eval_batches=3
  )
  assert late['decided_steps'] == 5  # over budget already: stop at the decision step
  # The schedule completes: the last step's learning rate is the cosine floor.
  schedule = learning_rate_schedule(budget.with_steps(config, record['decided_steps']))
  floor = config.learning_rate * config.min_lr_ratio
  assert float(schedule(record['decided_steps'])) == pytest.approx(floor)


def test_budget_needs_warmup_to_time_steps_in():
  with pytest.raises(ConfigError, match='warmup_steps >= 3'):
    budget.check(_config(train_minutes=5.0, warmup_steps=0))
  with pytest.raises(ConfigError, match='train_minutes must be >= 0'):
    budget.check(_config(train_minutes=-1.0))


def test_resume_keeps_the_decision_and_refuses_another_budget():
  record = {'decided_steps': 42, 'train_minutes': 2.0}
  saved = {'num_train_steps': 42, 'train_budget': record}
  config, kept = budget.resumed(_config(train_minutes=2.0), saved)
  assert config.num_train_steps == 42 and kept == record
  with pytest.raises(ConfigError, match='train_minutes cannot change on resume'):
    budget.resumed(_config(train_minutes=3.0), saved)
  assert budget.resumed(_config(train_minutes=3.0, overwrite=True), saved)[1] is None
