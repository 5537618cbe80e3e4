"""The shipped splits as files: exporting them, and training on the export == training on TFDS."""

import json
import os

import pytest
from jaxformer.configs import genre_scratch

from jaxformer import inference
from jaxformer.config import TASKS
from jaxformer.data import export, sources
from jaxformer.data.files import FilesSource


def test_numbers_tsv_and_genre_jsonl_round_trip(tmp_path):
  for name, split, out, task in (
    ('jaxformer_numbers/en_de', 'validation', 'n.tsv', 'translate'),
    ('jaxformer_genre', 'validation', 'g.jsonl', 'classify'),
  ):
    path = str(tmp_path / out)
    assert export.main([name, split, '--output', path]) == 0
    shipped = sources.open_source({'name': name}, task)
    mine = FilesSource({'train_files': path, 'val_fraction': 0.0, 'eval_files': path}, task)
    n = shipped.num_examples(split)
    assert mine.num_examples('train') == n
    got = [mine.example('train', i) for i in range(n)]
    want = [shipped.example(split, i) for i in range(n)]
    if task == 'classify':  # ids follow the sorted names, which are the shipped order
      assert mine.label_names == shipped.label_names
    assert got == want


def test_each_task_has_one_field_list_that_sources_hand_out_and_exports_write(tmp_path):
  """sources.EXAMPLE_FIELDS is what a source's examples hold and the header an export writes."""
  assert tuple(sources.EXAMPLE_FIELDS) == TASKS
  for name in ('jaxformer_shakespeare', 'jaxformer_genre', 'jaxformer_numbers/en_de'):
    task = sources.KNOWN[name].task
    source = sources.open_source({'name': name}, task)
    assert set(source.example('validation', 0)) == set(sources.EXAMPLE_FIELDS[task])
    path = tmp_path / f'{task}.csv'
    assert export.main([name, 'validation', '--output', str(path)]) == 0
    header = path.read_text(encoding='utf-8').splitlines()[0]
    assert tuple(header.split(',')) == sources.EXAMPLE_FIELDS[task]


def test_bad_export_requests_exit_2_and_write_nothing(tmp_path, capsys):
  assert export.main(['lm1b', 'train', '--output', str(tmp_path / 'x.csv')]) == 2
  assert 'unknown shipped dataset' in capsys.readouterr().err
  assert export.main(['jaxformer_genre', 'train', '--output', str(tmp_path / 'x.parquet')]) == 2
  assert export.main(['jaxformer_genre', 'train', '--output', str(tmp_path / 'x.tsv')]) == 2
  assert 'holds a tab or a newline' in capsys.readouterr().err.splitlines()[-1]
  assert os.listdir(tmp_path) == []


def _tiny_genre(**dataset):
  c = genre_scratch.get_config()
  c.dataset.tokenizer = 'byte'
  for k, v in dataset.items():
    c.dataset[k] = v
  c.model.d_model, c.model.num_heads, c.model.num_layers, c.model.max_len = 32, 2, 1, 64
  c.batch_size, c.num_train_steps, c.eval_every_steps, c.checkpoint_every_steps = 16, 6, 3, 3
  c.log_every_steps, c.warmup_steps, c.progress = 3, 2, False
  return c


@pytest.mark.slow  # tens of seconds on 2 cores: .ci/run runs it with `pytest -m slow`
@pytest.mark.parametrize('fmt', ['csv'])
def test_genre_from_exported_csv_scores_as_the_tfds_path(tmp_path, fmt):
  from jaxformer.evaluate import evaluate
  from jaxformer.training import train_and_evaluate

  files = {}
  for split in ('train', 'validation', 'test'):
    files[split] = str(tmp_path / f'genre_{split}.{fmt}')
    assert export.main(['jaxformer_genre', split, '--output', files[split]]) == 0
  shipped = train_and_evaluate(_tiny_genre(), str(tmp_path / 'tfds'))
  mine = _tiny_genre(
    name='files',
    train_files=files['train'],
    eval_files=files['validation'],
    test_files=files['test'],
  )
  from_files = train_and_evaluate(mine, str(tmp_path / 'files'))
  assert from_files['params_fingerprint'] == shipped['params_fingerprint']  # the same training
  scores = [
    evaluate(inference.load(str(tmp_path / run)), 'test')['balanced_accuracy']
    for run in ('tfds', 'files')
  ]
  assert scores[0] == scores[1]
  assert json.load(open(tmp_path / 'files' / 'labels.json'))['label_names'] == [
    'comedy',
    'history',
    'tragedy',
  ]
