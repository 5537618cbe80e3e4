"""train.py under hostile conditions (issue 23): one writer per workdir, no non-finite checkpoint,
metrics.jsonl that survives kills, every error exit 2 with one line and nothing written.

Each case runs train.py in a subprocess and checks the exit code, that stderr ends in one
`error:` line, and the workdir before and after. One short run (`trained`) is shared.
"""

from __future__ import annotations

import json
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import time

import pytest
from helpers import REPO, error_line, run_module, run_train, saved_steps, start_train

TINY = [
  '--config=configs/tiny.py',
  '--config.num_train_steps=4',
  '--config.eval_every_steps=2',
  '--config.log_every_steps=1',
  '--config.sample_tokens=4',
]
TIMING = ('tokens_per_s', 'padded_tokens_per_s', 'elapsed_s')


def snapshot(directory: str) -> dict:
  """{relative path: (size, mtime_ns)} of everything under directory (nothing if absent)."""
  out = {}
  for root, dirs, files in os.walk(directory):
    for name in dirs + files:
      path = os.path.join(root, name)
      st = os.lstat(path)
      out[os.path.relpath(path, directory)] = (st.st_size if name in files else 0, st.st_mtime_ns)
  return out


def metric_rows(workdir: str) -> list[dict]:
  with open(os.path.join(workdir, 'metrics.jsonl')) as f:
    rows = [json.loads(line) for line in f]
  return [{k: v for k, v in r.items() if k not in TIMING} for r in rows]


def hold_lock(workdir: str) -> subprocess.Popen:
  """A process that takes the workdir lock as a run would, and keeps it until killed."""
  code = (
    'import sys, time\n'
    'from jaxformer.training.lock import WorkdirLock\n'
    'WorkdirLock(sys.argv[1]).acquire()\n'
    "print('locked', flush=True)\n"
    'time.sleep(600)\n'
  )
  proc = subprocess.Popen(
    [sys.executable, '-c', code, workdir], cwd=REPO, stdout=subprocess.PIPE, text=True
  )
  assert proc.stdout.readline().strip() == 'locked'
  return proc


@pytest.fixture(scope='module')
def trained(tmp_path_factory):
  """A finished 4-step run; it starts in a workdir whose lock holder was killed (stale lock)."""
  workdir = str(tmp_path_factory.mktemp('hostile') / 'run')
  holder = hold_lock(workdir)
  holder.send_signal(signal.SIGKILL)
  holder.wait()
  assert os.path.exists(os.path.join(workdir, '.lock'))
  proc = run_train(*TINY, f'--workdir={workdir}')
  assert proc.returncode == 0, proc.stderr[-3000:]
  return workdir


def test_a_stale_lock_from_a_killed_run_does_not_block(trained):
  assert saved_steps(trained) == [2, 4]
  with open(os.path.join(trained, '.lock')) as f:
    assert json.load(f)['pid'] != 0  # the holder info of the run that took it over


def test_a_second_run_on_a_held_workdir_exits_2_naming_the_holder(trained):
  holder = hold_lock(trained)
  try:
    before = snapshot(trained)
    proc = run_train(*TINY, f'--workdir={trained}', '--config.learning_rate=3e-3')
  finally:
    holder.kill()
    holder.wait()
  assert proc.returncode == 2, proc.stderr[-3000:]
  line = error_line(proc)
  assert f'pid {holder.pid}' in line and 'host' in line and 'started' in line, line
  assert snapshot(trained) == before


def test_the_divergence_message_names_the_last_good_checkpoint_only_if_one_exists():
  from jaxformer.training.errors import Diverged

  kept = str(Diverged(5, 'gradient norm', last_good=2))
  assert 'non-finite gradient norm at step 5' in kept
  assert 'the last good checkpoint (step 2) is kept' in kept and 'no checkpoint' not in kept
  none = str(Diverged(1, last_good=None))
  assert 'non-finite loss at step 1' in none
  assert 'no checkpoint was saved' in none and 'last good' not in none
  assert '\n' not in kept + none and Diverged(5, last_good=2).step == 5


@pytest.mark.parametrize(
  'field',
  [
    'learning_rate',
    'adam_b2',
    'grad_clip_norm',
    'weight_decay',
    'model.layer_norm_epsilon',
    'model.mlp_ratio',
    'early_stopping.min_delta',
  ],
)
@pytest.mark.parametrize('value', [float('nan'), float('inf'), -float('inf')])
def test_validation_refuses_every_non_finite_hyperparameter(field, value):
  from jaxformer.configs import tiny

  from jaxformer.training import setup
  from jaxformer.training.errors import ConfigError

  config = tiny.get_config()
  *parents, name = field.split('.')
  node = config
  for key in parents:
    node = node[key]
  node[name] = value
  with pytest.raises(ConfigError, match=f'{field} must be a finite number'):
    setup.check_config(config)


def test_a_non_finite_hyperparameter_exits_2_before_any_write(tmp_path):
  workdir = str(tmp_path / 'run')
  proc = run_train(*TINY, f'--workdir={workdir}', '--config.model.mlp_ratio=nan')
  assert proc.returncode == 2, proc.stderr[-3000:]
  assert 'model.mlp_ratio must be a finite number' in error_line(proc)
  assert not os.path.exists(workdir)


@pytest.mark.slow  # moved out of the README suite to keep it under 10 minutes on 2 cores
def test_an_update_that_overflows_the_parameters_is_never_checkpointed(tmp_path):
  # lr near float32's max: the loss and gradients of step 1 are finite, the updated weights not.
  workdir = str(tmp_path / 'run')
  proc = run_train(
    *TINY,
    f'--workdir={workdir}',
    '--config.learning_rate=3.4e38',
    '--config.warmup_steps=0',
    '--config.lr_schedule=constant',
    '--config.checkpoint_every_steps=1',
  )
  assert proc.returncode == 3, proc.stderr[-3000:]
  line = error_line(proc)
  assert 'step 1' in line and 'no checkpoint was saved' in line, line
  assert saved_steps(workdir) == []


@pytest.mark.slow  # moved out of the README suite to keep it under 10 minutes on 2 cores
def test_metrics_log_drops_a_partial_line_and_never_duplicates_rows(trained, tmp_path):
  # Every checkpoint gone (killed before the first one, or all quarantined), and a kill cut
  # the last line short: the re-run starts at step 0 and must log exactly what the first did.
  workdir = str(tmp_path / 'run')
  shutil.copytree(trained, workdir)
  shutil.rmtree(os.path.join(workdir, 'checkpoints'))
  os.remove(os.path.join(workdir, 'summary.json'))
  with open(os.path.join(workdir, 'metrics.jsonl'), 'a') as f:
    f.write('{"step": 4, "split": "tr')
  proc = run_train(*TINY, f'--workdir={workdir}')
  assert proc.returncode == 0, proc.stderr[-3000:]
  assert metric_rows(workdir) == metric_rows(trained)


@pytest.mark.slow  # tens of seconds on 2 cores: .ci/run runs it with `pytest -m slow`
def test_a_kill_at_a_random_moment_then_resume_logs_what_an_uninterrupted_run_logs(
  trained, tmp_path
):
  workdir = str(tmp_path / 'run')
  delay = random.uniform(2.0, 12.0)
  proc = start_train(*TINY, f'--workdir={workdir}', '--config.checkpoint_every_steps=1')
  time.sleep(delay)
  proc.kill()
  proc.communicate()
  resumed = run_train(*TINY, f'--workdir={workdir}', '--config.checkpoint_every_steps=1')
  assert resumed.returncode == 0, f'killed after {delay:.1f}s: {resumed.stderr[-3000:]}'
  assert metric_rows(workdir) == metric_rows(trained), f'killed after {delay:.1f}s'


def test_a_corpus_too_small_for_one_batch_exits_2_before_any_write(tmp_path):
  corpus = tmp_path / 'corpus'
  corpus.mkdir()
  (corpus / 'a.txt').write_text('too short\n')
  workdir = str(tmp_path / 'run')
  proc = run_train(
    *TINY,
    f'--workdir={workdir}',
    '--config.dataset.name=text_files',
    f'--config.dataset.files={corpus}/*.txt',
    '--config.dataset.eval_split=train',
  )
  assert proc.returncode == 2, proc.stderr[-3000:]
  assert 'fewer than one batch' in error_line(proc)
  assert not os.path.exists(workdir)


@pytest.mark.parametrize('kind', ['file', 'read-only'])
def test_an_unusable_workdir_exits_2(tmp_path, kind):
  if kind == 'file':
    workdir = tmp_path / 'run'
    workdir.write_text('not a directory')
  elif os.geteuid() == 0:  # root writes into a mode-0500 directory: a read-only mount stops it
    parent = tmp_path / 'ro'
    if not _mount_tmpfs(parent, 'ro,size=1m'):
      pytest.skip('cannot mount a read-only tmpfs, and root writes into read-only directories')
    workdir = parent / 'run'
  else:
    parent = tmp_path / 'ro'
    parent.mkdir(mode=0o500)
    workdir = parent / 'run'
  try:
    proc = run_train(*TINY, f'--workdir={workdir}')
  finally:
    if kind == 'read-only' and os.path.ismount(tmp_path / 'ro'):
      subprocess.run(['umount', str(tmp_path / 'ro')])
  assert proc.returncode == 2, proc.stderr[-3000:]
  assert str(workdir) in error_line(proc)
  if kind == 'file':
    assert workdir.read_text() == 'not a directory'
  else:
    assert not os.path.exists(workdir)


def test_a_state_too_big_for_memory_exits_2_saying_how_much(tmp_path):
  workdir = str(tmp_path / 'run')
  proc = run_train(*TINY, f'--workdir={workdir}', '--config.model.d_model=200000')
  assert proc.returncode == 2, proc.stderr[-3000:]
  assert 'GiB' in error_line(proc)
  assert not os.path.exists(workdir)


def test_overwrite_of_the_current_directory_is_refused(tmp_path):
  config = f'--config={os.path.join(REPO, "configs", "tiny.py")}'
  args = [config, *TINY[1:], '--workdir=.', '--config.overwrite=true']
  proc = subprocess.run(
    [sys.executable, os.path.join(REPO, 'train.py'), *args],
    cwd=tmp_path,
    env=dict(os.environ, PYTHONPATH=REPO, XLA_FLAGS='--xla_force_host_platform_device_count=1'),
    capture_output=True,
    text=True,
    timeout=300,
  )
  assert proc.returncode == 2, proc.stderr[-3000:]
  assert 'current directory' in error_line(proc)
  assert os.path.isdir(tmp_path) and os.listdir(tmp_path) == []


def _mount_tmpfs(path, options: str) -> bool:
  path.mkdir()
  if os.geteuid() != 0 or shutil.which('mount') is None:
    return False
  mount = ['mount', '-t', 'tmpfs', '-o', options, 'tmpfs', str(path)]
  return subprocess.run(mount).returncode == 0


def test_a_read_only_data_dir_exits_2_with_one_line(tmp_path):
  data = tmp_path / 'data'
  if not _mount_tmpfs(data, 'ro,size=1m'):
    pytest.skip('needs root to mount a read-only tmpfs')
  try:
    workdir = str(tmp_path / 'run')
    proc = run_train(*TINY, f'--workdir={workdir}', env={'JAXFORMER_DATA_DIR': str(data)})
    assert proc.returncode == 2, proc.stderr[-3000:]
    assert 'Read-only file system' in error_line(proc)
    assert not os.path.exists(workdir)
  finally:
    subprocess.run(['umount', str(data)])


@pytest.mark.slow  # moved out of the README suite to keep it under 10 minutes on 2 cores
def test_a_disk_that_fills_after_one_checkpoint_keeps_it_and_resumes_from_it(trained, tmp_path):
  """Step 2's checkpoint (~0.7 MB) fits in 1000k, step 4's does not: the run exits 2, step 2 is
  left whole, and a resume from it on a roomy disk ends with the uninterrupted run's weights."""
  disk = tmp_path / 'disk'
  if not _mount_tmpfs(disk, 'size=1000k'):
    pytest.skip('needs root to mount a small tmpfs')
  copy = str(tmp_path / 'copy')
  try:
    workdir = str(disk / 'run')
    proc = run_train(*TINY, f'--workdir={workdir}', '--config.checkpoint_every_steps=2')
    assert proc.returncode == 2, proc.stderr[-3000:]
    line = error_line(proc)
    assert 'could not save checkpoint step 4' in line and 'No space left' in line, line
    assert saved_steps(workdir) == [2]
    assert [p for p in snapshot(workdir) if 'tmp' in os.path.basename(p)] == []
    shutil.copytree(workdir, copy)
  finally:
    subprocess.run(['umount', str(disk)])
  proc = run_train(*TINY, f'--workdir={copy}', '--config.checkpoint_every_steps=2')
  assert proc.returncode == 0, proc.stderr[-3000:]
  assert 'resuming from step 2' in proc.stdout
  with open(os.path.join(copy, 'summary.json')) as f, open(f'{trained}/summary.json') as g:
    assert json.load(f)['params_fingerprint'] == json.load(g)['params_fingerprint']


@pytest.mark.parametrize(
  'size,failed', [('4k', 'config.json'), ('300k', 'could not save checkpoint step')]
)
def test_a_full_disk_exits_2_naming_the_write_and_leaves_no_temporary_files(tmp_path, size, failed):
  disk = tmp_path / 'disk'
  if not _mount_tmpfs(disk, f'size={size}'):
    pytest.skip('needs root to mount a small tmpfs')
  try:
    workdir = str(disk / 'run')
    proc = run_train(*TINY, f'--workdir={workdir}', '--config.checkpoint_every_steps=2')
    assert proc.returncode == 2, proc.stderr[-3000:]
    line = error_line(proc)
    assert failed in line and 'No space left on device' in line and 'needs' in line, line
    left = [p for p in snapshot(str(disk)) if 'tmp' in os.path.basename(p)]
    assert left == []
  finally:
    subprocess.run(['umount', str(disk)])


# ----- resume checks ------------------------------------------------------------------------


@pytest.mark.parametrize(
  'override,named',
  [
    ('--config.dataset.eval_split=train', 'dataset.eval_split ("validation" -> "train")'),
    ('--config.model.d_model=64', 'model.d_model (32 -> 64)'),
  ],
)
def test_a_resume_that_changes_the_data_or_model_is_refused_naming_the_field(
  trained, override, named
):
  before = snapshot(trained)
  proc = run_train(*TINY, f'--workdir={trained}', override)
  assert proc.returncode == 2, proc.stderr[-3000:]
  assert named in error_line(proc)
  assert snapshot(trained) == before


def test_checkpoints_without_config_json_are_not_resumed_unchecked(trained, tmp_path):
  workdir = str(tmp_path / 'run')
  shutil.copytree(trained, workdir)
  os.remove(os.path.join(workdir, 'config.json'))
  before = snapshot(workdir)
  proc = run_train(*TINY, f'--workdir={workdir}', '--config.dataset.eval_split=train')
  assert proc.returncode == 2, proc.stderr[-3000:]
  assert 'no config.json' in error_line(proc)
  assert snapshot(workdir) == before


@pytest.mark.slow  # moved out of the README suite to keep it under 10 minutes on 2 cores
@pytest.mark.parametrize('config_json', [None, '[]'], ids=['missing', 'malformed'])
def test_overwrite_moves_aside_a_run_whose_config_json_is_missing_or_malformed(
  trained, tmp_path, config_json
):
  """overwrite=true replaces the run whatever its config.json holds: nothing is resumed from it."""
  workdir = str(tmp_path / 'run')
  shutil.copytree(trained, workdir)
  os.remove(os.path.join(workdir, 'config.json'))
  if config_json is not None:
    with open(os.path.join(workdir, 'config.json'), 'w') as f:
      f.write(config_json)
  old = {n: s for n, s in snapshot(workdir).items() if n != '.lock'}
  proc = run_train(*TINY, f'--workdir={workdir}', '--config.overwrite=true')
  assert proc.returncode == 0, proc.stderr[-3000:]
  aside = [n for n in os.listdir(tmp_path) if n.startswith('run.old-')]
  assert len(aside) == 1, os.listdir(tmp_path)
  moved = {n: s for n, s in snapshot(str(tmp_path / aside[0])).items() if n != '.lock'}
  assert moved.keys() == old.keys()  # the old run, whole, no file lost
  assert 'resuming' not in proc.stdout + proc.stderr  # a fresh start, not a resume
  with open(os.path.join(workdir, 'startup.txt')) as f:
    starts = re.findall(r'^# \d{4}-\d\d-\d\d ', f.read(), flags=re.M)
  assert len(starts) == 1  # one start recorded: the new run's own
  assert saved_steps(workdir) == [2, 4]
  assert os.path.exists(os.path.join(workdir, 'config.json'))


def test_a_resume_with_a_broken_tokenizer_json_exits_2_naming_the_file(trained, tmp_path):
  workdir = str(tmp_path / 'run')
  shutil.copytree(trained, workdir)
  tokenizer_json = os.path.join(workdir, 'tokenizer', 'tokenizer.json')
  with open(tokenizer_json, 'w') as f:
    f.write('{"type": ')
  before = snapshot(workdir)
  proc = run_train(*TINY, f'--workdir={workdir}')
  assert proc.returncode == 2, proc.stderr[-3000:]
  assert tokenizer_json in error_line(proc) and 'not valid JSON' in error_line(proc)
  assert snapshot(workdir) == before


MALFORMED_CONFIGS = [
  ('[]', 'JSON array, not an object'),
  ('{"model": 5, "dataset": {}}', "'model' is a JSON number"),
  ('{"model": {}, "task": "lm", "dataset": {"name": 5}}', "'dataset.name' is 5"),
  ('{"model": {}, "task": "lm", "dataset": {}, "seed": [1]}', "'seed' is [1]"),
]


def _with_config_json(trained: str, tmp_path, text: str) -> str:
  workdir = str(tmp_path / 'run')
  shutil.copytree(trained, workdir)
  with open(os.path.join(workdir, 'config.json'), 'w') as f:
    f.write(text)
  return workdir


@pytest.mark.parametrize('text,said', MALFORMED_CONFIGS)
def test_a_resume_from_a_malformed_config_json_exits_2_naming_the_field(
  trained, tmp_path, text, said
):
  workdir = _with_config_json(trained, tmp_path, text)
  before = snapshot(workdir)
  proc = run_train(*TINY, f'--workdir={workdir}')
  assert proc.returncode == 2, proc.stderr[-3000:]
  line = error_line(proc)
  assert os.path.join(workdir, 'config.json') in line and said in line, line
  assert snapshot(workdir) == before


@pytest.mark.parametrize('text,said', MALFORMED_CONFIGS)
def test_evaluate_on_a_malformed_config_json_exits_2_naming_the_field(
  trained, tmp_path, text, said
):
  workdir = _with_config_json(trained, tmp_path, text)
  before = snapshot(workdir)
  proc = run_module('jaxformer.evaluate', f'--workdir={workdir}', '--limit=8', timeout=60)
  assert proc.returncode == 2, proc.stderr[-3000:]
  line = error_line(proc)
  assert 'config.json' in line and (said in line or "lacks 'model' or 'task'" in line), line
  assert snapshot(workdir) == before


def test_re_running_a_finished_run_changes_nothing_in_summary_json(trained):
  """Nothing at all, in fact: every file keeps its name, size and mtime (the lock aside)."""

  def without_lock(snap):
    return {name: stat for name, stat in snap.items() if name != '.lock'}

  path = os.path.join(trained, 'summary.json')
  with open(path, 'rb') as f:
    before_summary = f.read()
  before = without_lock(snapshot(trained))
  proc = run_train(*TINY, f'--workdir={trained}')
  assert proc.returncode == 0, proc.stderr[-3000:]
  with open(path, 'rb') as f:
    assert f.read() == before_summary
  after = without_lock(snapshot(trained))
  changed = sorted(n for n in before.keys() | after.keys() if before.get(n) != after.get(n))
  assert not changed, changed


# ----- the vocabulary -----------------------------------------------------------------------


def test_a_vocabulary_smaller_than_the_tokenizers_is_refused_before_training(tmp_path):
  workdir = str(tmp_path / 'run')
  proc = run_train(*TINY, f'--workdir={workdir}', '--config.model.vocab_size=100')
  assert proc.returncode == 2, proc.stderr[-3000:]
  assert 'vocab_size=100' in error_line(proc)
  assert not os.path.exists(workdir)


@pytest.mark.slow  # tens of seconds on 2 cores: .ci/run runs it with `pytest -m slow`
def test_a_padded_vocabulary_never_samples_an_id_the_tokenizer_cannot_decode(tmp_path):
  workdir = str(tmp_path / 'run')
  proc = run_train(
    *TINY,
    f'--workdir={workdir}',
    '--config.model.vocab_size=384',  # byte tokenizer: 259 ids
    '--config.num_train_steps=1',
    '--config.sample_tokens=16',
    '--config.sample_temperature=1000',  # near-uniform: ids >= 259 would come up at once
  )
  assert proc.returncode == 0, proc.stderr[-3000:]
  with open(os.path.join(workdir, 'summary.json')) as f:
    assert len(json.load(f)['report']['samples']) == 3
