"""The README's "Train on your own data" commands run as written on the shipped examples/ files.

The commands are read from the README's code block, so the test follows the docs: each runs from
a scratch directory that links the repository's configs/, examples/ and train.py, so their
relative paths mean what they mean in a checkout, and runs/ and predictions.jsonl land there.
Training gets a tiny model and 3 steps appended (the last value of a flag wins).
"""

import csv
import json
import os
import re
import shlex
import subprocess
import sys

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

pytestmark = pytest.mark.slow  # three processes that train or predict: tens of seconds

FEW_STEPS = [
  '--config.num_train_steps=3',
  '--config.eval_every_steps=3',
  '--config.checkpoint_every_steps=3',
  '--config.warmup_steps=1',
  '--config.model.d_model=32',
  '--config.model.num_heads=2',
]
TINY = {
  'classify': ['--config.model.num_layers=1', '--config.model.max_len=64'],
  'translate': ['--config.model.num_encoder_layers=1', '--config.model.num_decoder_layers=1'],
}


def readme_commands(section: str) -> list[list[str]]:
  """The shell commands of the first code block under the README heading `section`: comments
  dropped, backslash continuations joined, each split into arguments as a shell would."""
  with open(os.path.join(REPO, 'README.md')) as f:
    text = f.read()
  body = re.search(rf'^## {re.escape(section)}\n(.*?)(?=^## )', text, re.S | re.M)
  assert body, f'README.md has no section {section!r}'
  block = re.search(r'^```[a-z]*\n(.*?)^```', body.group(1), re.S | re.M)
  assert block, f'README.md section {section!r} has no code block'
  lines = block.group(1).replace('\\\n', ' ').splitlines()
  return [shlex.split(line) for line in lines if line.strip() and not line.lstrip().startswith('#')]


def run(command: list[str], cwd) -> subprocess.CompletedProcess:
  assert command[0] == 'python', command
  env = dict(os.environ, XLA_FLAGS='--xla_force_host_platform_device_count=1')
  return subprocess.run(
    [sys.executable, *command[1:]], cwd=cwd, env=env, capture_output=True, text=True, timeout=300
  )


def test_readme_own_data_commands_train_and_predict(tmp_path):
  for name in ('configs', 'examples', 'train.py'):
    os.symlink(os.path.join(REPO, name), tmp_path / name)
  classify, translate, predict = readme_commands('Train on your own data')
  assert classify[:2] == translate[:2] == ['python', 'train.py'], (classify, translate)
  assert predict[:3] == ['python', '-m', 'jaxformer.predict'], predict
  assert '--config=configs/genre_scratch.py' in classify
  assert '--config=configs/numbers_translate.py' in translate

  for command, task in ((classify, 'classify'), (translate, 'translate')):
    result = run(command + FEW_STEPS + TINY[task], tmp_path)
    assert result.returncode == 0, (command, result.stderr[-3000:])
    workdir = tmp_path / next(a for a in command if a.startswith('--workdir=')).split('=', 1)[1]
    with open(workdir / 'config.json') as f:
      config = json.load(f)
    assert config['task'] == task and config['num_train_steps'] == 3
    with open(workdir / 'summary.json') as f:
      assert json.load(f)['last_step'] == 3

  labels = tmp_path / 'runs' / 'tickets' / 'labels.json'
  with open(labels) as f:
    names = json.load(f)['label_names']
  with open(os.path.join(REPO, 'examples', 'tickets.csv'), newline='') as f:
    assert names == sorted({row['label'] for row in csv.DictReader(f)})

  result = run(predict, tmp_path)
  assert result.returncode == 0, result.stderr[-3000:]
  output = tmp_path / predict[predict.index('--output') + 1]
  with open(output) as f:
    rows = [json.loads(line) for line in f]
  with open(os.path.join(REPO, 'examples', 'tickets_new.csv'), newline='') as f:
    texts = [row['text'] for row in csv.DictReader(f)]
  assert [r['text'] for r in rows] == texts
  assert [r['line'] for r in rows] == list(range(2, 2 + len(texts)))
  for r in rows:
    assert sorted(r['probabilities']) == names and r['label'] in names
    assert abs(sum(r['probabilities'].values()) - 1) < 1e-4
