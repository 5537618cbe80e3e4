"""Inference command lines (evaluate, generate, export) on crafted runs and exports: every
nonsense argument and every tampered file (escaping paths, FIFOs, bad JSON, a manifest that no
longer fits its arrays) exits 2 with one line, and nothing is prepared where an export says."""

from __future__ import annotations

import json
import os
import shutil

import pytest
from helpers import error_line, run_module, run_train


@pytest.fixture(scope='module')
def trained(tmp_path_factory):
  """A finished 4-step tiny run."""
  workdir = str(tmp_path_factory.mktemp('inference') / 'run')
  proc = run_train(
    '--config=configs/tiny.py',
    '--config.num_train_steps=4',
    '--config.eval_every_steps=2',
    '--config.sample_tokens=4',
    f'--workdir={workdir}',
  )
  assert proc.returncode == 0, proc.stderr[-3000:]
  return workdir


@pytest.mark.parametrize(
  'module,args',
  [
    ('jaxformer.generate', ['--temperature=nan']),
    ('jaxformer.evaluate', ['--batch_size=0']),
  ],
)
def test_inference_refuses_nonsense_arguments(trained, module, args):
  proc = run_module(module, f'--workdir={trained}', *args)
  assert proc.returncode == 2, proc.stderr[-3000:]
  assert args[0].split('=')[0].lstrip('-') in error_line(proc)


@pytest.fixture(scope='module')
def export(trained, tmp_path_factory):
  out = str(tmp_path_factory.mktemp('export') / 'model')
  proc = run_module('jaxformer.export', f'--workdir={trained}', f'--out={out}')
  assert proc.returncode == 0, proc.stderr[-3000:]
  return out


def crafted(export: str, tmp_path, edit) -> str:
  """A copy of `export` changed by edit(path)."""
  path = str(tmp_path / 'crafted')
  shutil.copytree(export, path)
  edit(path)
  return path


def _tokenizer_file(path: str, model_file: str, fifo: bool = False) -> None:
  tok = os.path.join(path, 'tokenizer')
  if fifo:
    os.mkfifo(os.path.join(tok, model_file))
  with open(os.path.join(tok, 'tokenizer.json'), 'w') as f:
    json.dump({'type': 'sentencepiece', 'model_file': model_file}, f)


def _link_tokenizer_outside(path: str) -> None:
  outside = os.path.join(os.path.dirname(path), 'elsewhere')
  shutil.move(os.path.join(path, 'tokenizer'), outside)
  os.symlink(outside, os.path.join(path, 'tokenizer'))


def _fifo_split_record(path: str) -> None:
  os.mkfifo(os.path.join(path, 'data_split.json'))


def _link_split_record_outside(path: str) -> None:
  outside = os.path.join(os.path.dirname(path), 'elsewhere.json')
  with open(outside, 'w') as f:
    json.dump({'version': 1}, f)
  os.symlink(outside, os.path.join(path, 'data_split.json'))


def _manifest(path: str, change) -> None:
  file = os.path.join(path, 'jaxformer_pretrained.json')
  with open(file) as f:
    manifest = json.load(f)
  change(manifest)
  with open(file, 'w') as f:
    json.dump(manifest, f)


@pytest.mark.parametrize(
  'case,edit,said',
  [
    ('escape', lambda p: _tokenizer_file(p, '../../../../../../etc/hostname'), 'outside'),
    ('fifo', lambda p: _tokenizer_file(p, 'spm.model', fifo=True), 'not a regular file'),
    (
      'bad json',
      lambda p: open(os.path.join(p, 'tokenizer', 'tokenizer.json'), 'w').write('{"type": '),
      'not valid JSON',
    ),
    ('no arrays', lambda p: _manifest(p, lambda m: m.pop('arrays')), 'malformed'),
    ('config seed', lambda p: _manifest(p, lambda m: m['config'].update(seed=[1])), "'seed'"),
    (
      'config dataset',
      lambda p: _manifest(p, lambda m: m['config'].update(dataset=5)),
      "'dataset' is a JSON number",
    ),
    ('linked out', _link_tokenizer_outside, 'points outside the export'),
    ('fifo data_split.json', _fifo_split_record, 'not a regular file'),
    ('linked-out data_split.json', _link_split_record_outside, 'points outside'),
    ('changed model', lambda p: _manifest(p, lambda m: m['model'].update(d_model=64)), 'not fit'),
    (
      'missing array',
      lambda p: _manifest(p, lambda m: m['arrays'].pop(max(m['arrays']))),
      'cannot read',
    ),
  ],
)
def test_a_crafted_export_is_refused_with_one_line(export, tmp_path, case, edit, said):
  path = crafted(export, tmp_path, edit)
  proc = run_module('jaxformer.evaluate', f'--workdir={path}', '--limit=8', timeout=60)
  assert proc.returncode == 2, proc.stderr[-3000:]
  assert said in error_line(proc), case


def test_evaluate_never_prepares_data_where_an_export_says(export, tmp_path):
  outside = tmp_path / 'outside'

  def point_outside(manifest):
    manifest['config']['dataset'].update(data_dir=str(outside), download=True)

  path = crafted(export, tmp_path, lambda p: _manifest(p, point_outside))
  proc = run_module('jaxformer.evaluate', f'--workdir={path}', '--limit=8')
  assert proc.returncode == 0, proc.stderr[-3000:]
  assert not outside.exists()
