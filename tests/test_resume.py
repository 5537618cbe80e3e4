"""Resume is exact: a run killed at any moment and re-run ends bit-identical to an uninterrupted
one."""

import hashlib
import json
import os
import random
import signal
import time

import pytest
from helpers import run_train, saved_steps, start_train

# Long enough (in steps) that a kill lands mid-run; dropout is on (tiny.py sets 0.1).
ARGS = [
  '--config=configs/tiny.py',
  '--config.num_train_steps=120',
  '--config.eval_every_steps=40',
  '--config.checkpoint_every_steps=15',
  '--config.log_every_steps=5',
  '--config.eval_steps=1',
  '--config.sample_tokens=0',
]


def _fingerprint(workdir):
  return json.load(open(os.path.join(workdir, 'summary.json')))['params_fingerprint']


@pytest.fixture(scope='module')
def reference(tmp_path_factory):
  workdir = str(tmp_path_factory.mktemp('ref') / 'run')
  proc = run_train(*ARGS, f'--workdir={workdir}')
  assert proc.returncode == 0, proc.stderr[-2000:]
  return _fingerprint(workdir)


# One generator shared by every call (as the former `random.Random(0)` default was): each kill
# lands at the next moment of the same seeded sequence.
_KILL_RNG = random.Random(0)


def _kill_after_first_checkpoint(workdir, sig=signal.SIGKILL, rng=_KILL_RNG):
  """Starts a run and signals it a random moment after its first checkpoint; returns the process."""
  proc = start_train(*ARGS, f'--workdir={workdir}')
  deadline = time.time() + 240
  while not saved_steps(workdir) and proc.poll() is None and time.time() < deadline:
    time.sleep(0.05)
  time.sleep(rng.uniform(0.0, 0.4))
  proc.send_signal(sig)
  out, err = proc.communicate(timeout=120)
  return proc, out, err


def test_sigkill_twice_then_resume_is_bit_identical(reference, tmp_path):
  workdir = str(tmp_path / 'run')
  kills = 0
  for _ in range(2):
    proc, _, err = _kill_after_first_checkpoint(workdir)
    if proc.returncode == -signal.SIGKILL:
      kills += 1
    else:
      assert proc.returncode == 0, err[-2000:]
  assert kills >= 1, 'the kill never landed mid-run'
  assert not os.path.exists(os.path.join(workdir, 'summary.json')) or kills < 2
  finished = os.path.exists(os.path.join(workdir, 'summary.json'))  # the second attempt ended
  proc = run_train(*ARGS, f'--workdir={workdir}')
  assert proc.returncode == 0, proc.stderr[-2000:]
  said = 'the run had already finished' if finished else 'resuming from step'
  assert said in proc.stdout, proc.stdout[-2000:]
  assert _fingerprint(workdir) == reference


def test_sigterm_saves_exits_0_and_resume_matches(reference, tmp_path):
  workdir = str(tmp_path / 'run')
  proc, out, err = _kill_after_first_checkpoint(workdir, sig=signal.SIGTERM)
  assert proc.returncode == 0, err[-2000:]
  if 'saved at step' in out:  # the signal landed mid-run (it always should at these sizes)
    step = int(out.split('saved at step ')[1].split(';')[0])
    assert step in saved_steps(workdir)
    assert 're-run to resume' in out
  proc = run_train(*ARGS, f'--workdir={workdir}')
  assert proc.returncode == 0, proc.stderr[-2000:]
  assert _fingerprint(workdir) == reference


def _tree_digest(root):
  h = hashlib.sha256()
  for dirpath, _, files in sorted(os.walk(root)):
    for name in sorted(files):
      path = os.path.join(dirpath, name)
      h.update(path.encode())
      h.update(open(path, 'rb').read())
  return h.hexdigest()


@pytest.mark.slow  # tens of seconds on 2 cores: .ci/run runs it with `pytest -m slow`
def test_shape_changing_config_is_refused_and_the_run_is_untouched(tmp_path):
  workdir = str(tmp_path / 'run')
  tiny = ['--config=configs/tiny.py', '--config.sample_tokens=0']
  proc = run_train(*tiny, f'--workdir={workdir}', '--config.num_train_steps=10')
  assert proc.returncode == 0, proc.stderr[-2000:]
  before = _tree_digest(workdir)
  proc = run_train(
    *tiny, f'--workdir={workdir}', '--config.num_train_steps=10', '--config.model.d_model=64'
  )
  assert proc.returncode == 2
  assert 'model' in proc.stderr and '--config.overwrite=true' in proc.stderr
  assert _tree_digest(workdir) == before
  # More steps is a safe change: it resumes and continues.
  proc = run_train(*tiny, f'--workdir={workdir}', '--config.num_train_steps=14')
  assert proc.returncode == 0, proc.stderr[-2000:]
  assert 'num_train_steps' in proc.stdout
  assert json.load(open(os.path.join(workdir, 'summary.json')))['last_step'] == 14
