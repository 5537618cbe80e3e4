"""train.py end to end: outputs of a real run, exit codes, and fast one-line errors."""

import json
import os
import shutil
import subprocess
import sys
import time

import pytest
from helpers import run_train

TINY = ['--config=configs/tiny.py']


@pytest.fixture(scope='module')
def tiny_run(tmp_path_factory):
  workdir = str(tmp_path_factory.mktemp('tiny') / 'run')
  proc = run_train(
    *TINY, f'--workdir={workdir}', '--config.num_train_steps=30', '--config.eval_every_steps=10'
  )
  assert proc.returncode == 0, proc.stderr[-3000:]
  return workdir, proc


def test_tiny_run_writes_the_documented_workdir(tiny_run):
  workdir, proc = tiny_run
  for name in (
    'config.json',
    'metrics.jsonl',
    'summary.json',
    'loss_curve.png',
    'partitioning.json',
    'tokenizer',
    'checkpoints',
    'tensorboard',
  ):
    assert os.path.exists(os.path.join(workdir, name)), name
  summary = json.load(open(os.path.join(workdir, 'summary.json')))
  for key in (
    'best_step',
    'best_val_loss',
    'stopped_early',
    'last_step',
    'wall_s',
    'tokens_per_s',
    'params_fingerprint',
  ):
    assert key in summary, key
  assert summary['last_step'] == 30 and len(summary['params_fingerprint']) == 64
  rows = [json.loads(line) for line in open(os.path.join(workdir, 'metrics.jsonl'))]
  train = [r for r in rows if r['split'] == 'train']
  val = [r for r in rows if r['split'] == 'val']
  assert [r['step'] for r in val] == [10, 20, 30]
  assert all({'loss', 'lr', 'grad_norm', 'tokens_per_s'} <= set(r) for r in train)
  assert train[-1]['loss'] < train[0]['loss']  # it learns
  assert 'bits_per_byte' in val[0]
  config = json.load(open(os.path.join(workdir, 'config.json')))
  assert config['model']['d_model'] == 32 and config['task'] == 'lm'
  assert '--- sample ---' in proc.stdout


def test_rerunning_a_finished_run_changes_nothing(tiny_run):
  workdir, _ = tiny_run
  before = json.load(open(os.path.join(workdir, 'summary.json')))['params_fingerprint']
  proc = run_train(
    *TINY, f'--workdir={workdir}', '--config.num_train_steps=30', '--config.eval_every_steps=10'
  )
  assert proc.returncode == 0, proc.stderr[-2000:]
  assert 'the run had already finished at step 30; nothing in' in proc.stdout
  assert json.load(open(os.path.join(workdir, 'summary.json')))['params_fingerprint'] == before


def test_a_finished_run_with_a_damaged_summary_writes_it_again(tiny_run, tmp_path):
  """Nothing left to train, summary.json unreadable: the run restores its last checkpoint and
  writes the summary again (it used to fail reading the damaged file)."""
  workdir = str(tmp_path / 'run')
  shutil.copytree(tiny_run[0], workdir)
  path = os.path.join(workdir, 'summary.json')
  before = json.load(open(path))
  with open(path, 'w') as f:
    f.write('{"best_step": 3')  # cut off mid-write, e.g. by a full disk
  proc = run_train(
    *TINY, f'--workdir={workdir}', '--config.num_train_steps=30', '--config.eval_every_steps=10'
  )
  assert proc.returncode == 0, proc.stderr[-2000:]
  after = json.load(open(path))
  assert after['last_step'] == 30
  assert after['params_fingerprint'] == before['params_fingerprint']
  timing = ('eval_s',)
  assert {k: v for k, v in after['final'].items() if k not in timing} == {
    k: v for k, v in before['final'].items() if k not in timing
  }


@pytest.mark.slow  # moved out of the README suite to keep it under 10 minutes on 2 cores
def test_diverging_run_exits_3_and_names_the_step(tmp_path):
  proc = run_train(
    *TINY,
    f'--workdir={tmp_path / "nan"}',
    '--config.learning_rate=1e12',
    '--config.grad_clip_norm=0.0',
    '--config.warmup_steps=0',
    '--config.log_every_steps=1',
  )
  assert proc.returncode == 3, proc.stderr[-2000:]
  assert 'diverged' in proc.stderr and 'step' in proc.stderr


@pytest.mark.parametrize(
  'args,needle',
  [
    (['--config.no_such_key=1'], 'no_such_key'),
    (['--config.batch_size=abc'], 'batch_size'),
    (['--config=configs/does_not_exist.py'], 'does_not_exist'),
    (['--config.batch_size=7'], 'batch_size'),
    (['--config.dataset.name=no_such_dataset'], 'no_such_dataset'),
  ],
)
def test_bad_command_lines_exit_2_fast_with_one_line(tmp_path, args, needle):
  workdir = tmp_path / 'bad'
  t0 = time.time()
  proc = run_train(*TINY, f'--workdir={workdir}', *args, devices=8)
  elapsed = time.time() - t0
  assert proc.returncode == 2, (proc.returncode, proc.stderr[-2000:])
  lines = [line for line in proc.stderr.splitlines() if line.strip()]
  assert len(lines) == 1 and needle in lines[0], proc.stderr
  assert 'Traceback' not in proc.stderr
  assert not workdir.exists()
  assert elapsed < 10, elapsed


def test_nothing_is_printed_below_the_error_line_at_exit(tmp_path):
  """A failed save can leave orbax's coroutines unawaited; Python warns about each one as the
  interpreter exits (seen in CI after a full disk), below the one line the user must read."""
  script = tmp_path / 'fail.py'
  script.write_text(
    'import sys\n'
    'from jaxformer.training import main\n'
    'async def never():\n'
    '  pass\n'
    'LEFT = []\n'
    'def failing():\n'
    '  LEFT.append(never())  # finalized only at exit\n'
    "  print('error: the one line', file=sys.stderr, flush=True)\n"
    '  return 2\n'
    'main.main = failing\n'
    'main.cli()\n'
  )
  proc = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=120)
  assert proc.returncode == 2
  assert proc.stderr.strip().splitlines() == ['error: the one line'], proc.stderr


TINY_MODEL = [
  '--config.model.d_model=32',
  '--config.model.num_heads=2',
  '--config.model.max_len=32',
  '--config.batch_size=16',
  '--config.num_train_steps=12',
  '--config.eval_every_steps=6',
  '--config.eval_steps=2',
  '--config.log_every_steps=3',
  '--config.progress=false',
]


@pytest.mark.slow  # tens of seconds on 2 cores: .ci/run runs it with `pytest -m slow`
def test_tiny_translation_and_classifiers_scratch_and_finetuned(tiny_run, tmp_path):
  """Every embedded config trains end to end at tiny size; fine-tuning starts from the tiny LM."""
  lm_dir, _ = tiny_run
  proc = run_train(
    '--config=configs/numbers_translate.py',
    f'--workdir={tmp_path / "tr"}',
    *TINY_MODEL,
    '--config.model.num_encoder_layers=1',
    '--config.model.num_decoder_layers=1',
  )
  assert proc.returncode == 0, proc.stderr[-2000:]
  assert 'exact match (greedy' in proc.stdout
  summary = json.load(open(tmp_path / 'tr' / 'summary.json'))
  assert 'test' in summary and summary['last_step'] == 12

  scratch = run_train(
    '--config=configs/genre_scratch.py',
    f'--workdir={tmp_path / "sc"}',
    *TINY_MODEL,
    '--config.model.num_layers=2',
    '--config.dataset.tokenizer=byte',
  )
  assert scratch.returncode == 0, scratch.stderr[-2000:]
  assert 'confusion matrix' in scratch.stdout
  summary = json.load(open(tmp_path / 'sc' / 'summary.json'))
  report = summary['report']
  assert len(report['confusion_matrix']) == 3 and sum(map(sum, report['confusion_matrix'])) == 600
  # genre configs monitor validation error: the kept step has the best accuracy (ties: lower loss)
  val = [json.loads(line) for line in open(tmp_path / 'sc' / 'metrics.jsonl')]
  val = [r for r in val if r['split'] == 'val']
  best = min(val, key=lambda r: (-r['accuracy'], r['loss'], r['step']))
  assert summary['monitor'] == 'error' and summary['best_step'] == best['step']
  assert abs(summary['best_val_error'] - (1 - best['accuracy'])) < 1e-2

  tuned = run_train(
    '--config=configs/genre_finetune.py',
    f'--workdir={tmp_path / "ft"}',
    *TINY_MODEL,
    '--config.model.num_layers=2',
    '--config.model.position=learned',
    '--config.model.activation=gelu',  # the tiny LM's block, not the default LM's SwiGLU
    '--config.model.d_ff=0',
    f'--config.init_from={lm_dir}',
  )  # the tiny LM scans its layers, genre configs loop
  assert tuned.returncode == 0, tuned.stderr[-2000:]
  assert 'initialized the backbone from' in tuned.stdout
  config = json.load(open(tmp_path / 'ft' / 'config.json'))
  assert config['model']['vocab_size'] == 259  # the LM's byte tokenizer was reused

  mismatch = run_train(
    '--config=configs/genre_finetune.py',
    f'--workdir={tmp_path / "bad"}',
    *TINY_MODEL,
    '--config.model.num_layers=2',
    '--config.model.d_model=48',
    f'--config.init_from={lm_dir}',
  )
  assert mismatch.returncode == 2 and 'backbone' in mismatch.stderr and '32' in mismatch.stderr
