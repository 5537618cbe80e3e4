"""The user's own files as a dataset: formats, labels, seeded stratified splits, the record."""

import csv
import json
import os
import re

import numpy as np
import pytest

from jaxformer.data import DataError, build_task_data
from jaxformer.data.files import FilesSource

LABELS = ('spam', 'ham', 'eggs')


def build(dataset_cfg, task, tmp_path, **kw):
  return build_task_data(
    {'tokenizer': 'byte', 'data_dir': str(tmp_path / 'dd'), **dataset_cfg},
    task=task,
    max_len=kw.pop('max_len', 32),
    batch_size=kw.pop('batch_size', 4),
    seed=0,
    process_index=0,
    process_count=1,
    **kw,
  )


def write_csv(path, rows, header=('text', 'label'), delimiter=','):
  with open(path, 'w', newline='') as f:
    w = csv.writer(f, delimiter=delimiter)
    if header:
      w.writerow(header)
    w.writerows(rows)
  return str(path)


def labelled_rows(n=60):
  return [(f'{LABELS[i % 3]} note {i}', LABELS[i % 3]) for i in range(n)]


def test_csv_labels_sorted_stratified_split_and_record(tmp_path):
  path = write_csv(tmp_path / 'train.csv', labelled_rows())
  cfg = {'name': 'files', 'train_files': path, 'val_fraction': 0.2, 'test_fraction': 0.1}
  data = build(cfg, 'classify', tmp_path)
  assert data.label_names == ('eggs', 'ham', 'spam') and data.num_classes == 3
  counts = {s: data.source.num_examples(s) for s in ('train', 'validation', 'test')}
  assert counts == {'train': 42, 'validation': 12, 'test': 6}
  for split in ('validation', 'test'):  # stratified: every class, in its share
    labels = [e['label'] for e in data.examples(split)]
    assert np.bincount(labels).tolist() == [counts[split] // 3] * 3
    for e in data.examples(split):  # the text's class word agrees with the id
      assert e['text'].startswith(data.label_names[e['label']])
  every = [e['text'] for s in counts for e in data.examples(s)]
  assert sorted(every) == sorted(t for t, _ in labelled_rows())  # each row in exactly one split
  # Another split seed holds out other rows; the same seed, the same ones.
  other = build(dict(cfg, split_seed=1), 'classify', tmp_path)
  same = build(cfg, 'classify', tmp_path)
  assert other.examples('validation') != data.examples('validation')
  assert same.examples('validation') == data.examples('validation')
  # The record reproduces the rows even if the carving rule changed; a changed file is refused.
  record = json.loads(json.dumps(data.source.record))
  record['held_out']['validation'] = record['held_out']['validation'][:3]
  replayed = build(cfg, 'classify', tmp_path, split_record=record)
  assert replayed.source.num_examples('validation') == 3
  # A hand-edited record that names a row twice or past the end is refused, not half applied.
  for bad, said in (
    ([10**6], 'held_out.test[0] = 1000000 is not one of the'),
    (record['held_out']['validation'][:1], 'is also held_out.validation[0]'),
  ):
    with pytest.raises(DataError, match=re.escape(said)):
      build(
        cfg,
        'classify',
        tmp_path,
        split_record=dict(record, held_out=dict(record['held_out'], test=bad)),
      )
  with pytest.raises(DataError, match='dataset.val_fraction changed'):
    build(dict(cfg, val_fraction=0.3), 'classify', tmp_path, split_record=record)
  with open(path, 'a') as f:
    f.write('one more,ham\n')
  with pytest.raises(DataError, match='file changed since the run started'):
    build(cfg, 'classify', tmp_path, split_record=record)


def test_jsonl_tsv_and_csv_give_the_same_examples(tmp_path):
  rows = labelled_rows(30)
  csv_path = write_csv(tmp_path / 'a.csv', [(t, lab) for t, lab in rows], header=('body', 'tag'))
  tsv_path = write_csv(tmp_path / 'a.tsv', rows, header=('body', 'tag'), delimiter='\t')
  jsonl = tmp_path / 'a.jsonl'
  jsonl.write_text(''.join(json.dumps({'body': t, 'tag': lab}) + '\n' for t, lab in rows))
  keys = {'name': 'files', 'text_key': 'body', 'label_key': 'tag'}
  got = [
    {
      s: build(dict(keys, train_files=p), 'classify', tmp_path).examples(s)
      for s in ('train', 'validation')
    }
    for p in (csv_path, tsv_path, str(jsonl))
  ]
  assert got[0] == got[1] == got[2]


def test_integer_labels_sort_numerically(tmp_path):
  path = tmp_path / 'n.jsonl'
  path.write_text(
    ''.join(json.dumps({'text': f'x{i}', 'label': [2, 10, 1][i % 3]}) + '\n' for i in range(30))
  )
  data = build({'name': 'files', 'train_files': str(path)}, 'classify', tmp_path)
  assert data.label_names == ('1', '2', '10')


def test_explicit_eval_and_test_files(tmp_path):
  train = write_csv(tmp_path / 'train.csv', labelled_rows(30))
  dev = write_csv(tmp_path / 'dev.csv', labelled_rows(6))
  test = write_csv(tmp_path / 'test.csv', labelled_rows(9))
  cfg = {'name': 'files', 'train_files': train, 'eval_files': dev, 'test_files': test}
  data = build(cfg, 'classify', tmp_path)
  assert data.splits == {'train': 'train', 'eval': 'validation', 'test': 'test'}
  assert [data.source.num_examples(s) for s in ('train', 'validation', 'test')] == [30, 6, 9]
  no_test = build({'name': 'files', 'train_files': train}, 'classify', tmp_path)
  assert no_test.splits['test'] == '' and no_test.source.num_examples('validation') == 3


def test_translation_tsv_without_header_and_jsonl_keys(tmp_path):
  pairs = [(f'number {i}', f'nummer {i}') for i in range(40)]
  tsv = write_csv(tmp_path / 'pairs.tsv', pairs, header=None, delimiter='\t')
  jsonl = tmp_path / 'pairs.jsonl'
  jsonl.write_text(''.join(json.dumps({'en': s, 'de': t}) + '\n' for s, t in pairs))
  a = build({'name': 'files', 'train_files': tsv}, 'translate', tmp_path)
  b = build(
    {'name': 'files', 'train_files': str(jsonl), 'source_key': 'en', 'target_key': 'de'},
    'translate',
    tmp_path,
  )
  assert a.examples('train') == b.examples('train')
  assert a.source.num_examples('train') + a.source.num_examples('validation') == 40
  assert a.examples('train')[0] == {'source': 'number 0', 'target': 'nummer 0'}


def test_translation_tokenizer_sees_training_rows_only(tmp_path):
  pairs = [(f'number {i} is fine', f'nummer {i} ist gut') for i in range(200)]
  train = write_csv(tmp_path / 'train.tsv', pairs, header=None, delimiter='\t')

  def tokenizer(dev_rows):
    dev = write_csv(tmp_path / 'dev.tsv', dev_rows, header=None, delimiter='\t')
    cfg = {'name': 'files', 'train_files': train, 'eval_files': dev, 'tokenizer': 'sentencepiece'}
    return build(dict(cfg, vocab_size=300), 'translate', tmp_path).tokenizer

  first = tokenizer([('zebra zebra zebra', 'Zebra Zebra Zebra')] * 50)
  second = tokenizer([('quokka', 'Quokka')] * 50)
  assert first.fingerprint() == second.fingerprint()  # validation text never shapes the vocabulary


def test_lm_from_txt_jsonl_and_csv(tmp_path):
  (tmp_path / 'a.txt').write_text(''.join(f'line {i}\n' for i in range(100)))
  txt = build({'name': 'files', 'train_files': str(tmp_path / 'a.txt')}, 'lm', tmp_path)
  assert txt.examples('validation')[0]['text'].startswith('line 90\n')  # last 10%, as text_files
  old = build({'name': 'text_files', 'files': str(tmp_path / 'a.txt')}, 'lm', tmp_path)
  assert old.examples('train') == txt.examples('train')  # the older name still works
  docs = [f'document {i} ' * 5 for i in range(20)]
  (tmp_path / 'd.jsonl').write_text(''.join(json.dumps({'body': d}) + '\n' for d in docs))
  write_csv(tmp_path / 'd.csv', [(d,) for d in docs], header=('body',))
  a, b = (
    build({'name': 'files', 'train_files': str(tmp_path / f), 'text_key': 'body'}, 'lm', tmp_path)
    for f in ('d.jsonl', 'd.csv')
  )
  assert a.examples('train') == b.examples('train') and len(a.examples('validation')) == 2
  assert sorted(e['text'] for s in ('train', 'validation') for e in a.examples(s)) == sorted(docs)


def test_resume_mid_epoch_on_a_file_source(tmp_path):
  path = write_csv(tmp_path / 'train.csv', labelled_rows(90))
  cfg = {'name': 'files', 'train_files': path}
  data = build(cfg, 'classify', tmp_path, batch_size=8)
  steps = data.steps_per_epoch + 3  # past an epoch boundary
  uninterrupted = [next(it) for it in [data.train_iterator()] for _ in range(steps)]
  it = data.train_iterator()
  for _ in range(5):
    next(it)
  state = json.loads(json.dumps(it.get_state()))
  record = json.loads(json.dumps(data.source.record))
  resumed = build(cfg, 'classify', tmp_path, batch_size=8, split_record=record).train_iterator()
  resumed.set_state(state)
  for expected in uninterrupted[5:]:
    got = next(resumed)
    for key in expected:
      np.testing.assert_array_equal(expected[key], got[key])


def test_source_opens_without_a_tokenizer(tmp_path):
  path = write_csv(tmp_path / 'train.csv', labelled_rows(30))
  src = FilesSource({'train_files': path}, 'classify')
  assert src.splits == ('train', 'validation') and os.listdir(tmp_path) == ['train.csv']


@pytest.mark.parametrize('end', ['\n', '\r\n', '\r'])
def test_every_line_ending_splits_rows_and_numbers_lines(tmp_path, end):
  """Unix, Windows and old Mac line ends read the same rows, with the same line numbers."""
  from jaxformer.data import readers

  csv_path, txt_path = tmp_path / 'rows.csv', tmp_path / 'rows.txt'
  csv_path.write_bytes(end.join(['text,label', 'a b,x', '"c, d",y', '']).encode())
  txt_path.write_bytes(end.join(['first', 'second', '']).encode())
  rows = readers.read_rows(str(csv_path), {'text': 'text', 'label': 'label'})
  assert [(r.fields, r.line) for r in rows] == [
    ({'text': 'a b', 'label': 'x'}, 2),
    ({'text': 'c, d', 'label': 'y'}, 3),
  ]
  lines = readers.read_rows(str(txt_path), {'text': 'text'}, txt_lines=True)
  assert [(r.fields['text'], r.line) for r in lines] == [('first', 1), ('second', 2)]
  bad = tmp_path / 'bad.csv'  # an error still names the right line
  bad.write_bytes(end.join(['text,label', 'a,x', ',y', '']).encode())
  with pytest.raises(DataError, match=r"line 3: field 'text' is empty"):
    readers.read_rows(str(bad), {'text': 'text', 'label': 'label'})
